"""Pseudo-label generation (recipe stage 4): real audio from the tiny demo corpus, a tiny model, and one
reference path -- every clip alone through the data layer's decoder and mlpl.inference -- that the
generated sets must reproduce, whatever the batching, streaming, cropping or number of processes.

The tiny model is random with the CTC blank pushed down (bias -5), so every frame emits a character and a
PL has roughly 0.6 characters per 30 ms frame: clips under 19 s stay under 630 characters, a 41 s clip
goes over. A second model with the blank pushed up emits nothing (empty PLs).
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile
import torch
from datasets import Dataset, load_dataset

import mlpl.pseudo_label.generate as pseudo_label
from modeling_mlpl import MlplForCTC, MlplProcessor
from test_distributed_data import free_port
from tiny_models import tiny_config
from mlpl.data import (
    AUDIO_REFERENCE,
    EXAMPLE_COLUMNS,
    SkipCounter,
    decode_record,
    example_durations,
)
from mlpl.loaders import (
    common_voice_records,
    load_flashlight_list,
    load_hub_dataset,
    load_voxpopuli_folder,
    read_flashlight_list,
    voxpopuli_records,
    write_flashlight_list,
)
from mlpl.inference import transcribe_batch
from mlpl.pseudo_label import (
    DROP_EMPTY,
    DROP_LOW_CONFIDENCE,
    DROP_TOO_LONG,
    UNREADABLE,
    PseudoLabelConfig,
    export_flashlight_list,
    generate_pseudo_labels,
    iter_pseudo_labels,
    load_pseudo_label_set,
    model_revision,
)

REPOSITORY = Path(__file__).resolve().parents[1]
LANGUAGES = ["en", "de", "es", "ru", "fi", "el", "bg"]
CHUNK_FRAMES = PseudoLabelConfig().chunk_frames  # 3000 = 30 s, the default crop
MIXED = dict(max_batch_seconds=20.0, rows_per_shard=2)  # several batches and several parts


# ---------------------------------------------------------------------------------------------
# Model, sources, the reference path
# ---------------------------------------------------------------------------------------------


def tiny_model(processor, blank_bias: float) -> MlplForCTC:
    torch.manual_seed(0)
    model = MlplForCTC(tiny_config(vocab_size=len(processor.tokenizer), languages=LANGUAGES))
    with torch.no_grad():
        model.ctc_head.bias[model.config.pad_token_id] = blank_bias
    return model.eval()


@pytest.fixture(scope="module")
def model_dir(tiny_demo_corpus, tmp_path_factory):
    transcripts = [record["sentence"] for record in common_voice_records(tiny_demo_corpus / "cv", "train")]
    processor = MlplProcessor.from_transcripts(transcripts)
    folder = tmp_path_factory.mktemp("model")
    tiny_model(processor, blank_bias=-5.0).save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def model_and_processor(model_dir):
    return MlplForCTC.from_pretrained(model_dir).eval(), MlplProcessor.from_pretrained(model_dir)


@pytest.fixture(scope="module")
def mixed_parquet(tiny_demo_corpus, tmp_path_factory):
    """A parquet "Hub" source of 16 clips: the CV dev clips (every other one of unknown language "und"), a 41 s
    clip made of two VoxPopuli clips (too long a PL) and a clip that cannot be decoded."""
    folder = tmp_path_factory.mktemp("mixed")
    (folder / "audio").mkdir()
    vox = voxpopuli_records(tiny_demo_corpus / "voxpopuli")
    long_clip = np.concatenate([soundfile.read(record["audio"], dtype="float32")[0] for record in vox[::2]])
    soundfile.write(folder / "audio" / "long.wav", long_clip, 16000)
    (folder / "audio" / "broken.ogg").write_bytes(b"OggS" + b"\x01" * 4000)
    records = []
    for index, record in enumerate(common_voice_records(tiny_demo_corpus / "cv", "dev")):
        language = "und" if index % 2 else record["language"]
        records.append({"id": record["id"], "path": record["audio"], "language": language})
    records += [{"id": "long", "path": folder / "audio" / "long.wav", "language": "bg"},
                {"id": "broken", "path": folder / "audio" / "broken.ogg", "language": "fi"}]  # fmt: skip
    rows = [{"id": r["id"], "audio": {"bytes": None, "path": str(r["path"])}, "language": r["language"]}
            for r in records]  # fmt: skip
    (folder / "parquet").mkdir()
    Dataset.from_list(rows).to_parquet(folder / "parquet" / "unlabeled.parquet")
    return folder / "parquet", rows  # a folder of parquet files: what `--data` takes (training/sources.py)


def mixed_source(mixed_parquet, streaming=False):
    """Map-style sources need no audio references (the generator reads them from the records); streams do."""
    folder = str(mixed_parquet[0])
    return load_hub_dataset("parquet", data_dir=folder, streaming=streaming, keep_audio_reference=streaming)


def reference_path(model, processor, records, chunk_frames=CHUNK_FRAMES) -> dict:
    """id -> what the model says about that clip alone: decoded by the data layer, features by the processor,
    greedy CTC + confidence + LID by mlpl.inference. Undecodable clips are absent."""
    reference = {}
    for record in records:
        example = decode_record({"sentence": None, **record}, SkipCounter())
        if example is None:
            continue
        inputs = processor.feature_extractor(
            [example["audio"]], sampling_rate=16000, return_attention_mask=True, return_tensors="pt"
        )
        with torch.inference_mode():
            result = transcribe_batch(model, dict(inputs), processor.tokenizer, chunk_frames)
        reference[example["id"]] = {
            "pseudo_label": result["texts"][0],
            "confidence": result["confidences"][0],
            "predicted_language": LANGUAGES[int(result["language_ids"][0])],
            "language": example["language"],
            "duration": example["duration"],
        }
    return reference


@pytest.fixture(scope="module")
def mixed_reference(model_and_processor, mixed_parquet):
    return reference_path(*model_and_processor, mixed_parquet[1])


def outcome(row, min_confidence=None) -> str:
    """The test's own statement of docs/design.md §3/6's rule (and the optional confidence threshold)."""
    if not row["pseudo_label"]:
        return DROP_EMPTY
    if len(row["pseudo_label"]) > 630:
        return DROP_TOO_LONG
    if min_confidence is not None and row["confidence"] < min_confidence:
        return DROP_LOW_CONFIDENCE
    return "kept"


def midpoint_confidence(reference) -> float:
    """A threshold halfway between two neighbouring confidences near the median (no clip sits on it)."""
    values = sorted(row["confidence"] for row in reference.values() if outcome(row) == "kept")
    middle = len(values) // 2
    return (values[middle - 1] + values[middle]) / 2


def read_rows(folder) -> dict:
    rows = list(iter_pseudo_labels(folder))
    ids = [row["id"] for row in rows]
    assert len(ids) == len(set(ids)), "a clip was written twice"
    return {row["id"]: row for row in rows}


def assert_matches_reference(rows, reference, summary, min_confidence=None, routing="source"):
    expected_kept = {i for i, row in reference.items() if outcome(row, min_confidence) == "kept"}
    assert set(rows) == expected_kept
    for identifier, row in rows.items():
        assert row["pseudo_label"] == reference[identifier]["pseudo_label"]
        assert row["confidence"] == pytest.approx(reference[identifier]["confidence"], abs=1e-4)
        assert row["duration"] == pytest.approx(reference[identifier]["duration"])
        assert row["predicted_language"] == reference[identifier]["predicted_language"]
        source_language = reference[identifier]["language"]
        assert row["source_language"] == source_language
        routed = routing == "lid" and source_language == "und"
        assert row["language"] == (reference[identifier]["predicted_language"] if routed else source_language)
    reasons = [outcome(row, min_confidence) for row in reference.values()]
    expected_dropped = {reason: reasons.count(reason) for reason in set(reasons) - {"kept"}}
    # an undecodable clip is dropped at pseudo-labeling (streams: UNREADABLE) or at the header scan (map-style)
    assert {k: v for k, v in summary["dropped"].items() if k not in (UNREADABLE, "undecodable")} == expected_dropped
    assert summary["kept"] == len(rows)
    per_language = {}
    for row in rows.values():
        per_language.setdefault(row["language"], []).append(row["duration"])
    assert {code: values["utterances"] for code, values in summary["languages"].items() if values["utterances"]} == {
        code: len(durations) for code, durations in per_language.items()
    }
    for code, durations in per_language.items():
        assert summary["languages"][code]["hours"] == pytest.approx(sum(durations) / 3600, abs=1e-4)


# ---------------------------------------------------------------------------------------------
# The VoxPopuli part of the demo corpus
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def voxpopuli_run(tiny_demo_corpus, model_and_processor, tmp_path_factory):
    model, processor = model_and_processor
    output = tmp_path_factory.mktemp("vox") / "pl"
    summary = generate_pseudo_labels(model, processor, load_voxpopuli_folder(tiny_demo_corpus / "voxpopuli"), output)
    return output, summary


def test_voxpopuli_part_every_clip_once_and_labels_equal_direct_decoding(
    tiny_demo_corpus, model_and_processor, model_dir, voxpopuli_run
):
    output, summary = voxpopuli_run
    records = voxpopuli_records(tiny_demo_corpus / "voxpopuli")
    reference = reference_path(*model_and_processor, records)
    rows = read_rows(output)

    assert len(reference) == len(records) == 3
    assert summary["utterances"] == len(records)  # kept or counted as dropped, each once
    assert_matches_reference(rows, reference, summary)
    assert rows, "no PL kept: the test model should emit characters"
    by_id = {record["id"]: record for record in records}
    for identifier, row in rows.items():
        # The audio column is the clip's reference, not samples; the model is named and pinned.
        assert row["audio"] == {"bytes": None, "path": str(Path(by_id[identifier]["audio"]).absolute())}
        assert row["model_name"] == str(model_dir)
        assert row["model_revision"] == model_revision(model_dir) and row["model_revision"].startswith("sha256:")
    # A datasets parquet folder, in the Hub's layout.
    assert sorted(p.name for p in output.iterdir()) == ["data", "summary.json"]
    assert [p.name for p in (output / "data").iterdir()] == ["train-00000-of-00001.parquet"]
    loaded = load_dataset("parquet", data_dir=str(output), split="train")
    assert sorted(loaded["id"]) == sorted(rows)
    assert json.loads((output / "summary.json").read_text()) == summary


def test_chunked_and_unchunked_agree_when_the_chunk_is_longer_than_every_clip(
    tiny_demo_corpus, model_and_processor, voxpopuli_run, tmp_path
):
    durations = example_durations(load_voxpopuli_folder(tiny_demo_corpus / "voxpopuli"))
    assert durations.max() < PseudoLabelConfig().chunk_seconds  # the default 30 s crop covers every clip
    whole = generate_pseudo_labels(
        *model_and_processor, load_voxpopuli_folder(tiny_demo_corpus / "voxpopuli"), tmp_path / "whole",
        PseudoLabelConfig(chunk_seconds=None),
    )  # fmt: skip
    chunked_rows, whole_rows = read_rows(voxpopuli_run[0]), read_rows(tmp_path / "whole")
    assert chunked_rows.keys() == whole_rows.keys()
    for identifier, row in chunked_rows.items():
        assert row["pseudo_label"] == whole_rows[identifier]["pseudo_label"]
        assert row["confidence"] == pytest.approx(whole_rows[identifier]["confidence"], abs=1e-5)
    assert whole["dropped"] == voxpopuli_run[1]["dropped"]


# ---------------------------------------------------------------------------------------------
# A mixed Hub-style source: filters, LID routing, streaming, loading back, export
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mixed_run(model_and_processor, mixed_parquet, mixed_reference, tmp_path_factory):
    threshold = midpoint_confidence(mixed_reference)
    config = PseudoLabelConfig(min_confidence=threshold, language_routing="lid", **MIXED)
    output = tmp_path_factory.mktemp("mixed_run") / "pl"
    summary = generate_pseudo_labels(*model_and_processor, mixed_source(mixed_parquet), output, config)
    return output, summary, threshold


def test_filters_and_lid_routing_count_and_keep_what_the_reference_says(mixed_run, mixed_reference, mixed_parquet):
    output, summary, threshold = mixed_run
    rows = read_rows(output)
    assert_matches_reference(rows, mixed_reference, summary, min_confidence=threshold, routing="lid")
    # Every reason occurs: the 41 s clip is too long, about half are below the threshold, the rest kept.
    assert summary["dropped"][DROP_TOO_LONG] >= 1 and summary["dropped"][DROP_LOW_CONFIDENCE] >= 1 and rows
    assert summary["dropped_examples"][DROP_TOO_LONG][0].startswith("long (bg)")
    assert any(row["source_language"] == "und" for row in rows.values())
    assert all(row["language"] != "und" for row in rows.values())  # routed by the LID head
    # The undecodable clip was dropped by the map-style source's header scan, and the summary counts it too.
    assert summary["utterances"] == len(mixed_parquet[1]) == len(mixed_reference) + 1 and summary["dropped"]["undecodable"] == 1
    assert len(summary["files"]) > 1


def test_stream_gives_the_same_labels_and_counts_the_undecodable_clip(
    model_and_processor, mixed_parquet, mixed_reference, mixed_run, tmp_path
):
    threshold = mixed_run[2]
    source = mixed_source(mixed_parquet, streaming=True)
    config = PseudoLabelConfig(min_confidence=threshold, buffer_size=8, **MIXED)  # default routing: trust the source
    summary = generate_pseudo_labels(*model_and_processor, source, tmp_path / "pl", config)
    rows = read_rows(tmp_path / "pl")
    assert_matches_reference(rows, mixed_reference, summary, min_confidence=threshold, routing="source")
    assert summary["dropped"][UNREADABLE] == 1 and summary["utterances"] == len(mixed_parquet[1])
    assert any(row["language"] == "und" for row in rows.values())


def test_pseudo_label_set_loads_back_in_the_example_schema(mixed_run, tiny_demo_corpus):
    output = mixed_run[0]
    rows = read_rows(output)
    dataset = load_pseudo_label_set(output)
    assert len(dataset) == len(rows)
    stored_durations = [rows[identifier]["duration"] for identifier in dataset.with_format(None)["id"]]
    np.testing.assert_allclose(example_durations(dataset), stored_durations)
    for example in dataset:
        assert set(example) == set(EXAMPLE_COLUMNS)
        assert example["sentence"] == rows[example["id"]]["pseudo_label"]
        assert example["language"] == rows[example["id"]]["language"]
        original = decode_record({"id": "x", "audio": rows[example["id"]]["audio"], "sentence": None, "language": "x"},
                                 SkipCounter())["audio"]  # fmt: skip
        np.testing.assert_array_equal(example["audio"], original)
    stream = list(load_pseudo_label_set(output, streaming=True))
    assert sorted(example["id"] for example in stream) == sorted(rows)
    assert all(example["audio"].dtype == np.float32 and example["audio"].size for example in stream)
    only = sorted({row["language"] for row in rows.values()})[:1]
    selected = load_pseudo_label_set([output], languages=only)
    assert sorted(selected.with_format(None)["id"]) == sorted(i for i, r in rows.items() if r["language"] in only)
    with pytest.raises(ValueError, match="not a finished pseudo-label set"):
        load_pseudo_label_set(tiny_demo_corpus)


def test_flashlight_export_round_trips(mixed_run, tmp_path):
    output = mixed_run[0]
    rows = read_rows(output)
    count = export_flashlight_list(output, tmp_path / "pl.lst")
    listed = read_flashlight_list(tmp_path / "pl.lst", language="xx")
    assert count == len(listed) == len(rows)
    for record in listed:
        row = rows[record["id"]]
        assert str(record["audio"]) == row["audio"]["path"]
        assert record["sentence"] == " ".join(row["pseudo_label"].split())
        assert record["duration"] == pytest.approx(row["duration"], abs=1e-4)


def test_empty_pseudo_labels_are_dropped_and_an_existing_set_is_only_replaced_on_request(
    tiny_demo_corpus, model_and_processor, tmp_path
):
    model, processor = model_and_processor
    silent = tiny_model(processor, blank_bias=50.0)  # the blank wins every frame
    source = load_voxpopuli_folder(tiny_demo_corpus / "voxpopuli", languages=["fi"])
    summary = generate_pseudo_labels(silent, processor, source, tmp_path / "pl")
    assert summary["kept"] == 0 and summary["dropped"] == {DROP_EMPTY: 1}
    assert summary["dropped_examples"][DROP_EMPTY][0].startswith("demo_2009_fi_00000 (fi)")
    assert [pq.read_table(path).num_rows for path in (tmp_path / "pl" / "data").iterdir()] == [0]
    assert len(load_pseudo_label_set(tmp_path / "pl")) == 0
    assert not list(load_pseudo_label_set(tmp_path / "pl", streaming=True))

    with pytest.raises(FileExistsError, match="overwrite"):
        generate_pseudo_labels(model, processor, source, tmp_path / "pl")
    replaced = generate_pseudo_labels(model, processor, source, tmp_path / "pl", PseudoLabelConfig(overwrite=True))
    assert replaced["kept"] == 1 and len(read_rows(tmp_path / "pl")) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pl"]  # no temporary or replaced folder left


# ---------------------------------------------------------------------------------------------
# Crash and resume
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("streaming", [False, True], ids=["map-style", "stream"])
def test_a_crash_leaves_no_final_folder_and_the_rerun_reuses_finished_parts(
    tiny_demo_corpus, model_and_processor, monkeypatch, tmp_path, streaming
):
    model, processor = model_and_processor
    records = common_voice_records(tiny_demo_corpus / "cv", "dev", languages=["fi", "el"])  # 4 short clips
    write_flashlight_list(({**record, "duration": 0.0, "sentence": None} for record in records), tmp_path / "in.lst")

    def source():
        return load_flashlight_list(tmp_path / "in.lst", language="fi", labeled=False, streaming=streaming,
                                    num_shards=2, keep_audio_reference=True)  # fmt: skip

    config = PseudoLabelConfig(max_batch_size=1, rows_per_shard=1, buffer_size=2)  # 1 clip per batch and part
    calls = []

    def counting(*args, **kwargs):
        calls.append(1)
        if crash and len(calls) == 3:
            raise RuntimeError("injected failure")
        return transcribe_batch(*args, **kwargs)

    monkeypatch.setattr(pseudo_label, "transcribe_batch", counting)
    crash = True
    with pytest.raises(RuntimeError, match="injected failure"):
        generate_pseudo_labels(model, processor, source(), tmp_path / "pl", config)
    assert not (tmp_path / "pl").exists()
    assert len(list((tmp_path / ".pl.incomplete" / "data").glob("*.parquet"))) == 2

    crash, calls[:] = False, []
    summary = generate_pseudo_labels(model, processor, source(), tmp_path / "pl", config)
    assert len(calls) == len(records) - 2  # the two finished clips were not transcribed again
    assert not (tmp_path / ".pl.incomplete").exists()
    assert summary["utterances"] == len(records)
    reference = reference_path(model, processor, [{**r, "language": "fi"} for r in records])
    assert_matches_reference(read_rows(tmp_path / "pl"), reference, summary)

    if streaming:
        return
    # Other parameters: the interrupted run is not reused.
    crash, calls[:] = True, []
    with pytest.raises(RuntimeError):
        generate_pseudo_labels(model, processor, source(), tmp_path / "pl2", config)
    crash, calls[:] = False, []
    generate_pseudo_labels(model, processor, source(), tmp_path / "pl2", PseudoLabelConfig(max_batch_size=2))
    assert len(calls) == len(records) // 2


# ---------------------------------------------------------------------------------------------
# Two processes
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_two_processes_under_accelerate_launch_match_one_process(model_dir, mixed_parquet, mixed_run, tmp_path):
    output, one_process, threshold = mixed_run
    command = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
        str(REPOSITORY / "scripts" / "pseudo_label.py"), "--model", str(model_dir),
        "--data", str(mixed_parquet[0]),
        "--max-batch-seconds", str(MIXED["max_batch_seconds"]), "--rows-per-shard", str(MIXED["rows_per_shard"]),
        "--min-confidence", repr(threshold), "--language-routing", "lid",
        "--output-dir", str(tmp_path / "pl"), "--flashlight-list", str(tmp_path / "pl.lst"),
    ]  # fmt: skip
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true"}
    completed = subprocess.run(command, cwd=REPOSITORY, env=environment, capture_output=True, text=True, timeout=240)
    failure = f"accelerate launch failed:\n{completed.stdout[-3000:]}\n{completed.stderr[-3000:]}"
    assert completed.returncode == 0, failure

    two_process_rows, one_process_rows = read_rows(tmp_path / "pl"), read_rows(output)
    def labels(rows):
        return {identifier: (r["pseudo_label"], r["language"], r["model_revision"]) for identifier, r in rows.items()}

    assert labels(two_process_rows) == labels(one_process_rows)
    summary = json.loads((tmp_path / "pl" / "summary.json").read_text())
    assert summary["run"]["num_processes"] == 2
    for key in ("kept", "dropped", "utterances", "languages"):
        assert summary[key] == one_process[key]
    assert len(read_flashlight_list(tmp_path / "pl.lst", language="xx")) == len(one_process_rows)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pl", "pl.lst"]


# ---------------------------------------------------------------------------------------------
# Small pieces
# ---------------------------------------------------------------------------------------------


def test_model_revision_is_the_snapshot_commit_the_git_commit_or_a_weights_hash(model_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(model_dir, copy)
    assert model_revision(copy) == model_revision(model_dir)  # content, not location
    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = tmp_path / "models--org--mlpl" / "snapshots" / commit
    shutil.copytree(model_dir, snapshot)
    assert model_revision(snapshot) == commit
    def git(*args):
        return subprocess.run(["git", "-C", str(copy), *args], check=True, capture_output=True, text=True)

    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "model")
    assert model_revision(copy) == git("rev-parse", "HEAD").stdout.strip()
    (copy / "model.safetensors").write_bytes(b"changed")  # uncommitted weights: hashed, not the commit
    assert model_revision(copy) == "sha256:" + hashlib.sha256(b"model.safetensors" + b"changed").hexdigest()
    with pytest.raises(ValueError, match="no model weights"):
        model_revision(tmp_path)


def test_with_an_lm_each_label_is_its_beam_search_over_the_lexicon_and_the_confidence_stays_greedy(
    tiny_demo_corpus, model_and_processor, voxpopuli_run, tmp_path
):
    """`lm` + `lexicon: lm`: every PL is the LM beam search of the clip's own logits, written only with the
    LM's words (the random model's greedy PLs are one long unknown blob), and the row keeps the greedy path's
    confidence."""
    from mlpl.evaluation import decode_with_lm, lm_decoders
    from mlpl.ngram_lm import estimate_kneser_ney

    model, processor = model_and_processor
    records = voxpopuli_records(tiny_demo_corpus / "voxpopuli")
    words = sorted({word for record in common_voice_records(tiny_demo_corpus / "cv", "train") for word in record["sentence"].split()})[:200]
    arpa = tmp_path / "lm.arpa"
    estimate_kneser_ney([" ".join(words[i : i + 6]) for i in range(0, len(words), 6)], order=2).write_arpa(arpa)
    config = PseudoLabelConfig(lm=str(arpa), lexicon="lm", lm_alpha=1.0, lm_beta=0.0)
    summary = generate_pseudo_labels(model, processor, load_voxpopuli_folder(tiny_demo_corpus / "voxpopuli"), tmp_path / "pl", config)
    rows = read_rows(tmp_path / "pl")
    greedy_rows = read_rows(voxpopuli_run[0])

    decoders = lm_decoders(processor.tokenizer, config, LANGUAGES)
    expected = {}
    for record in records:  # each clip alone: its logits, the same decoder
        example = decode_record({"sentence": None, **record}, SkipCounter())
        inputs = processor.feature_extractor([example["audio"]], sampling_rate=16000, return_attention_mask=True, return_tensors="pt")
        with torch.inference_mode():
            result = transcribe_batch(model, dict(inputs), processor.tokenizer, CHUNK_FRAMES, return_logits=True)
        expected[example["id"]] = decode_with_lm(decoders, example["language"], result["logits"].float(), result["output_lengths"], 0)
    assert rows and summary["kept"] == len(rows) == sum(1 for text in expected.values() if text)  # empty: dropped
    for identifier, row in rows.items():
        assert row["pseudo_label"] == expected[identifier]
        assert set(row["pseudo_label"].split()) <= set(words)
        assert row["pseudo_label"] != greedy_rows[identifier]["pseudo_label"]
        assert row["confidence"] == pytest.approx(greedy_rows[identifier]["confidence"], abs=1e-4)


def test_lm_options_without_an_lm_are_refused_naming_lm():
    with pytest.raises(ValueError, match="without lm"):
        PseudoLabelConfig(lexicon="lm")


@pytest.mark.parametrize(
    "options, message",
    [
        ({"max_label_length": 0}, "max_label_length=0"),
        ({"min_confidence": 0.5}, "min_confidence=0.5"),
        ({"language_routing": "guess"}, "language_routing='guess'"),
        ({"chunk_seconds": 0.01}, "chunk_seconds=0.01"),
        ({"split": "../train"}, "split='../train'"),
    ],
)
def test_config_rejects_bad_values_naming_them(options, message):
    with pytest.raises(ValueError, match=message.replace(".", r"\.").replace("(", r"\(")):
        PseudoLabelConfig(**options)


def test_a_stream_without_audio_references_is_refused_with_the_fix(tiny_demo_corpus, model_and_processor, tmp_path):
    stream = load_voxpopuli_folder(tiny_demo_corpus / "voxpopuli", languages=["fi"], streaming=True)
    with pytest.raises(ValueError, match="keep_audio_reference=True"):
        generate_pseudo_labels(*model_and_processor, stream, tmp_path / "pl")
    assert not (tmp_path / "pl").exists()


@pytest.mark.parametrize("streaming", [False, True], ids=["map-style", "stream"])
def test_sources_keep_the_audio_reference_only_when_asked(tiny_demo_corpus, streaming):
    folder = tiny_demo_corpus / "voxpopuli"
    paths = {record["id"]: record["audio"] for record in voxpopuli_records(folder, ["fi"])}
    kept = load_voxpopuli_folder(folder, languages=["fi"], streaming=streaming, keep_audio_reference=True)
    plain = load_voxpopuli_folder(folder, languages=["fi"], streaming=streaming)
    for example in (kept if streaming else [kept[0]]):
        assert set(example) == set(EXAMPLE_COLUMNS) | {AUDIO_REFERENCE}
        reference = example[AUDIO_REFERENCE]
        assert Path(reference if streaming else reference["path"]) == paths[example["id"]]  # undecoded
    assert set(next(iter(plain))) == set(EXAMPLE_COLUMNS)


def test_the_summary_counts_clips_dropped_at_the_header_scan(tiny_demo_corpus, model_and_processor, tmp_path):
    """A clip the source's header scan drops (here a zero-byte ogg) never reaches pseudo-labeling; the
    summary still counts it, so `utterances` is every clip of the folder (issue 13.9: 7 reported for 12)."""
    import shutil

    folder = tmp_path / "voxpopuli"
    shutil.copytree(tiny_demo_corpus / "voxpopuli", folder)
    year = next(p for p in (folder / "el").iterdir() if p.is_dir())
    (year / "demo_broken_el_99999.ogg").write_bytes(b"")
    model, processor = model_and_processor
    summary = generate_pseudo_labels(model, processor, load_voxpopuli_folder(folder), tmp_path / "pl")
    clips = len(list(folder.glob("*/*/*.ogg")))
    assert summary["utterances"] == clips == len(voxpopuli_records(tiny_demo_corpus / "voxpopuli")) + 1
    assert any("demo_broken_el_99999.ogg" in example for examples in summary["dropped_examples"].values() for example in examples)
