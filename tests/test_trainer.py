"""The trainer (issue 4): configs, the lr schedule, and real runs of scripts/train.py on the demo corpus.

The runs are subprocesses of the real script, as a user launches it; the tests check what they leave on
disk: metrics.jsonl, checkpoints, the best and final model folders, the summary.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from test_distributed_data import free_port
from mlpl.config import ExperimentConfig, load_config, save_config
from mlpl.trainer import linear_warmup_with_halving

REPOSITORY = Path(__file__).resolve().parents[1]
ENVIRONMENT = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
TINY_MODEL = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64, "max_relative_positions": 64}


def write_config(path: Path, corpus: Path, **sections) -> Path:
    values = {
        "data": {
            "train": [{"kind": "common_voice", "path": str(corpus / "cv"), "split": "train", "languages": ["fi", "el"]}],
            "max_batch_seconds": 12,
        },
        "model": {"overrides": TINY_MODEL, "dropout": 0.1, "layerdrop": 0.0},
        "optim": {"optimizer": "adamw", "lr": 0.002, "warmup_updates": 4, "halve_lr_at": 10, "max_grad_norm": 5.0},
        "train": {"max_updates": 16, "eval_every": 1000, "save_every": 4, "log_every": 4, "keep_last": 2},
    }
    for section, updates in sections.items():
        values.setdefault(section, {}).update(updates)
    path.write_text(yaml.safe_dump(values))
    return path


def run_train(config: Path, output_dir: Path, *extra: str, timeout: int = 300) -> subprocess.CompletedProcess:
    command = [sys.executable, "scripts/train.py", "--config", str(config), f"train.output_dir={output_dir}", *extra]
    completed = subprocess.run(command, cwd=REPOSITORY, env=ENVIRONMENT, capture_output=True, text=True, timeout=timeout)
    assert completed.returncode == 0, f"train.py failed:\n{completed.stdout[-2000:]}\n{completed.stderr[-4000:]}"
    return completed


def records(output_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]


def killed_after_checkpoint(finished: Path, step: int, copy: Path) -> Path:
    """`copy`: the finished run folder `finished` as the run would have left it had it been killed right after
    writing its checkpoint of update `step`: the newer checkpoints, the final model and the summary are gone;
    the metrics rows logged after the checkpoint stay (a `--resume` truncates them). A checkpoint holds nothing
    of what the run does after writing it, so a `--resume` of `copy` must finish with `finished`'s parameters
    bit for bit, as a second run stopped at `step` would, without the start-up of that second run."""
    shutil.copytree(finished, copy)
    for checkpoint in (copy / "checkpoints").glob("step_*"):
        if int(checkpoint.name.split("_")[1]) > step:
            shutil.rmtree(checkpoint)
    shutil.rmtree(copy / "final")
    (copy / "train_summary.json").unlink()
    assert (copy / "checkpoints" / f"step_{step}" / "trainer_state_rank0.pt").is_file(), f"no checkpoint of update {step} kept"
    return copy


# ---- configuration ----------------------------------------------------------------------------------------


def test_config_defaults_are_the_papers_values():
    config = ExperimentConfig()
    assert (config.optim.optimizer, config.optim.lr, config.optim.warmup_updates, config.optim.max_grad_norm) == ("adagrad", 0.03, 64_000, 0.1)
    assert (config.slimipl.supervised_warmup_updates, config.slimipl.unlabeled_ratio, config.slimipl.cache_size) == (20_000, 10, 1000)
    assert (config.slimipl.replace_probability, config.slimipl.dropout, config.slimipl.cropping_warmup_updates) == (0.1, 0.1, 10_000)
    assert (config.spec_augment.num_freq_masks, config.spec_augment.freq_mask_width, config.spec_augment.time_mask_width) == (2, 30, 50)


def test_yaml_overrides_are_typed_and_saved(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"optim": {"lr": 0.01}, "data": {"train": [{"kind": "flashlight", "path": "x.lst", "language": "el"}]}}))
    config = load_config(path, ["optim.lr=0.5", "train.max_updates=1e3", "slimipl.enabled=true", "model.overrides={hidden_size: 64}", "train.log_with=tensorboard"])
    assert config.optim.lr == 0.5 and config.train.max_updates == 1000 and config.slimipl.enabled is True
    assert config.model.overrides == {"hidden_size": 64} and config.train.log_with == ["tensorboard"]
    assert config.data.train[0].language == "el"
    save_config(config, tmp_path / "saved.yaml")
    assert load_config(tmp_path / "saved.yaml").optim.lr == 0.5


@pytest.mark.parametrize(
    "override, message",
    [
        ("optim.lrr=0.1", r"unknown key\(s\) \['lrr'\]"),
        ("train.max_updates=many", "expected int, got 'many'"),
        ("slimipl.enabled=maybe", "expected true/false"),
        ("lr=0.1", r"unknown key\(s\) \['lr'\]"),
        ("optim.lr", "must look like section.key=value"),
        ("spec_augment.batches=unlabeled", r"spec_augment\.batches='unlabeled' is out of range: it must be one of \['all', 'pseudo_labeled'\]"),
    ],
)
def test_bad_overrides_name_the_key_and_value(override, message):
    with pytest.raises(ValueError, match=message):
        load_config(None, [override])


def test_flashlight_source_without_language_is_refused():
    with pytest.raises(ValueError, match="set `language:`"):
        load_config(None, ["data.train=[{kind: flashlight, path: a.lst}]"])


def test_learning_rate_warms_up_linearly_and_halves_once():
    factor = linear_warmup_with_halving(warmup_updates=4, halve_at=10)
    assert [factor(n) for n in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]
    assert factor(9) == 1.0 and factor(10) == 0.5 and factor(10_000) == 0.5


def test_learning_rate_decays_linearly_to_zero_at_the_last_update():
    factor = linear_warmup_with_halving(warmup_updates=2, halve_at=6, decay_from=4, max_updates=8)
    assert [factor(n) for n in range(9)] == [0.5, 1.0, 1.0, 1.0, 1.0, 0.75, 0.25, 0.125, 0.0]
    with pytest.raises(ValueError, match="decay_from=8 is not below train.max_updates=8"):
        load_config(None, ["optim.decay_from=8", "train.max_updates=8"])
    # a run folder recorded before the option existed is still the same run; one that decays is another
    from mlpl.adapters import run_identity
    from mlpl.config import config_to_dict

    assert "decay_from" not in run_identity(config_to_dict(load_config(None)))["optim"]
    assert run_identity(config_to_dict(load_config(None, ["optim.decay_from=4", "train.max_updates=8"])))["optim"]["decay_from"] == 4


def test_spec_augment_batches_is_new_to_a_run_only_when_set():
    """A run folder recorded before `spec_augment.batches` existed (every batch masked) is still the same run;
    one that masks only pseudo-labeled batches is another."""
    from mlpl.adapters import run_identity
    from mlpl.config import config_to_dict

    default = run_identity(config_to_dict(load_config(None)))["spec_augment"]
    assert "batches" not in default and default["enabled"] is True
    chosen = run_identity(config_to_dict(load_config(None, ["spec_augment.batches=pseudo_labeled"])))["spec_augment"]
    assert chosen == {**default, "batches": "pseudo_labeled"}


# ---- real runs ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_supervised_run_lowers_dev_cer_and_leaves_a_usable_model(tiny_demo_corpus, tmp_path):
    languages = ["en", "de"]  # the tiny corpus's largest languages (8 training clips each)
    config = write_config(
        tmp_path / "supervised.yaml",
        tiny_demo_corpus,
        data={
            "train": [{"kind": "common_voice", "path": str(tiny_demo_corpus / "cv"), "split": "train", "languages": languages}],
            "dev": [{"kind": "common_voice", "path": str(tiny_demo_corpus / "cv"), "split": "dev", "languages": languages}],
            "max_batch_seconds": 20,
        },
        model={"overrides": dict(TINY_MODEL, hidden_size=64, intermediate_size=128), "dropout": 0.0, "layerdrop": 0.0},
        optim={"optimizer": "adamw", "lr": 0.003, "warmup_updates": 10, "halve_lr_at": None, "max_grad_norm": 5.0},
        spec_augment={"enabled": False},
        train={
            "max_updates": 75, "eval_every": 75, "eval_before_training": True, "save_every": 75, "log_every": 25,
            "keep_last": 1, "log_with": ["tensorboard"],
        },  # fmt: skip
    )
    output_dir = tmp_path / "run"
    run_train(config, output_dir)

    dev = [r for r in records(output_dir) if "dev_cer" in r]
    assert [r["update"] for r in dev] == [0, 75]
    assert dev[-1]["dev_cer"] < min(dev[0]["dev_cer"], 1.0) - 0.02, dev  # below the start and below all-blank output
    assert {f"dev/common_voice:cv:dev/cer/{code}" for code in languages} <= set(dev[-1])
    assert list(output_dir.rglob("events.out.tfevents.*")), "nothing reached the tensorboard tracker"
    losses = [r["loss"] for r in records(output_dir) if "loss" in r]
    assert losses[-1] < 0.8 * losses[0]

    summary = json.loads((output_dir / "train_summary.json").read_text())
    assert summary["num_updates"] == 75 and summary["skipped_non_finite"] == 0
    assert summary["best_dev_cer"] == pytest.approx(min(r["dev_cer"] for r in dev))
    assert [p.name for p in (output_dir / "checkpoints").iterdir()] == ["step_75"]  # keep_last=1
    assert (output_dir / "config.yaml").is_file() and (output_dir / "best" / "training_config.yaml").is_file()

    # The best model folder is a pipeline-ready model, remote code included.
    from transformers import pipeline

    from mlpl.audio import load_audio

    clip = next((tiny_demo_corpus / "cv" / "en" / "clips").glob("*.mp3"))
    recognizer = pipeline("automatic-speech-recognition", model=str(output_dir / "best"))
    assert isinstance(recognizer(load_audio(clip))["text"], str)
    saved = json.loads((output_dir / "best" / "config.json").read_text())
    assert saved["languages"] == sorted(languages) and "auto_map" in saved


SLIMIPL = {
    "enabled": True,
    "supervised_warmup_updates": 4,
    "unlabeled_ratio": 2,
    "cache_size": 2,
    "replace_probability": 0.5,
    "cropping_warmup_updates": 4,
    "crop_seconds": 3.0,  # the demo's unlabeled utterances are 10-30 s: cropping really cuts them
}


@pytest.fixture(scope="module")
def slimipl_config(tiny_demo_corpus, tmp_path_factory):
    corpus = tiny_demo_corpus
    return write_config(
        tmp_path_factory.mktemp("slimipl") / "slimipl.yaml",
        corpus,
        data={
            "train": [{"kind": "common_voice", "path": str(corpus / "cv"), "split": "train", "languages": ["fi", "el"]}],
            "unlabeled": [{"kind": "voxpopuli", "path": str(corpus / "voxpopuli"), "languages": ["fi", "el"]}],
            "max_batch_seconds": 40,
        },
        model={"overrides": TINY_MODEL, "dropout": 0.2, "layerdrop": 0.2},
        slimipl=SLIMIPL,
    )


@pytest.fixture(scope="module")
def uninterrupted_slimipl_run(slimipl_config, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("uninterrupted") / "run"
    run_train(slimipl_config, output_dir)
    return output_dir


@pytest.mark.slow
def test_slimipl_run_follows_the_cache_rules(uninterrupted_slimipl_run):
    summary = json.loads((uninterrupted_slimipl_run / "train_summary.json").read_text())
    counters = summary["slimipl"]
    assert summary["num_updates"] == 16
    assert counters["supervised_warmup_steps"] == SLIMIPL["supervised_warmup_updates"]
    # Filling steps make no update; afterwards every unlabeled step trains on a cached batch.
    assert counters["filling_steps"] == SLIMIPL["cache_size"]
    assert counters["unlabeled_steps"] == counters["filling_steps"] + counters["training_reads"]
    assert counters["supervised_warmup_steps"] + counters["labeled_steps"] + counters["training_reads"] == 16
    # One labeled step per cycle of 1 + lambda steps.
    assert counters["cycles"] <= counters["labeled_steps"] <= counters["cycles"] + 1
    assert counters["unlabeled_steps"] <= SLIMIPL["unlabeled_ratio"] * (counters["cycles"] + 1)
    assert counters["reshuffles"] == counters["training_reads"] // SLIMIPL["cache_size"]
    # Pseudo-labels: C filling batches plus one per replacement; the first ones cropped (warm-up), not all.
    assert counters["pseudo_labeled_batches"] == counters["filling_steps"] + counters["replacements"]
    assert 0 < counters["cropped_pseudo_labeled_batches"] < counters["pseudo_labeled_batches"] or counters["replacements"] == 0
    assert counters["cropped_pseudo_labeled_batches"] >= SLIMIPL["cache_size"]
    # slimIPL lowered dropout and layerdrop, and the saved model says so.
    saved = json.loads((uninterrupted_slimipl_run / "final" / "config.json").read_text())
    assert (saved["dropout"], saved["layerdrop"]) == (0.1, 0.1)


@pytest.mark.slow
def test_slimipl_with_an_lm_caches_pseudo_labels_spelled_with_its_lexicon(slimipl_config, tiny_demo_corpus, tmp_path):
    """`slimipl.lm` + `lexicon: lm`: every pseudo-label in the cache is written with the LM's words (the tiny
    model's greedy PLs are not: they spell whatever it hears, unknown words included)."""
    from modeling_mlpl import MlplProcessor
    from mlpl.checkpoint import load_trainer_state
    from mlpl.loaders import common_voice_records
    from mlpl.ngram_lm import estimate_kneser_ney

    sentences = [record["sentence"] for record in common_voice_records(tiny_demo_corpus / "cv", "train") if record["language"] in ("fi", "el")]
    arpa = tmp_path / "lm.arpa"
    estimate_kneser_ney(sentences, order=2).write_arpa(arpa)
    lexicon = {word for sentence in sentences for word in sentence.split()}

    # the pseudo-label test's random model with the blank pushed down: it emits a character on every frame
    from test_pseudo_label import tiny_model

    initial = tmp_path / "initial"
    processor = MlplProcessor.from_transcripts([record["sentence"] for record in common_voice_records(tiny_demo_corpus / "cv", "train")])
    tiny_model(processor, blank_bias=-5.0).save_pretrained(initial)
    processor.save_pretrained(initial)

    output_dir = tmp_path / "run"
    lm = [f"slimipl.lm={arpa}", "slimipl.lexicon=lm", "slimipl.lm_alpha=0.5", "slimipl.lm_beta=0.0"]
    run_train(slimipl_config, output_dir, *lm, f"model.init_from={initial}", "optim.lr=1e-6", "train.max_updates=12", "train.save_every=12")
    state = load_trainer_state(output_dir / "checkpoints" / "step_12" / "trainer_state_rank0.pt")
    tokenizer = MlplProcessor.from_pretrained(output_dir / "final").tokenizer
    texts = [
        tokenizer.decode([token for token in row.tolist() if token >= 0], group_tokens=False).strip()
        for labels in state["cache"]["labels"] for row in labels
    ]
    assert len(texts) >= SLIMIPL["cache_size"] and any(texts)
    for text in texts:
        assert set(text.split()) <= lexicon, text
    saved = yaml.safe_load((output_dir / "config.yaml").read_text())["slimipl"]
    assert (saved["lm"], saved["lexicon"]) == (str(arpa), "lm")


@pytest.mark.slow
def test_the_oracle_topline_trains_on_the_true_transcripts_of_the_unlabeled_audio(slimipl_config, tiny_demo_corpus, tmp_path):
    """`slimipl.oracle_transcripts`: every cached batch carries, as its labels, the answer key's sentence of each of
    its utterances (the demo corpus's voxpopuli/answer_key.tsv), tokenized as labeled transcripts are; an
    utterance missing from the table is an error naming it and the table."""
    from modeling_mlpl import MlplProcessor
    from mlpl.checkpoint import load_trainer_state
    from mlpl.demo_corpus import read_answer_key, unlabeled_answer_key_path

    key = unlabeled_answer_key_path(tiny_demo_corpus / "voxpopuli")
    truth = {row["id"]: row["sentence"] for row in read_answer_key(key)}
    output_dir = tmp_path / "run"
    run_train(slimipl_config, output_dir, f"slimipl.oracle_transcripts={key}", "train.max_updates=12", "train.save_every=12")
    state = load_trainer_state(output_dir / "checkpoints" / "step_12" / "trainer_state_rank0.pt")
    tokenizer = MlplProcessor.from_pretrained(output_dir / "final").tokenizer
    vocabulary = set(tokenizer.get_vocab())
    cached = 0
    for batch, labels in zip(state["cache"]["batches"], state["cache"]["labels"]):
        for key_id, row in zip(batch["ids"], labels):
            text = tokenizer.decode([token for token in row.tolist() if token >= 0], group_tokens=False)
            # the true sentence, its characters outside the tiny labeled data's vocabulary as <unk>
            expected = "".join(c if c in vocabulary or c == " " else tokenizer.unk_token for c in truth[key_id])
            assert text == expected, key_id
            cached += 1
    assert cached >= SLIMIPL["cache_size"]
    summary = json.loads((output_dir / "train_summary.json").read_text())["slimipl"]
    assert summary["pseudo_labeled_batches"] == summary["filling_steps"] + summary["replacements"]

    partial = tmp_path / "partial.tsv"
    lines = key.read_text(encoding="utf-8").splitlines()
    partial.write_text("\n".join(line for line in lines if "_el_" not in line) + "\n", encoding="utf-8")
    command = [sys.executable, "scripts/train.py", "--config", str(slimipl_config), f"train.output_dir={tmp_path / 'bad'}", f"slimipl.oracle_transcripts={partial}"]
    completed = subprocess.run(command, cwd=REPOSITORY, env=ENVIRONMENT, capture_output=True, text=True, timeout=300)
    assert completed.returncode != 0 and "has no row in slimipl.oracle_transcripts" in completed.stderr and str(partial) in completed.stderr


@pytest.mark.slow
def test_sigkill_and_resume_gives_the_same_parameters(slimipl_config, uninterrupted_slimipl_run, tmp_path):
    output_dir = tmp_path / "killed"
    command = [sys.executable, "scripts/train.py", "--config", str(slimipl_config), f"train.output_dir={output_dir}"]
    process = subprocess.Popen(command, cwd=REPOSITORY, env=ENVIRONMENT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not (output_dir / "checkpoints" / "step_8").is_dir():
        assert process.poll() is None, "the run ended before it could be killed"
        assert time.time() < deadline, "no checkpoint step_8 appeared"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (output_dir / "train_summary.json").exists(), "the run finished before SIGKILL; nothing was resumed"

    completed = run_train(slimipl_config, output_dir, "--resume")
    assert "resumed from" in completed.stderr
    expected = load_file(uninterrupted_slimipl_run / "final" / "model.safetensors")
    resumed = load_file(output_dir / "final" / "model.safetensors")
    assert expected.keys() == resumed.keys()
    for name in expected:
        torch.testing.assert_close(resumed[name], expected[name], rtol=0, atol=0, msg=name)
    assert json.loads((output_dir / "train_summary.json").read_text())["slimipl"] == json.loads(
        (uninterrupted_slimipl_run / "train_summary.json").read_text()
    )["slimipl"]


@pytest.mark.slow
def test_the_decoded_audio_cache_changes_no_parameter(slimipl_config, uninterrupted_slimipl_run, tmp_path):
    """`data.audio_cache_gb: auto` (sized to the run's sets; labeled epochs, unlabeled batches and dev reads come
    from memory after the first decode) trains bit for bit as the run without it, and the summary says what the
    cache did."""
    output_dir = tmp_path / "cached"
    completed = run_train(slimipl_config, output_dir, "data.audio_cache_gb=auto")
    assert "data.audio_cache_gb=auto:" in completed.stderr and "h of audio of the run's map-style sets" in completed.stderr
    expected = load_file(uninterrupted_slimipl_run / "final" / "model.safetensors")
    cached = load_file(output_dir / "final" / "model.safetensors")
    for name in expected:
        torch.testing.assert_close(cached[name], expected[name], rtol=0, atol=0, msg=name)
    summary = json.loads((output_dir / "train_summary.json").read_text())
    assert summary["audio_cache"]["hits"] > 0 and summary["audio_cache"]["clips"] > 0 and not summary["audio_cache"]["full"]
    assert 0 < summary["audio_cache"]["held_gb"] <= summary["audio_cache"]["budget_gb"]
    assert json.loads((uninterrupted_slimipl_run / "train_summary.json").read_text())["audio_cache"]["clips"] == 0
    # the cache is not part of the run's identity: a resume may turn it off
    run_train(slimipl_config, output_dir, "--resume", "train.max_updates=17")


@pytest.mark.slow
def test_spec_augment_on_pseudo_labeled_batches_only(slimipl_config, uninterrupted_slimipl_run, tmp_path):
    """`spec_augment.batches: pseudo_labeled` masks slimIPL's PL batches and no labeled one: the slimIPL run masks
    exactly its cache reads (the default masks every trained batch), and a labeled-only run with it trains bit
    for bit as with SpecAugment off, which is what makes it a matched control."""
    every = json.loads((uninterrupted_slimipl_run / "train_summary.json").read_text())
    assert every["spec_augmented_batches"] == every["num_updates"] == 16  # batches: all (the default), start_update 0

    pseudo_labeled = tmp_path / "pseudo_labeled"
    run_train(slimipl_config, pseudo_labeled, "spec_augment.batches=pseudo_labeled")
    summary = json.loads((pseudo_labeled / "train_summary.json").read_text())
    reads = summary["slimipl"]["training_reads"]
    assert summary["num_updates"] == 16 and 0 < reads < 16
    assert summary["spec_augmented_batches"] == reads
    expected = load_file(uninterrupted_slimipl_run / "final" / "model.safetensors")
    trained = load_file(pseudo_labeled / "final" / "model.safetensors")
    assert any(not torch.equal(trained[name], expected[name]) for name in expected)  # the labeled steps went unmasked

    labeled_only, logs = {}, {}
    for name, extra in {"pseudo_labeled": "spec_augment.batches=pseudo_labeled", "off": "spec_augment.enabled=false"}.items():
        labeled_only[name] = tmp_path / f"labeled_only_{name}"
        logs[name] = run_train(slimipl_config, labeled_only[name], "slimipl.enabled=false", "train.max_updates=6", extra).stderr
    assert "pseudo_labeled without slimIPL: no batch is masked" in logs["pseudo_labeled"]
    summary = json.loads((labeled_only["pseudo_labeled"] / "train_summary.json").read_text())
    assert summary["num_updates"] == 6 and summary["spec_augmented_batches"] == 0
    clean = load_file(labeled_only["off"] / "final" / "model.safetensors")
    unmasked = load_file(labeled_only["pseudo_labeled"] / "final" / "model.safetensors")
    for name in clean:
        torch.testing.assert_close(unmasked[name], clean[name], rtol=0, atol=0, msg=name)


@pytest.mark.slow
def test_two_processes_train_with_identical_parameters(slimipl_config, tmp_path):
    output_dir = tmp_path / "ddp"
    command = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
        "tests/trainer_worker.py", str(slimipl_config), str(output_dir), "train.max_updates=8",
        # One cached batch, never replaced: each process's cache then holds the first batch of its own share.
        "slimipl.cache_size=1", "slimipl.replace_probability=0",
    ]  # fmt: skip
    environment = {**ENVIRONMENT, "ACCELERATE_USE_CPU": "true"}
    completed = subprocess.run(command, cwd=REPOSITORY, env=environment, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, f"{completed.stdout[-2000:]}\n{completed.stderr[-4000:]}"
    ranks = [json.loads((output_dir / f"rank{rank}.json").read_text()) for rank in range(2)]
    assert all(r == {"num_processes": 2, "num_updates": 8} for r in ranks)
    first, second = (torch.load(output_dir / f"parameters_rank{rank}.pt") for rank in range(2))
    initial = load_file(output_dir / "checkpoints" / "step_4" / "model.safetensors")
    for name in first:
        torch.testing.assert_close(first[name], second[name], rtol=0, atol=0, msg=name)
    assert any(not torch.equal(first[name], initial[name]) for name in initial), "parameters did not change after step 4"
    # Each process kept its own pseudo-label cache of its own share of the unlabeled data.
    states = [torch.load(output_dir / "checkpoints" / "step_8" / f"trainer_state_rank{rank}.pt", weights_only=True) for rank in range(2)]
    ids = [{i for batch in s["cache"]["batches"] for i in batch["ids"]} for s in states]
    assert ids[0] and ids[1] and not ids[0] & ids[1]


class _RunsCodeWhenUnpickled:
    """A crafted 'trainer state': unpickling it with the full unpickler would create `marker`."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.slow
def test_resume_refuses_a_crafted_trainer_state_and_never_runs_it(uninterrupted_slimipl_run, slimipl_config, tmp_path):
    output_dir = tmp_path / "planted"
    shutil.copytree(uninterrupted_slimipl_run, output_dir)
    newest = max((output_dir / "checkpoints").glob("step_*"), key=lambda p: int(p.name.split("_")[1]))
    marker = tmp_path / "payload_ran"
    torch.save({"state": _RunsCodeWhenUnpickled(marker)}, newest / "trainer_state_rank0.pt")

    command = [sys.executable, "scripts/train.py", "--config", str(slimipl_config), f"train.output_dir={output_dir}", "--resume"]
    completed = subprocess.run(command, cwd=REPOSITORY, env=ENVIRONMENT, capture_output=True, text=True, timeout=300)
    assert completed.returncode != 0
    assert not marker.exists(), "the planted pickle ran its payload on --resume"
    assert str(newest / "trainer_state_rank0.pt") in completed.stderr and "refusing to load" in completed.stderr


@pytest.mark.slow
def test_scripts_train_py_under_a_two_process_cpu_launch_is_one_group(tiny_demo_corpus, tmp_path):
    """`ACCELERATE_USE_CPU=true accelerate launch --num_processes 2 scripts/train.py`: the script's own
    process state must be the distributed one (PartialState() alone ignored ACCELERATE_USE_CPU, so each
    process trained alone as rank 0 and both wrote the same checkpoints)."""
    config = write_config(tmp_path / "run.yaml", tiny_demo_corpus, train={"max_updates": 2, "save_every": 2, "log_every": 1, "eval_every": 1000})
    command = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
        "scripts/train.py", "--config", str(config), f"train.output_dir={tmp_path / 'run'}",
    ]  # fmt: skip
    environment = {**ENVIRONMENT, "ACCELERATE_USE_CPU": "true"}
    completed = subprocess.run(command, cwd=REPOSITORY, env=environment, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, f"{completed.stdout[-2000:]}\n{completed.stderr[-4000:]}"
    assert completed.stderr.count("with 2 process(es)") == 1 and "with 1 process(es)" not in completed.stderr
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints" / "step_2").glob("trainer_state_rank*.pt")) == ["trainer_state_rank0.pt", "trainer_state_rank1.pt"]
