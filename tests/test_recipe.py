"""The recipe end to end (issue 5) on the tiny demo corpus with a micro model: every stage runs through the
real script, leaves its marker, model card and evaluation; a re-run skips finished work; the final model
loads in the ASR pipeline."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from training.recipe import DONE, STAGE_FOLDERS, parse_stages

REPOSITORY = Path(__file__).resolve().parents[1]
ENVIRONMENT = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def test_stage_ranges_parse_and_bad_ones_are_named():
    assert parse_stages(None) == [1, 2, 3, 4, 5, 6]
    assert parse_stages("1-3,5") == [1, 2, 3, 5]
    with pytest.raises(ValueError, match=r"no stage \[7\]"):
        parse_stages("5-7")
    with pytest.raises(ValueError, match="use numbers and ranges"):
        parse_stages("first")


@pytest.mark.parametrize("name", ["demo_recipe", "cv_voxpopuli_base", "cv_voxpopuli_large"])
def test_shipped_recipe_configs_are_valid(name):
    from training.config import ExperimentConfig, build_dataclass
    from training.recipe import TABLE_STAGES, _merge, load_recipe_config

    config = load_recipe_config(REPOSITORY / "training" / "configs" / f"{name}.yaml")
    for stage in TABLE_STAGES:
        build_dataclass(ExperimentConfig, _merge(config.common, getattr(config, f"stage{stage}")))


def test_a_typo_in_a_stage_is_reported_before_anything_runs(tmp_path):
    from training.config import build_dataclass
    from training.recipe import Recipe, RecipeConfig

    config = build_dataclass(RecipeConfig, {"labeled": {"kind": "common_voice", "path": str(tmp_path)}, "stage3": {"slimipl": {"cache_sise": 4}}})
    with pytest.raises(ValueError, match=r"stage3.slimipl: unknown key\(s\) \['cache_sise'\]"):
        Recipe(config)


@pytest.fixture(scope="module")
def recipe_run(tiny_demo_corpus, tmp_path_factory):
    folder = tmp_path_factory.mktemp("recipe")
    micro = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 4, "intermediate_size": 64, "max_relative_positions": 64}
    config = {
        "output_dir": str(folder / "out"),
        "labeled": {"kind": "common_voice", "path": str(tiny_demo_corpus / "cv")},
        "unlabeled": {"kind": "voxpopuli", "path": str(tiny_demo_corpus / "voxpopuli")},
        "languages": ["en", "el", "fi"],
        "common": {
            "data": {"max_batch_seconds": 40},
            "model": {"overrides": micro, "dropout": 0.0, "layerdrop": 0.0},
            "optim": {"optimizer": "adamw", "lr": 0.003, "warmup_updates": 2, "halve_lr_at": None, "max_grad_norm": 5.0},
            "train": {"max_updates": 3, "eval_every": 3, "save_every": 3, "log_every": 1},
        },
        "stage3": {"slimipl": {"supervised_warmup_updates": 0, "unlabeled_ratio": 1, "cache_size": 1, "cropping_warmup_updates": 1, "crop_seconds": 5.0}},
        "pseudo_labels": {"max_batch_seconds": 100},
        "hub": {"namespace": "demo-org", "prefix": "mlpl-test"},
    }
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(config))
    command = [sys.executable, "scripts/run_recipe.py", "--config", str(path), "--languages", "el"]
    first = subprocess.run(command, cwd=REPOSITORY, env=ENVIRONMENT, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, f"{first.stdout[-2000:]}\n{first.stderr[-5000:]}"
    second = subprocess.run(command, cwd=REPOSITORY, env=ENVIRONMENT, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, f"{second.stdout[-2000:]}\n{second.stderr[-5000:]}"
    return folder / "out", first, second


@pytest.mark.slow
def test_every_stage_finishes_with_marker_evaluation_and_card(recipe_run):
    output, first, _ = recipe_run
    stages = output / "stages"
    for stage, unit in [(1, ""), (2, "el"), (3, "el"), (4, "el"), (5, ""), (6, "")]:
        assert (stages / STAGE_FOLDERS[stage] / unit / DONE).is_file(), f"stage {stage} {unit} has no marker"
    for stage, unit in [(1, ""), (2, "el"), (3, "el"), (5, ""), (6, "")]:
        best = stages / STAGE_FOLDERS[stage] / unit / "best"
        card = (best / "README.md").read_text()
        assert f"demo-org/mlpl-test-stage{stage}" in card and "trust_remote_code" in card
        for split in ("dev", "test"):
            assert (stages / STAGE_FOLDERS[stage] / unit / "evaluation" / split / "metrics.json").is_file()
    # Each card names the checkpoint it started from and, for stage 5, the pseudo-label sets.
    lineage = {2: "demo-org/mlpl-test-stage1-supervised", 3: "demo-org/mlpl-test-stage2-finetune-el", 6: "demo-org/mlpl-test-stage5-pl-training"}
    for stage, parent in lineage.items():
        unit = "el" if stage in (2, 3) else ""
        assert parent in (stages / STAGE_FOLDERS[stage] / unit / "best" / "README.md").read_text(), stage
    stage5_card = (stages / STAGE_FOLDERS[5] / "best" / "README.md").read_text()
    assert "demo-org/mlpl-test-stage1-supervised" in stage5_card and "demo-org/mlpl-test-stage4-pseudo-labels-el" in stage5_card
    assert "random initialization" in (stages / STAGE_FOLDERS[1] / "best" / "README.md").read_text()
    # stage 3 really ran slimIPL on el's unlabeled audio; stage 4 labeled it with the stage-3 model.
    slimipl = json.loads((stages / STAGE_FOLDERS[3] / "el" / "train_summary.json").read_text())["slimipl"]
    assert slimipl["filling_steps"] == 1 and slimipl["training_reads"] >= 1
    pseudo_labels = stages / STAGE_FOLDERS[4] / "el" / "pseudo_labels"
    summary = json.loads((pseudo_labels / "summary.json").read_text())
    assert summary["utterances"] == summary["kept"] + sum(summary["dropped"].values()) > 0
    # A 3-update model mostly emits blanks: its PLs may all be dropped as empty; a set with rows gets a card.
    assert summary["kept"] == 0 or (pseudo_labels / "README.md").is_file()
    # stage 5 trained on labeled data plus the pseudo-labels
    stage5 = yaml.safe_load((stages / STAGE_FOLDERS[5] / "config.yaml").read_text())
    assert [s["kind"] for s in stage5["data"]["train"]] == ["common_voice", "pseudo_labels"]
    assert stage5["model"]["init_from"].endswith("1_multilingual/best")


@pytest.mark.slow
def test_results_table_plots_and_final_model(recipe_run):
    output, first, _ = recipe_run
    results = json.loads((output / "results.json").read_text())
    assert set(results["stages"]) == {"1", "2", "3", "5", "6"}
    report = (output / "results.md").read_text()
    assert "| el (unlabeled audio) |" in report and "stage 6" in report
    assert "## dev" in report and "## test" in report
    for plot in ("cer_by_stage.png", "dev_cer_curves.png"):
        assert (output / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from transformers import pipeline

    import modeling_mlpl  # noqa: F401  (registers the Auto classes, as the README says)
    from training.audio import load_audio

    recognizer = pipeline("automatic-speech-recognition", model=str(output / "final_model"))
    mp3 = next(Path(yaml.safe_load((output / "recipe_config.yaml").read_text())["labeled"]["path"]).glob("el/clips/*.mp3"))
    assert isinstance(recognizer(load_audio(mp3))["text"], str)
    assert json.loads((output / "final_model" / "config.json").read_text())["languages"] == ["el", "en", "fi"]


@pytest.mark.slow
def test_a_rerun_skips_finished_stages(recipe_run):
    _, first, second = recipe_run
    assert "already done" not in first.stderr
    assert second.stderr.count("already done") == 6
    assert "resumed from" not in second.stderr and "train:" not in second.stderr
