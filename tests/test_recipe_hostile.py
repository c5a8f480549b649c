"""The recipe against careless hands (issue 13.4, 13.7, 13.8), end to end through scripts/run_recipe.py on
the tiny demo corpus with a micro model: `hub.push: true` publishes every stage and the pseudo-label set
to the local stand-in of the Hub API; a token given in the config is in no file of the output tree; a
re-run with another config is refused, naming the keys that differ."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hub_standin import HubStandIn

REPOSITORY = Path(__file__).resolve().parents[1]
TOKEN = "hf_standInWriteToken0123456789"
MICRO = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 4, "intermediate_size": 64, "max_relative_positions": 64}


@pytest.fixture(scope="module")
def published(tiny_demo_corpus, tmp_path_factory):
    folder = tmp_path_factory.mktemp("recipe_push")
    # The stand-in is reachable only on 127.0.0.1; offline mode is lifted for the recipe, no other token around.
    environment = {key: value for key, value in os.environ.items() if key not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")}
    environment.update(HF_HUB_OFFLINE="0", OMP_NUM_THREADS="1", HF_HOME=str(folder / "hf_home"))
    with HubStandIn(TOKEN) as hub:
        config = {
            "output_dir": str(folder / "out"),
            "labeled": {"kind": "common_voice", "path": str(tiny_demo_corpus / "cv")},
            "unlabeled": {"kind": "voxpopuli", "path": str(tiny_demo_corpus / "voxpopuli")},
            "languages": ["en", "el"],
            "common": {
                "data": {"max_batch_seconds": 40},
                "model": {"overrides": MICRO, "dropout": 0.0, "layerdrop": 0.0},
                "optim": {"optimizer": "adamw", "lr": 0.003, "warmup_updates": 2, "halve_lr_at": None, "max_grad_norm": 5.0},
                "train": {"max_updates": 2, "eval_every": 2, "save_every": 2, "log_every": 1},
            },
            "stage3": {"slimipl": {"supervised_warmup_updates": 0, "unlabeled_ratio": 1, "cache_size": 1, "cropping_warmup_updates": 1, "crop_seconds": 5.0}},
            "pseudo_labels": {"max_batch_seconds": 100},
            "evaluation_splits": ["test"],
            "hub": {"push": True, "endpoint": hub.endpoint, "namespace": "mlpl-test", "token": TOKEN, "retry_wait_seconds": 0.01},
        }
        path = folder / "recipe.yaml"
        path.write_text(yaml.safe_dump(config))
        command = [sys.executable, "scripts/run_recipe.py", "--config", str(path), "--languages", "el"]
        run = subprocess.run(command, cwd=REPOSITORY, env=environment, capture_output=True, text=True, timeout=600)
        other = subprocess.run([*command, "common.optim.lr=0.01"], cwd=REPOSITORY, env=environment, capture_output=True, text=True, timeout=300)
        yield folder / "out", run, other, hub


@pytest.mark.slow
def test_hub_push_publishes_every_stage_and_the_pseudo_label_set(published):
    _, run, _, hub = published
    assert run.returncode == 0, f"{run.stdout[-2000:]}\n{run.stderr[-5000:]}"
    committed = {(repo_type, repo_id): sorted(repo.branches["main"]) for (repo_type, repo_id), repo in hub.repos.items()}
    datasets = [key for key in committed if key[0] == "dataset"]
    models = [key for key in committed if key[0] == "model"]
    assert len(datasets) == 1 and "README.md" in committed[datasets[0]], committed
    assert len(models) == 5, committed  # stages 1, 2, 3, 5, 6
    assert all("README.md" in files and "model.safetensors" in files for key, files in committed.items() if key[0] == "model")


@pytest.mark.slow
def test_a_token_given_in_the_config_is_in_no_file_of_the_output_tree(published):
    output, run, _, _ = published
    assert run.returncode == 0
    holding = [path for path in output.rglob("*") if path.is_file() and TOKEN.encode() in path.read_bytes()]
    assert not holding, holding
    assert TOKEN not in run.stdout + run.stderr


@pytest.mark.slow
def test_a_rerun_with_another_config_is_refused_naming_the_keys(published):
    output, _, other, _ = published
    assert other.returncode != 0
    assert "holds a different run (1 key(s) differ: common.optim.lr: 0.003 -> 0.01)" in other.stderr, other.stderr[-3000:]
    assert yaml.safe_load((output / "recipe_config.yaml").read_text())["common"]["optim"]["lr"] == 0.003  # not rewritten
