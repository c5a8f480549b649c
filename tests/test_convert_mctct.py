"""mlpl-convert-mctct: M-CTC-T checkpoints (transformers 4.x, e.g. speechbrain/m-ctc-t-large) become mlpl folders
that compute the same logits.

The fixture `fixtures/mctct_tiny/` is a tiny random MCTCTForCTC with the outputs of transformers 4.57.6's own
M-CTC-T code (written by scripts/make_mctct_fixture.py in a separate environment; transformers 5 has no M-CTC-T).
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCTC, AutoProcessor, pipeline

from modeling_mlpl import MlplFeatureExtractor, MlplForCTC
from modeling_mlpl.convert_mctct_to_mlpl import (
    MctctConversionError,
    convert_mctct_checkpoint,
    convert_state_dict,
    load_mctct_state_dict,
    main,
    read_mctct_config,
)
from mlpl.audio import load_audio


FIXTURE = Path(__file__).parent / "fixtures" / "mctct_tiny"
# the files of a released M-CTC-T folder; the rest of the fixture is inputs and reference outputs
CHECKPOINT_FILES = (
    "config.json",
    "pytorch_model.bin",
    "preprocessor_config.json",
    "vocab.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
)
TOLERANCE = 1e-4


def mctct_folder(tmp_path, state_dict=None, config_changes=None, weights="pytorch_model.bin"):
    """A copy of the fixture's M-CTC-T folder, optionally with other tensors, config values or weight format."""
    folder = tmp_path / "mctct"
    folder.mkdir()
    for name in CHECKPOINT_FILES:
        shutil.copy(FIXTURE / name, folder / name)
    if state_dict is not None or weights != "pytorch_model.bin":
        state_dict = state_dict if state_dict is not None else load_mctct_state_dict(FIXTURE)[0]
        (folder / "pytorch_model.bin").unlink()
        if weights.endswith(".index.json"):  # two shards, as save_pretrained splits large models
            names = sorted(state_dict)
            shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
            for shard, keys in shards.items():
                save_file({key: state_dict[key] for key in keys}, folder / shard, metadata={"format": "pt"})
            weight_map = {key: shard for shard, keys in shards.items() for key in keys}
            (folder / weights).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
        elif weights.endswith(".safetensors"):
            save_file(state_dict, folder / weights, metadata={"format": "pt"})
        else:
            torch.save(state_dict, folder / weights)
    if config_changes:
        config = json.loads((folder / "config.json").read_text())
        config.update(config_changes)
        (folder / "config.json").write_text(json.dumps(config))
    return folder


def fixture_inputs():
    features = torch.from_numpy(np.load(FIXTURE / "input_features.npy"))
    attention_mask = torch.from_numpy(np.load(FIXTURE / "attention_mask.npy"))
    return features, attention_mask


def assert_matches_on_valid_frames(output, reference):
    lengths = output.output_attention_mask.sum(-1).tolist()
    assert lengths == [20, 13, 6]  # ceil(T / 3) of 58, 39, 18 feature frames; the table covers distances < 8
    for row, length in enumerate(lengths):
        np.testing.assert_allclose(output.logits[row, :length].numpy(), reference[row, :length], atol=TOLERANCE)


@torch.no_grad()
def converted_logits(destination):
    model = MlplForCTC.from_pretrained(destination).eval()
    features, attention_mask = fixture_inputs()
    return model, model(features, attention_mask=attention_mask)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    destination = tmp_path_factory.mktemp("converted") / "mlpl"
    assert main([str(FIXTURE), str(destination)]) == 0
    return destination


@pytest.mark.parametrize("weights", ["pytorch_model.bin", "model.safetensors", "model.safetensors.index.json"])
def test_converted_model_reproduces_mctct_logits(tmp_path, weights):
    destination = tmp_path / "mlpl"
    config = convert_mctct_checkpoint(mctct_folder(tmp_path, weights=weights), destination)
    model, output = converted_logits(destination)
    assert_matches_on_valid_frames(output, np.load(FIXTURE / "reference_logits.npy"))
    # the fixture's LayerNorm vectors repeat one value each, as Flashlight's scalars converted by transformers
    assert not config.layer_norm_per_channel and model.mlpl.layers[0].attn_layer_norm.weight.shape == (1,)
    assert model.lid_head is None and output.lid_logits is None and config.num_languages == 0
    assert (config.max_relative_positions, config.pad_token_id, config.vocab_size) == (8, 1, 34)


def test_padding_changes_mctct_logits_but_not_ours(converted):
    """M-CTC-T's input affine turns padded zeros into its bias, which the convolution reads at the end of every
    shorter utterance; mlpl keeps padding at zero, so its batch equals each utterance alone."""
    alone = np.load(FIXTURE / "reference_logits.npy")
    batched = np.load(FIXTURE / "reference_logits_batched.npy")
    np.testing.assert_allclose(batched[0], alone[0], atol=TOLERANCE)  # the longest utterance has no padding
    assert np.abs(batched[1, :13] - alone[1, :13]).max() > 0.1
    assert np.abs(batched[2, :6] - alone[2, :6]).max() > 0.1
    _, output = converted_logits(converted)
    assert_matches_on_valid_frames(output, alone)


def test_per_channel_layer_norms_convert_exactly(tmp_path):
    state_dict = load_mctct_state_dict(FIXTURE)[0]
    state_dict.update(load_file(FIXTURE / "per_channel_layer_norms.safetensors"))
    destination = tmp_path / "mlpl"
    config = convert_mctct_checkpoint(mctct_folder(tmp_path, state_dict=state_dict), destination)
    assert config.layer_norm_per_channel
    model, output = converted_logits(destination)
    assert model.mlpl.layers[1].final_layer_norm.weight.shape == (32,)
    assert_matches_on_valid_frames(output, np.load(FIXTURE / "reference_logits_per_channel.npy"))


@pytest.mark.parametrize("weights", ["pytorch_model.bin", "model.safetensors"])
def test_a_tensor_left_over_is_named_with_its_file(tmp_path, weights):
    state_dict = load_mctct_state_dict(FIXTURE)[0]
    state_dict["mctct.encoder.lid_head.weight"] = torch.zeros(60, 32)
    with pytest.raises(MctctConversionError, match=rf"'mctct.encoder.lid_head.weight' \(in {weights}\)"):
        convert_mctct_checkpoint(mctct_folder(tmp_path, state_dict=state_dict, weights=weights), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_missing_tensor_is_named(tmp_path):
    state_dict = load_mctct_state_dict(FIXTURE)[0]
    del state_dict["mctct.encoder.layers.1.attention.self.distance_embedding.weight"]
    with pytest.raises(MctctConversionError, match=r"pytorch_model.bin lack 1 tensor.*layers.1.attention.self.distance"):
        convert_mctct_checkpoint(mctct_folder(tmp_path, state_dict=state_dict), tmp_path / "out")


def test_a_shape_that_disagrees_with_config_json_is_named(tmp_path):
    folder = mctct_folder(tmp_path, config_changes={"max_position_embeddings": 9})
    named = r"distance_embedding.weight' in pytorch_model.bin has shape \(15, 8\), but .*config.json implies \(17, 8\)"
    with pytest.raises(MctctConversionError, match=named):
        convert_mctct_checkpoint(folder, tmp_path / "out")


def test_a_layer_norm_of_the_wrong_width_is_named_even_when_constant(tmp_path):
    state_dict = load_mctct_state_dict(FIXTURE)[0]
    state_dict["mctct.encoder.layers.0.output.LayerNorm.bias"] = torch.zeros(33)
    named = r"layers.0.output.LayerNorm.bias' in pytorch_model.bin has shape \(33,\), but .* implies \(32,\)"
    with pytest.raises(MctctConversionError, match=named):
        convert_mctct_checkpoint(mctct_folder(tmp_path, state_dict=state_dict), tmp_path / "out")


@pytest.mark.parametrize(
    "changes, named",
    [
        ({"hidden_act": "gelu"}, "hidden_act='gelu'"),
        ({"num_conv_layers": 2, "conv_kernel": [7, 7], "conv_stride": [3, 3], "conv_channels": [64]},
         "num_conv_layers=2"),
        ({"conv_glu_dim": 2}, "conv_glu_dim=2"),
        ({"attention_head_dim": 16}, "attention_head_dim=16"),
        ({"conv_kernel": [6]}, r"conv_kernel=\[6\]"),
    ],
)
def test_an_architecture_mlpl_cannot_compute_is_refused(tmp_path, changes, named):
    folder = mctct_folder(tmp_path, config_changes=changes)
    with pytest.raises(MctctConversionError, match=rf"config.json: {named} cannot be represented by MlplForCTC"):
        convert_mctct_checkpoint(folder, tmp_path / "out")


def test_a_tokenizer_whose_pad_is_not_the_blank_is_refused(tmp_path):
    folder = mctct_folder(tmp_path, config_changes={"pad_token_id": 0})
    with pytest.raises(MctctConversionError, match=r"pad token '<pad>' = id 1, but config.json has pad_token_id=0"):
        convert_mctct_checkpoint(folder, tmp_path / "out")


def test_a_config_value_mlpl_rejects_names_config_json(tmp_path):
    folder = mctct_folder(tmp_path, config_changes={"pad_token_id": 40})
    with pytest.raises(MctctConversionError, match=r"config.json: pad_token_id=40 .* must be in \[0, vocab_size=34\)"):
        convert_mctct_checkpoint(folder, tmp_path / "out")


def test_not_an_mctct_folder_is_refused(tmp_path, capsys):
    folder = mctct_folder(tmp_path, config_changes={"model_type": "wav2vec2"})
    assert main([str(folder), str(tmp_path / "out")]) == 1
    assert "model_type='wav2vec2', not 'mctct'" in capsys.readouterr().err


def test_features_differ_from_mctct_only_by_the_normalization():
    """M-CTC-T's extractor computed the same Flashlight mel features but normalized each mel bin; the network
    was trained with one mean and std per utterance (docs/design.md §1), which the converted folder uses."""
    audio, lengths = np.load(FIXTURE / "audio.npy"), np.load(FIXTURE / "audio_lengths.npy")
    waveforms = [row[:length] for row, length in zip(audio, lengths)]
    mctct_features, mask = (array.numpy() for array in fixture_inputs())
    raw = MlplFeatureExtractor(do_normalize=False)(waveforms, sampling_rate=16000, return_tensors="np")
    ours = MlplFeatureExtractor()(waveforms, sampling_rate=16000, return_tensors="np")
    np.testing.assert_array_equal(raw["attention_mask"], mask)
    for row, frames in enumerate(mask.sum(-1)):
        log_mel = raw["input_features"][row, :frames].astype(np.float64)
        per_bin = (log_mel - log_mel.mean(0)) / log_mel.std(0)
        np.testing.assert_allclose(per_bin, mctct_features[row, :frames], atol=1e-4)
        assert np.abs(ours["input_features"][row, :frames] - mctct_features[row, :frames]).max() > 1.0
        # either normalization leaves the whole plane at mean 0, variance 1: mlpl's input LayerNorm is then
        # the identity up to 1 / sqrt(1 + eps), as M-CTC-T's affine-only input "LayerNorm" assumes
        plane = mctct_features[row, :frames].astype(np.float64)
        assert abs(plane.mean()) < 1e-5 and abs(plane.var() - 1) < 1e-5


def test_converted_folder_loads_through_auto_classes_and_the_pipeline(converted, tiny_demo_corpus):
    config = json.loads((converted / "config.json").read_text())
    assert config["auto_map"]["AutoModelForCTC"] == "modeling_mlpl.MlplForCTC"
    for name in ("configuration_mlpl.py", "modeling_mlpl.py", "feature_extraction_mlpl.py", "processing_mlpl.py"):
        assert (converted / name).is_file()  # for trust_remote_code without the package
    assert not (converted / "convert_mctct_to_mlpl.py").exists()
    assert isinstance(AutoModelForCTC.from_pretrained(converted), MlplForCTC)
    processor = AutoProcessor.from_pretrained(converted)
    assert isinstance(processor.feature_extractor, MlplFeatureExtractor) and processor.feature_extractor.do_normalize
    assert processor.tokenizer.pad_token == "<pad>" and processor.tokenizer.pad_token_id == 1 == config["pad_token_id"]
    assert processor.tokenizer.get_vocab() == json.loads((FIXTURE / "vocab.json").read_text())

    clip = sorted((tiny_demo_corpus / "cv").glob("*/clips/*.mp3"))[0]
    audio = load_audio(clip)
    recognizer = pipeline("automatic-speech-recognition", model=str(converted))
    text = recognizer(audio)["text"]
    model = MlplForCTC.from_pretrained(converted).eval()
    with torch.no_grad():
        logits = model(**processor(audio, sampling_rate=16000, return_tensors="pt")).logits
    assert text == processor.batch_decode(logits.argmax(-1))[0]
    assert len(text) > 0


def test_refuses_to_write_into_a_folder_that_is_not_empty(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(MctctConversionError, match="is not empty"):
        convert_mctct_checkpoint(FIXTURE, tmp_path / "out")


def test_the_released_large_layout_maps_onto_the_papers_large_model():
    """speechbrain/m-ctc-t-large's tensor names and shapes (MCTCTForCTC with MCTCTConfig's defaults, recorded
    from transformers 4.57.6) map one to one onto MlplForCTC large without its LID head."""
    layout = json.loads((FIXTURE / "mctct_large_layout.json").read_text())
    mctct_config = {**layout["config"], "model_type": "mctct"}
    state_dict = {}
    for name, shape in layout["state_dict_shapes"].items():
        # LayerNorm vectors as the released checkpoint holds Flashlight's scalars: one value repeated
        state_dict[name] = torch.full(shape, 0.5) if ".LayerNorm." in name else torch.empty(shape, device="meta")
    config, converted_state = convert_state_dict(state_dict, mctct_config)
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (1536, 36, 4)
    assert (config.intermediate_size, config.max_relative_positions, config.vocab_size) == (6144, 920, 8065)
    assert not config.layer_norm_per_channel and config.num_languages == 0
    lid_head = 1536 * 60 + 60  # the paper's 60-language head, which was not released
    assert sum(tensor.numel() for tensor in converted_state.values()) == 1_058_849_871 - lid_head
    assert read_mctct_config(FIXTURE)["hidden_size"] == 32
