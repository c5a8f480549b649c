"""Comparisons of two systems on the same utterances, and the tables that report them.

A result with pseudo-labels means something only beside the same training without them (its control).
`compare_predictions` pairs two evaluations' predictions by utterance id, language by language, and runs
`metrics.paired_bootstrap` on them: the CER of each, the difference, and a 95 % confidence interval of the
difference that resamples utterances (the same ones for both systems). The recipe's results report and
`scripts/evaluate.py --compare A B` both go through it, and through `comparison_markdown` for the table.

The recipe's results (docs/design.md §6) are rendered here too, from plain data the recipe collects:
`cer_table` (CER per split, language and stage), `compare_with_controls` (every arm against its labeled-only
control), `pseudo_label_table` / `routing_table` (stage 4) and `write_results` (results.md and the plots).
The stage order and the comparisons are `mlpl.stages`'.

`across_runs` sets one comparison beside its replicates: several recipe runs with other seeds, each effect's
mean with a Student-t interval across the runs (`scripts/evaluate.py --across-runs RUN RUN ...`).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .files import save_figure_atomically, write_text_atomically
from .metrics import PairedComparison, paired_bootstrap, utterance_char_edits
from .stages import COMPARISONS, TABLE_STAGES, recipe_stage

logger = logging.getLogger("mlpl.report")

PREDICTIONS_FILE = "predictions.jsonl"  # as written by mlpl.evaluation


def ordered_splits(keyed: Mapping[str, Any]) -> list[str]:
    """The evaluation names of `keyed` in report order: test, dev, then the rest (extra sets) as they come."""
    return [name for name in ("test", "dev") if name in keyed] + [name for name in keyed if name not in ("test", "dev")]


def read_predictions(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows of a `predictions.jsonl` (or of the one inside an evaluation folder)."""
    path = Path(path)
    if path.is_dir():
        path = path / PREDICTIONS_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no predictions file; pass an evaluation folder written by scripts/evaluate.py "
            f"(it holds {PREDICTIONS_FILE}) or the file itself"
        )
    rows = []
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if line.strip():
                try:
                    row = json.loads(line)
                    rows.append({key: row[key] for key in ("id", "language", "reference", "hypothesis")})
                except (json.JSONDecodeError, KeyError, TypeError) as error:
                    raise ValueError(f"{path}:{number}: not a prediction row with id, language, reference, hypothesis ({error})") from None
    return rows


def compare_predictions(
    reference: Sequence[Mapping[str, Any]],
    system: Sequence[Mapping[str, Any]],
    *,
    languages: Sequence[str] | None = None,
    num_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, PairedComparison]:
    """`{language: comparison, ..., "mean": ...}` of `system` (B) against `reference` (A), paired by id.

    Only utterances both evaluations decoded are compared (a warning counts the others); their reference
    transcripts must agree. `languages` restricts the comparison (and its mean) to those languages.
    """
    by_id = {row["id"]: row for row in reference}
    pairs: dict[str, list[tuple[Mapping, Mapping]]] = {}
    unmatched = 0
    for row in system:
        other = by_id.get(row["id"])
        if other is None:
            unmatched += 1
            continue
        if other["reference"] != row["reference"] or other["language"] != row["language"]:
            raise ValueError(f"utterance {row['id']!r} has different references or languages in the two evaluations; compare evaluations of the same split")
        if languages is None or row["language"] in languages:
            pairs.setdefault(row["language"], []).append((other, row))
    system_ids = {row["id"] for row in system}
    unmatched += sum(1 for row in reference if row["id"] not in system_ids)
    if unmatched:
        logger.warning("%d utterances are in only one of the two evaluations; compared the %d in both", unmatched, sum(len(p) for p in pairs.values()))
    if not pairs:
        raise ValueError("the two evaluations share no utterance (of the languages asked for); compare evaluations of the same split")
    groups = {}
    for language in sorted(pairs):
        references = [a["reference"] for a, _ in pairs[language]]
        edits_a, lengths = utterance_char_edits([a["hypothesis"] for a, _ in pairs[language]], references)
        edits_b, _ = utterance_char_edits([b["hypothesis"] for _, b in pairs[language]], references)
        groups[language] = (edits_a, edits_b, lengths)
    return paired_bootstrap(groups, num_resamples=num_resamples, confidence=confidence, seed=seed)


def _percent(value: float | None, sign: bool = False) -> str:
    if value is None:
        return "-"
    return f"{100 * value:+.1f}" if sign else f"{100 * value:.1f}"


def comparison_row(label: str, comparison: PairedComparison) -> str:
    """One Markdown row: label | CER A | CER B | B - A | relative | CI of B - A | significant."""
    significant = "yes" if comparison.excludes_zero else "no"
    return (
        f"| {label} | {_percent(comparison.cer_a)} | {_percent(comparison.cer_b)} | {_percent(comparison.difference, True)} | "
        f"{_percent(comparison.relative, True)} % | [{_percent(comparison.low, True)}, {_percent(comparison.high, True)}] | {significant} |"
    )


def comparison_header(name_a: str, name_b: str, confidence: float = 0.95) -> list[str]:
    return [
        f"| | {name_a} CER | {name_b} CER | difference | relative | {round(100 * confidence)} % CI | CI excludes 0 |",
        "|---|---:|---:|---:|---:|---:|:---:|",
    ]


def comparison_markdown(comparisons: Mapping[str, PairedComparison], name_a: str = "A", name_b: str = "B") -> str:
    """A Markdown table of `compare_predictions`' result: one row per language, then the mean."""
    if not comparisons:
        return ""
    first = next(iter(comparisons.values()))
    lines = comparison_header(name_a, name_b, first.confidence)
    lines += [comparison_row(label if label != "mean" else "mean over languages", c) for label, c in comparisons.items()]
    lines += [
        "",
        f"CER in %, corpus-level per language; difference = {name_b} - {name_a} in CER points (negative: {name_b} is better); "
        f"interval: paired bootstrap over utterances, {first.num_resamples} resamples.",
    ]
    return "\n".join(lines)


def stored_comparison_table(stored: Mapping[str, Mapping[str, Any]], name_a: str, name_b: str) -> list[str]:
    """The Markdown header and rows of a comparison as `comparison_to_dict` stored it (results.json,
    ablations.json): one row per language, then the mean."""
    first = next(iter(stored.values()))
    lines = comparison_header(name_a, name_b, first["confidence"])
    for label, values in stored.items():
        lines.append(comparison_row(label, PairedComparison(**{k: v for k, v in values.items() if k != "excludes_zero"})))
    return lines


def comparison_to_dict(comparisons: Mapping[str, PairedComparison]) -> dict[str, dict[str, Any]]:
    import dataclasses

    return {label: {**dataclasses.asdict(c), "excludes_zero": c.excludes_zero} for label, c in comparisons.items()}


# Two-sided 97.5 % quantiles of Student's t for 1..30 degrees of freedom (beyond: the normal's 1.960).
T_QUANTILES_975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
    2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)


def t_interval(values: Sequence[float]) -> tuple[float, float, float]:
    """(mean, low, high): the 95 % Student-t interval of the mean of independent `values` (at least 2)."""
    import statistics

    if len(values) < 2:
        raise ValueError(f"an interval across runs needs at least 2 runs, got {len(values)}")
    mean = statistics.fmean(values)
    degrees = len(values) - 1
    quantile = T_QUANTILES_975[degrees - 1] if degrees <= len(T_QUANTILES_975) else 1.960
    half = quantile * statistics.stdev(values) / len(values) ** 0.5
    return mean, mean - half, mean + half


def read_run_results(run: str | os.PathLike) -> dict[str, Any]:
    """A recipe run's results.json: `run` is the run's output folder or the file itself."""
    path = Path(run)
    path = path / "results.json" if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"{run}: no results.json; pass a finished recipe run's output folder (or its results.json)")
    results = json.loads(path.read_text())
    if not results.get("comparisons"):
        raise ValueError(f"{path} has no comparisons; run the recipe with controls (`--controls` or `controls: true`)")
    return results


def across_runs(runs: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Each arm-vs-control effect over independent runs (replicates with other seeds), beside the utterance-level
    intervals of each run.

    A paired bootstrap over utterances says how sure one training run's comparison is; it cannot see how much the
    comparison moves when the training runs again with other random streams. Over N runs: the mean difference and
    relative change, each with its 95 % Student-t interval across the runs (N - 1 degrees of freedom), and how many
    runs' own utterance-level intervals exclude 0.

    `runs`: name -> results.json content (`read_run_results`). Returns {split: {comparison: {"title", "runs",
    "per_language": {code | "mean": {...}}}}}: each comparison over the runs that hold it (at least 2; e.g. stage 3
    only over the seed replicates that retrained it, the others link the base run's), each language over those runs
    that all have it.
    """
    if len(runs) < 2:
        raise ValueError(f"an interval across runs needs at least 2 runs, got {len(runs)}")
    aggregated: dict[str, Any] = {}
    comparisons = {
        (split, key): entry for run in runs.values() for split, entries in run["comparisons"].items() for key, entry in entries.items()
    }
    for (split, key), entry in comparisons.items():
        names = [name for name, run in runs.items() if key in run["comparisons"].get(split, {})]
        if len(names) < 2:
            logger.warning("%s (%s) is held by %s only; left out of the tables across runs", key, split, names[0])
            continue
        if len(names) < len(runs):
            logger.info("%s (%s): over the %d runs that hold it (%s)", key, split, len(names), ", ".join(names))
        present = [runs[name]["comparisons"][split][key] for name in names]
        per_language = {}
        for label in entry["per_language"]:
            rows = [item["per_language"].get(label) for item in present]
            if any(row is None for row in rows):
                continue
            difference = t_interval([row["difference"] for row in rows])
            relative = t_interval([row["relative"] for row in rows])
            per_language[label] = {
                "runs": dict(zip(names, ({"cer_control": r["cer_a"], "cer_arm": r["cer_b"], "relative": r["relative"],
                                           "excludes_zero": r["excludes_zero"]} for r in rows))),  # fmt: skip
                "mean_cer_control": sum(r["cer_a"] for r in rows) / len(rows),
                "mean_cer_arm": sum(r["cer_b"] for r in rows) / len(rows),
                "mean_difference": difference[0], "difference_low": difference[1], "difference_high": difference[2],
                "mean_relative": relative[0], "relative_low": relative[1], "relative_high": relative[2],
                "runs_excluding_zero": sum(1 for r in rows if r["excludes_zero"] and r["difference"] < 0),
                "num_runs": len(rows),
            }  # fmt: skip
        aggregated.setdefault(split, {})[key] = {"title": entry["title"], "runs": names, "per_language": per_language}
    return aggregated


def across_runs_markdown(aggregated: Mapping[str, Any], names: Sequence[str]) -> str:
    """The Markdown tables of `across_runs`: per split and comparison, one row per language, then the mean."""
    lines = [
        f"# Arms against their controls over {len(names)} runs", "",
        f"Runs: {', '.join(names)}. Relative = (arm - control) / control per run (negative: pseudo-labels helped); "
        "mean over runs with its 95 % Student-t interval across runs; 'runs better' counts the runs whose own "
        "paired-bootstrap interval over utterances lies below 0.", "",
    ]  # fmt: skip
    for split in ordered_splits(aggregated):
        for entry in aggregated[split].values():
            lines += [f"## {entry['title']} ({split})", ""]
            if len(entry.get("runs", names)) < len(names):
                lines += [f"Over {len(entry['runs'])} of the {len(names)} runs, those that hold this comparison: {', '.join(entry['runs'])}.", ""]
            lines += ["| | control CER | arm CER | relative per run | mean relative | 95 % CI across runs | difference (points), 95 % CI | runs better |",
                      "|---|---:|---:|---|---:|---:|---:|---:|"]  # fmt: skip
            for label, row in entry["per_language"].items():
                per_run = " / ".join(f"{100 * run['relative']:+.1f}" for run in row["runs"].values())
                lines.append(
                    f"| {'mean over languages' if label == 'mean' else label} | {_percent(row['mean_cer_control'])} | {_percent(row['mean_cer_arm'])} | "
                    f"{per_run} % | {_percent(row['mean_relative'], True)} % | [{_percent(row['relative_low'], True)}, {_percent(row['relative_high'], True)}] % | "
                    f"{_percent(row['mean_difference'], True)} [{_percent(row['difference_low'], True)}, {_percent(row['difference_high'], True)}] | "
                    f"{row['runs_excluding_zero']} of {row['num_runs']} |"
                )
            lines.append("")
    return "\n".join(lines)


def routing_accuracy(routing_dir: str | os.PathLike, manifest: str | os.PathLike | Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """How well stage 4 routed audio of unknown language (mlpl.routing), against the true languages.

    The recipe never calls this: the truth is an answer key beside the audio (the demo corpus's
    `voxpopuli_mixed/manifest.tsv`), for evaluation only (docs/design.md §10).

    Args:
        routing_dir: a routing folder (`routing.parquet`, `pseudo_labels/<language>/`), e.g. the recipe's
            `stages/4_pseudo_labels/und`.
        manifest: the rows `{id, language[, sentence]}`, or a folder / corpus holding the demo's manifest.tsv.

    Returns:
        `clips`, `routed`, `routed_correctly`, `accuracy_of_routed` (routed to the true language / routed),
        `top1_accuracy` (the router's top-1 = the true language, over all clips), `dropped` per reason,
        `per_language` per true language (clips, top-1 counts `predicted`, `routed_to`, `dropped`), and with
        transcripts in the manifest `pl_cer`: the CER of the kept pseudo-labels against them, per true
        language, and over the correctly and the wrongly routed ones.
    """
    from .metrics import count_edits, per_language_error_rates
    from .pseudo_label import SUMMARY_FILE, iter_pseudo_labels
    from .routing import PSEUDO_LABEL_FOLDER, read_routing

    if isinstance(manifest, (str, os.PathLike)):
        from .demo_corpus import read_mixed_manifest

        manifest = read_mixed_manifest(manifest)
    truth = {row["id"]: row for row in manifest}
    routing = read_routing(routing_dir)
    unknown = [row["id"] for row in routing if row["id"] not in truth]
    if unknown:
        raise ValueError(f"{len(unknown)} routed clips are not in the manifest (e.g. {unknown[:3]}); give the manifest of the audio that was routed")
    per_language: dict[str, dict[str, Any]] = {}
    dropped: dict[str, int] = {}
    for row in routing:
        true = truth[row["id"]]["language"]
        entry = per_language.setdefault(true, {"clips": 0, "predicted": {}, "routed_to": {}, "dropped": {}})
        entry["clips"] += 1
        entry["predicted"][row["predicted_language"]] = entry["predicted"].get(row["predicted_language"], 0) + 1
        if row["routed_to"] is not None:
            entry["routed_to"][row["routed_to"]] = entry["routed_to"].get(row["routed_to"], 0) + 1
        else:
            entry["dropped"][row["reason"]] = entry["dropped"].get(row["reason"], 0) + 1
            dropped[row["reason"]] = dropped.get(row["reason"], 0) + 1
    routed = [row for row in routing if row["routed_to"] is not None]
    correct = sum(row["routed_to"] == truth[row["id"]]["language"] for row in routed)
    report: dict[str, Any] = {
        "clips": len(routing),
        "routed": len(routed),
        "routed_correctly": correct,
        "accuracy_of_routed": correct / len(routed) if routed else None,
        "top1_accuracy": sum(row["predicted_language"] == truth[row["id"]]["language"] for row in routing) / len(routing) if routing else None,
        "dropped": dict(sorted(dropped.items())),
        "per_language": dict(sorted(per_language.items())),
    }
    folders = sorted(path for path in (Path(routing_dir) / PSEUDO_LABEL_FOLDER).glob("*") if (path / SUMMARY_FILE).is_file())
    rows = [row for row in iter_pseudo_labels(folders, ["id", "language", "pseudo_label"]) if truth[row["id"]].get("sentence")] if folders else []
    if rows:
        hypotheses, references = [row["pseudo_label"] for row in rows], [truth[row["id"]]["sentence"] for row in rows]
        right = [index for index, row in enumerate(rows) if row["language"] == truth[row["id"]]["language"]]
        wrong = [index for index in range(len(rows)) if index not in set(right)]

        def cer(indices):
            counts = count_edits([hypotheses[i] for i in indices], [references[i] for i in indices], "character")
            return {"pseudo_labels": len(indices), "cer": counts.rate if indices else None}

        report["pl_cer"] = {
            "per_true_language": {code: {"pseudo_labels": row["num_utterances"], "cer": row["cer"]} for code, row in
                                  per_language_error_rates(hypotheses, references, [truth[row["id"]]["language"] for row in rows]).items()},
            "routed_correctly": cer(right),
            "routed_wrongly": cer(wrong),
            "all": cer(range(len(rows))),
        }  # fmt: skip
    return report


def routing_markdown(report: Mapping[str, Any]) -> str:
    """`routing_accuracy`'s result as Markdown: a confusion table (true language x where it went), then PL CERs."""
    destinations = sorted({code for entry in report["per_language"].values() for code in entry["routed_to"]})
    reasons = sorted({reason for entry in report["per_language"].values() for reason in entry["dropped"]})
    lines = ["| true language | clips | top-1 right | " + " | ".join(f"-> {code}" for code in destinations + []) + "".join(f" | dropped: {reason}" for reason in reasons) + " |",
             "|---|---:|---:|" + "---:|" * (len(destinations) + len(reasons))]  # fmt: skip
    for code, entry in report["per_language"].items():
        cells = [str(entry["routed_to"].get(target, 0)) for target in destinations] + [str(entry["dropped"].get(reason, 0)) for reason in reasons]
        lines.append(f"| {code} | {entry['clips']} | {entry['predicted'].get(code, 0)} | " + " | ".join(cells) + " |")
    percent = lambda value: "-" if value is None else f"{100 * value:.1f} %"  # noqa: E731
    lines += ["", f"Routed {report['routed']} of {report['clips']} clips, {report['routed_correctly']} to their true language "
              f"(accuracy of the routed: {percent(report['accuracy_of_routed'])}); router top-1 accuracy over all clips: "
              f"{percent(report['top1_accuracy'])}."]  # fmt: skip
    if "pl_cer" in report:
        pl = report["pl_cer"]
        lines += ["", "| pseudo-labels | count | CER |", "|---|---:|---:|"]
        lines += [f"| true language {code} | {row['pseudo_labels']} | {percent(row['cer'])} |" for code, row in pl["per_true_language"].items()]
        lines += [f"| {label.replace('_', ' ')} | {pl[label]['pseudo_labels']} | {percent(pl[label]['cer'])} |" for label in ("routed_correctly", "routed_wrongly", "all")]
    return "\n".join(lines)



# --- The recipe's results (docs/design.md §6) ---------------------------------------------------------------


def cer_table(stages: Mapping[str, Mapping[str, Any]]) -> dict:
    """{split: {language: {stage key: CER}}} from results.json's `stages` (its recorded evaluations; "3c": stage 3's control)."""
    table: dict = {}
    for stage, units in stages.items():
        for unit in units.values():
            for split, evaluation in (unit.get("evaluation") or {}).items():
                for code, row in evaluation.get("per_language", {}).items():
                    table.setdefault(split, {}).setdefault(code, {})[stage] = row.get("cer")
    return table


def table_stage_keys(table: Mapping[str, Any]) -> list[str]:
    """The stage and control keys that `table` has a CER of, in stage order ("1", "2", "3", "3c", ...)."""
    order = [key for stage in TABLE_STAGES for key in (str(stage), f"{stage}c")]
    return [key for key in order if any(key in row for split in table.values() for row in split.values())]


def compare_with_controls(
    evaluation_dirs: Mapping[str, Sequence[Path]], splits: Sequence[str], languages: Sequence[str], num_resamples: int = 1000
) -> dict:
    """{split: {"3 vs 3c": {"title", "arm", "control", "per_language": {code | "mean": comparison}}}}: every
    arm beside its labeled-only control (`mlpl.stages.COMPARISONS`) on `languages` (those with unlabeled
    audio), paired bootstrap over utterances (`compare_predictions`).

    `evaluation_dirs`: stage key -> the evaluation folders of its units (each with a `<split>/predictions.jsonl`).
    """
    found: dict = {}
    for arm, control, title in COMPARISONS:
        if arm not in evaluation_dirs or control not in evaluation_dirs:
            continue
        for split in splits:
            predictions = {arm: [], control: []}
            for key in (arm, control):
                for folder in evaluation_dirs[key]:
                    path = Path(folder) / split
                    if (path / PREDICTIONS_FILE).is_file():
                        predictions[key] += read_predictions(path)
            compared = [code for code in languages if any(row["language"] == code for row in predictions[arm])]
            if not compared or not predictions[control]:
                continue
            result = compare_predictions(predictions[control], predictions[arm], languages=compared, num_resamples=num_resamples)
            found.setdefault(split, {})[f"{arm} vs {control}"] = {"title": title, "arm": arm, "control": control, "per_language": comparison_to_dict(result)}
    return found


def pseudo_label_table(summaries: Mapping[str, Mapping[str, Any]], set_folders: Mapping[str, Sequence[Path]]) -> list[str]:
    """kept / dropped / hours / mean confidence per language of stage 4's PL sets (Markdown lines).

    `summaries`: results.json's `pseudo_labels` (language or "und" -> stage 4's summary); `set_folders`: the
    PL set folders of each entry (the confidences are read from their shards)."""
    import pyarrow.parquet as pq

    from .pseudo_label import pseudo_label_files

    if not summaries:
        return []
    lines = ["| language | utterances | kept | dropped | hours kept | mean confidence |", "|---|---:|---:|---:|---:|---:|"]
    routing = []
    for code in sorted(summaries):
        summary = summaries[code] or {}
        confidences = [value for set_folder in set_folders.get(code, []) if Path(set_folder).is_dir() for path in pseudo_label_files(set_folder)
                       for value in pq.read_table(path, columns=["confidence"]).column("confidence").to_pylist() if value is not None]  # fmt: skip
        dropped = sum((summary.get("dropped") or {}).values())  # {reason: count}, as pseudo_label's summary has it
        dropped += sum((summary.get("pseudo_label_dropped") or {}).values())  # routed clips whose PL the filters dropped
        mean = f"{sum(confidences) / len(confidences):.3f}" if confidences else "-"
        label = f"{code} (routed by LID)" if summary.get("routed_by_lid") else code
        lines.append(f"| {label} | {summary.get('utterances', '-')} | {summary.get('kept', '-')} | {dropped} | {summary.get('kept_hours', 0):.2f} | {mean} |")
        if summary.get("routed_by_lid"):
            routing = routing_table(summary)
    return lines + ["", "Confidence: mean best-path log-probability per frame (<= 0; closer to 0 is surer).", *routing]


def routing_table(summary: Mapping[str, Any]) -> list[str]:
    """Where the clips of unknown language went (docs/design.md §10): routed / kept per language, dropped per reason."""
    router = (summary.get("router") or {}).get("name", "?")
    lines = ["", f"Audio of unknown language, routed by the LID of {router} (threshold {summary.get('threshold')}): "
             f"{summary.get('utterances', 0)} clips.", "", "| routed to | clips | PLs kept | hours kept |", "|---|---:|---:|---:|"]  # fmt: skip
    for code, count in (summary.get("routed") or {}).items():
        entry = (summary.get("languages") or {}).get(code) or {}
        lines.append(f"| {code} | {count} | {entry.get('kept', 0)} | {entry.get('hours', 0):.2f} |")
    reasons = {**(summary.get("dropped") or {}), **(summary.get("pseudo_label_dropped") or {})}
    lines += [f"| dropped: {reason} | {count} | | |" for reason, count in reasons.items()]
    predicted = ", ".join(f"{code} {count}" for code, count in (summary.get("predicted") or {}).items())
    return lines + ["", f"LID top-1 of all clips: {predicted or 'none'}."]


def results_markdown(
    results: Mapping[str, Any],
    table: Mapping[str, Any],
    *,
    labeled_languages: Sequence[str],
    pl_languages: Sequence[str],
    bootstrap_resamples: int,
    pseudo_labels: Sequence[str] = (),
) -> str:
    """results.md: arms against controls with CIs, CER per stage, pseudo-labels (`pseudo_label_table`'s lines), time.

    `results`: results.json (its `stages` and `comparisons`); `table`: `cer_table`'s."""
    stages = table_stage_keys(table)
    comparisons = results.get("comparisons") or {}
    lines = [
        "# mlpl recipe results", "",
        f"Labeled languages: {', '.join(labeled_languages)}; with unlabeled audio (stages 2-4): {', '.join(pl_languages) or 'none'}. "
        "Greedy CER (%), corpus-level per language; case and punctuation count. Each unit's model is its best "
        "checkpoint by dev CER.", "",
    ]  # fmt: skip
    extra = [name for name in ordered_splits(table) if name not in ("test", "dev")]
    if extra:
        lines += [
            f"Besides the labeled data's dev and test, every unit was evaluated on {', '.join(extra)}: the recipe's "
            "`evaluation_sets`, held-out transcribed audio (e.g. VoxPopuli's, in the unlabeled audio's domain), for the "
            "languages each holds.", "",
        ]  # fmt: skip
    if comparisons:
        lines += ["## Pseudo-labels against matched labeled-only controls", ""]
        lines += [
            "Each control has the arm's initialization, updates, learning-rate schedule, regularization, batch size and "
            "seed, without unlabeled audio. Difference = arm - control in CER points (negative: pseudo-labels helped); "
            f"95 % paired bootstrap interval over utterances ({bootstrap_resamples} resamples); "
            "'mean' is the average over the languages with unlabeled audio.", "",
        ]  # fmt: skip
        for split in ordered_splits(comparisons):
            for entry in comparisons[split].values():
                lines += [f"### {entry['title']} ({split})", ""]
                lines += [*stored_comparison_table(entry["per_language"], f"control ({entry['control']})", f"arm ({entry['arm']})"), ""]
    for split in ordered_splits(table):
        rows = table[split]
        lines += [f"## CER per stage ({split})", "", "| language | " + " | ".join(f"stage {s}" if not s.endswith("c") else f"{s[:-1]} control" for s in stages) + " |", "|---|" + "---:|" * len(stages)]
        for code in sorted(rows):
            cells = [f"{100 * rows[code][s]:.1f}" if rows[code].get(s) is not None else "-" for s in stages]
            marker = " (unlabeled audio)" if code in pl_languages else ""
            lines.append(f"| {code}{marker} | " + " | ".join(cells) + " |")
        for label, group in (("average, all", sorted(rows)), ("average, with unlabeled audio", pl_languages)):
            cells = []
            for s in stages:
                values = [rows[c][s] for c in group if c in rows and rows[c].get(s) is not None]
                cells.append(f"{100 * sum(values) / len(values):.1f}" if values and len(values) == len([c for c in group if c in rows]) else "-")
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")
    if pseudo_labels:
        lines += ["## Pseudo-labels (stage 4)", "", *pseudo_labels, ""]
    timing = [(key, unit, entry.get("seconds")) for key, units in results.get("stages", {}).items() for unit, entry in units.items() if entry.get("seconds")]
    if timing:
        lines += ["## Time", "", "| unit | language | seconds |", "|---|---|---:|"]
        lines += [f"| {key} | {unit} | {seconds:.0f} |" for key, unit, seconds in timing]
        # units run side by side (the recipe's `jobs`) overlap: then the run's wall time is less than this sum
        lines += [f"| sum of the units | | {sum(t[2] for t in timing):.0f} |", ""]
    return "\n".join(lines)


def write_results(
    output_dir: str | os.PathLike,
    results: Mapping[str, Any],
    *,
    labeled_languages: Sequence[str],
    pl_languages: Sequence[str],
    bootstrap_resamples: int,
    pseudo_labels: Sequence[str] = (),
    training_logs: Mapping[str, Sequence[Path]] | None = None,
) -> dict[str, Path]:
    """results.md and the two plots (CER by stage, dev CER during training) of a recipe run into `output_dir`.

    `results`: results.json as the recipe keeps it (written by the recipe beside these); `pseudo_labels`:
    `pseudo_label_table`'s lines; `training_logs`: stage key -> its units' metrics.jsonl files."""
    output_dir = Path(output_dir)
    table = cer_table(results.get("stages", {}))
    text = results_markdown(
        results, table, labeled_languages=labeled_languages, pl_languages=pl_languages,
        bootstrap_resamples=bootstrap_resamples, pseudo_labels=pseudo_labels,
    )  # fmt: skip
    files = {"results.md": write_text_atomically(output_dir / "results.md", text)}
    files.update(_plots(output_dir, table, table_stage_keys(table), pl_languages, training_logs or {}))
    return files


def _plots(output_dir: Path, table: Mapping[str, Any], stages: Sequence[str], pl_languages: Sequence[str], training_logs: Mapping[str, Sequence[Path]]) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = {}
    splits = list(table)
    if splits:
        # Stages sit at fixed positions with their names as tick labels: a language without some stage
        # (no stage 2-3 for a high-resource one) keeps its points under the right names, and matplotlib
        # does not log a note for every number-like category string.
        arms = [s for s in stages if not s.endswith("c")]
        figure, axes = plt.subplots(1, len(splits), figsize=(6 * len(splits), 4), squeeze=False)
        for axis, split in zip(axes[0], splits):
            for code in sorted(table[split]):
                points = [(i, 100 * table[split][code][s]) for i, s in enumerate(arms) if table[split][code].get(s) is not None]
                style = "-o" if code in pl_languages else "--."
                axis.plot([i for i, _ in points], [v for _, v in points], style, label=code)
            axis.set_xticks(range(len(arms)), [str(s) for s in arms])
            axis.set_title(f"CER by stage ({split}); solid: languages with unlabeled audio")
            axis.set_xlabel("stage")
            axis.set_ylabel("CER (%)")
            axis.legend(fontsize=8)
        files["cer_by_stage.png"] = _save_figure(plt, figure, output_dir / "cer_by_stage.png")
    figure, axis = plt.subplots(figsize=(7, 4))
    for stage in stages:
        for log in training_logs.get(stage, []):
            points = [(r["update"], 100 * r["dev_cer"]) for r in map(json.loads, Path(log).read_text().splitlines()) if r.get("dev_cer") is not None]
            if points:
                label = f"stage {stage}" + (f" {Path(log).parent.name}" if recipe_stage(stage.rstrip("c")).per_language else "")
                axis.plot([u for u, _ in points], [v for _, v in points], marker=".", label=label)
    axis.set_xlabel("update (within the stage)")
    axis.set_ylabel("dev CER (%)")
    axis.set_title("dev CER during training")
    axis.legend(fontsize=7)
    files["dev_cer_curves.png"] = _save_figure(plt, figure, output_dir / "dev_cer_curves.png")
    return files


def _save_figure(plt, figure, path: Path) -> Path:
    figure.tight_layout()
    save_figure_atomically(figure, path, dpi=100)
    plt.close(figure)
    return path


__all__ = [
    "ordered_splits",
    "cer_table",
    "compare_predictions",
    "compare_with_controls",
    "comparison_header",
    "comparison_markdown",
    "comparison_row",
    "comparison_to_dict",
    "pseudo_label_table",
    "read_predictions",
    "results_markdown",
    "routing_accuracy",
    "routing_markdown",
    "routing_table",
    "stored_comparison_table",
    "table_stage_keys",
    "write_results",
]
