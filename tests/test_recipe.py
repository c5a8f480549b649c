"""The recipe end to end (issue 5) on the tiny demo corpus with a micro model: every stage runs through the
real script, leaves its marker, model card and evaluation; a re-run skips finished work; the final model
loads in the ASR pipeline."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mlpl.recipe import DONE, parse_stages
from mlpl.stages import CONTROL_FOLDERS, STAGE_FOLDERS

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
    from mlpl.config import ExperimentConfig, build_dataclass
    from mlpl.recipe import merge_sections, load_recipe_config
    from mlpl.stages import TABLE_STAGES

    config = load_recipe_config(REPOSITORY / "training" / "configs" / f"{name}.yaml")
    for stage in TABLE_STAGES:
        build_dataclass(ExperimentConfig, merge_sections(config.common, getattr(config, f"stage{stage}")))


def test_a_typo_in_a_stage_is_reported_before_anything_runs(tmp_path):
    from mlpl.config import build_dataclass
    from mlpl.recipe import Recipe, RecipeConfig

    config = build_dataclass(RecipeConfig, {"labeled": {"kind": "common_voice", "path": str(tmp_path)}, "stage3": {"slimipl": {"cache_sise": 4}}})
    with pytest.raises(ValueError, match=r"stage3.slimipl: unknown key\(s\) \['cache_sise'\]"):
        Recipe(config)


@pytest.fixture(scope="module")
def recipe_run(tiny_demo_corpus, hall_demo_corpus, tmp_path_factory):
    folder = tmp_path_factory.mktemp("recipe")
    micro = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 4, "intermediate_size": 64, "max_relative_positions": 64}
    config = {
        "output_dir": str(folder / "out"),
        "labeled": {"kind": "common_voice", "path": str(tiny_demo_corpus / "cv")},
        "unlabeled": {"kind": "voxpopuli", "path": str(tiny_demo_corpus / "voxpopuli")},
        # held-out transcribed audio of the unlabeled audio's domain (VoxPopuli's ASR layout); holds bg, el, fi
        "evaluation_sets": {"vp_test": {"kind": "voxpopuli_asr", "path": str(hall_demo_corpus / "voxpopuli_asr"), "split": "test"}},
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
        "controls": True,
        "bootstrap_resamples": 200,
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
    assert set(results["stages"]) == {"1", "2", "3", "3c", "5", "5c", "6", "6c"}
    report = (output / "results.md").read_text()
    assert "| el (unlabeled audio) |" in report and "stage 6" in report and "6 control" in report
    assert "## CER per stage (dev)" in report and "## CER per stage (test)" in report and "## CER per stage (vp_test)" in report
    assert "## Time" in report and "| sum of the units |" in report
    # the extra evaluation set serves each unit for the languages it holds: stage 1 (en, el, fi) on el and fi
    assert set(results["stages"]["1"]["all"]["evaluation"]["vp_test"]["per_language"]) == {"el", "fi"}
    assert set(results["stages"]["3"]["el"]["evaluation"]["vp_test"]["per_language"]) == {"el"}
    # every arm beside its control, with a confidence interval, for each split and set
    for split in ("dev", "test", "vp_test"):
        assert set(results["comparisons"][split]) == {"3 vs 3c", "5 vs 5c", "6 vs 6c"}
        for entry in results["comparisons"][split].values():
            row = entry["per_language"]["el"]
            assert row["low"] <= row["difference"] <= row["high"] and row["num_resamples"] == 200
            assert row["cer_b"] == results["stages"][entry["arm"]]["el" if entry["arm"] == "3" else "all"]["evaluation"][split]["per_language"]["el"]["cer"]
        assert f"### stage 3 slimIPL vs labeled-only control ({split})" in report
    assert "## Pseudo-labels (stage 4)" in report and "| el |" in report and "mean confidence" in report
    assert "```" not in report  # a report, not a JSON dump
    for plot in ("cer_by_stage.png", "dev_cer_curves.png"):
        assert (output / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from transformers import pipeline

    import modeling_mlpl  # noqa: F401  (registers the Auto classes, as the README says)
    from mlpl.audio import load_audio

    recognizer = pipeline("automatic-speech-recognition", model=str(output / "final_model"))
    mp3 = next(Path(yaml.safe_load((output / "recipe_config.yaml").read_text())["labeled"]["path"]).glob("el/clips/*.mp3"))
    assert isinstance(recognizer(load_audio(mp3))["text"], str)
    assert json.loads((output / "final_model" / "config.json").read_text())["languages"] == ["el", "en", "fi"]


@pytest.mark.slow
def test_a_rerun_skips_finished_stages(recipe_run):
    _, first, second = recipe_run
    assert "already done" not in first.stderr
    assert second.stderr.count("already done") == 9  # six stages and three controls
    assert "resumed from" not in second.stderr and "train:" not in second.stderr


@pytest.mark.slow
def test_controls_train_like_their_arms_without_unlabeled_audio(recipe_run):
    output, _, _ = recipe_run
    stages = output / "stages"
    for stage, unit in [(3, "el"), (5, ""), (6, "")]:
        arm_folder, control_folder = stages / STAGE_FOLDERS[stage] / unit, stages / CONTROL_FOLDERS[stage] / unit
        assert (control_folder / DONE).is_file() and (control_folder / "evaluation" / "test" / "predictions.jsonl").is_file()
        assert not (control_folder / "best" / "README.md").exists(), "a control is a measurement, not a model to publish"
        arm, control = (yaml.safe_load((f / "config.yaml").read_text()) for f in (arm_folder, control_folder))
        arm_summary, control_summary = (json.loads((f / "train_summary.json").read_text()) for f in (arm_folder, control_folder))
        assert control_summary["num_updates"] == arm_summary["num_updates"]
        assert control_summary["slimipl"] is None  # no unlabeled step: every update was a labeled one
        assert control["data"]["unlabeled"] == [] and all(s["kind"] != "pseudo_labels" for s in control["data"]["train"])
        assert [s for s in arm["data"]["train"] if s["kind"] != "pseudo_labels"] == control["data"]["train"]
        for section in ("optim", "spec_augment"):
            assert control[section] == arm[section], section
        assert {k: v for k, v in control["train"].items() if k != "output_dir"} == {k: v for k, v in arm["train"].items() if k != "output_dir"}
        if stage == 3:
            assert arm["slimipl"]["enabled"] and not control["slimipl"]["enabled"]
            assert (control["model"]["dropout"], control["model"]["layerdrop"]) == (arm["slimipl"]["dropout"], arm["slimipl"]["layerdrop"])
            assert control["model"]["init_from"] == arm["model"]["init_from"]
    # stage 6's control continues stage 5's control
    control6 = yaml.safe_load((stages / CONTROL_FOLDERS[6] / "config.yaml").read_text())
    assert control6["model"]["init_from"] == str(stages / CONTROL_FOLDERS[5] / "best")


def test_labeled_only_control_keeps_everything_but_the_unlabeled_audio(tmp_path):
    from mlpl.config import ExperimentConfig, SourceConfig, build_dataclass
    from mlpl.recipe import labeled_only_control

    labeled = {"kind": "common_voice", "path": str(tmp_path)}
    arm = build_dataclass(ExperimentConfig, {
        "data": {"train": [labeled, {"kind": "pseudo_labels", "path": str(tmp_path / "pl")}], "unlabeled": [{"kind": "voxpopuli", "path": str(tmp_path)}]},
        "model": {"init_from": "stage2/best", "dropout": 0.3},
        "slimipl": {"enabled": True, "supervised_warmup_updates": 0, "dropout": 0.1, "layerdrop": 0.05},
        "train": {"max_updates": 77, "seed": 5, "output_dir": str(tmp_path / "arm")},
    })  # fmt: skip
    control = labeled_only_control(arm, tmp_path / "control")
    assert control.data.train == [SourceConfig(**labeled)] and control.data.unlabeled == []
    assert not control.slimipl.enabled and (control.model.dropout, control.model.layerdrop) == (0.1, 0.05)
    assert (control.train.max_updates, control.train.seed, control.train.output_dir) == (77, 5, str(tmp_path / "control"))
    assert control.model.init_from == "stage2/best" and control.optim == arm.optim
    assert arm.slimipl.enabled and arm.data.unlabeled and arm.train.output_dir.endswith("arm")  # the arm is untouched
    only_pseudo_labels = build_dataclass(ExperimentConfig, {"data": {"train": [{"kind": "pseudo_labels", "path": str(tmp_path)}]}})
    with pytest.raises(ValueError, match="pseudo-labels only"):
        labeled_only_control(only_pseudo_labels, tmp_path / "c")


@pytest.mark.slow
def test_ablation_command_produces_its_table(recipe_run, tiny_demo_corpus):
    """The ablations reuse the finished recipe units (stages 1-3 and the control are skipped) and train one arm
    per language; here (c) without the cropping warm-up and the oracle topline, on the tiny corpus."""
    output, _, _ = recipe_run
    config = output.parent / "recipe.yaml"
    arms = "pseudo_labels,oracle_labels,no_cropping,always_cropping,language_temperature"
    command = [sys.executable, "scripts/run_ablations.py", "--config", str(config), "--ablations", arms, "jobs=2"]  # arms side by side
    completed = subprocess.run(command, cwd=REPOSITORY, env=ENVIRONMENT, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, f"{completed.stdout[-2000:]}\n{completed.stderr[-5000:]}"
    in_workers = set(re.findall(r"train \S+/ablations/(\S+): running in worker process", completed.stderr))
    assert in_workers == {f"{arm}/{code}" for arm in ("oracle_labels", "no_cropping", "always_cropping") for code in ("el", "fi")} | {"language_temperature"}
    assert "stage 1 (multilingual supervised): already done" in completed.stderr and "stage 3 control (el, labeled only): already done" in completed.stderr
    results = json.loads((output / "ablations.json").read_text())
    assert set(results) == {"pseudo_labels", "oracle_labels", "no_cropping", "always_cropping", "language_temperature"}
    oracle = yaml.safe_load((output / "ablations" / "oracle_labels" / "el" / "config.yaml").read_text())["slimipl"]
    assert oracle["oracle_transcripts"] == str(tiny_demo_corpus / "voxpopuli" / "answer_key.tsv")
    # the topline is measured against the labeled-only control, as the pseudo-label arm is
    assert results["oracle_labels"]["splits"]["test"]["el"]["cer_a"] == results["pseudo_labels"]["splits"]["test"]["el"]["cer_a"]
    balanced = json.loads((output / "ablations" / "language_temperature" / "train_summary.json").read_text())["languages"]
    assert balanced["temperature"] == 5 and balanced["target_share"] != balanced["natural_share"]  # stage 1 retrained, balanced
    no_cropping = yaml.safe_load((output / "ablations" / "no_cropping" / "el" / "config.yaml").read_text())
    stage3 = yaml.safe_load((output / "stages" / STAGE_FOLDERS[3] / "el" / "config.yaml").read_text())
    assert no_cropping["slimipl"]["cropping_warmup_updates"] == 0 and stage3["slimipl"]["cropping_warmup_updates"] == 1
    assert {k: v for k, v in no_cropping["slimipl"].items() if k != "cropping_warmup_updates"} == {k: v for k, v in stage3["slimipl"].items() if k != "cropping_warmup_updates"}
    summary = json.loads((output / "ablations" / "always_cropping" / "el" / "train_summary.json").read_text())["slimipl"]
    assert summary["cropped_pseudo_labeled_batches"] == summary["pseudo_labeled_batches"] > 0
    for name in results:
        row = results[name]["splits"]["test"]["el"]
        assert row["low"] <= row["difference"] <= row["high"]
    report = (output / "ablations.md").read_text()
    assert "## (c) slimIPL without the cropping warm-up vs with it (test)" in report and "| el |" in report
    # the pseudo-label arm is the recipe's own comparison, computed the same way
    recipe_results = json.loads((output / "results.json").read_text())
    assert results["pseudo_labels"]["splits"]["test"]["el"]["cer_b"] == recipe_results["comparisons"]["test"]["3 vs 3c"]["per_language"]["el"]["cer_b"]


def test_the_demo_config_runs_on_another_corpus_and_takes_its_languages_from_the_data(tiny_demo_corpus, tmp_path):
    """Nothing in the demo config names a language: pointed at a corpus in the same layouts with other
    languages (here two of the tiny corpus' seven, one with unlabeled audio), it picks them up."""
    from mlpl.recipe import Recipe, load_recipe_config

    other = tmp_path / "other"
    for code in ("de", "bg"):
        (other / "cv").mkdir(parents=True, exist_ok=True)
        (other / "cv" / code).symlink_to(tiny_demo_corpus / "cv" / code)
    (other / "voxpopuli").mkdir()
    (other / "voxpopuli" / "bg").symlink_to(tiny_demo_corpus / "voxpopuli" / "bg")
    config = load_recipe_config(
        REPOSITORY / "training" / "configs" / "demo_recipe.yaml",
        ["demo_corpus=null", f"output_dir={tmp_path / 'out'}",
         f"labeled={{kind: common_voice, path: {other / 'cv'}}}", f"unlabeled={{kind: voxpopuli, path: {other / 'voxpopuli'}}}"],
    )  # fmt: skip
    recipe = Recipe(config)
    assert recipe.labeled_languages == ["bg", "de"] and recipe.pl_languages == ["bg"]
    assert recipe.config.labeled.path == str(other / "cv") and not (tmp_path / "out" / "corpus").exists()  # no demo corpus built
    # the oracle topline needs the unlabeled audio's answer key, which this corpus lacks: left out of the default
    # "all arms" selection, an error naming the file when asked for, checked before anything trains
    from mlpl.ablations import Ablations, parse_ablations

    assert "oracle_labels" not in Ablations(recipe, parse_ablations(None), skip_unavailable=True).runnable_names()
    with pytest.raises(FileNotFoundError, match=r"ablation oracle_labels: .*voxpopuli/answer_key.tsv does not exist"):
        Ablations(recipe, parse_ablations("pseudo_labels,oracle_labels")).run()
    assert not (tmp_path / "out" / "stages").exists()


def test_the_hall_demo_corpus_adds_its_voxpopuli_sets_and_each_serves_the_languages_it_holds(hall_demo_corpus, tmp_path):
    from mlpl.recipe import Recipe, load_recipe_config

    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "corpus").symlink_to(hall_demo_corpus)  # already built: not rebuilt
    overrides = [f"output_dir={tmp_path / 'out'}", "demo_corpus=tiny", "demo_corpus_voxpopuli_domain=plenary_hall"]
    recipe = Recipe(load_recipe_config(REPOSITORY / "training" / "configs" / "demo_recipe.yaml", overrides))
    assert {name: (source.kind, source.split) for name, source in recipe.config.evaluation_sets.items()} == {
        "vp_dev": ("voxpopuli_asr", "dev"), "vp_test": ("voxpopuli_asr", "test")
    }
    assert recipe.evaluation_names == ["dev", "test", "vp_dev", "vp_test"]
    sources = recipe.evaluation_sources(["el", "en"])
    assert [(name, source.languages) for name, source in sources] == [("dev", ["el", "en"]), ("test", ["el", "en"]), ("vp_dev", ["el"]), ("vp_test", ["el"])]
    assert [name for name, _ in recipe.evaluation_sources(["en", "de"])] == ["dev", "test"]  # no VoxPopuli transcripts for them
    with pytest.raises(ValueError, match=r"evaluation_sets \['test'\].*name the sets otherwise"):
        Recipe(load_recipe_config(REPOSITORY / "training" / "configs" / "demo_recipe.yaml", [*overrides, f"evaluation_sets={{test: {{kind: voxpopuli_asr, path: {hall_demo_corpus / 'voxpopuli_asr'}}}}}"]))


def test_run_folders_made_before_the_evaluation_sets_the_hall_and_the_audio_cache_are_still_the_same_run(tmp_path):
    from mlpl.config import config_to_dict
    from mlpl.recipe import RECIPE_KEYS_ADDED_LATER, load_recipe_config, recipe_run_identity
    from mlpl.run_folder import RECIPE_IGNORED_KEYS, RunFolderError, check_run_folder

    demo = REPOSITORY / "training" / "configs" / "demo_recipe.yaml"
    config = load_recipe_config(demo, [f"output_dir={tmp_path}"])
    # what a run folder of the earlier code recorded: the config without the keys added later (adapters off)
    before = {key: value for key, value in config_to_dict(config).items() if key not in (*RECIPE_KEYS_ADDED_LATER, "adapters")}
    assert before["common"]["data"].pop("audio_cache_gb") > 0  # nor the decoded-audio cache, which changes no result
    check_run_folder(tmp_path, before, ignore=RECIPE_IGNORED_KEYS)
    check_run_folder(tmp_path, recipe_run_identity(config), ignore=RECIPE_IGNORED_KEYS)  # the same run
    hall = recipe_run_identity(load_recipe_config(demo, [f"output_dir={tmp_path}", "demo_corpus_voxpopuli_domain=plenary_hall"]))
    with pytest.raises(RunFolderError, match="demo_corpus_voxpopuli_domain"):
        check_run_folder(tmp_path, hall, ignore=RECIPE_IGNORED_KEYS)


def test_seed_replicates_rerun_the_last_stages_on_the_same_earlier_ones(recipe_run):
    """--seeds 1: stages 5-6 and their controls train again with seed 1 on the base run's (linked) stages 1-4;
    across_seeds.md / .json set each effect of the two runs side by side with its interval across them."""
    output, _, _ = recipe_run
    config = output.parent / "recipe.yaml"
    command = [sys.executable, "scripts/run_recipe.py", "--config", str(config), "--languages", "el", "--stages", "5-6", "--seeds", "1"]
    completed = subprocess.run(command, cwd=REPOSITORY, env=ENVIRONMENT, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, f"{completed.stdout[-2000:]}\n{completed.stderr[-5000:]}"
    replicate = output / "seeds" / "seed_1"
    for stage in (1, 2, 3, 4):
        assert (replicate / "stages" / STAGE_FOLDERS[stage]).is_symlink()
    assert (replicate / "stages" / CONTROL_FOLDERS[3]).resolve() == (output / "stages" / CONTROL_FOLDERS[3]).resolve()
    for folder in (STAGE_FOLDERS[5], CONTROL_FOLDERS[5], STAGE_FOLDERS[6], CONTROL_FOLDERS[6]):
        unit = replicate / "stages" / folder
        assert not unit.is_symlink() and (unit / "DONE.json").is_file()
        trained = yaml.safe_load((unit / "config.yaml").read_text())
        base = yaml.safe_load((output / "stages" / folder / "config.yaml").read_text())
        assert trained["train"]["seed"] == 1 and base["train"]["seed"] == 0
        assert {k: v for k, v in trained["train"].items() if k not in ("seed", "output_dir")} == {k: v for k, v in base["train"].items() if k not in ("seed", "output_dir")}
    stage5 = yaml.safe_load((replicate / "stages" / STAGE_FOLDERS[5] / "config.yaml").read_text())
    assert Path(stage5["model"]["init_from"]).resolve() == (output / "stages" / STAGE_FOLDERS[1] / "best").resolve()
    assert any(source["kind"] == "pseudo_labels" for source in stage5["data"]["train"])
    assert not (replicate / "corpus").exists()  # the base run's data, not a second demo corpus
    summary = json.loads((output / "across_seeds.json").read_text())
    assert list(summary["runs"]) == ["seed 0", "seed 1"] and summary["replicated_stages"] == "5-6"
    for split in ("dev", "test"):
        assert set(summary["comparisons"][split]) == {"5 vs 5c", "6 vs 6c"}  # stage 3 is shared, not replicated
        for entry in summary["comparisons"][split].values():
            row = entry["per_language"]["el"]
            assert row["num_runs"] == 2 and row["relative_low"] <= row["mean_relative"] <= row["relative_high"]
            assert set(row["runs"]) == {"seed 0", "seed 1"}
    base_final = json.loads((output / "results.json").read_text())["comparisons"]["test"]["6 vs 6c"]["per_language"]["el"]
    assert summary["comparisons"]["test"]["6 vs 6c"]["per_language"]["el"]["runs"]["seed 0"]["relative"] == base_final["relative"]
    report = (output / "across_seeds.md").read_text()
    assert "## stage 6 (final) vs labeled-only control (test)" in report and "| el |" in report
    assert "# Arms against their controls over 2 runs" in completed.stdout
    refused = subprocess.run([*command[:-1], "0"], cwd=REPOSITORY, env=ENVIRONMENT, capture_output=True, text=True, timeout=600)
    assert refused.returncode != 0 and "other than the base run's 0" in refused.stderr
    # the same seed from an earlier stage would find the base run's stage 3-4 linked there: refused, not skipped
    earlier = subprocess.run([*command, "--replicate-from", "3"], cwd=REPOSITORY, env=ENVIRONMENT, capture_output=True, text=True, timeout=600)
    assert earlier.returncode != 0 and "must retrain it" in earlier.stderr and "3_slimipl" in earlier.stderr
    # the evaluate command sets any finished runs side by side with the same function
    evaluate = [sys.executable, "scripts/evaluate.py", "--across-runs", str(output), str(replicate), "--output-dir", str(output.parent / "across")]
    completed = subprocess.run(evaluate, cwd=REPOSITORY, env=ENVIRONMENT, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    again = json.loads((output.parent / "across" / "across_runs.json").read_text())
    assert again["comparisons"]["test"]["6 vs 6c"]["per_language"]["el"]["mean_relative"] == summary["comparisons"]["test"]["6 vs 6c"]["per_language"]["el"]["mean_relative"]
    single = subprocess.run(evaluate[:4], cwd=REPOSITORY, env=ENVIRONMENT, capture_output=True, text=True, timeout=300)
    assert single.returncode == 2 and "at least 2 runs, got 1" in single.stderr
    # the report covers every finished replicate under seeds/, not only this invocation's: a copy of seed 1's folder
    # stands in for a replicate of an earlier invocation (links kept), one stopped before stage 6 is left out
    shutil.copytree(replicate, output / "seeds" / "seed_2", symlinks=True)
    shutil.copytree(replicate, output / "seeds" / "seed_3", symlinks=True)
    (output / "seeds" / "seed_3" / "stages" / CONTROL_FOLDERS[6] / "DONE.json").unlink()
    completed = subprocess.run(command, cwd=REPOSITORY, env=ENVIRONMENT, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    pooled = json.loads((output / "across_seeds.json").read_text())
    assert list(pooled["runs"]) == ["seed 0", "seed 1", "seed 2"] and pooled["replicated_stages_by_run"] == {"seed 1": "5-6", "seed 2": "5-6"}
    row = pooled["comparisons"]["test"]["6 vs 6c"]["per_language"]["el"]
    assert row["num_runs"] == 3 and row["runs"]["seed 2"] == row["runs"]["seed 1"]
    assert "seed 2 (" in (output / "across_seeds.md").read_text() and "stages 5-6 replicated" in (output / "across_seeds.md").read_text()


@pytest.mark.slow
def test_units_side_by_side_train_the_models_of_one_at_a_time(recipe_run, tmp_path):
    """--jobs 2: units that do not depend on each other (an arm and its control; each language's stages 2-3) train
    in two worker processes at once. With the same threads per unit (OMP_NUM_THREADS=1 here, so 1 // 2 -> 1) every
    unit's evaluation is the one-at-a-time run's, and results.json keeps the recipe's order."""
    output, _, _ = recipe_run
    side = tmp_path / "side_by_side"
    command = [sys.executable, "scripts/run_recipe.py", "--config", str(output.parent / "recipe.yaml"), "--jobs", "2", f"output_dir={side}"]
    completed = subprocess.run([*command, "--languages", "el"], cwd=REPOSITORY, env=ENVIRONMENT, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, f"{completed.stdout[-2000:]}\n{completed.stderr[-5000:]}"
    assert "units side by side: 2 worker processes of 1 thread(s) each" in completed.stderr
    workers = dict(re.findall(r"train \S+/stages/(\S+): running in worker process (\d+)", completed.stderr))
    # stage 1 and the lone language's stage 2 run here; every arm beside its control, in two different workers
    assert set(workers) == {"3_slimipl/el", "3_slimipl_control/el", "5_pl_training", "5_pl_training_control", "6_finetune", "6_finetune_control"}
    for arm, control in (("3_slimipl/el", "3_slimipl_control/el"), ("5_pl_training", "5_pl_training_control")):
        assert workers[arm] != workers[control]
    base, ours = (json.loads((folder / "results.json").read_text()) for folder in (output, side))
    assert list(ours["stages"]) == ["1", "2", "3", "3c", "5", "5c", "6", "6c"]
    for key, units in ours["stages"].items():  # (other tests add languages to the base run: compare what this one ran)
        assert list(units) == (["all"] if key[0] in "156" else ["el"]), key
        for unit, entry in units.items():
            assert entry["evaluation"] == base["stages"][key][unit]["evaluation"], (key, unit)
    for split, comparisons in ours["comparisons"].items():
        for name, entry in comparisons.items():
            assert entry["per_language"]["el"] == base["comparisons"][split][name]["per_language"]["el"], (split, name)
    # two languages' stages 2-3 side by side: el's are done (skipped), fi's train in the workers
    completed = subprocess.run([*command, "--languages", "el,fi", "--stages", "2-3"], cwd=REPOSITORY, env=ENVIRONMENT, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, f"{completed.stdout[-2000:]}\n{completed.stderr[-5000:]}"
    assert completed.stderr.count("already done") == 3  # el's stage 2, stage 3 and its control
    fi = set(re.findall(r"train \S+/stages/(\S+): running in worker process", completed.stderr))
    assert fi == {"2_finetune/fi", "3_slimipl/fi", "3_slimipl_control/fi"}
    assert "update/s" not in completed.stderr  # workers log lines, not tqdm bars (two would overwrite each other)
    ours = json.loads((side / "results.json").read_text())
    assert list(ours["stages"]["3c"]) == ["el", "fi"] and list(ours["stages"])[:4] == ["1", "2", "3", "3c"]


def test_side_by_side_tasks_all_end_before_the_first_error_is_raised():
    import threading
    import time

    from mlpl.unit_pool import UnitPool, in_side_by_side_task, side_by_side

    finished, seen = [], []

    def fails():
        seen.append(in_side_by_side_task())
        raise ValueError("unit A failed")

    def slow():
        seen.append(in_side_by_side_task())
        time.sleep(0.2)
        finished.append(threading.current_thread().name)

    pool = UnitPool(jobs=2, threads=1)  # never entered: side_by_side only needs to know there is one
    with pytest.raises(ValueError, match="unit A failed"):
        side_by_side([fails, slow], pool)
    assert len(finished) == 1 and seen == [True, True]  # the other unit was not abandoned halfway
    assert not in_side_by_side_task()
    seen.clear()
    side_by_side([slow, slow], None)  # no pool: one after the other, here
    assert seen == [False, False] and finished[-1] == threading.current_thread().name
    with pytest.raises(ValueError, match="jobs=1: a pool of workers needs jobs >= 2"):
        UnitPool(jobs=1, threads=2)
    with pytest.raises(RuntimeError, match="outside `with UnitPool"):
        pool.run("a unit", print)


def test_a_bad_jobs_value_is_named(tmp_path):
    from mlpl.config import build_dataclass
    from mlpl.recipe import Recipe, RecipeConfig

    config = build_dataclass(RecipeConfig, {"labeled": {"kind": "common_voice", "path": str(tmp_path)}, "jobs": 0})
    with pytest.raises(ValueError, match=r"jobs=0 must be >= 1"):
        Recipe(config)
