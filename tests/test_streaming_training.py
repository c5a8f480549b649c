"""data.train and data.unlabeled with `streaming: true` (issue 14.1, training/streaming.py): trained by update
count through DurationBucketingStream (slimIPL's pseudo-labels from the unlabeled stream), resumed mid-buffer
with bit-identical parameters."""

import json

import pytest
import torch
from safetensors.torch import load_file

from test_data_sources import parquet_mirror  # noqa: F401 (a fixture)
from test_trainer import SLIMIPL, TINY_MODEL, run_train, write_config
from training.config import load_config


@pytest.fixture()
def stream_config(tiny_demo_corpus, tmp_path):
    return write_config(
        tmp_path / "stream.yaml",
        tiny_demo_corpus,
        data={
            "train": [{"kind": "common_voice", "path": str(tiny_demo_corpus / "cv"), "split": "train", "streaming": True}],
            "unlabeled": [{"kind": "voxpopuli", "path": str(tiny_demo_corpus / "voxpopuli"), "streaming": True}],
            "max_batch_seconds": 30,
            "stream_buffer_size": 10,  # 28 clips: three buffers a pass, so the checkpoints fall inside buffers
        },
        model={"overrides": TINY_MODEL, "dropout": 0.1, "layerdrop": 0.0},
        slimipl=dict(SLIMIPL, supervised_warmup_updates=8),  # slimIPL's pseudo-labels on a streamed data.unlabeled
        train={"max_updates": 24, "eval_every": 1000, "save_every": 11, "log_every": 4, "keep_last": 2},
    )


@pytest.mark.slow
def test_streamed_training_passes_epochs_and_resumes_bit_exactly(stream_config, tmp_path):
    whole = tmp_path / "whole"
    completed = run_train(stream_config, whole)
    assert "training stream: epoch 1 begins" in completed.stderr  # an epoch boundary is logged, not a stop
    summary = json.loads((whole / "train_summary.json").read_text())
    assert summary["num_updates"] == 24 and len(summary["languages"]["realized_hours"]) == 7

    parted = tmp_path / "parted"
    run_train(stream_config, parted, "train.max_updates=11")
    state = torch.load(parted / "checkpoints" / "step_11" / "trainer_state_rank0.pt", weights_only=True)["train_sampler"]
    assert state["batches_yielded_in_buffer"] > 0 and state["source_state"] is not None  # inside a buffer
    assert "resumed from" in run_train(stream_config, parted, "--resume").stderr
    expected, resumed = load_file(whole / "final" / "model.safetensors"), load_file(parted / "final" / "model.safetensors")
    for name in expected:
        torch.testing.assert_close(resumed[name], expected[name], rtol=0, atol=0, msg=name)
    finished = json.loads((parted / "train_summary.json").read_text())
    assert finished["languages"] == summary["languages"] and finished["slimipl"] == summary["slimipl"]
    assert summary["slimipl"]["training_reads"] > 0  # the unlabeled stream was trained on


def test_streams_are_refused_where_they_do_not_apply(stream_config, tmp_path):
    from training.trainer import train

    balanced = load_config(stream_config, [f"train.output_dir={tmp_path / 'a'}", "data.language_temperature=5"])
    with pytest.raises(ValueError, match="temperature sampling is implemented for map-style sources only"):
        train(balanced)
    train_source = balanced.data.train[0]
    mixed = load_config(stream_config, [f"train.output_dir={tmp_path / 'b'}", f"data.train=[{{kind: common_voice, path: {train_source.path}, streaming: true}}, {{kind: common_voice, path: {train_source.path}}}]"])
    with pytest.raises(ValueError, match="mixes streamed and map-style sources"):
        train(mixed)


def test_transcripts_of_a_streamed_pseudo_label_set_are_its_pseudo_labels(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from training.config import SourceConfig
    from training.pseudo_label import SUMMARY_FILE
    from training.streaming import stream_transcripts

    (tmp_path / "pl" / "data").mkdir(parents=True)
    (tmp_path / "pl" / SUMMARY_FILE).write_text("{}")
    table = pa.table({"language": ["fi", "el", "fi"], "pseudo_label": ["hyvää päivää", "", "kiitos"]})
    pq.write_table(table, tmp_path / "pl" / "data" / "train-00000-of-00001.parquet")
    source = SourceConfig(kind="pseudo_labels", path=str(tmp_path / "pl"), streaming=True)
    assert stream_transcripts([source]) == [("fi", "hyvää päivää"), ("fi", "kiitos")]  # empty PLs carry no text


@pytest.mark.slow
def test_trains_from_a_common_voice_parquet_mirror_streamed(parquet_mirror, tiny_demo_corpus, tmp_path):
    folder, _ = parquet_mirror  # <mirror>/data/dev-00000-of-00001.parquet, audio bytes embedded, as Hub mirrors are
    config = write_config(
        tmp_path / "mirror.yaml",
        tiny_demo_corpus,
        data={"train": [{"kind": "hub", "path": str(folder), "split": "dev", "streaming": True}], "max_batch_seconds": 12},
        model={"overrides": TINY_MODEL, "dropout": 0.1, "layerdrop": 0.0},
        train={"max_updates": 6, "eval_every": 1000, "save_every": 6, "log_every": 3, "keep_last": 1},
    )
    run_train(config, tmp_path / "run")
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    assert summary["num_updates"] == 6 and set(summary["languages"]["realized_hours"]) == {"de", "fi"}
    assert json.loads((tmp_path / "run" / "final" / "config.json").read_text())["languages"] == ["de", "fi"]
