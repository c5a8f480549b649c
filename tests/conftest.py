"""Shared fixtures. Nothing may come from the network: the Hub is switched off for every test."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before datasets/transformers are imported by any test module

import pytest


@pytest.fixture(scope="session")
def tiny_demo_corpus(tmp_path_factory):
    """The tiny demo corpus (7 languages, Common Voice + VoxPopuli layouts), built once per session (~2 s)."""
    from mlpl.demo_corpus import make_demo_corpus

    return make_demo_corpus(tmp_path_factory.mktemp("demo") / "tiny", size="tiny", seed=0)


@pytest.fixture(scope="session")
def hall_demo_corpus(tmp_path_factory):
    """The tiny demo corpus with its VoxPopuli part through the plenary hall and the transcribed voxpopuli_asr/
    sets (voxpopuli_domain="plenary_hall", docs/design.md §11), built once per session."""
    from mlpl.demo_corpus import make_demo_corpus

    return make_demo_corpus(tmp_path_factory.mktemp("demo") / "tiny_hall", size="tiny", seed=0, voxpopuli_domain="plenary_hall")


@pytest.fixture
def blocked_attention(monkeypatch):
    """Every CPU batch takes RelativePositionAttention (the blocked path), however short: tiny test batches
    would otherwise attend over the whole bias (modeling_mlpl.WHOLE_BIAS_MAX_SCORES)."""
    import modeling_mlpl.modeling_mlpl as modeling

    monkeypatch.setattr(modeling, "WHOLE_BIAS_MAX_SCORES", 0)
