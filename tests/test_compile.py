"""torch.compile(fullgraph=True) of the tiny model: one graph (no break), same outputs and gradients as eager.

One encoder layer: the layers are identical modules run by one loop, so one layer traces every line a deeper
model does (a graph break in a layer breaks in the first one), and compile time grows with the graph."""

import pytest
import torch

from modeling_mlpl import MlplForCTC, MlplModel
from test_modeling import random_batch
from tiny_models import tiny_config


@pytest.fixture(autouse=True)
def fresh_compile_caches():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def test_ctc_model_forward_compiles_into_one_graph_with_the_eager_outputs():
    model = MlplForCTC(tiny_config(max_relative_positions=5, num_hidden_layers=1)).eval()
    features, mask = random_batch([40, 31])
    compiled = torch.compile(model, fullgraph=True)  # fullgraph: any graph break raises
    with torch.no_grad():
        expected = model(features, attention_mask=mask)
        got = compiled(features, attention_mask=mask)
    torch.testing.assert_close(got.logits, expected.logits, atol=1e-5, rtol=1e-5)  # padded frames: certain blank
    torch.testing.assert_close(got.lid_logits, expected.lid_logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got.output_attention_mask, expected.output_attention_mask)


def test_encoder_forward_and_backward_compile_into_one_graph_with_the_eager_gradients():
    """Training mode (dropout 0, layerdrop 0); the CTC loss itself stays outside (its output shape depends
    on the data, so no graph holds it)."""
    torch.manual_seed(0)
    model = MlplModel(tiny_config(max_relative_positions=5, num_hidden_layers=1)).train()
    features, mask = random_batch([40, 31], seed=1)

    def loss_and_gradients(runnable):
        model.zero_grad()
        output = runnable(features, attention_mask=mask)
        valid = output.output_attention_mask[..., None]
        loss = (output.last_hidden_state * valid).square().sum() / valid.sum()
        loss.backward()
        return loss, {name: parameter.grad.clone() for name, parameter in model.named_parameters()}

    expected, expected_gradients = loss_and_gradients(model)
    got, gradients = loss_and_gradients(torch.compile(model, fullgraph=True))
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    for name, gradient in expected_gradients.items():
        torch.testing.assert_close(gradients[name], gradient, atol=1e-5, rtol=1e-4, msg=name)
