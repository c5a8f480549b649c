"""Comparisons of two systems on the same utterances, and the tables that report them.

A result with pseudo-labels means something only beside the same training without them (its control).
`compare_predictions` pairs two evaluations' predictions by utterance id, language by language, and runs
`metrics.paired_bootstrap` on them: the CER of each, the difference, and a 95 % confidence interval of the
difference that resamples utterances (the same ones for both systems). The recipe's results report and
`scripts/evaluate.py --compare A B` both go through it, and through `comparison_markdown` for the table.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .metrics import PairedComparison, paired_bootstrap, utterance_char_edits

logger = logging.getLogger("mlpl.report")

PREDICTIONS_FILE = "predictions.jsonl"  # as written by training.evaluation


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


def routing_accuracy(routing_dir: str | os.PathLike, manifest: str | os.PathLike | Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """How well stage 4 routed audio of unknown language (training.routing), against the true languages.

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


__all__ = ["comparison_header", "comparison_markdown", "comparison_row", "comparison_to_dict", "compare_predictions", "read_predictions", "routing_accuracy", "routing_markdown", "stored_comparison_table"]
