"""Tiny mlpl configurations for tests (STYLE: hidden 32-64, 2 layers, dropout 0)."""

from modeling_mlpl import MlplConfig


def tiny_config(**overrides):
    values = dict(
        vocab_size=24,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_relative_positions=12,
        dropout=0.0,
        layerdrop=0.0,
        languages=["en", "el", "fi"],
    )
    values.update(overrides)
    return MlplConfig(**values)
