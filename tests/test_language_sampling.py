"""Language-balanced sampling (issue 14.2): `data.language_temperature` T draws language l's audio in
proportion to n_l ** (1 / T) (`LanguageBalancedBatchSampler`), resumes exactly, and the trainer reports the
hours it really trained on per language.

Stated tolerance: on the tiny demo corpus (28 clips, 7 languages, 2 to 7 clips each) the realized share of
every language over 200 epochs is within 0.01 of its target (each epoch is within one utterance per
language of the target and exact in expectation); a 130-update training run (about 10 epochs) within 0.03.
"""

import json
import math
from collections import defaultdict

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from test_trainer import TINY_MODEL, killed_after_checkpoint, run_train, write_config
from mlpl.batching import DurationBatchSampler, LanguageBalancedBatchSampler, language_sampling_shares
from mlpl.data import example_durations, example_languages
from mlpl.loaders import load_common_voice_folder

MAX_BATCH_SECONDS = 12.0


@pytest.fixture(scope="module")
def demo_train(tiny_demo_corpus):
    dataset = load_common_voice_folder(tiny_demo_corpus / "cv", "train")
    return example_durations(dataset), example_languages(dataset), dataset


def natural_seconds(durations, languages) -> dict:
    seconds = defaultdict(float)
    for duration, language in zip(durations, languages):
        seconds[language] += duration
    return dict(seconds)


def test_shares_follow_the_temperature():
    hours = {"big": 100.0, "small": 1.0}
    assert language_sampling_shares(hours, 1) == pytest.approx({"big": 100 / 101, "small": 1 / 101})
    five = language_sampling_shares(hours, 5)
    assert five["big"] / five["small"] == pytest.approx(100 ** 0.2) and sum(five.values()) == pytest.approx(1)
    assert language_sampling_shares(hours, math.inf) == {"big": 0.5, "small": 0.5}
    with pytest.raises(ValueError, match="must be > 0"):
        language_sampling_shares(hours, 0)


@pytest.mark.parametrize("temperature", [5.0, math.inf])
def test_realized_shares_match_the_targets_on_the_demo_corpus(demo_train, temperature):
    durations, languages, _ = demo_train
    samplers = [
        LanguageBalancedBatchSampler(durations, languages, MAX_BATCH_SECONDS, temperature, seed=3, num_replicas=2, rank=rank)
        for rank in range(2)
    ]
    realized = defaultdict(float)
    for epoch in range(200):
        per_rank = []
        for sampler in samplers:
            sampler.set_epoch(epoch)
            per_rank.append(list(sampler))
            for batch in per_rank[-1]:
                for index in batch:
                    realized[languages[index]] += durations[index]
                assert len(batch) == 1 or len(batch) * durations[batch].max() <= MAX_BATCH_SECONDS
        assert len(per_rank[0]) == len(per_rank[1])  # DDP: the same number of steps on every process
    targets = language_sampling_shares(natural_seconds(durations, languages), temperature)
    total = sum(realized.values())
    for language, target in targets.items():
        assert realized[language] / total == pytest.approx(target, abs=0.01), language
    # The smallest language really is upsampled (natural share 0.06).
    natural = language_sampling_shares(natural_seconds(durations, languages), 1)
    assert realized["el"] / total > 1.8 * natural["el"]


def test_an_epoch_is_the_datas_duration_and_mixes_languages(demo_train):
    durations, languages, _ = demo_train
    sampler = LanguageBalancedBatchSampler(durations, languages, MAX_BATCH_SECONDS, 5.0, seed=0)
    indices = sampler.epoch_indices(0)
    assert abs(durations[indices].sum() - durations.sum()) <= 7 * durations.max()  # one utterance per language at most
    assert any(len({languages[i] for i in batch}) > 1 for batch in sampler.epoch_batches(0))
    assert sampler.epoch_batches(1) != sampler.epoch_batches(0)  # drawn anew every epoch


def test_balanced_sampler_resumes_exactly_and_refuses_another_temperature(demo_train):
    durations, languages, _ = demo_train
    build = lambda temperature=5.0: LanguageBalancedBatchSampler(durations, languages, MAX_BATCH_SECONDS, temperature, seed=1)  # noqa: E731
    uninterrupted = build()
    uninterrupted.set_epoch(3)
    expected = list(uninterrupted)

    interrupted = build()
    interrupted.set_epoch(3)
    iterator = iter(interrupted)
    consumed = [next(iterator) for _ in range(4)]
    state = interrupted.state_dict()

    resumed = build()
    resumed.load_state_dict(state)
    assert consumed + list(resumed) == expected
    with pytest.raises(ValueError, match="language_temperature=5.0"):
        build(2.0).load_state_dict(state)
    with pytest.raises(ValueError, match="language_temperature"):
        DurationBatchSampler(durations, MAX_BATCH_SECONDS, seed=1).load_state_dict(state)


def test_temperature_is_a_stage_setting_of_the_recipe(tmp_path):
    from mlpl.config import build_dataclass
    from mlpl.recipe import Recipe, RecipeConfig

    labeled = tmp_path / "cv"
    (labeled / "fi" / "clips").mkdir(parents=True)
    (labeled / "fi" / "train.tsv").write_text("path\tsentence\n")
    config = build_dataclass(RecipeConfig, {"labeled": {"kind": "common_voice", "path": str(labeled)}, "stage1": {"data": {"language_temperature": 5}}})
    recipe = Recipe(config)
    assert recipe.experiment(1, {}, train=[], dev=[], folder=tmp_path / "s1").data.language_temperature == 5.0
    assert recipe.experiment(5, {}, train=[], dev=[], folder=tmp_path / "s5").data.language_temperature == 1.0


@pytest.mark.slow
def test_training_reports_realized_hours_and_resumes_exactly(tiny_demo_corpus, tmp_path):
    config = write_config(
        tmp_path / "balanced.yaml",
        tiny_demo_corpus,
        data={
            "train": [{"kind": "common_voice", "path": str(tiny_demo_corpus / "cv"), "split": "train"}],
            "max_batch_seconds": MAX_BATCH_SECONDS,
            "language_temperature": 5,
        },
        model={"overrides": TINY_MODEL, "dropout": 0.1, "layerdrop": 0.0},
        train={"max_updates": 130, "eval_every": 1000, "save_every": 60, "log_every": 65, "keep_last": 2},
    )
    whole = tmp_path / "whole"
    first = run_train(config, whole)
    summary = json.loads((whole / "train_summary.json").read_text())["languages"]
    assert summary["temperature"] == 5.0
    natural = summary["natural_share"]
    assert summary["target_share"] == pytest.approx(language_sampling_shares(natural, 5.0))
    for language, target in summary["target_share"].items():
        assert summary["realized_share"][language] == pytest.approx(target, abs=0.03), language
    rows = [json.loads(line) for line in (whole / "metrics.jsonl").read_text().splitlines()]
    assert {f"train_hours/{code}" for code in natural} <= set(rows[-1])
    assert rows[-1]["train_hours/el"] == pytest.approx(summary["realized_hours"]["el"])

    # Killed after the checkpoint of update 120, inside an epoch, and resumed: the resumed updates finish that
    # epoch and draw the next one, with the same parameters and the same realized hours as the whole run.
    parted = killed_after_checkpoint(whole, 120, tmp_path / "parted")

    def sampler_state(step: int) -> dict:
        return torch.load(parted / "checkpoints" / f"step_{step}" / "trainer_state_rank0.pt", weights_only=True)["train_sampler"]

    stopped = sampler_state(120)
    assert 0 < stopped["position"] < stopped["num_batches"], stopped  # inside an epoch
    second = run_train(config, parted, "--resume")
    assert f"resumed from {parted / 'checkpoints' / 'step_120'} at update 120" in second.stderr
    assert sampler_state(130)["epoch"] > stopped["epoch"]  # the resumed part began a new epoch
    # Clip durations are cached beside the run (issue 14.3): the second invocation reads no header.
    assert "28 clip durations, 0 from the cache" in first.stderr and (parted / "duration_cache").is_dir()
    assert "28 clip durations, 28 from the cache" in second.stderr
    expected, resumed = load_file(whole / "final" / "model.safetensors"), load_file(parted / "final" / "model.safetensors")
    assert all(np.array_equal(expected[name].numpy(), resumed[name].numpy()) for name in expected)
    assert json.loads((parted / "train_summary.json").read_text())["languages"] == summary
