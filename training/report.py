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


__all__ = ["comparison_header", "comparison_markdown", "comparison_row", "comparison_to_dict", "compare_predictions", "read_predictions", "stored_comparison_table"]
