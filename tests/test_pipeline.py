"""save_pretrained / from_pretrained, remote code in a clean process, and the transformers ASR pipeline."""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from transformers import AutoModelForCTC, AutoProcessor, pipeline

from modeling_mlpl import MlplForCTC, MlplProcessor
from tiny_models import tiny_config


TRANSCRIPTS = ["Hello world, again!", "Καλημέρα κόσμε", "Hyvää päivää"]


def tone_sequence(seconds, seed=0, noise=0.003):
    """Speech-band test signal: 0.25 s tones cycling through 8 frequencies (period 2 s), plus noise."""
    rng = np.random.default_rng(seed)
    frequencies = [220, 330, 440, 587, 740, 880, 1175, 1480]
    segment = 4000
    pieces = []
    for index in range(int(seconds * 16000) // segment):
        t = np.arange(segment) / 16000
        pieces.append(0.3 * np.sin(2 * np.pi * frequencies[index % len(frequencies)] * t))
    signal = np.concatenate(pieces)
    return (signal + noise * rng.standard_normal(len(signal))).astype(np.float32)


def build_model(local=False):
    """A tiny model whose CTC head is sharpened so that greedy decoding emits varied characters.

    `local=True` zeroes the attention output projections: every block then only mixes within a frame,
    so the model's receptive field is the 7-frame front end (for the chunking test).
    """
    torch.manual_seed(0)
    processor = MlplProcessor.from_transcripts(TRANSCRIPTS)
    model = MlplForCTC(tiny_config(vocab_size=len(processor.tokenizer))).eval()
    with torch.no_grad():
        model.ctc_head.weight.mul_(8.0)
        if local:
            for layer in model.mlpl.layers:
                layer.self_attn.out_proj.weight.zero_()
    return model, processor


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mlpl-tiny")
    model, processor = build_model()
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def test_folder_holds_weights_processor_and_remote_code(model_folder):
    names = set(os.listdir(model_folder))
    assert {"config.json", "model.safetensors", "vocab.json", "tokenizer_config.json"} <= names
    assert {"configuration_mlpl.py", "modeling_mlpl.py", "feature_extraction_mlpl.py", "processing_mlpl.py"} <= names
    config = json.loads((model_folder / "config.json").read_text())
    assert config["auto_map"]["AutoModelForCTC"] == "modeling_mlpl.MlplForCTC"
    assert config["auto_map"]["AutoConfig"] == "configuration_mlpl.MlplConfig"
    assert config["model_type"] == "mlpl" and config["languages"] == ["en", "el", "fi"]


def test_round_trip_gives_identical_logits(model_folder):
    model, processor = build_model()
    reloaded = AutoModelForCTC.from_pretrained(model_folder).eval()
    assert type(reloaded) is MlplForCTC
    reloaded_processor = AutoProcessor.from_pretrained(model_folder)
    assert isinstance(reloaded_processor, MlplProcessor)
    assert reloaded_processor.tokenizer.get_vocab() == processor.tokenizer.get_vocab()
    inputs = processor(audio=[tone_sequence(2.0), tone_sequence(1.3, seed=1)], sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        expected = model(**inputs)
        actual = reloaded(**inputs)
    assert torch.equal(expected.logits, actual.logits)
    assert torch.equal(expected.lid_logits, actual.lid_logits)


def test_pipeline_single_batched_and_timestamps(model_folder):
    recognizer = pipeline("automatic-speech-recognition", model=str(model_folder))
    clips = [tone_sequence(seconds, seed=index) for index, seconds in enumerate((1, 2, 3, 1.5, 2.5))]
    single = [recognizer(clip)["text"] for clip in clips]
    assert any(len(text) > 3 for text in single)
    batched = [result["text"] for result in recognizer(clips, batch_size=4)]
    assert batched == single

    for kind in ("char", "word"):
        result = recognizer(clips[2], return_timestamps=kind)
        assert result["text"] == single[2]
        chunks = result["chunks"]
        assert chunks, f"no {kind} chunks"
        starts = [chunk["timestamp"][0] for chunk in chunks]
        assert starts == sorted(starts)
        assert all(0 <= chunk["timestamp"][0] <= chunk["timestamp"][1] <= 3.0 + 0.03 for chunk in chunks)
        if kind == "char":
            assert "".join(chunk["text"] for chunk in chunks) == single[2]
        else:
            assert " ".join(chunk["text"] for chunk in chunks) == single[2]


def test_chunked_long_form_equals_unchunked_away_from_chunk_edges(tmp_path):
    model, processor = build_model(local=True)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    recognizer = pipeline("automatic-speech-recognition", model=str(tmp_path))
    # The model normalizes per utterance (features and input LayerNorm), so chunks see the same statistics
    # as the whole signal only if each holds whole periods of it. The signal is exactly periodic (2 s =
    # 200 feature frames) and 240 samples longer than 20 periods, so that it makes 4000 frames; 10.015 s
    # chunks (1000 frames) every 6 s (stride 2.0075 s) then all hold whole periods, the last one included.
    periodic = tone_sequence(40.0, noise=0.0)
    audio = np.concatenate([periodic, periodic[:240]])
    whole = recognizer(audio, return_timestamps="char")["chunks"]
    chunked = recognizer(audio, chunk_length_s=10.015, stride_length_s=2.0075, return_timestamps="char")["chunks"]
    # chunk k keeps encoder frames [200 k + 67, 200 k + 267): the stitches are at 8.01 s + 6 k and the end
    stitches = np.append(np.arange(8.01, 40.0, 6.0), 40.0)

    def away_from_stitches(chunks):
        return [
            (chunk["text"], round(chunk["timestamp"][0], 2))
            for chunk in chunks
            if np.abs(stitches - chunk["timestamp"][0]).min() > 0.5
        ]

    assert len(whole) > 100
    interior = away_from_stitches(whole)
    assert len(interior) > 0.7 * len(whole)
    assert away_from_stitches(chunked) == interior


# The start of a script run in a clean process: the project's packages cannot be imported (remote code only).
CLEAN_PROCESS_PRELUDE = textwrap.dedent(
    """
    import importlib.abc, json, sys

    class BlockProjectPackages(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {"modeling_mlpl", "mlpl"}:
                raise ImportError(f"{name} must not be importable in this test")
            return None

    sys.meta_path.insert(0, BlockProjectPackages())
    """
)

REMOTE_CODE_SCRIPT = CLEAN_PROCESS_PRELUDE + textwrap.dedent(
    """
    import numpy as np
    import torch
    from transformers import AutoModelForCTC, pipeline

    folder, audio_file = sys.argv[1], sys.argv[2]
    model = AutoModelForCTC.from_pretrained(folder, trust_remote_code=True).eval()
    recognizer = pipeline("automatic-speech-recognition", model=folder, trust_remote_code=True)
    audio = np.load(audio_file)
    print(json.dumps({
        "module": type(model).__module__,
        "extractor": type(recognizer.feature_extractor).__module__,
        "text": recognizer(audio)["text"],
        "loaded_packages": sorted(m for m in sys.modules if m.split(".")[0] in {"modeling_mlpl", "mlpl"}),
    }))
    """
)


def test_trust_remote_code_in_a_clean_process_without_the_package(model_folder, tmp_path):
    folder = tmp_path / "hub-copy"
    shutil.copytree(model_folder, folder)
    audio = tone_sequence(2.0)
    np.save(tmp_path / "audio.npy", audio)
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf-home"), "PYTHONPATH": ""}
    completed = subprocess.run(
        [sys.executable, "-c", REMOTE_CODE_SCRIPT, str(folder), str(tmp_path / "audio.npy")],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert result["module"].startswith("transformers_modules")
    assert result["extractor"].startswith("transformers_modules")
    assert result["loaded_packages"] == []
    local = pipeline("automatic-speech-recognition", model=str(model_folder))
    assert result["text"] == local(audio)["text"]
