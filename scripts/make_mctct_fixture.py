# Copyright 2026 The mlpl authors. Licensed under the Apache License, Version 2.0.
"""Write `tests/fixtures/mctct_tiny/`: a tiny random M-CTC-T model with the reference outputs of
transformers' own M-CTC-T code, for `tests/test_convert_mctct.py`.

transformers 5 deleted M-CTC-T, so this runs in a separate environment with the last 4.x release
(4.57.6 keeps it under `transformers.models.deprecated.mctct`; numpy 2.4.6 came with it):

    python3.11 -m venv /tmp/mctct_env
    /tmp/mctct_env/bin/pip install torch==2.13.0 transformers==4.57.6
    /tmp/mctct_env/bin/python scripts/make_mctct_fixture.py tests/fixtures/mctct_tiny

What it writes (about 0.5 MB):
- `config.json`, `pytorch_model.bin`, `preprocessor_config.json`, tokenizer files: an M-CTC-T folder
  laid out like `speechbrain/m-ctc-t-large` (MCTCTForCTC.save_pretrained with .bin weights,
  MCTCTProcessor with a Wav2Vec2CTCTokenizer whose blank is `<pad>` = 1), but hidden size 32,
  2 layers and a relative-position table of 2 * 8 - 1 rows, so that the longer utterances have
  key/query distances beyond the table.
- `audio.npy` `(3, samples)` zero-padded and `audio_lengths.npy`: three speech-like signals of
  0.6, 0.41 and 0.2 s at 16 kHz (20, 14 and 6 encoder frames).
- `input_features.npy` `(3, frames, 80)` and `attention_mask.npy`: MCTCTFeatureExtractor's output for
  that audio (per-mel-bin normalization, padded with zeros).
- `reference_logits.npy` `(3, encoder frames, vocab)`: MCTCTForCTC in eval mode on each utterance
  ALONE (zero past each utterance's valid frames).
- `reference_logits_batched.npy`: MCTCTForCTC on the padded batch. M-CTC-T's input "LayerNorm" is an
  affine map applied to padded frames too (0 becomes its bias), so a padded utterance's logits depend
  on the padding; the test shows that mlpl's batched output equals the per-utterance reference.
- `per_channel_layer_norms.safetensors` + `reference_logits_per_channel.npy`: the blocks' LayerNorm
  weights with a different value per channel (an M-CTC-T model fine-tuned after conversion) and the
  per-utterance logits with them. In the main weights each LayerNorm vector repeats one value, as a
  checkpoint converted from Flashlight's scalar LayerNorms does.
- `mctct_large_layout.json`: the MCTCTConfig defaults (= speechbrain/m-ctc-t-large) and the name and
  shape of every tensor of the full-size MCTCTForCTC, read off a model built on the meta device.
"""

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch
import transformers
from safetensors.torch import save_file


try:
    from transformers.models.deprecated.mctct import MCTCTConfig, MCTCTFeatureExtractor, MCTCTForCTC, MCTCTProcessor
except ImportError:  # transformers < 4.30 had it at the top level
    from transformers.models.mctct import MCTCTConfig, MCTCTFeatureExtractor, MCTCTForCTC, MCTCTProcessor
from transformers import Wav2Vec2CTCTokenizer

# mlpl's files.py (standard library only) from this checkout: the fixture's environment does not install mlpl.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))
from files import atomic_directory  # noqa: E402


SAMPLING_RATE = 16_000
DURATIONS = (0.6, 0.41, 0.2)  # seconds -> 58, 39, 18 feature frames -> 20, 13, 6 encoder frames
# fairseq-style specials first, as in speechbrain/m-ctc-t-large (pad_token_id = 1 is the CTC blank)
VOCABULARY = ["<s>", "<pad>", "</s>", "<unk>", "|"] + list("abcdefghijklmnopqrstuvwxyz'.,")


def speech_like(seconds, seed):
    """A voiced signal with a gliding pitch, formant-like harmonics, a syllable envelope and noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLING_RATE)) / SAMPLING_RATE
    pitch = 110 + 40 * seed + 30 * np.sin(2 * np.pi * 3 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / SAMPLING_RATE
    harmonics = sum(np.sin(k * phase) / k * (1.5 if k in (3, 7) else 1.0) for k in range(1, 12))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t + seed) ** 2
    signal = 0.05 * envelope * harmonics + 0.003 * rng.standard_normal(len(t))
    return signal.astype(np.float32)


@torch.no_grad()
def randomize(model, generator):
    """Weights with real signal: U(+-1/sqrt(fan_in)) linears, U(-1, 1) position tables, and LayerNorm /
    input-affine values away from 1 and 0 so that a wrong mapping shows in the logits."""
    for name, parameter in model.named_parameters():
        if "distance_embedding" in name:
            parameter.uniform_(-1.0, 1.0, generator=generator)
        elif "LayerNorm" in name:
            # one value per vector: what converting Flashlight's scalar LayerNorms gives
            low, high = (0.6, 1.4) if name.endswith("weight") else (-0.3, 0.3)
            parameter.copy_(torch.empty(1).uniform_(low, high, generator=generator).expand_as(parameter))
        elif name.endswith("singleton_weight"):
            parameter.fill_(1.3)
        elif name.endswith("singleton_bias"):
            parameter.fill_(0.4)
        else:
            fan_in = parameter[0].numel() if parameter.ndim > 1 else model.config.hidden_size
            bound = 1.0 / math.sqrt(fan_in)
            parameter.uniform_(-bound, bound, generator=generator)
    model.ctc_head.weight.mul_(4.0)  # peaked enough that greedy decoding emits characters


@torch.no_grad()
def per_utterance_logits(model, input_features, attention_mask):
    """Each utterance alone (no padding), zero-padded to a (B, frames, vocab) array."""
    lengths = attention_mask.sum(-1)
    outputs = [model(input_features[row : row + 1, : lengths[row]]).logits[0] for row in range(len(lengths))]
    reference = torch.zeros(len(outputs), max(len(out) for out in outputs), outputs[0].shape[-1])
    for row, out in enumerate(outputs):
        reference[row, : len(out)] = out
    return reference.numpy()


def large_layout():
    config = MCTCTConfig()
    with torch.device("meta"):
        model = MCTCTForCTC(config)
    return {
        "transformers_version": transformers.__version__,
        "config": config.to_dict(),
        "state_dict_shapes": {name: list(tensor.shape) for name, tensor in model.state_dict().items()},
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output", type=Path, help="folder to write, e.g. tests/fixtures/mctct_tiny")
    args = parser.parse_args()
    if not transformers.__version__.startswith("4."):
        raise SystemExit(f"needs transformers 4.x with M-CTC-T (found {transformers.__version__}); see the docstring")
    # Built in a folder next to the output and swapped in whole (files.atomic_directory): a failed run
    # leaves the previous fixture as it was.
    with atomic_directory(args.output) as building:
        write_fixture(building)
    output = args.output
    total = sum(path.stat().st_size for path in output.iterdir())
    print(f"wrote {output} ({total / 1e6:.2f} MB): {sorted(path.name for path in output.iterdir())}")


def write_fixture(output: Path) -> None:
    """Every file of the fixture, into the (empty) folder `output`."""
    config = MCTCTConfig(
        vocab_size=len(VOCABULARY),
        hidden_size=32,
        num_hidden_layers=2,
        intermediate_size=64,
        num_attention_heads=4,
        attention_head_dim=8,
        max_position_embeddings=8,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
    )
    generator = torch.Generator().manual_seed(0)
    model = MCTCTForCTC(config).eval()
    randomize(model, generator)
    model.save_pretrained(output, safe_serialization=False)  # pytorch_model.bin, as the released checkpoint

    vocab_file = output / "vocab.json"
    vocab_file.write_text(json.dumps({token: index for index, token in enumerate(VOCABULARY)}), encoding="utf-8")
    tokenizer = Wav2Vec2CTCTokenizer(
        str(vocab_file), bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>", word_delimiter_token="|"
    )
    feature_extractor = MCTCTFeatureExtractor()
    MCTCTProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer).save_pretrained(output)

    waveforms = [speech_like(seconds, seed) for seed, seconds in enumerate(DURATIONS)]
    audio = np.zeros((len(waveforms), max(len(wave) for wave in waveforms)), dtype=np.float32)
    for row, wave in enumerate(waveforms):
        audio[row, : len(wave)] = wave
    np.save(output / "audio.npy", audio)
    np.save(output / "audio_lengths.npy", np.array([len(wave) for wave in waveforms], dtype=np.int64))
    inputs = feature_extractor(
        waveforms, sampling_rate=SAMPLING_RATE, padding=True, return_attention_mask=True, return_tensors="pt"
    )
    input_features, attention_mask = inputs["input_features"], inputs["attention_mask"].long()
    np.save(output / "input_features.npy", input_features.numpy())
    np.save(output / "attention_mask.npy", attention_mask.numpy())

    np.save(output / "reference_logits.npy", per_utterance_logits(model, input_features, attention_mask))
    with torch.no_grad():
        batched = model(input_features, attention_mask=attention_mask).logits
    np.save(output / "reference_logits_batched.npy", batched.numpy())

    layer_norms = {}
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "LayerNorm" in name:
                center = 1.0 if name.endswith("weight") else 0.0
                parameter.copy_(center + 0.4 * (torch.rand(parameter.shape, generator=generator) - 0.5))
                layer_norms[name] = parameter.detach().clone()
    save_file(layer_norms, output / "per_channel_layer_norms.safetensors")
    np.save(output / "reference_logits_per_channel.npy", per_utterance_logits(model, input_features, attention_mask))

    (output / "mctct_large_layout.json").write_text(json.dumps(large_layout(), indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
