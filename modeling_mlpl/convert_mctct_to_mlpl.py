# Copyright 2026 The mlpl authors. Licensed under the Apache License, Version 2.0.
"""Convert a transformers M-CTC-T checkpoint (model type "mctct", e.g. `speechbrain/m-ctc-t-large`, the
paper's released large model) into an mlpl folder that loads with `MlplForCTC`, `AutoModelForCTC` and the
ASR pipeline:

    mlpl-convert-mctct SRC DST
    python -m modeling_mlpl.convert_mctct_to_mlpl SRC DST

SRC is a local M-CTC-T folder (config.json, pytorch_model.bin or model.safetensors, possibly sharded,
vocab.json + tokenizer files, preprocessor_config.json). transformers 5 deleted M-CTC-T, so nothing here
needs it: config.json and the tensors are read directly.

M-CTC-T is transformers' port of the same Flashlight network (docs/design.md §2). What the conversion bridges:

- Input norm. M-CTC-T's `MCTCTLayerNorm` on the features is only `x * w + b` (no statistics); Flashlight's,
  and ours, normalizes the utterance's whole (T, 80) plane first. Features that are already normalized per
  utterance (either extractor's output) have mean 0 and variance 1 over that plane, so ours equals
  M-CTC-T's up to the factor 1 / sqrt(1 + eps) = 1 - 5e-6. The scalar w and b are copied.
- Feature normalization. M-CTC-T's feature extractor normalized each mel bin separately; the network was
  trained in Flashlight with ONE mean and std per utterance (docs/design.md §1). The mel part is identical (same
  Flashlight mfsc), so the converter writes an `MlplFeatureExtractor` with the training-time rule and the
  window, hop, pre-emphasis and floor read from preprocessor_config.json.
- Padding. M-CTC-T's input affine also maps padded frames (zeros) to b, which the convolution then reads
  at the end of every shorter utterance of a batch: its batched logits depend on the padding. Ours keeps
  padded frames at zero, so a batch gives each utterance's unbatched result (= M-CTC-T on that utterance
  alone). The convolution pads kernel // 2 zeros on both sides in both (output length ceil(T / 3)).
- Block LayerNorms. M-CTC-T uses `nn.LayerNorm(hidden)` (a weight and bias per channel); Flashlight's have
  one scalar each, which the released checkpoint holds as vectors repeating one value. Constant vectors
  become our scalars exactly; if any vector varies (a model fine-tuned after conversion), the folder is
  written with `layer_norm_per_channel=True`, which keeps every value.
- Same in both, copied as they are: post-LN blocks (`LN(x + Attn(x))`, `LN(h + MLP(h))`); q, k, v, out,
  MLP linears without bias; q scaled by 1/sqrt(head_dim) before both q.k and q.E; one Shaw keys-only
  relative-position table of 2P - 1 rows per layer, shared by the heads, with 0 (not the edge row) for
  |j - i| > P - 1; key padding mask; the front end Conv1d(80, 2H, 7, stride 3, bias) + GLU over channels;
  the CTC head Linear(H, vocab) with bias, whose blank is config.pad_token_id.
- Training-only differences (no effect on inference): M-CTC-T's layerdrop skips a whole block, Flashlight's
  (ours) zeroes its branches and still applies the LayerNorms; M-CTC-T drops out the residual branches
  (`hidden_dropout_prob`), ours drops out inside the MLP; the CTC loss reduction is the paper's
  (sqrt of the target length) instead of M-CTC-T's "sum".
- No LID head: M-CTC-T was released without it, so the folder has `num_languages=0` (never random weights).
"""

import argparse
import json
import math
import pickle
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from .configuration_mlpl import MlplConfig
from .feature_extraction_mlpl import INT16_SCALE, MlplFeatureExtractor
from .modeling_mlpl import MlplForCTC
from .processing_mlpl import MlplProcessor


# MCTCTConfig's defaults in transformers 4.x (read in 4.57.6), which are speechbrain/m-ctc-t-large's values.
# Used for keys a config.json leaves out.
MCTCT_CONFIG_DEFAULTS = {
    "vocab_size": 8065,
    "hidden_size": 1536,
    "num_hidden_layers": 36,
    "intermediate_size": 6144,
    "num_attention_heads": 4,
    "attention_head_dim": 384,
    "max_position_embeddings": 920,
    "layer_norm_eps": 1e-5,
    "layerdrop": 0.3,
    "hidden_act": "relu",
    "hidden_dropout_prob": 0.3,
    "pad_token_id": 1,
    "conv_glu_dim": 1,
    "num_conv_layers": 1,
    "conv_kernel": [7],
    "conv_stride": [3],
    "input_feat_per_channel": 80,
    "input_channels": 1,
}

# MCTCTFeatureExtractor's defaults (window and hop in milliseconds).
MCTCT_FEATURE_DEFAULTS = {
    "feature_size": 80,
    "sampling_rate": 16000,
    "hop_length": 10,
    "win_length": 25,
    "win_function": "hamming_window",
    "frame_signal_scale": 32768.0,
    "preemphasis_coeff": 0.97,
    "mel_floor": 1.0,
    "normalize_means": True,
    "normalize_vars": True,
}

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # safetensors first, as transformers prefers it


class MctctConversionError(ValueError):
    """The M-CTC-T folder cannot be converted exactly; the message names the file, the value and the fix."""


# ----------------------------------------------------------------------------------------------- config


def read_mctct_config(source):
    """config.json of an M-CTC-T folder as a dict, with MCTCTConfig's defaults for keys it leaves out."""
    path = Path(source) / "config.json"
    if not path.is_file():
        raise MctctConversionError(f"{path} does not exist; SRC must be an M-CTC-T model folder with its config.json")
    values = json.loads(path.read_text(encoding="utf-8"))
    if values.get("model_type") != "mctct":
        raise MctctConversionError(
            f"{path} has model_type={values.get('model_type')!r}, not 'mctct'; this converter reads transformers' "
            "M-CTC-T checkpoints only (e.g. speechbrain/m-ctc-t-large)"
        )
    return {**MCTCT_CONFIG_DEFAULTS, **values}


def mlpl_config_from_mctct(mctct, config_path="config.json", layer_norm_per_channel=False):
    """The `MlplConfig` of the same network, or `MctctConversionError` when M-CTC-T's config describes
    something MlplForCTC cannot compute exactly (the message names the key, its value and why)."""

    def refuse(key, expected):
        raise MctctConversionError(
            f"{config_path}: {key}={mctct.get(key)!r} cannot be represented by MlplForCTC, which implements the "
            f"paper's network with {expected}; only M-CTC-T models of that architecture (such as "
            "speechbrain/m-ctc-t-large) convert exactly"
        )

    if mctct["hidden_act"] != "relu":
        refuse("hidden_act", "a ReLU MLP")
    if mctct["num_conv_layers"] != 1 or len(mctct["conv_kernel"]) != 1 or len(mctct["conv_stride"]) != 1:
        refuse("num_conv_layers", "one convolution in the front end (conv_kernel and conv_stride of length 1)")
    if mctct["conv_glu_dim"] != 1:
        refuse("conv_glu_dim", "the GLU over the convolution's channels (conv_glu_dim=1)")
    if mctct["conv_kernel"][0] % 2 != 1:
        refuse("conv_kernel", "an odd kernel padded by kernel // 2 frames on both sides")
    hidden, heads = mctct["hidden_size"], mctct["num_attention_heads"]
    if mctct["attention_head_dim"] * heads != hidden:
        refuse("attention_head_dim", f"head_dim = hidden_size / num_attention_heads = {hidden} / {heads}")
    try:
        return MlplConfig(
            vocab_size=mctct["vocab_size"],
            hidden_size=hidden,
            num_hidden_layers=mctct["num_hidden_layers"],
            num_attention_heads=heads,
            intermediate_size=mctct["intermediate_size"],
            num_mel_bins=mctct["input_feat_per_channel"] * mctct["input_channels"],
            conv_kernel_size=mctct["conv_kernel"][0],
            conv_stride=mctct["conv_stride"][0],
            max_relative_positions=mctct["max_position_embeddings"],
            # M-CTC-T has three dropout rates (0.3 each in the release); ours is one, used in training only
            dropout=mctct["hidden_dropout_prob"],
            layerdrop=mctct["layerdrop"],
            layer_norm_eps=mctct["layer_norm_eps"],
            layer_norm_per_channel=layer_norm_per_channel,
            num_languages=0,  # released without its LID head
            pad_token_id=mctct["pad_token_id"],
        )
    except ValueError as error:  # MlplConfig names the bad value
        raise MctctConversionError(f"{config_path}: {error}") from error


# ---------------------------------------------------------------------------------------------- weights


def find_weight_files(source):
    """`{file name: path}` of the checkpoint's weight files (one file, or the shards of an index)."""
    source = Path(source)
    for name in WEIGHT_FILES:
        if (source / name).is_file():
            return {name: source / name}
        index = source / f"{name}.index.json"
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
            missing = [shard for shard in shards if not (source / shard).is_file()]
            if missing:
                raise MctctConversionError(f"{index} lists shards that are not in {source}: {missing}; download them too")
            return {shard: source / shard for shard in shards}
    raise MctctConversionError(
        f"{source} has no weights: expected one of {', '.join(WEIGHT_FILES)} (or a sharded *.index.json); "
        "download the whole model folder"
    )


def load_mctct_state_dict(source):
    """All tensors of the checkpoint and the file each came from: `(state_dict, {name: file name})`.

    `.bin` files are read with `torch.load(weights_only=True)` (tensors only, no code) and memory-mapped.
    """
    state_dict, origin = {}, {}
    for name, path in find_weight_files(source).items():
        if path.suffix == ".safetensors":
            tensors = load_file(path)
        else:
            try:
                try:
                    tensors = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
                except RuntimeError:  # mmap needs the zip format (torch >= 1.6); older pickles load into memory
                    tensors = torch.load(path, map_location="cpu", weights_only=True)
            except pickle.UnpicklingError as error:
                reason = next((line for line in str(error).splitlines() if "GLOBAL" in line), "not tensors only")
                raise MctctConversionError(
                    f"{path}: refusing to load these weights: the file holds objects other than tensors ({reason.strip()}); "
                    "a genuine M-CTC-T checkpoint never does. Download the folder again from its source."
                ) from None
        for key, tensor in tensors.items():
            state_dict[key] = tensor
            origin[key] = name
    return state_dict, origin


def mctct_to_mlpl_names(num_hidden_layers):
    """`{M-CTC-T tensor name: mlpl tensor name}` for every tensor of an `MCTCTForCTC` state dict."""
    names = {
        "mctct.encoder.layer_norm.singleton_weight": "mlpl.input_layer_norm.weight",
        "mctct.encoder.layer_norm.singleton_bias": "mlpl.input_layer_norm.bias",
        "mctct.encoder.conv.conv_layers.0.weight": "mlpl.front_end.conv.weight",
        "mctct.encoder.conv.conv_layers.0.bias": "mlpl.front_end.conv.bias",
        "ctc_head.weight": "ctc_head.weight",
        "ctc_head.bias": "ctc_head.bias",
    }
    per_layer = {
        "attention.self.query.weight": "self_attn.q_proj.weight",
        "attention.self.key.weight": "self_attn.k_proj.weight",
        "attention.self.value.weight": "self_attn.v_proj.weight",
        "attention.self.distance_embedding.weight": "self_attn.relative_position_embeddings",
        "attention.output.dense.weight": "self_attn.out_proj.weight",
        "attention.output.LayerNorm.weight": "attn_layer_norm.weight",
        "attention.output.LayerNorm.bias": "attn_layer_norm.bias",
        "intermediate.dense.weight": "feed_forward.fc1.weight",
        "output.dense.weight": "feed_forward.fc2.weight",
        "output.LayerNorm.weight": "final_layer_norm.weight",
        "output.LayerNorm.bias": "final_layer_norm.bias",
    }
    for index in range(num_hidden_layers):
        for mctct_name, mlpl_name in per_layer.items():
            names[f"mctct.encoder.layers.{index}.{mctct_name}"] = f"mlpl.layers.{index}.{mlpl_name}"
    return names


def is_block_layer_norm(mctct_name):
    return ".LayerNorm." in mctct_name


def layer_norms_are_scalar(state_dict):
    """True when every block LayerNorm vector repeats one value (Flashlight's scalar, broadcast)."""
    return all(
        bool((tensor == tensor.reshape(-1)[0]).all()) for name, tensor in state_dict.items() if is_block_layer_norm(name)
    )


def convert_state_dict(state_dict, mctct_config, origin=None, config_path="config.json"):
    """Map an M-CTC-T state dict onto MlplForCTC: `(MlplConfig, mlpl state dict)`.

    Every tensor is accounted for: a tensor the mapping does not know, one it expects but the files lack,
    and a shape that differs from the one MlplForCTC builds from config.json all raise
    `MctctConversionError` naming the tensor and its file.
    """
    origin = origin or {}
    names = mctct_to_mlpl_names(mctct_config["num_hidden_layers"])
    unexpected = sorted(set(state_dict) - set(names))
    if unexpected:
        listed = ", ".join(f"{key!r} (in {origin.get(key, '?')})" for key in unexpected[:10])
        raise MctctConversionError(
            f"{len(unexpected)} tensor(s) that an MCTCTForCTC with num_hidden_layers={mctct_config['num_hidden_layers']} "
            f"does not have: {listed}. The weights and {config_path} disagree, or this is not an MCTCTForCTC "
            "checkpoint (a LID head or other extra layers cannot be converted); use the folder as released"
        )
    missing = sorted(set(names) - set(state_dict))
    if missing:
        files = ", ".join(sorted(set(origin.values()))) or "the weight files"
        raise MctctConversionError(
            f"{files} lack {len(missing)} tensor(s) of an MCTCTForCTC: {missing[:10]}; the download is incomplete "
            f"or {config_path} describes a larger model than the weights"
        )

    per_channel = not layer_norms_are_scalar(state_dict)
    config = mlpl_config_from_mctct(mctct_config, config_path, layer_norm_per_channel=per_channel)
    with torch.device("meta"):
        expected_shapes = {key: tensor.shape for key, tensor in MlplForCTC(config).state_dict().items()}
    if set(expected_shapes) != set(names.values()):  # the mapping and the model must cover each other
        raise MctctConversionError(
            "the converter's name mapping and MlplForCTC disagree: "
            f"{sorted(set(expected_shapes) ^ set(names.values()))}; this is a bug in mlpl, please report it"
        )

    converted = {}
    for mctct_name, mlpl_name in names.items():
        tensor = state_dict[mctct_name]
        # M-CTC-T's block LayerNorms are nn.LayerNorm vectors whatever `layer_norm_per_channel` becomes
        expected = (config.hidden_size,) if is_block_layer_norm(mctct_name) else tuple(expected_shapes[mlpl_name])
        if tuple(tensor.shape) != expected:
            raise MctctConversionError(
                f"tensor {mctct_name!r} in {origin.get(mctct_name, '?')} has shape {tuple(tensor.shape)}, but "
                f"{config_path} implies {expected} (for {mlpl_name!r}); the weights and {config_path} come from "
                "different models: use the config.json released with these weights"
            )
        if is_block_layer_norm(mctct_name) and not per_channel:
            tensor = tensor[:1].clone()  # every entry equals this one (layer_norms_are_scalar)
        converted[mlpl_name] = tensor
    return config, converted


# --------------------------------------------------------------------------------- processor (features + text)


def feature_extractor_from_mctct(source):
    """`MlplFeatureExtractor` with preprocessor_config.json's window, hop, pre-emphasis and floor, and the
    training-time normalization (one scalar mean / std per utterance, docs/design.md §1; M-CTC-T's was per mel bin)."""
    path = Path(source) / "preprocessor_config.json"
    values = dict(MCTCT_FEATURE_DEFAULTS)
    if path.is_file():
        values.update(json.loads(path.read_text(encoding="utf-8")))
    if values["win_function"] != "hamming_window":
        raise MctctConversionError(
            f"{path}: win_function={values['win_function']!r}; MlplFeatureExtractor computes Flashlight's mfsc "
            "with a Hamming window only"
        )
    if float(values["frame_signal_scale"]) != INT16_SCALE:
        raise MctctConversionError(
            f"{path}: frame_signal_scale={values['frame_signal_scale']}; MlplFeatureExtractor scales samples by "
            f"{INT16_SCALE} as Flashlight does"
        )
    if bool(values["normalize_means"]) != bool(values["normalize_vars"]):
        raise MctctConversionError(
            f"{path}: normalize_means={values['normalize_means']} but normalize_vars={values['normalize_vars']}; "
            "MlplFeatureExtractor normalizes mean and variance together (do_normalize)"
        )
    rate = int(values["sampling_rate"])
    win_length = int(round(values["win_length"] * rate / 1000))  # milliseconds -> samples
    return MlplFeatureExtractor(
        feature_size=int(values["feature_size"]),
        sampling_rate=rate,
        win_length=win_length,
        hop_length=int(round(values["hop_length"] * rate / 1000)),
        n_fft=2 ** math.ceil(math.log2(win_length)),  # MCTCTFeatureExtractor: next power of two (512 for 400)
        preemphasis=float(values["preemphasis_coeff"]),
        mel_floor=float(values["mel_floor"]),
        do_normalize=bool(values["normalize_means"]),
    )


def tokenizer_from_mctct(source, config):
    """The released Wav2Vec2CTCTokenizer as it is (vocabulary, special tokens, delimiter, casing), checked
    against the model: its pad token must be the CTC blank and every id must have a logit."""
    from transformers import Wav2Vec2CTCTokenizer

    source = Path(source)
    if not (source / "vocab.json").is_file():
        raise MctctConversionError(
            f"{source / 'vocab.json'} does not exist; the M-CTC-T folder needs its tokenizer files "
            "(vocab.json, tokenizer_config.json, special_tokens_map.json)"
        )
    tokenizer = Wav2Vec2CTCTokenizer.from_pretrained(str(source))
    if tokenizer.pad_token_id != config.pad_token_id:
        raise MctctConversionError(
            f"the tokenizer in {source} has pad token {tokenizer.pad_token!r} = id {tokenizer.pad_token_id}, but "
            f"config.json has pad_token_id={config.pad_token_id} (the CTC blank); decoding would drop the wrong "
            "symbol. Use the tokenizer files released with this model"
        )
    if len(tokenizer) > config.vocab_size:
        raise MctctConversionError(
            f"the tokenizer in {source} has {len(tokenizer)} tokens, but config.json has vocab_size="
            f"{config.vocab_size}; the tokenizer files belong to another model"
        )
    return tokenizer


# ------------------------------------------------------------------------------------------------- driver


def convert_mctct_checkpoint(source, destination):
    """Convert the M-CTC-T folder `source` into the mlpl folder `destination` (which must be empty or new).

    Writes config.json (with `auto_map`), model.safetensors, the feature extractor, the tokenizer and the
    modeling files for `trust_remote_code=True`. Returns the `MlplConfig` written.
    """
    source, destination = Path(source), Path(destination)
    if destination.exists() and any(destination.iterdir()):
        raise MctctConversionError(f"{destination} is not empty; choose a new or empty output folder")
    mctct_config = read_mctct_config(source)
    config_path = source / "config.json"
    # everything that can be refused is checked before the weights (4 GB for the large model) are read
    config = mlpl_config_from_mctct(mctct_config, config_path)
    feature_extractor = feature_extractor_from_mctct(source)
    tokenizer = tokenizer_from_mctct(source, config)
    if feature_extractor.feature_size != config.num_mel_bins:
        raise MctctConversionError(
            f"{source / 'preprocessor_config.json'}: feature_size={feature_extractor.feature_size}, but the model "
            f"reads {config.num_mel_bins} features per frame (config.json)"
        )
    state_dict, origin = load_mctct_state_dict(source)
    config, converted = convert_state_dict(state_dict, mctct_config, origin, config_path)

    with torch.device("meta"):
        model = MlplForCTC(config)
    model.load_state_dict(converted, strict=True, assign=True)
    model.eval()
    destination.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(destination)
    MlplProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer).save_pretrained(destination)
    return config


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="mlpl-convert-mctct",
        description="Convert a transformers M-CTC-T checkpoint (e.g. speechbrain/m-ctc-t-large) into an mlpl folder.",
    )
    parser.add_argument("source", type=Path, help="local M-CTC-T folder (config.json, weights, tokenizer, preprocessor)")
    parser.add_argument("destination", type=Path, help="new or empty folder for the mlpl model")
    args = parser.parse_args(argv)
    try:
        config = convert_mctct_checkpoint(args.source, args.destination)
    except MctctConversionError as error:
        print(f"mlpl-convert-mctct: {error}", file=sys.stderr)
        return 1
    layer_norms = "per channel (fine-tuned M-CTC-T)" if config.layer_norm_per_channel else "scalar (as Flashlight)"
    print(
        f"wrote {args.destination}: {config.num_hidden_layers} layers x {config.hidden_size}, vocabulary "
        f"{config.vocab_size} (blank = id {config.pad_token_id}), LayerNorms {layer_norms}, no LID head"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

__all__ = [
    "MctctConversionError",
    "convert_mctct_checkpoint",
    "convert_state_dict",
    "mctct_to_mlpl_names",
    "mlpl_config_from_mctct",
    "feature_extractor_from_mctct",
    "tokenizer_from_mctct",
    "main",
]
