"""A run folder knows whose it is (issue 13.4, 13.9): fingerprint, refusal naming the differing keys,
--overwrite, a lock with pid + host (stale ones taken over), one metrics row per update after a resume."""

import json
import logging
import os
import shutil
import socket
import subprocess
import sys

import pytest

from test_trainer import ENVIRONMENT, REPOSITORY, records, run_train, write_config
from mlpl.run_folder import LOCK_FILE, RUN_FILE, RunFolderError, claim_run_folder

CONFIG = {"optim": {"lr": 0.01, "betas": [0.9, 0.98]}, "train": {"seed": 0, "output_dir": "a", "max_updates": 10}}
IGNORE = ("train.output_dir", "train.max_updates")


def other(**changes):
    values = json.loads(json.dumps(CONFIG))
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        values[section][key] = value
    return values


def test_a_folder_holding_another_run_is_refused_naming_the_keys(tmp_path):
    with claim_run_folder(tmp_path, CONFIG, ignore=IGNORE):
        pass
    (tmp_path / "metrics.jsonl").write_text("{}\n")
    with pytest.raises(RunFolderError, match=r"holds a different run \(2 key\(s\) differ: optim.lr: 0.01 -> 0.02; train.seed: 0 -> 3\)"):
        with claim_run_folder(tmp_path, other(optim__lr=0.02, train__seed=3), ignore=IGNORE):
            pytest.fail("entered a folder holding another run")
    # The same run, with only ignored keys changed (a longer budget, another path): accepted, resumable.
    with claim_run_folder(tmp_path, other(train__max_updates=20, train__output_dir="b"), ignore=IGNORE):
        pass
    assert (tmp_path / "metrics.jsonl").is_file()


def test_overwrite_deletes_the_old_run_and_records_the_new_one(tmp_path):
    with claim_run_folder(tmp_path, CONFIG, ignore=IGNORE):
        (tmp_path / "checkpoints" / "step_6").mkdir(parents=True)
    with claim_run_folder(tmp_path, other(optim__lr=0.5), ignore=IGNORE, overwrite=True):
        assert not (tmp_path / "checkpoints").exists()
    assert json.loads((tmp_path / RUN_FILE).read_text())["config"]["optim.lr"] == 0.5


def test_starting_the_same_run_again_without_resume_is_refused(tmp_path):
    has_progress = lambda folder: (folder / "checkpoints").is_dir()  # noqa: E731
    with claim_run_folder(tmp_path, CONFIG, ignore=IGNORE, resume=False, has_progress=has_progress):
        (tmp_path / "checkpoints").mkdir()
    with pytest.raises(RunFolderError, match="already holds this run, with checkpoints"):
        with claim_run_folder(tmp_path, CONFIG, ignore=IGNORE, resume=False, has_progress=has_progress):
            pass
    with claim_run_folder(tmp_path, CONFIG, ignore=IGNORE, resume=True, has_progress=has_progress):
        pass


def test_a_live_lock_refuses_a_second_run_and_is_released_after_an_error(tmp_path):
    with claim_run_folder(tmp_path, CONFIG, ignore=IGNORE):
        holder = json.loads((tmp_path / LOCK_FILE).read_text())
        assert (holder["pid"], holder["host"]) == (os.getpid(), socket.gethostname())
        with claim_run_folder(tmp_path, CONFIG, ignore=IGNORE):  # the same process again: re-entrant
            pass
        assert (tmp_path / LOCK_FILE).is_file()  # ... and the inner claim left the outer one's lock alone
    assert not (tmp_path / LOCK_FILE).exists()

    other_run = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": other_run.pid, "host": socket.gethostname(), "started": "now"}))
        with pytest.raises(RunFolderError, match=rf"held by process {other_run.pid} on host {socket.gethostname()}"):
            with claim_run_folder(tmp_path, CONFIG, ignore=IGNORE):
                pytest.fail("entered a folder locked by a live run")
        assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == other_run.pid  # not taken from it
    finally:
        other_run.kill()
        other_run.wait()
    (tmp_path / LOCK_FILE).unlink()
    with pytest.raises(ZeroDivisionError):
        with claim_run_folder(tmp_path, CONFIG, ignore=IGNORE):
            1 / 0
    assert not (tmp_path / LOCK_FILE).exists()


def test_the_recipe_holds_its_folder_and_refuses_another_config(tmp_path):
    from mlpl.run_folder import hold_run_folder, release_lock

    lock = hold_run_folder(tmp_path, CONFIG, ignore=IGNORE, what="recipe")
    release_lock(lock)
    release_lock(hold_run_folder(tmp_path, CONFIG, ignore=IGNORE, what="recipe"))  # a re-run continues
    with pytest.raises(RunFolderError, match=r"optim.lr: 0.01 -> 0.3\)\. Use another output folder, or delete the folder"):
        hold_run_folder(tmp_path, other(optim__lr=0.3), ignore=IGNORE, what="recipe")
    assert not (tmp_path / LOCK_FILE).exists()


def test_a_stale_lock_of_a_dead_process_is_taken_over_with_a_warning(tmp_path, caplog):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()
    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": int(dead), "host": socket.gethostname(), "started": "earlier"}))
    with caplog.at_level(logging.WARNING, logger="mlpl.run_folder"):
        with claim_run_folder(tmp_path, CONFIG, ignore=IGNORE):
            assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert f"taking over a stale lock of process {dead}" in caplog.text


@pytest.mark.slow
def test_train_py_refuses_another_run_and_a_resume_logs_each_update_once(tiny_demo_corpus, tmp_path):
    config = write_config(tmp_path / "run.yaml", tiny_demo_corpus, train={"max_updates": 4, "save_every": 2, "log_every": 1, "keep_last": 0})
    output_dir = tmp_path / "run"
    run_train(config, output_dir)

    command = [sys.executable, "scripts/train.py", "--config", str(config), f"train.output_dir={output_dir}", "optim.lr=0.01", "--resume"]
    refused = subprocess.run(command, cwd=REPOSITORY, env=ENVIRONMENT, capture_output=True, text=True, timeout=300)
    assert refused.returncode != 0 and "holds a different run (1 key(s) differ: optim.lr: 0.002 -> 0.01)" in refused.stderr
    assert "--overwrite" in refused.stderr and sorted(p.name for p in (output_dir / "checkpoints").iterdir()) == ["step_2", "step_4"]

    # A run killed after logging updates 3-4 but before their checkpoint: resumed from step_2.
    shutil.rmtree(output_dir / "checkpoints" / "step_4")
    (output_dir / "train_summary.json").unlink()
    run_train(config, output_dir, "train.max_updates=4", "--resume")
    updates = [r["update"] for r in records(output_dir) if "loss" in r]
    assert updates == [1, 2, 3, 4], updates


def test_metrics_are_truncated_to_the_checkpoint_and_a_partial_row_is_dropped(tmp_path):
    from mlpl.trainer import truncate_metrics

    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"update": n, "loss": 1.0 / n}) + "\n" for n in range(1, 6)) + '{"update": 6, "lo')
    assert truncate_metrics(path, 3) == 3
    assert [json.loads(line)["update"] for line in path.read_text().splitlines()] == [1, 2, 3]
    assert truncate_metrics(path, 3) == 0 and truncate_metrics(tmp_path / "absent.jsonl", 3) == 0


def test_a_training_folder_recorded_before_slimipls_lm_options_is_the_same_run():
    """The slimIPL LM options came later: unset, they are not part of a run's identity; set, they are."""
    from mlpl.adapters import run_identity
    from mlpl.config import LM_OPTION_KEYS, ExperimentConfig, config_to_dict

    new = config_to_dict(ExperimentConfig())
    old = {**new, "slimipl": {k: v for k, v in new["slimipl"].items() if k not in LM_OPTION_KEYS}}
    assert run_identity(new) == run_identity(old)
    with_lm = {**new, "slimipl": {**new["slimipl"], "lm": "lm/{language}.arpa"}}
    assert run_identity(with_lm)["slimipl"]["lm"] == "lm/{language}.arpa" and run_identity(with_lm) != run_identity(old)
