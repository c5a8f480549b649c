"""MlplModel / MlplForCTC behaviour on tiny configurations."""

import math

import pytest
import torch
import torch.nn.functional as F

from modeling_mlpl import MlplForCTC, MlplModel, compute_output_lengths, relative_position_scores
from modeling_mlpl.modeling_mlpl import RelativePositionAttention, _attention_keep_masks, dropout, dropout_keep_mask
from tiny_models import tiny_config


def random_batch(lengths, num_mel_bins=80, seed=0):
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(len(lengths), max(lengths), num_mel_bins, generator=generator)
    mask = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    for row, length in enumerate(lengths):
        mask[row, :length] = 1
        features[row, length:] = 0
    return features, mask


def naive_relative_scores(query, table, window):
    """O(T^2) loop: score[i, j] = q_i . E[P - 1 + j - i] when |j - i| <= P - 1, else 0."""
    batch, heads, length, _ = query.shape
    scores = torch.zeros(batch, heads, length, length, dtype=query.dtype)
    for i in range(length):
        for j in range(length):
            if abs(j - i) <= window - 1:
                scores[:, :, i, j] = query[:, :, i] @ table[window - 1 + j - i]
    return scores


@pytest.mark.parametrize("length", [1, 2, 5, 7, 11])
def test_relative_position_term_matches_the_naive_loop(length):
    window = 4  # a table of 7 rows: lengths > 4 exercise distances beyond the table (zeros, not clipped)
    generator = torch.Generator().manual_seed(length)
    query = torch.randn(2, 3, length, 5, generator=generator, dtype=torch.float64)
    table = torch.randn(2 * window - 1, 5, generator=generator, dtype=torch.float64)
    torch.testing.assert_close(relative_position_scores(query, table, window), naive_relative_scores(query, table, window))


@pytest.mark.parametrize("block_rows", [1, 4, 7, 64])
def test_relative_position_term_in_blocks_of_rows_matches_the_naive_loop(block_rows):
    generator = torch.Generator().manual_seed(block_rows)
    query = torch.randn(1, 2, 23, 3, generator=generator, dtype=torch.float64)
    table = torch.randn(2 * 6 - 1, 3, generator=generator, dtype=torch.float64)
    scores = relative_position_scores(query, table, 6, block_rows=block_rows)
    torch.testing.assert_close(scores, naive_relative_scores(query, table, 6))


def test_relative_position_term_is_zero_beyond_the_table_not_the_edge_row():
    query = torch.ones(1, 1, 6, 2, dtype=torch.float64)
    table = torch.arange(1.0, 6.0, dtype=torch.float64)[:, None].repeat(1, 2)  # window 3: rows 1..5
    scores = relative_position_scores(query, table, 3)
    assert scores[0, 0, 0, 2] == 10.0  # distance +2 -> last row (5) . (1, 1)
    assert scores[0, 0, 0, 3] == 0.0  # distance +3 -> beyond the table
    assert scores[0, 0, 5, 0] == 0.0


def test_output_lengths_are_ceil_of_a_third():
    assert [compute_output_lengths(t) for t in (1, 2, 3, 4, 9, 10, 11)] == [1, 1, 1, 2, 3, 4, 4]
    lengths = torch.tensor([1, 3, 4, 100])
    torch.testing.assert_close(compute_output_lengths(lengths), torch.tensor([1, 1, 2, 34]))


def test_forward_shapes_and_output_lengths():
    model = MlplForCTC(tiny_config()).eval()
    features, mask = random_batch([50, 31, 10])
    output = model(features, attention_mask=mask, output_hidden_states=True, output_attentions=True)
    assert output.logits.shape == (3, 17, 24)
    assert output.lid_logits.shape == (3, 3)
    assert output.output_attention_mask.sum(-1).tolist() == [17, 11, 4]
    assert len(output.hidden_states) == 3 and output.hidden_states[0].shape == (3, 17, 32)
    assert len(output.attentions) == 2 and output.attentions[0].shape == (3, 4, 17, 17)
    # attention never goes to padded keys
    assert output.attentions[0][1, :, :, 11:].abs().max() == 0


@pytest.mark.parametrize("pre_layer_norm", [False, True])
def test_padding_invariance_of_logits_and_language_probabilities(pre_layer_norm):
    model = MlplForCTC(tiny_config(max_relative_positions=8, pre_layer_norm=pre_layer_norm)).eval()
    lengths = [61, 40, 23, 7]
    features, mask = random_batch(lengths, seed=3)
    batched = model(features, attention_mask=mask)
    for row, length in enumerate(lengths):
        alone = model(features[row : row + 1, :length])
        frames = alone.logits.shape[1]
        torch.testing.assert_close(batched.logits[row, :frames], alone.logits[0], atol=1e-4, rtol=0)
        torch.testing.assert_close(
            batched.lid_logits[row].softmax(-1), alone.lid_logits[0].softmax(-1), atol=1e-4, rtol=0
        )


def test_eager_and_sdpa_attention_agree():
    config = tiny_config()
    model = MlplForCTC(config).eval()
    features, mask = random_batch([40, 25])
    sdpa = model(features, attention_mask=mask).logits
    model.config._attn_implementation = "eager"
    eager = model(features, attention_mask=mask).logits
    torch.testing.assert_close(sdpa, eager, atol=1e-5, rtol=1e-5)


def test_ctc_loss_reductions():
    torch.manual_seed(0)
    model = MlplForCTC(tiny_config()).eval()
    features, mask = random_batch([60, 45])
    labels = torch.tensor([[3, 4, 5, 6], [7, 8, -100, -100]])
    logits = model(features, attention_mask=mask).logits
    log_probs = F.log_softmax(logits, -1).transpose(0, 1)
    per_utterance = F.ctc_loss(
        log_probs, labels.clamp(min=0), torch.tensor([20, 15]), torch.tensor([4, 2]), reduction="none"
    )
    expected = {
        "sqrt_target_length": (per_utterance[0] / 2 + per_utterance[1] / math.sqrt(2)) / 2,
        "mean": (per_utterance[0] / 4 + per_utterance[1] / 2) / 2,
        "sum": per_utterance.sum(),
    }
    for reduction, value in expected.items():
        model.config.ctc_loss_reduction = reduction
        output = model(features, attention_mask=mask, labels=labels)
        torch.testing.assert_close(output.ctc_loss, value)
        assert output.lid_loss is None and output.loss == output.ctc_loss


def test_total_loss_is_ctc_plus_weighted_lid():
    model = MlplForCTC(tiny_config(lid_loss_weight=0.5)).eval()
    features, mask = random_batch([30, 30])
    labels = torch.tensor([[3, 4], [5, -100]])
    language_ids = torch.tensor([2, 0])
    output = model(features, attention_mask=mask, labels=labels, language_ids=language_ids)
    torch.testing.assert_close(output.lid_loss, F.cross_entropy(output.lid_logits, language_ids))
    torch.testing.assert_close(output.loss, output.ctc_loss + 0.5 * output.lid_loss)
    only_lid = model(features, attention_mask=mask, language_ids=torch.tensor([-100, 1]))
    torch.testing.assert_close(only_lid.loss, 0.5 * F.cross_entropy(only_lid.lid_logits[1:], torch.tensor([1])))


def test_model_without_lid_head():
    model = MlplForCTC(tiny_config(languages=None, num_languages=0)).eval()
    features, mask = random_batch([30])
    output = model(features, attention_mask=mask)
    assert output.lid_logits is None and model.lid_head is None
    with pytest.raises(ValueError, match="no LID head"):
        model(features, attention_mask=mask, language_ids=torch.tensor([0]))
    with pytest.raises(ValueError, match="no LID head"):
        model.detect_language(features)


def test_bad_ids_are_rejected_with_the_value():
    model = MlplForCTC(tiny_config()).eval()
    features, mask = random_batch([30])
    with pytest.raises(ValueError, match="id 99.*vocab_size is 24"):
        model(features, labels=torch.tensor([[99]]))
    with pytest.raises(ValueError, match="language_ids contain 7"):
        model(features, language_ids=torch.tensor([7]))
    with pytest.raises(ValueError, match=r"\(1, 30\).*80"):
        model(features[:, :, 0])


def test_detect_language_returns_codes_with_probabilities():
    model = MlplForCTC(tiny_config()).eval()
    with torch.no_grad():
        model.lid_head.bias.copy_(torch.tensor([0.0, 5.0, 1.0]))
    features, mask = random_batch([30, 20])
    result = model.detect_language(features, attention_mask=mask, top_k=2)
    assert [row[0]["language"] for row in result] == ["el", "el"]
    assert all(row[0]["score"] >= row[1]["score"] for row in result)
    full = model.detect_language(features, attention_mask=mask, top_k=3)
    assert all(abs(sum(item["score"] for item in row) - 1) < 1e-5 for row in full)


def test_layerdrop_skips_the_branches_but_keeps_the_layer_norms():
    torch.manual_seed(0)
    model = MlplModel(tiny_config(num_hidden_layers=1, layerdrop=0.999)).train()
    features, _ = random_batch([20])
    with torch.no_grad():
        for layer in model.layers:
            layer.attn_layer_norm.weight.fill_(2.0)
            layer.final_layer_norm.bias.fill_(0.5)
        output = model(features).last_hidden_state
        front = model.front_end(model.input_layer_norm(features, torch.ones(1, 20, dtype=torch.bool)))
        layer = model.layers[0]
        expected = layer.final_layer_norm(layer.attn_layer_norm(front))
    torch.testing.assert_close(output, expected)


def test_dropout_is_off_in_eval_and_set_regularization_changes_it():
    model = MlplForCTC(tiny_config(dropout=0.5, layerdrop=0.5))
    features, mask = random_batch([40])
    model.eval()
    torch.testing.assert_close(model(features).logits, model(features).logits)
    model.set_regularization(dropout=0.1, layerdrop=0.1)
    assert (model.config.dropout, model.config.layerdrop) == (0.1, 0.1)
    assert model.mlpl.config.dropout == 0.1  # one shared config: every module sees the change
    with pytest.raises(ValueError, match="1.2"):
        model.set_regularization(dropout=1.2)
    model.train()
    assert not torch.equal(model(features).logits, model(features).logits)


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    model = MlplForCTC(tiny_config())
    features, mask = random_batch([40, 33])
    labels = torch.tensor([[3, 4, 5], [6, 7, -100]])

    def gradients():
        model.zero_grad()
        model(features, attention_mask=mask, labels=labels, language_ids=torch.tensor([0, 1])).loss.backward()
        return {name: p.grad.clone() for name, p in model.named_parameters()}

    model.train()
    plain = gradients()
    getattr(model, "activation_checkpointing_enable", model.gradient_checkpointing_enable)()
    assert model.mlpl.layers[0].gradient_checkpointing
    checkpointed = gradients()
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], msg=name)


def test_pre_layer_norm_blocks_follow_the_pre_ln_equations_and_end_with_a_layer_norm(tmp_path):
    model = MlplModel(tiny_config(num_hidden_layers=1, pre_layer_norm=True)).eval()
    features, mask = random_batch([20])
    with torch.no_grad():
        layer = model.layers[0]
        layer.attn_layer_norm.weight.fill_(2.0)
        layer.final_layer_norm.bias.fill_(0.5)
        model.final_layer_norm.weight.fill_(3.0)
        output = model(features, attention_mask=mask, output_hidden_states=True)
        x = model.front_end(model.input_layer_norm(features, mask.bool()))
        h = x + layer.self_attn(layer.attn_layer_norm(x))[0]
        y = h + layer.feed_forward(layer.final_layer_norm(h))
        expected = model.final_layer_norm(y)
    torch.testing.assert_close(output.last_hidden_state, expected)
    torch.testing.assert_close(output.hidden_states[-1], expected)
    # the option travels with the checkpoint; post-LN models have no final LayerNorm
    model.save_pretrained(tmp_path)
    reloaded = MlplModel.from_pretrained(tmp_path).eval()
    assert reloaded.config.pre_layer_norm and reloaded.final_layer_norm is not None
    torch.testing.assert_close(reloaded(features, attention_mask=mask).last_hidden_state, expected)
    assert MlplModel(tiny_config()).final_layer_norm is None


def reference_attention(query, key, value, table, window, padding_bias, kept=None):
    """Softmax attention over the whole (T, T) bias: relative term (differentiable) plus the key mask; `kept`:
    the dropout mask times its scale, multiplied into the probabilities."""
    scores = query @ key.transpose(-1, -2) + relative_position_scores(query, table, window)
    if padding_bias is not None:
        scores = scores + padding_bias
    probabilities = torch.softmax(scores, dim=-1)
    return (probabilities if kept is None else probabilities * kept) @ value


@pytest.mark.parametrize(
    ("length", "window", "block_rows"), [(1, 4, 3), (9, 4, 3), (9, 20, 4), (13, 5, 13), (13, 5, 64), (75, 20, 64)]
)  # 75 rows in blocks of 64: products of RELATIVE_BLOCK_ROWS = 32 rows inside a block
def test_blocked_relative_attention_matches_the_whole_bias_with_gradients(length, window, block_rows):
    """RelativePositionAttention (fused CPU forward, backward recomputed in query blocks) == attention over
    the whole bias: outputs and the gradients of q, k, v and the table, with padded keys."""
    generator = torch.Generator().manual_seed(length * 100 + window)
    q, k, v = (torch.randn(2, 3, length, 6, generator=generator, dtype=torch.float64, requires_grad=True) for _ in range(3))
    table = torch.randn(2 * window - 1, 6, generator=generator, dtype=torch.float64, requires_grad=True)
    padding_bias = torch.zeros(2, 1, 1, length, dtype=torch.float64)
    padding_bias[1, ..., max(1, length - 3) :] = torch.finfo(torch.float64).min
    grad_output = torch.randn(2, 3, length, 6, generator=generator, dtype=torch.float64)

    def run(attention):
        output = attention()
        gradients = torch.autograd.grad(output, (q, k, v, table), grad_output)
        return output, gradients

    blocked = run(lambda: RelativePositionAttention.apply(q, k, v, table, padding_bias, window, block_rows))
    expected = run(lambda: reference_attention(q, k, v, table, window, padding_bias))
    torch.testing.assert_close(blocked[0], expected[0])
    for name, got, want in zip("qkvE", blocked[1], expected[1]):
        torch.testing.assert_close(got, want, msg=name)


@pytest.mark.parametrize(("length", "window", "block_rows"), [(1, 4, 3), (9, 4, 3), (13, 5, 13), (75, 20, 64), (130, 20, 64)])
def test_blocked_attention_with_dropout_matches_the_whole_bias_with_the_same_masks(length, window, block_rows):
    """With attention dropout RelativePositionAttention runs its own blocked forward; forward and backward
    draw the same masks from the seed: outputs and q, k, v, table gradients equal attention over the whole
    bias with those masks (their blocks concatenated), and the masks really drop (~p of them)."""
    generator = torch.Generator().manual_seed(length)
    q, k, v = (torch.randn(2, 3, length, 6, generator=generator, dtype=torch.float64, requires_grad=True) for _ in range(3))
    table = torch.randn(2 * window - 1, 6, generator=generator, dtype=torch.float64, requires_grad=True)
    padding_bias = torch.zeros(2, 1, 1, length, dtype=torch.float64)
    padding_bias[1, ..., max(1, length - 3) :] = torch.finfo(torch.float64).min
    grad_output = torch.randn(2, 3, length, 6, generator=generator, dtype=torch.float64)
    rate, seed = 0.3, 1234
    blocks = list(_attention_keep_masks(seed, 2 * 3, length, block_rows, rate))
    kept = torch.cat([keep.double() * scale for keep, scale in blocks], dim=1).view(2, 3, length, length)
    if length > 8:
        assert 0.2 < 1 - float((kept > 0).double().mean()) < 0.4

    def run(attention):
        output = attention()
        return output, torch.autograd.grad(output, (q, k, v, table), grad_output)

    blocked = run(lambda: RelativePositionAttention.apply(q, k, v, table, padding_bias, window, block_rows, rate, seed))
    expected = run(lambda: reference_attention(q, k, v, table, window, padding_bias, kept))
    torch.testing.assert_close(blocked[0], expected[0])
    for name, got, want in zip("qkvE", blocked[1], expected[1]):
        torch.testing.assert_close(got, want, msg=name)
    other_seed = RelativePositionAttention.apply(q, k, v, table, padding_bias, window, block_rows, rate, seed + 1)
    assert length == 1 or not torch.allclose(other_seed, blocked[0])


def test_dropout_masks_drop_at_the_rate_keep_the_mean_and_repeat_from_the_generator_state():
    keep, scale = dropout_keep_mask((1000, 1000), 0.1, torch.Generator().manual_seed(3))
    assert abs(1 - float(keep.double().mean()) - 0.1) < 0.002 and scale == pytest.approx(1 / 0.9, abs=1e-4)
    again, _ = dropout_keep_mask((1000, 1000), 0.1, torch.Generator().manual_seed(3))
    assert torch.equal(keep, again)
    assert not torch.equal(keep, dropout_keep_mask((1000, 1000), 0.1, torch.Generator().manual_seed(4))[0])
    assert float(dropout_keep_mask((100_003,), 0.5)[0].double().mean()) == pytest.approx(0.5, abs=0.01)  # odd size

    hidden = torch.rand(400, 500, requires_grad=True)
    dropped = dropout(hidden, 0.25, training=True)
    zeroed = dropped == 0
    assert 0.23 < float(zeroed.double().mean()) < 0.27
    torch.testing.assert_close(dropped[~zeroed], hidden.detach()[~zeroed] / 0.75)
    dropped.sum().backward()
    torch.testing.assert_close(hidden.grad, (~zeroed).float() / 0.75)
    assert dropout(hidden, 0.25, training=False) is hidden and dropout(hidden, 0.0, training=True) is hidden


def test_short_batches_attend_over_the_whole_bias_and_long_ones_take_the_blocked_path(monkeypatch):
    """The CPU route by size (modeling_mlpl.WHOLE_BIAS_MAX_SCORES): the blocked autograd function only when
    B * heads * T^2 is over the limit; both routes give the same output."""
    import modeling_mlpl.modeling_mlpl as modeling

    calls = []
    original = RelativePositionAttention.apply
    monkeypatch.setattr(RelativePositionAttention, "apply", lambda *args: calls.append(1) or original(*args))
    model = MlplModel(tiny_config(max_relative_positions=5)).eval()
    features, mask = random_batch([60, 41], seed=2)
    whole = model(features, attention_mask=mask).last_hidden_state
    assert not calls
    monkeypatch.setattr(modeling, "WHOLE_BIAS_MAX_SCORES", 2 * model.config.num_attention_heads * 20**2 - 1)
    blocked = model(features, attention_mask=mask).last_hidden_state
    assert len(calls) == model.config.num_hidden_layers
    torch.testing.assert_close(blocked, whole)


def test_model_gradients_are_the_same_on_the_blocked_and_the_whole_bias_paths(blocked_attention):
    """RelativePositionAttention (forced by the fixture for this short batch) and the eager path, which builds the
    whole bias: the same loss and parameter gradients (no dropout, table shorter than the sequence, padded batch)."""
    torch.manual_seed(0)
    model = MlplForCTC(tiny_config(max_relative_positions=5)).train()
    features, mask = random_batch([60, 41], seed=2)
    labels = torch.tensor([[3, 4, 5], [6, 7, -100]])

    def loss_and_gradients():
        model.zero_grad()
        loss = model(features, attention_mask=mask, labels=labels, language_ids=torch.tensor([0, 1])).loss
        loss.backward()
        return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters()}

    blocked_loss, blocked = loss_and_gradients()
    model.config._attn_implementation = "eager"
    whole_loss, whole = loss_and_gradients()
    torch.testing.assert_close(blocked_loss, whole_loss)
    for name in whole:
        torch.testing.assert_close(blocked[name], whole[name], atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.parametrize("route", ["blocked", "short"])
def test_training_with_attention_dropout_repeats_under_the_same_seed(route, request):
    """Dropout masks come from torch's global generator on both CPU routes: the same seed gives the same loss
    and gradients, another seed another loss."""
    if route == "blocked":
        request.getfixturevalue("blocked_attention")
    model = MlplForCTC(tiny_config(max_relative_positions=5, dropout=0.2)).train()
    features, mask = random_batch([60, 41], seed=2)
    labels = torch.tensor([[3, 4, 5], [6, 7, -100]])

    def loss_and_gradients(seed):
        torch.manual_seed(seed)
        model.zero_grad()
        loss = model(features, attention_mask=mask, labels=labels, language_ids=torch.tensor([0, 1])).loss
        loss.backward()
        return loss.detach(), torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])

    first, again, other = loss_and_gradients(5), loss_and_gradients(5), loss_and_gradients(6)
    assert torch.isfinite(first[0]) and torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[0], other[0])
