"""data.train and data.unlabeled with `streaming: true` (issue 14.1, training/streaming.py): trained by update
count through DurationBucketingStream (slimIPL's pseudo-labels from the unlabeled stream), resumed mid-buffer
with bit-identical parameters."""

import json
from collections import Counter

import pytest
import torch
from safetensors.torch import load_file

from test_data_sources import parquet_mirror  # noqa: F401 (a fixture)
from test_trainer import SLIMIPL, TINY_MODEL, run_train, write_config
from mlpl.config import load_config


@pytest.fixture(scope="module")
def stream_config(tiny_demo_corpus, tmp_path_factory):
    return write_config(
        tmp_path_factory.mktemp("stream") / "stream.yaml",
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


# data.num_workers is for map-style data (and not part of a run's identity): every single-process streamed run
# here sets it, so the one uninterrupted run also shows that streams do not use it.
WORKERS = "data.num_workers=2"


@pytest.fixture(scope="module")
def streamed_runs(stream_config, tmp_path_factory):
    """The single-process streamed run of 24 updates in one go, and the same run stopped at
    `train.max_updates=11`: (folder, train.py output) of each. Two independent single-threaded processes,
    run side by side (one per core of a 2-core machine)."""
    from concurrent.futures import ThreadPoolExecutor

    folder = tmp_path_factory.mktemp("streamed")
    with ThreadPoolExecutor(2) as pool:
        whole = pool.submit(run_train, stream_config, folder / "whole", WORKERS)
        parted = pool.submit(run_train, stream_config, folder / "parted", WORKERS, "train.max_updates=11")
        return (folder / "whole", whole.result()), (folder / "parted", parted.result())


def _check_whole(whole, completed) -> dict:
    """The uninterrupted run of `stream_config`: 24 updates through an epoch boundary of the training stream,
    slimIPL trained on the unlabeled stream. Returns its summary."""
    assert "training stream: epoch 1 begins" in completed.stderr  # an epoch boundary is logged, not a stop
    summary = json.loads((whole / "train_summary.json").read_text())
    assert summary["num_updates"] == 24 and len(summary["languages"]["realized_hours"]) == 7
    assert summary["slimipl"]["training_reads"] > 0  # the unlabeled stream was trained on
    return summary


def _resume_matches_whole(config, whole, summary, parted, *overrides, launch=run_train) -> None:
    """`parted` holds the run interrupted after its checkpoint of update 11, which falls inside a stream
    buffer; `--resume` must finish it with the uninterrupted run's (`whole`) parameters, bit for bit, and its
    summary."""
    checkpoint = parted / "checkpoints" / "step_11"
    state = torch.load(checkpoint / "trainer_state_rank0.pt", weights_only=True)["train_sampler"]
    assert state["batches_yielded_in_buffer"] > 0 and state["source_state"] is not None  # inside a buffer
    assert f"resumed from {checkpoint} at update 11" in launch(config, parted, *overrides, "--resume").stderr
    expected, resumed = load_file(whole / "final" / "model.safetensors"), load_file(parted / "final" / "model.safetensors")
    for name in expected:
        torch.testing.assert_close(resumed[name], expected[name], rtol=0, atol=0, msg=name)
    finished = json.loads((parted / "train_summary.json").read_text())
    assert finished["languages"] == summary["languages"] and finished["slimipl"] == summary["slimipl"]


@pytest.mark.slow
def test_streamed_training_passes_epochs_and_resumes_bit_exactly(stream_config, streamed_runs):
    """24 updates in one go, and again as a run stopped at `train.max_updates=11` then continued to 24 with
    `--resume`: the two final models must be bit-identical."""
    (whole, completed), (parted, _) = streamed_runs
    summary = _check_whole(whole, completed)
    _resume_matches_whole(stream_config, whole, summary, parted, WORKERS)


def test_dataloader_workers_are_not_used_for_streams_and_say_so(streamed_runs):
    """data.num_workers is for map-style data: a streamed run decodes in the training process and warns."""
    (whole, completed), _ = streamed_runs
    assert "data.num_workers=2 is not used for streamed data" in completed.stderr
    assert json.loads((whole / "train_summary.json").read_text())["num_updates"] == 24


@pytest.mark.slow
def test_two_processes_stream_and_resume_bit_exactly(stream_config, tmp_path):
    """The same on two CPU processes (`accelerate launch`, each process reads its own share of the stream),
    with the language-balanced stream (`data.language_temperature: 5`); the interrupted run is the
    uninterrupted one's folder as a kill right after its checkpoint of update 11 leaves it."""
    import subprocess
    import sys

    from test_distributed_data import free_port
    from test_trainer import ENVIRONMENT, REPOSITORY, killed_after_checkpoint

    def launch(config, output_dir, *extra):
        command = [
            sys.executable, "-m", "accelerate.commands.launch",
            "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
            "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
            "scripts/train.py", "--config", str(config), f"train.output_dir={output_dir}", *extra,
        ]  # fmt: skip
        completed = subprocess.run(command, cwd=REPOSITORY, env={**ENVIRONMENT, "ACCELERATE_USE_CPU": "true"}, capture_output=True, text=True, timeout=300)
        assert completed.returncode == 0, f"{completed.stdout[-2000:]}\n{completed.stderr[-4000:]}"
        return completed

    overrides = ("data.language_temperature=5", "train.keep_last=0")  # keep_last=0: every checkpoint stays
    whole = tmp_path / "whole"
    summary = _check_whole(whole, launch(stream_config, whole, *overrides))
    parted = killed_after_checkpoint(whole, 11, tmp_path / "parted")
    assert (parted / "checkpoints" / "step_11" / "trainer_state_rank1.pt").is_file()
    _resume_matches_whole(stream_config, whole, summary, parted, *overrides, launch=launch)
    languages = summary["languages"]  # the balanced stream (T = 5): a flatter mix than the natural one
    assert languages["temperature"] == 5 and set(languages["target_share"]) == set(languages["utterances"]) == set(languages["realized_hours"])
    smallest = min(languages["utterances"], key=languages["utterances"].get)
    largest = max(languages["utterances"], key=languages["utterances"].get)
    assert languages["target_share"][smallest] > languages["natural_share"][smallest]
    assert languages["target_share"][largest] < languages["natural_share"][largest]
    newest = max((parted / "checkpoints").glob("step_*"), key=lambda folder: int(folder.name.split("_")[1]))
    assert newest.name == "step_24"  # written by the resumed run
    states = [torch.load(newest / f"trainer_state_rank{rank}.pt", weights_only=True)["train_sampler"] for rank in range(2)]
    assert [state["rank"] for state in states] == [0, 1]  # each process saved the position of its own share


def test_balanced_stream_draws_languages_in_the_target_shares(tiny_demo_corpus):
    from mlpl.config import SourceConfig
    from mlpl.streaming import load_balanced_stream

    source = SourceConfig(kind="common_voice", path=str(tiny_demo_corpus / "cv"), split="train", streaming=True)
    stream, mix = load_balanced_stream([source], None, temperature=1e6, seed=3)  # ~uniform over the 7 languages
    assert set(mix["target_share"]) == set(mix["utterances"]) and len(mix["utterances"]) == 7
    assert max(mix["natural_share"].values()) > 2 * min(mix["natural_share"].values())  # the corpus is unbalanced
    languages, drawn, epoch = stream.select_columns(["language"]), Counter(), 0
    while sum(drawn.values()) < 700:  # passes of the stream as training makes them: a new epoch draws anew
        languages.set_epoch(epoch)
        drawn.update(example["language"] for example in languages)
        epoch += 1
    total = sum(drawn.values())
    for language, share in mix["target_share"].items():
        # 4 binomial standard deviations (the draw is seeded: this is a check of the mechanism, not of luck)
        assert abs(drawn[language] / total - share) <= 4 * (share * (1 - share) / total) ** 0.5, (language, drawn, mix)


def test_streams_are_refused_where_they_do_not_apply(stream_config, tmp_path):
    from mlpl.trainer import train

    balanced = load_config(stream_config, [f"train.output_dir={tmp_path / 'a'}"])
    train_source = balanced.data.train[0]
    mixed = load_config(stream_config, [f"train.output_dir={tmp_path / 'b'}", f"data.train=[{{kind: common_voice, path: {train_source.path}, streaming: true}}, {{kind: common_voice, path: {train_source.path}}}]"])
    with pytest.raises(ValueError, match="mixes streamed and map-style sources"):
        train(mixed)


def test_transcripts_of_a_streamed_pseudo_label_set_are_its_pseudo_labels(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mlpl.config import SourceConfig
    from mlpl.pseudo_label import SUMMARY_FILE
    from mlpl.streaming import stream_transcripts

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
