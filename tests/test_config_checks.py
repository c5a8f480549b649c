"""Every config value is range-checked when the config is built (issue 13.5): each of these used to pass
and then crash after the first update (ZeroDivisionError), "finish" with 0 updates, or train the full model."""

import pytest

from mlpl.config import ExperimentConfig, load_config


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.eval_every=0", r"train.eval_every=0 is out of range: it must be >= 1"),
        ("train.save_every=0", r"train.save_every=0 is out of range"),
        ("train.log_every=0", r"train.log_every=0 is out of range"),
        ("optim.gradient_accumulation_steps=0", r"optim.gradient_accumulation_steps=0 is out of range"),
        ("train.max_updates=-5", r"train.max_updates=-5 is out of range: it must be >= 1"),
        ("optim.max_grad_norm=-1", r"optim.max_grad_norm=-1.0 is out of range: it must be > 0 \(null turns clipping off\)"),
        ("optim.warmup_updates=-1", r"optim.warmup_updates=-1 is out of range: it must be >= 0"),
        ("train.keep_last=-1", r"train.keep_last=-1 is out of range"),
        ("optim.lr=0", r"optim.lr=0.0 is out of range: it must be > 0"),
        ("optim.betas=[0.9, 1.5]", r"optim.betas=\(0.9, 1.5\) is out of range"),
        ("data.max_batch_seconds=0", r"data.max_batch_seconds=0.0 is out of range"),
        ("data.max_clip_seconds=-1", r"data.max_clip_seconds=-1.0 is out of range"),
        ("model.dropout=1.0", r"model.dropout=1.0 is out of range: it must be in \[0, 1\)"),
        ("model.size=huge", r"model.size='huge' is out of range: it must be one of \['base', 'large'\]"),
        ("slimipl.replace_probability=2", r"slimipl.replace_probability=2.0 is out of range"),
        ("slimipl.cache_size=0", r"slimipl.cache_size=0 is out of range"),
        ("spec_augment.time_mask_max_ratio=1.5", r"spec_augment.time_mask_max_ratio=1.5 is out of range"),
        ("train.mixed_precision=fp8", r"train.mixed_precision='fp8' is out of range"),
        ("model.overrides={hidden_sise: 32}", r"model.overrides: unknown MlplConfig field\(s\) \['hidden_sise'\]; MlplConfig has \['vocab_size', 'hidden_size'"),
        ("model.overrides={vocab_size: 30}", r"\['vocab_size'\] are set from the training data"),
        ("model.overrides={hidden_size: 30}", r"hidden_size=30 is not divisible by num_attention_heads=4"),
    ],
)
def test_a_value_out_of_range_is_refused_when_the_config_is_built(override, message):
    with pytest.raises(ValueError, match=message):
        load_config(None, [override])


def test_the_defaults_and_valid_edges_are_accepted():
    ExperimentConfig()
    config = load_config(None, ["optim.max_grad_norm=null", "train.keep_last=0", "optim.warmup_updates=0", "data.max_clip_seconds=null",
                                "model.overrides={hidden_size: 32, num_attention_heads: 4, num_hidden_layers: 2}"])  # fmt: skip
    assert config.optim.max_grad_norm is None and config.train.keep_last == 0 and config.data.max_clip_seconds is None


def test_a_pseudo_label_language_without_unlabeled_audio_is_refused_before_stage_1(tiny_demo_corpus, tmp_path):
    from mlpl.config import build_dataclass
    from mlpl.recipe import Recipe, RecipeConfig

    values = {
        "output_dir": str(tmp_path / "out"),
        "labeled": {"kind": "common_voice", "path": str(tiny_demo_corpus / "cv")},
        "unlabeled": {"kind": "voxpopuli", "path": str(tiny_demo_corpus / "voxpopuli")},
        "pseudo_label_languages": ["el", "en"],  # the demo has unlabeled audio for bg, el and fi only
    }
    with pytest.raises(ValueError, match=r"pseudo_label_languages: the unlabeled data has no utterance in languages \['en'\]; it has \['bg', 'el', 'fi'\]"):
        Recipe(build_dataclass(RecipeConfig, values))
    assert not (tmp_path / "out").exists()
