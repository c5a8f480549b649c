"""MlplConfig: the paper's sizes to the parameter, and bad values rejected with the value named."""

import pytest
import torch

from modeling_mlpl import MlplConfig, MlplForCTC


def count_parameters_on_meta(config):
    with torch.device("meta"):
        model = MlplForCTC(config)
    return sum(parameter.numel() for parameter in model.parameters())


def test_base_model_has_the_papers_parameter_count():
    assert count_parameters_on_meta(MlplConfig()) == 274_625_103


def test_large_model_has_the_papers_parameter_count():
    assert count_parameters_on_meta(MlplConfig(hidden_size=1536, intermediate_size=6144)) == 1_058_849_871


def test_defaults_are_the_papers_base_model():
    config = MlplConfig()
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (768, 36, 4)
    assert (config.intermediate_size, config.conv_kernel_size, config.conv_stride) == (3072, 7, 3)
    assert (config.max_relative_positions, config.vocab_size, config.num_languages) == (920, 8065, 60)
    assert (config.dropout, config.layerdrop, config.lid_loss_weight) == (0.3, 0.3, 1.0)
    assert config.head_dim == 192
    assert config.inputs_to_logits_ratio == 480


def test_languages_fix_the_number_of_lid_classes_and_round_trip(tmp_path):
    config = MlplConfig(languages=["el", "fi", "en"], num_languages=60)
    assert config.num_languages == 3
    config.save_pretrained(tmp_path)
    reloaded = MlplConfig.from_pretrained(tmp_path)
    assert reloaded.languages == ["el", "fi", "en"]
    assert reloaded.num_languages == 3
    assert reloaded.language_codes == ["el", "fi", "en"]
    assert MlplConfig(num_languages=2).language_codes == ["lid_0", "lid_1"]


@pytest.mark.parametrize(
    "kwargs, named",
    [
        ({"hidden_size": 770}, "770"),
        ({"conv_kernel_size": 6}, "6"),
        ({"dropout": 1.5}, "1.5"),
        ({"layerdrop": -0.1}, "-0.1"),
        ({"vocab_size": 0}, "vocab_size=0"),
        ({"num_hidden_layers": 2.5}, "2.5"),
        ({"ctc_loss_reduction": "median"}, "median"),
        ({"lid_loss_weight": -1}, "-1"),
        ({"languages": ["el", "el"]}, "el"),
        ({"pad_token_id": 9000}, "9000"),
    ],
)
def test_bad_values_raise_value_error_naming_the_value(kwargs, named):
    with pytest.raises(ValueError, match=named):
        MlplConfig(**kwargs)
