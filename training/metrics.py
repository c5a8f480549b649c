"""Evaluation metrics: corpus-level CER / WER per language, their average, and LID accuracy.

Pure functions shared by the trainer's evaluation loop, `scripts/evaluate.py` and the
`evaluate` metric module (`training/evaluate_metric/mlpl_asr.py`); all of them go through
`per_language_error_rates`, so every caller reports the same numbers.

Conventions (the paper's, Lugosch et al. 2022, Sec. 4):
- Error rates are corpus-level: total edit distance over total reference length within one
  language, NOT the mean of per-utterance rates (which over-weights short utterances).
- The headline `cer` / `wer` are the unweighted (macro) average over languages, so a language
  with little test data counts as much as one with a lot.
- Case and punctuation count: the raw strings are scored exactly as given (characters are
  Unicode code points, the space included; words are maximal runs of non-whitespace).
  `normalized=True` adds a normalized variant (`normalize_transcript`) under separate
  `*_normalized` keys BESIDE the raw ones, never instead of them.
- A language whose total reference length is 0 (only empty references) has an undefined rate:
  it is reported as `None`, its error counts (insertions) stay in the table, and it is left
  out of the average. An average over no defined language is `None` too.

Edit operations come from jiwer (`process_words` on pre-tokenized sequences, rapidfuzz's
Levenshtein underneath), which handles empty references and hypotheses: an empty reference
against a non-empty hypothesis counts one insertion per hypothesis unit, and an empty
hypothesis counts one deletion per reference unit.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Optional

import jiwer

# Characters: every code point of the string, spaces included (jiwer's default CER transform
# also strips the ends; the raw convention does not).
_CHARACTER_UNITS = jiwer.ReduceToListOfListOfChars()
# Words: split on any run of whitespace (jiwer splits on single spaces only, so tabs and
# newlines are turned into spaces first).
_WORD_UNITS = jiwer.Compose([jiwer.SubstituteRegexes({r"\s+": " "}), jiwer.ReduceToListOfListOfWords()])
_UNITS = {"character": _CHARACTER_UNITS, "word": _WORD_UNITS}

# Keys of the per-language table per unit: (rate, unit, total edit distance, total reference length).
_RATE_KEYS = (("cer", "character", "char_errors", "char_count"), ("wer", "word", "word_errors", "word_count"))
NORMALIZED_SUFFIX = "_normalized"


@dataclass(frozen=True)
class ErrorCounts:
    """Summed Levenshtein operations of hypotheses against references (one unit: char or word).

    `reference_length` = hits + substitutions + deletions; `rate` = errors / reference_length,
    `None` when the references are all empty (the rate is undefined, not 0 and not infinite).
    """

    hits: int = 0
    substitutions: int = 0
    deletions: int = 0
    insertions: int = 0

    @property
    def errors(self) -> int:
        """Total edit distance: substitutions + deletions + insertions."""
        return self.substitutions + self.deletions + self.insertions

    @property
    def reference_length(self) -> int:
        """Number of reference units (characters or words)."""
        return self.hits + self.substitutions + self.deletions

    @property
    def rate(self) -> Optional[float]:
        """errors / reference_length, or None when there is no reference unit."""
        return self.errors / self.reference_length if self.reference_length else None

    def __add__(self, other: "ErrorCounts") -> "ErrorCounts":
        return ErrorCounts(
            self.hits + other.hits,
            self.substitutions + other.substitutions,
            self.deletions + other.deletions,
            self.insertions + other.insertions,
        )


def normalize_transcript(text: str) -> str:
    """The normalized variant of a transcript: lowercase, no punctuation, collapsed whitespace.

    Lowercases, applies NFC (so composed and decomposed accents compare equal), deletes every
    Unicode punctuation character (general category P*: "don't" -> "dont", "¿qué?" -> "qué";
    symbols such as "$" or "%" are kept), then collapses whitespace runs to single spaces and
    strips the ends. Used only for the `*_normalized` keys.
    """
    text = unicodedata.normalize("NFC", text.lower())
    text = "".join(character for character in text if not unicodedata.category(character).startswith("P"))
    return " ".join(text.split())


def _check_lengths(**columns: Sequence[Any]) -> int:
    """The common length of parallel columns; a ValueError naming each length otherwise."""
    lengths = {name: len(column) for name, column in columns.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"inputs must be parallel lists of the same length, got lengths {lengths}")
    for name, column in columns.items():
        for index, value in enumerate(column):
            if not isinstance(value, str):
                raise TypeError(f"{name}[{index}] is {value!r} ({type(value).__name__}); expected a string")
    return next(iter(lengths.values()), 0)


def count_edits(
    predictions: Sequence[str], references: Sequence[str], unit: Literal["character", "word"]
) -> ErrorCounts:
    """Summed edit operations of `predictions` against `references`, at character or word level.

    The strings are scored as given (no normalization). Empty lists give all-zero counts.
    """
    if unit not in _UNITS:
        raise ValueError(f"unit must be 'character' or 'word', got {unit!r}")
    _check_lengths(predictions=predictions, references=references)
    if not references:
        return ErrorCounts()
    output = jiwer.process_words(
        list(references), list(predictions), reference_transform=_UNITS[unit], hypothesis_transform=_UNITS[unit]
    )
    return ErrorCounts(output.hits, output.substitutions, output.deletions, output.insertions)


def _error_rate_row(predictions: Sequence[str], references: Sequence[str], suffix: str = "") -> dict[str, Any]:
    """CER and WER of one group of utterances, with the counts behind them, keys ending in `suffix`."""
    row: dict[str, Any] = {}
    for rate_key, unit, errors_key, count_key in _RATE_KEYS:
        counts = count_edits(predictions, references, unit)
        row[rate_key + suffix] = counts.rate
        row[errors_key + suffix] = counts.errors
        row[count_key + suffix] = counts.reference_length
    return row


def per_language_error_rates(
    predictions: Sequence[str],
    references: Sequence[str],
    languages: Sequence[str],
    *,
    normalized: bool = False,
) -> dict[str, dict[str, Any]]:
    """The per-language table: corpus-level CER and WER of each language (sorted by code).

    Args:
        predictions, references, languages: parallel lists, one entry per utterance
            (`languages` holds the reference language code of each utterance).
        normalized: also score `normalize_transcript` of both sides, under `*_normalized` keys.

    Returns:
        `{language: row}` where each row has `num_utterances`, `cer`, `wer` (float, or None when
        the language's reference length is 0), `char_errors`, `char_count`, `word_errors`,
        `word_count` (ints: total edit distance and total reference length), and with
        `normalized=True` the same six keys again with the suffix `_normalized`.
    """
    _check_lengths(predictions=predictions, references=references, languages=languages)
    groups: dict[str, tuple[list[str], list[str]]] = {}
    for prediction, reference, language in zip(predictions, references, languages):
        group = groups.setdefault(language, ([], []))
        group[0].append(prediction)
        group[1].append(reference)

    table: dict[str, dict[str, Any]] = {}
    for language in sorted(groups):
        group_predictions, group_references = groups[language]
        row = {"num_utterances": len(group_references), **_error_rate_row(group_predictions, group_references)}
        if normalized:
            row.update(
                _error_rate_row(
                    [normalize_transcript(text) for text in group_predictions],
                    [normalize_transcript(text) for text in group_references],
                    suffix=NORMALIZED_SUFFIX,
                )
            )
        table[language] = row
    return table


def unweighted_average(values: Iterable[Optional[float]]) -> Optional[float]:
    """Mean of the defined (non-None) values; None when there is none."""
    defined = [value for value in values if value is not None]
    return sum(defined) / len(defined) if defined else None


def lid_confusion_matrix(
    predicted_languages: Sequence[str], languages: Sequence[str], labels: Sequence[str]
) -> list[list[int]]:
    """Counts `matrix[i][j]` of utterances of language `labels[i]` predicted as `labels[j]`.

    Rows are the reference language, columns the predicted one, both in the order of `labels`
    (the order the caller wants plotted, e.g. the model's `id2label`). A language outside
    `labels` on either side is a ValueError naming it.
    """
    _check_lengths(predicted_languages=predicted_languages, languages=languages)
    index = {label: position for position, label in enumerate(labels)}
    if len(index) != len(labels):
        raise ValueError(f"labels must be distinct, got {list(labels)}")
    matrix = [[0] * len(labels) for _ in labels]
    for predicted, reference in zip(predicted_languages, languages):
        for side, language in (("predicted", predicted), ("reference", reference)):
            if language not in index:
                raise ValueError(
                    f"{side} language {language!r} is not in labels {list(labels)}; pass labels that cover it"
                )
        matrix[index[reference]][index[predicted]] += 1
    return matrix


def compute_lid_metrics(
    predicted_languages: Sequence[str], languages: Sequence[str], labels: Optional[Sequence[str]] = None
) -> dict[str, Any]:
    """Language-ID accuracy and confusion matrix.

    Args:
        predicted_languages: the LID head's language code for each utterance.
        languages: the reference language code for each utterance.
        labels: row/column order of the matrix; default: sorted union of both sides.

    Returns:
        `lid_accuracy` (fraction of utterances whose language is right; None for no utterance),
        `lid_accuracy_per_language` (`{label: recall}`, None for a label with no utterance),
        `lid_confusion_matrix` (list of rows, see `lid_confusion_matrix`), `lid_labels`.
    """
    labels = sorted(set(predicted_languages) | set(languages)) if labels is None else list(labels)
    matrix = lid_confusion_matrix(predicted_languages, languages, labels)
    correct = sum(matrix[i][i] for i in range(len(labels)))
    return {
        "lid_accuracy": correct / len(languages) if len(languages) else None,
        "lid_accuracy_per_language": {
            label: (row[i] / sum(row) if sum(row) else None) for i, (label, row) in enumerate(zip(labels, matrix))
        },
        "lid_confusion_matrix": matrix,
        "lid_labels": labels,
    }


def compute_asr_metrics(
    predictions: Sequence[str],
    references: Sequence[str],
    languages: Sequence[str],
    *,
    normalized: bool = False,
    predicted_languages: Optional[Sequence[str]] = None,
    lid_labels: Optional[Sequence[str]] = None,
) -> dict[str, Any]:
    """All evaluation metrics of one decoding pass: the trainer's and the evaluation script's call.

    Args:
        predictions: decoded transcripts, one per utterance.
        references: reference transcripts (raw: case and punctuation count).
        languages: reference language code of each utterance.
        normalized: add `cer_normalized` / `wer_normalized` (and per-language `*_normalized`)
            beside the raw scores.
        predicted_languages: the LID head's language per utterance; adds the LID keys.
        lid_labels: row/column order of the LID confusion matrix (default: sorted codes).

    Returns:
        `cer`, `wer`: unweighted average over languages of the per-language corpus-level rates
        (None if no language has a reference unit); `per_language`: the table of
        `per_language_error_rates`; `languages`: its keys in order; with `normalized=True`
        also `cer_normalized`, `wer_normalized`; with `predicted_languages` also the keys of
        `compute_lid_metrics`.
    """
    table = per_language_error_rates(predictions, references, languages, normalized=normalized)
    suffixes = ("", NORMALIZED_SUFFIX) if normalized else ("",)
    result: dict[str, Any] = {
        rate_key + suffix: unweighted_average(row[rate_key + suffix] for row in table.values())
        for suffix in suffixes
        for rate_key, *_ in _RATE_KEYS
    }
    result["per_language"] = table
    result["languages"] = list(table)
    if predicted_languages is not None:
        result.update(compute_lid_metrics(predicted_languages, languages, lid_labels))
    return result


def flatten_metrics(result: Mapping[str, Any], separator: str = "/") -> dict[str, float]:
    """Scalars of a `compute_asr_metrics` result for a tracker: `cer`, `cer/en`, `lid_accuracy`...

    Undefined (None) rates and the confusion matrix are left out; counts are not logged.
    """
    flat = {key: value for key, value in result.items() if isinstance(value, (int, float))}
    for language, row in result.get("per_language", {}).items():
        for key, value in row.items():
            if key.startswith(("cer", "wer")) and value is not None:
                flat[f"{key}{separator}{language}"] = value
    for language, value in result.get("lid_accuracy_per_language", {}).items():
        if value is not None:
            flat[f"lid_accuracy{separator}{language}"] = value
    return flat


__all__ = [
    "NORMALIZED_SUFFIX",
    "ErrorCounts",
    "compute_asr_metrics",
    "compute_lid_metrics",
    "count_edits",
    "flatten_metrics",
    "lid_confusion_matrix",
    "normalize_transcript",
    "per_language_error_rates",
    "unweighted_average",
]


# ---------------------------------------------------------------------------------------------
# Paired bootstrap: is system B better than system A on the same utterances?
# ---------------------------------------------------------------------------------------------


def utterance_char_edits(predictions: Sequence[str], references: Sequence[str]) -> tuple[list[int], list[int]]:
    """Per-utterance character edit distance and reference length (raw strings, the CER convention)."""
    _check_lengths(predictions=predictions, references=references)
    edits, lengths = [], []
    for prediction, reference in zip(predictions, references):
        counts = count_edits([prediction], [reference], "character")
        edits.append(counts.errors)
        lengths.append(counts.reference_length)
    return edits, lengths


@dataclass(frozen=True)
class PairedComparison:
    """CER of a reference system A and a system B on the same utterances, B - A and its bootstrap CI.

    `difference` < 0 means B makes fewer errors; `relative` = difference / cer_a (-0.10 = 10 % fewer).
    `low`, `high`: the percentile bounds of the `confidence` interval of `difference`; the effect is
    significant at that level when the interval excludes 0.
    """

    cer_a: float
    cer_b: float
    difference: float
    relative: Optional[float]
    low: float
    high: float
    num_utterances: int
    confidence: float
    num_resamples: int

    @property
    def excludes_zero(self) -> bool:
        return self.high < 0 or self.low > 0


def paired_bootstrap(
    groups: Mapping[str, tuple[Sequence[int], Sequence[int], Sequence[int]]],
    *,
    num_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, PairedComparison]:
    """Paired bootstrap of corpus-level CER over utterances, per group and for the groups' mean.

    Args:
        groups: `{name: (edits_a, edits_b, lengths)}` — per-utterance character edits of systems A and B
            on the same utterances (in the same order) and the reference lengths (`utterance_char_edits`).
            A group is usually one language.
        num_resamples, confidence, seed: the bootstrap's settings.

    Each resample draws, within every group independently, as many utterances as it has with
    replacement (the SAME draw for A and B: the comparison is paired), recomputes each system's
    corpus-level CER (total edits / total reference length) per group, and B - A. The entry `"mean"`
    (present with two or more groups) is the unweighted mean over groups, as the headline CER is,
    recomputed on every resample. Intervals are percentile intervals.
    """
    import numpy as np

    if not 0 < confidence < 1:
        raise ValueError(f"confidence={confidence} must be in (0, 1), e.g. 0.95")
    if num_resamples < 1:
        raise ValueError(f"num_resamples={num_resamples} must be >= 1")
    rng = np.random.default_rng(seed)
    tail = 100 * (1 - confidence) / 2
    results: dict[str, PairedComparison] = {}
    resampled = []  # per group: (cer_a, cer_b) arrays over resamples
    for name, (edits_a, edits_b, lengths) in groups.items():
        edits_a, edits_b, lengths = (np.asarray(v, dtype=np.int64) for v in (edits_a, edits_b, lengths))
        if not len(edits_a) == len(edits_b) == len(lengths):
            raise ValueError(f"group {name!r}: edits_a, edits_b and lengths have lengths {len(edits_a)}, {len(edits_b)}, {len(lengths)}")
        if lengths.sum() == 0:
            raise ValueError(f"group {name!r} has no reference characters; its CER is undefined")
        draws = rng.integers(0, len(lengths), size=(num_resamples, len(lengths)))
        total = lengths[draws].sum(1).clip(min=1)  # a draw of only empty references: rate 0 over 1
        cer_a, cer_b = edits_a[draws].sum(1) / total, edits_b[draws].sum(1) / total
        resampled.append((cer_a, cer_b))
        results[name] = _comparison(edits_a.sum() / lengths.sum(), edits_b.sum() / lengths.sum(), cer_b - cer_a, tail, len(lengths), confidence, num_resamples)
    if len(groups) >= 2:
        point_a = float(np.mean([r.cer_a for r in results.values()]))
        point_b = float(np.mean([r.cer_b for r in results.values()]))
        differences = np.mean([b - a for a, b in resampled], axis=0)
        count = sum(r.num_utterances for r in results.values())
        results["mean"] = _comparison(point_a, point_b, differences, tail, count, confidence, num_resamples)
    return results


def _comparison(cer_a, cer_b, differences, tail, count, confidence, num_resamples) -> PairedComparison:
    import numpy as np

    low, high = np.percentile(differences, [tail, 100 - tail])
    difference = float(cer_b - cer_a)
    return PairedComparison(
        cer_a=float(cer_a), cer_b=float(cer_b), difference=difference, relative=difference / cer_a if cer_a else None,
        low=float(low), high=float(high), num_utterances=int(count), confidence=confidence, num_resamples=num_resamples,
    )
