"""The language in the ASR pipeline's answer (docs/design.md §9.1): the LID head's output of the pipeline's own
forward for single, batched and chunked (code-switched) audio, with the package and as remote code in a clean
process; other models' pipelines are unchanged."""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from transformers import (
    AutoConfig,
    AutomaticSpeechRecognitionPipeline,
    Wav2Vec2Config,
    Wav2Vec2FeatureExtractor,
    Wav2Vec2ForCTC,
    pipeline,
)
from transformers.pipelines.automatic_speech_recognition import chunk_iter

from modeling_mlpl import MlplAutomaticSpeechRecognitionPipeline, build_language_characters, build_tokenizer, build_vocabulary
from test_pipeline import CLEAN_PROCESS_PRELUDE, TRANSCRIPTS, build_model, tone_sequence
from mlpl.loaders import load_common_voice_folder

TASK = "automatic-speech-recognition"
CHUNK_SECONDS, STRIDE_SECONDS = 4.0, 0.5


def chirps(seconds, seed=1):
    """A second kind of signal: rising sweeps over 1-4 kHz, 0.5 s each, plus noise."""
    t = np.arange(8000) / 16000
    sweep = 0.3 * np.sin(2 * np.pi * (1000 * t + 3000 * t**2))
    signal = np.tile(sweep, int(seconds * 2))
    return (signal + 0.003 * np.random.default_rng(seed).standard_normal(len(signal))).astype(np.float32)


@pytest.fixture(scope="module")
def mlpl():
    model, processor = build_model()
    model.config.language_characters = build_language_characters(zip(model.config.languages, TRANSCRIPTS))
    return model, processor


@pytest.fixture(scope="module")
def folder(mlpl, tmp_path_factory):
    folder = tmp_path_factory.mktemp("mlpl-language")
    mlpl[0].save_pretrained(folder)
    mlpl[1].save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def clips(tiny_demo_corpus):
    dev = load_common_voice_folder(tiny_demo_corpus / "cv", "dev", languages=["el", "en", "fi"])
    return [dev[i]["audio"] for i in range(len(dev))]


def lid(model, processor, audio, top_k=1):
    inputs = processor(audio=audio, sampling_rate=16000, return_tensors="pt")
    return model.detect_language(**inputs, top_k=top_k)[0]


def test_single_and_batched_answers_carry_the_lid_of_the_same_forward(mlpl, folder, clips):
    model, processor = mlpl
    recognizer = pipeline(TASK, model=str(folder))
    assert type(recognizer) is MlplAutomaticSpeechRecognitionPipeline
    single = [recognizer(clip, top_k_languages=3) for clip in clips]
    for clip, result in zip(clips, single):
        expected = lid(model, processor, clip, top_k=3)
        assert set(result) == {"text", "language", "language_score", "languages"}
        assert result["language"] == expected[0]["language"]
        assert result["language_score"] == pytest.approx(expected[0]["score"], abs=1e-5)
        assert [entry["language"] for entry in result["languages"]] == [entry["language"] for entry in expected]
    assert len({result["language"] for result in single}) > 1
    batched = recognizer(clips, batch_size=3)
    assert [(r["text"], r["language"]) for r in batched] == [(r["text"], r["language"]) for r in single]
    assert [r["language_score"] for r in batched] == pytest.approx([r["language_score"] for r in single], abs=1e-5)
    assert set(batched[0]) == {"text", "language", "language_score"}
    assert recognizer(clips[0], return_language=True) == {key: single[0][key] for key in ("text", "language", "language_score")}


@pytest.fixture(scope="module")
def code_switching(mlpl):
    """The tiny model with its LID head set to tell tones ("en") from sweeps ("el") apart, and 12 s of tones
    followed by 8 s of sweeps: chunks of 4 s must change language where the signal does."""
    model, processor = build_model()
    model.config.language_characters = mlpl[0].config.language_characters
    with torch.no_grad():
        pooled = []
        for audio in (tone_sequence(4.0), chirps(4.0)):
            inputs = processor(audio=audio, sampling_rate=16000, return_tensors="pt")
            hidden = model.mlpl(**inputs).last_hidden_state.mean(1)[0]
            pooled.append(hidden)
        direction = pooled[0] - pooled[1]
        middle = float(direction @ (pooled[0] + pooled[1]) / 2)
        model.lid_head.weight.zero_()
        model.lid_head.bias.zero_()
        model.lid_head.weight[0], model.lid_head.bias[0] = 8 * direction / direction.norm(), -8 * middle / direction.norm()
        model.lid_head.weight[1], model.lid_head.bias[1] = -model.lid_head.weight[0], -model.lid_head.bias[0]
    audio = np.concatenate([tone_sequence(12.0), chirps(8.0)])
    return model, processor, audio


def test_chunked_code_switched_audio_gives_each_chunk_its_language_and_a_duration_weighted_vote(code_switching):
    model, processor, audio = code_switching
    recognizer = pipeline(TASK, model=model, tokenizer=processor.tokenizer, feature_extractor=processor.feature_extractor)
    assert type(recognizer) is MlplAutomaticSpeechRecognitionPipeline  # a model object takes the same class
    result = recognizer(audio, chunk_length_s=CHUNK_SECONDS, stride_length_s=STRIDE_SECONDS, top_k_languages=3)
    chunks = result["chunks"]
    assert chunks[0]["timestamp"][0] == 0 and chunks[-1]["timestamp"][1] == pytest.approx(20.0, abs=0.03)
    assert all(a["timestamp"][1] == b["timestamp"][0] for a, b in zip(chunks, chunks[1:]))
    assert [c["language"] for c in chunks if c["timestamp"][1] <= 12.0] == ["en"] * 3  # [0, 3.48), 3 s each after
    assert [c["language"] for c in chunks if c["timestamp"][0] >= 12.0] == ["el"] * 3
    assert "".join(c["text"] for c in chunks).replace(" ", "") == result["text"].replace(" ", "")

    # The vote: each window's LID (the same windows the pipeline cut), weighted by the seconds it owns.
    sampling_rate, align = 16000, model.config.inputs_to_logits_ratio
    # lengths rounded to whole output frames, as the pipeline's preprocess does
    chunk_len, stride = (int(round(seconds * sampling_rate / align)) * align for seconds in (CHUNK_SECONDS, STRIDE_SECONDS))
    probabilities = []
    for item in chunk_iter(audio, processor.feature_extractor, chunk_len, stride, stride):
        with torch.no_grad():
            lid_logits = model(item["input_features"], attention_mask=item.get("attention_mask")).lid_logits
        probabilities.append(lid_logits.softmax(-1)[0].numpy())
    assert len(chunks) == len(probabilities) == 7  # 20 s in steps of 4 - 2 x 0.5 s
    owned = np.array([(c["timestamp"][1] - c["timestamp"][0]) * sampling_rate / align for c in chunks])
    vote = (np.stack(probabilities) * owned[:, None]).sum(0) / owned.sum()
    codes = model.config.language_codes
    assert [c["language_score"] for c in chunks] == pytest.approx([p.max() for p in probabilities], abs=1e-5)
    assert result["language"] == codes[int(vote.argmax())] == "en"  # 12 s of "en" outvote 8 s of "el"
    assert [(e["language"], e["score"]) for e in result["languages"]] == [
        (codes[i], pytest.approx(float(vote[i]), abs=1e-5)) for i in np.argsort(-vote)
    ]

    for kind in ("char", "word"):  # each char / word: the language of the window it starts in
        timed = recognizer(audio, chunk_length_s=CHUNK_SECONDS, stride_length_s=STRIDE_SECONDS, return_timestamps=kind)
        assert timed["text"] == result["text"] and timed["language"] == "en"
        for item in timed["chunks"]:
            window = next(c for c in reversed(chunks) if c["timestamp"][0] <= item["timestamp"][0] + 1e-6)
            assert (item["language"], item["language_score"]) == (window["language"], window["language_score"])
        if kind == "char":
            assert timed["chunks"][0]["language"] == "en" and timed["chunks"][-1]["language"] == "el"


def test_saved_folder_carries_the_pipeline_and_the_installed_package_needs_no_remote_code(folder, tmp_path):
    assert (folder / "pipeline_mlpl.py").is_file()
    saved = json.loads((folder / "config.json").read_text())
    assert saved["custom_pipelines"][TASK]["impl"] == "pipeline_mlpl.MlplAutomaticSpeechRecognitionPipeline"
    # the package's own class reports no entry, so pipeline() does not ask for trust_remote_code
    assert not getattr(AutoConfig.from_pretrained(folder), "custom_pipelines", None)
    older = tmp_path / "older"  # a folder saved before the entry existed is served by the registration
    shutil.copytree(folder, older)
    del saved["custom_pipelines"]
    (older / "config.json").write_text(json.dumps(saved))
    assert type(pipeline(TASK, model=str(older))) is MlplAutomaticSpeechRecognitionPipeline


def test_other_models_keep_the_stock_pipeline(tmp_path):
    vocabulary = build_vocabulary(TRANSCRIPTS)
    tokenizer = build_tokenizer(vocabulary)
    torch.manual_seed(0)
    config = Wav2Vec2Config(
        vocab_size=len(vocabulary), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
        conv_dim=(32, 32), conv_stride=(5, 4), conv_kernel=(10, 8), num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    model = Wav2Vec2ForCTC(config).eval()
    extractor = Wav2Vec2FeatureExtractor(return_attention_mask=True)
    audio = tone_sequence(3.0)
    stock = AutomaticSpeechRecognitionPipeline(model=model, tokenizer=tokenizer, feature_extractor=extractor)
    recognizer = pipeline(TASK, model=model, tokenizer=tokenizer, feature_extractor=extractor)
    assert type(recognizer) is AutomaticSpeechRecognitionPipeline
    assert recognizer(audio) == stock(audio) and set(recognizer(audio)) == {"text"}
    assert set(recognizer(audio, chunk_length_s=1.0)) == {"text"}
    assert set(recognizer(audio, return_timestamps="char")) == {"text", "chunks"}
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    extractor.save_pretrained(tmp_path)
    from_folder = pipeline(TASK, model=str(tmp_path))
    assert type(from_folder) is AutomaticSpeechRecognitionPipeline and from_folder(audio) == stock(audio)


REMOTE_SCRIPT = CLEAN_PROCESS_PRELUDE + textwrap.dedent(
    """
    import numpy as np
    from transformers import pipeline

    folder, audio_file = sys.argv[1], sys.argv[2]
    clips = list(np.load(audio_file))
    recognizer = pipeline("automatic-speech-recognition", model=folder, trust_remote_code=True)
    long = np.concatenate(clips * 4)
    print(json.dumps({
        "class": type(recognizer).__module__ + "." + type(recognizer).__name__,
        "single": [recognizer(clip, top_k_languages=2) for clip in clips],
        "batched": recognizer(clips, batch_size=2),
        "chunked": recognizer(long, chunk_length_s=2.0, stride_length_s=0.25),
        "constrained": recognizer(clips[0], language="el"),
        "loaded_packages": sorted(m for m in sys.modules if m.split(".")[0] in {"modeling_mlpl", "mlpl"}),
    }))
    """
)


def test_remote_code_in_a_clean_process_returns_the_same_languages(folder, tmp_path):
    copy = tmp_path / "hub-copy"
    shutil.copytree(folder, copy)
    clips = [tone_sequence(2.0), tone_sequence(1.5, seed=3)]
    np.save(tmp_path / "clips.npy", np.stack([np.pad(clip, (0, 32000 - len(clip))) for clip in clips]))
    clips = list(np.load(tmp_path / "clips.npy"))
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf-home"), "PYTHONPATH": ""}
    completed = subprocess.run(
        [sys.executable, "-c", REMOTE_SCRIPT, str(copy), str(tmp_path / "clips.npy")],
        cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    remote = json.loads(completed.stdout.strip().splitlines()[-1])
    assert remote["class"].startswith("transformers_modules") and remote["class"].endswith("MlplAutomaticSpeechRecognitionPipeline")
    assert remote["loaded_packages"] == []

    local = pipeline(TASK, model=str(folder))
    expected = {
        "single": [local(clip, top_k_languages=2) for clip in clips],
        "batched": local(clips, batch_size=2),
        "chunked": local(np.concatenate(clips * 4), chunk_length_s=2.0, stride_length_s=0.25),
        "constrained": local(clips[0], language="el"),
    }
    for key, value in expected.items():
        assert json.dumps(remote[key], sort_keys=True) == json.dumps(value, sort_keys=True, default=float), key
    assert len(remote["chunked"]["chunks"]) >= 4 and all("language" in chunk for chunk in remote["chunked"]["chunks"])
