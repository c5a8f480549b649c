"""Paired bootstrap comparisons (issue 12): the interval against known cases, pairing by id, the table."""

import json
import logging
import math

import numpy as np
import pytest

from mlpl.metrics import paired_bootstrap, utterance_char_edits
from mlpl.report import compare_predictions, comparison_markdown, read_predictions


def test_identical_systems_differ_by_exactly_zero():
    result = paired_bootstrap({"el": ([1, 2, 0, 5], [1, 2, 0, 5], [10, 10, 8, 20])}, num_resamples=200)["el"]
    assert result.difference == 0 and result.low == 0 and result.high == 0 and not result.excludes_zero
    assert result.cer_a == pytest.approx(8 / 48)


def test_interval_matches_the_normal_approximation_for_equal_lengths():
    # Equal reference lengths: corpus CER difference = mean per-utterance difference / L, whose sampling
    # distribution is ~ normal with sd = sd(d) / sqrt(n) / L. The 95 % interval must match it.
    rng = np.random.default_rng(1)
    n, length = 400, 50
    edits_a = rng.integers(5, 20, n)
    edits_b = np.clip(edits_a + rng.integers(-6, 3, n), 0, None)
    result = paired_bootstrap({"fi": (edits_a, edits_b, [length] * n)}, num_resamples=4000, seed=3)["fi"]
    d = (edits_b - edits_a) / length
    half_width = 1.96 * d.std(ddof=1) / math.sqrt(n)
    assert result.difference == pytest.approx(d.mean())
    assert (result.high - result.low) / 2 == pytest.approx(half_width, rel=0.1)
    assert result.low < result.difference < result.high < 0 and result.excludes_zero
    assert result.relative == pytest.approx(d.mean() / (edits_a.sum() / (n * length)))


def test_the_mean_over_languages_resamples_each_language_and_averages():
    groups = {"bg": ([4] * 50, [2] * 50, [20] * 50), "el": ([3] * 30, [3] * 30, [10] * 30)}
    result = paired_bootstrap(groups, num_resamples=300)
    assert result["bg"].difference == pytest.approx(-0.1) and result["el"].difference == 0
    # constant per-utterance rates: every resample gives the same CERs, so the interval is a point
    assert result["mean"].difference == pytest.approx(-0.05) and result["mean"].low == pytest.approx(-0.05)
    assert result["mean"].cer_a == pytest.approx((0.2 + 0.3) / 2)


def test_bad_groups_are_refused():
    with pytest.raises(ValueError, match="group 'x'"):
        paired_bootstrap({"x": ([1], [1, 2], [3, 4])})
    with pytest.raises(ValueError, match="no reference characters"):
        paired_bootstrap({"x": ([1], [1], [0])})


def test_compare_predictions_pairs_by_id_and_reads_evaluation_folders(tmp_path):
    reference = [
        {"id": "a", "language": "el", "reference": "καλημέρα", "hypothesis": "καλιμέρα"},
        {"id": "b", "language": "el", "reference": "ναι", "hypothesis": "να"},
        {"id": "c", "language": "fi", "reference": "hyvää päivää", "hypothesis": "hyvä päivä"},
        {"id": "d", "language": "fi", "reference": "kiitos", "hypothesis": "kitos"},
    ]
    system = [dict(row, hypothesis=row["reference"]) for row in reversed(reference)]  # other order, no errors
    folder = tmp_path / "eval"
    folder.mkdir()
    (folder / "predictions.jsonl").write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in reference), encoding="utf-8")
    result = compare_predictions(read_predictions(folder), system, num_resamples=100)
    assert set(result) == {"el", "fi", "mean"}
    edits, lengths = utterance_char_edits(["καλιμέρα", "να"], ["καλημέρα", "ναι"])
    assert result["el"].cer_a == pytest.approx(sum(edits) / sum(lengths)) and result["el"].cer_b == 0
    assert result["fi"].relative == pytest.approx(-1.0)
    only_el = compare_predictions(reference, system, languages=["el"], num_resamples=100)
    assert set(only_el) == {"el"}
    table = comparison_markdown(result, "control", "slimIPL")
    assert "| mean over languages |" in table and "slimIPL CER" in table and table.count("\n|") == 4


def test_compare_predictions_refuses_different_splits(tmp_path):
    reference = [{"id": "a", "language": "el", "reference": "ναι", "hypothesis": "να"}]
    with pytest.raises(ValueError, match="share no utterance"):
        compare_predictions(reference, [{"id": "z", "language": "el", "reference": "ναι", "hypothesis": "ναι"}])
    with pytest.raises(ValueError, match="different references"):
        compare_predictions(reference, [{"id": "a", "language": "el", "reference": "όχι", "hypothesis": "όχι"}])
    (tmp_path / "predictions.jsonl").write_text('{"id": "a"}\n')
    with pytest.raises(ValueError, match="predictions.jsonl:1"):
        read_predictions(tmp_path)


def test_evaluate_script_compares_two_evaluation_folders(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    rows = [{"id": str(i), "language": "el", "reference": "καλημέρα σας", "hypothesis": "καλιμέρα σας" if i % 2 else "καλημέρα σας"} for i in range(20)]
    for name, hypothesis in (("a", None), ("b", "καλημέρα σας")):
        (tmp_path / name).mkdir()
        lines = [json.dumps(dict(row, hypothesis=hypothesis or row["hypothesis"]), ensure_ascii=False) for row in rows]
        (tmp_path / name / "predictions.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    repository = Path(__file__).resolve().parents[1]
    command = [sys.executable, "scripts/evaluate.py", "--compare", str(tmp_path / "a"), str(tmp_path / "b"), "--output-dir", str(tmp_path / "out"), "--resamples", "300"]
    completed = subprocess.run(command, cwd=repository, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "| el | 4.2 | 0.0 | -4.2 | -100.0 % |" in completed.stdout
    saved = json.loads((tmp_path / "out" / "comparison.json").read_text())
    assert saved["comparison"]["el"]["excludes_zero"] and saved["comparison"]["el"]["high"] < 0
    assert (tmp_path / "out" / "comparison.md").read_text().startswith("| |")


def _run_results(relative_by_language, excludes_zero=True):
    """results.json's comparisons of one run: stage 6 vs its control on test, control CER 0.40 per language."""
    per_language = {}
    for label, relative in relative_by_language.items():
        control = 0.40
        per_language[label] = {"cer_a": control, "cer_b": control * (1 + relative), "difference": control * relative, "relative": relative,
                               "low": control * relative - 0.01, "high": control * relative + 0.01, "num_utterances": 77,
                               "confidence": 0.95, "num_resamples": 1000, "excludes_zero": excludes_zero}  # fmt: skip
    return {"stages": {}, "comparisons": {"test": {"6 vs 6c": {"title": "stage 6 (final) vs labeled-only control", "arm": "6", "control": "6c",
                                                              "per_language": per_language}}}}  # fmt: skip


def test_t_interval_against_the_textbook_case():
    from mlpl.report import t_interval

    mean, low, high = t_interval([1.0, 2.0, 3.0])  # sd 1, n 3: half-width t(0.975, 2) / sqrt(3) = 4.303 / 1.732
    assert mean == 2.0 and high - mean == pytest.approx(4.303 / math.sqrt(3)) and mean - low == pytest.approx(high - mean)
    values = [float(v) for v in range(40)]  # beyond 30 degrees of freedom: the normal quantile
    mean, low, high = t_interval(values)
    assert high - mean == pytest.approx(1.960 * np.std(values, ddof=1) / math.sqrt(40))
    with pytest.raises(ValueError, match="at least 2 runs, got 1"):
        t_interval([0.5])


def test_across_runs_gives_the_mean_effect_and_its_interval_over_runs():
    from mlpl.report import across_runs, across_runs_markdown

    runs = {"seed0": _run_results({"el": -0.10, "mean": -0.06}), "seed1": _run_results({"el": -0.20, "mean": -0.06}),
            "seed2": _run_results({"el": -0.30, "mean": -0.06}, excludes_zero=False)}  # fmt: skip
    aggregated = across_runs(runs)
    el = aggregated["test"]["6 vs 6c"]["per_language"]["el"]
    assert el["mean_relative"] == pytest.approx(-0.20) and el["num_runs"] == 3 and el["runs_excluding_zero"] == 2
    assert el["relative_high"] - el["mean_relative"] == pytest.approx(4.303 * 0.10 / math.sqrt(3))
    assert el["mean_difference"] == pytest.approx(0.40 * -0.20) and el["mean_cer_control"] == pytest.approx(0.40)
    assert el["runs"]["seed1"]["relative"] == -0.20
    mean = aggregated["test"]["6 vs 6c"]["per_language"]["mean"]
    assert mean["relative_low"] == pytest.approx(-0.06) == mean["relative_high"]  # the same effect in every run: a point
    table = across_runs_markdown(aggregated, list(runs))
    assert "## stage 6 (final) vs labeled-only control (test)" in table
    assert "| el | 40.0 | 32.0 | -10.0 / -20.0 / -30.0 % | -20.0 % | [-44.8, +4.8] % |" in table and "| 2 of 3 |" in table


def test_across_runs_takes_each_comparison_over_the_runs_that_hold_it_and_refuses_a_single_run(tmp_path):
    from mlpl.report import across_runs, across_runs_markdown, read_run_results

    with_stage3 = _run_results({"el": -0.1, "mean": -0.1})
    with_stage3["comparisons"]["test"]["3 vs 3c"] = with_stage3["comparisons"]["test"]["6 vs 6c"]
    aggregated = across_runs({"a": with_stage3, "b": _run_results({"el": -0.2, "mean": -0.2})})
    assert set(aggregated["test"]) == {"6 vs 6c"}
    # a comparison that only some runs hold (stage 3 in the replicates that retrained it) is taken over those runs
    third = _run_results({"el": -0.3, "mean": -0.3})
    third["comparisons"]["test"]["3 vs 3c"] = third["comparisons"]["test"]["6 vs 6c"]
    aggregated = across_runs({"a": with_stage3, "b": _run_results({"el": -0.2, "mean": -0.2}), "c": third})
    stage3, final = aggregated["test"]["3 vs 3c"], aggregated["test"]["6 vs 6c"]
    assert stage3["runs"] == ["a", "c"] and stage3["per_language"]["el"]["num_runs"] == 2 and final["per_language"]["el"]["num_runs"] == 3
    assert stage3["per_language"]["el"]["mean_relative"] == pytest.approx(-0.2) and list(stage3["per_language"]["el"]["runs"]) == ["a", "c"]
    assert "Over 2 of the 3 runs, those that hold this comparison: a, c." in across_runs_markdown(aggregated, ["a", "b", "c"])
    with pytest.raises(ValueError, match="at least 2 runs, got 1"):
        across_runs({"a": with_stage3})
    with pytest.raises(FileNotFoundError, match="no results.json"):
        read_run_results(tmp_path)
    (tmp_path / "results.json").write_text(json.dumps({"stages": {}, "comparisons": {}}))
    with pytest.raises(ValueError, match="no comparisons.*controls"):
        read_run_results(tmp_path)


def test_the_stage_plot_puts_stages_at_named_ticks_without_log_notes(tmp_path, caplog):
    # Stage names are number-like strings; plotted as categories, matplotlib logs a note per line drawn
    # (28 lines at the end of the demo run). A language without stages 2-3 must still plot.
    from mlpl.report import _plots

    table = {
        split: {"el": {"1": 0.5, "2": 0.4, "3": 0.38, "3c": 0.39, "5": 0.45, "6": 0.41}, "de": {"1": 0.2, "5": 0.25, "6": 0.21}}
        for split in ("dev", "test")
    }
    caplog.set_level(logging.INFO)
    files = _plots(tmp_path, table, ["1", "2", "3", "3c", "5", "6"], ["el"], {})
    assert [r.getMessage() for r in caplog.records if r.name.startswith("matplotlib")] == []
    assert files["cer_by_stage.png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
