# Copyright 2026 The mlpl authors. Licensed under the Apache License, Version 2.0.
"""Evaluation of a model on a labeled set: per-language CER/WER (greedy and with an LM), LID, report files.

    result = evaluate_model(model, processor, dataset, output_dir="eval/dev")       # greedy + LID
    result = evaluate_model(..., lm={"en": "lm/en.arpa"}, grid_search=True)         # + LM decoding (docs/design.md §7)
    result.metrics["greedy"]["cer"], result.metrics["lm"]["wer"], result.predictions

One pass over the data: duration batches (`DurationBatchSampler`, docs/design.md §4) -> `MlplCollator` ->
`mlpl.inference.transcribe_batch` (optionally cropped, `chunk_seconds`: greedy CTC + LID prediction)
and, for utterances of a language with an LM, beam search on the same logits (`mlpl.decoding`). With `grid_search=True` the log-probabilities are kept (`LogProbCache`) and the
LM weights are chosen on this set (the paper's procedure, on dev), then saved to `lm_decoding.json`;
without it, alpha and beta come from the arguments, else from an `lm_decoding.json` found next to the
model (`lm_decoding_path`), else the decoder's defaults.

Metrics are `mlpl.metrics.compute_asr_metrics`: corpus-level rates per language, their unweighted
average, raw strings (the paper's convention: case and punctuation count) with the normalized variant
beside them. Which LM decodes an utterance is decided by its *reference* language (per-language test
sets, as in the paper), not by the LID prediction.

Files written to `output_dir` (`write_evaluation_files`): `metrics.json`, `report.md`, `predictions.jsonl`,
`cer_per_language.png` and, with an LID head, `lid_confusion.png`.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import tqdm
from datasets import Dataset

from .batching import DurationBatchSampler
from .cli import progress_bars_off
from .collate import MlplCollator
from .data import records_of
from .decoding import (
    ALL_LANGUAGES,
    DEFAULT_ALPHAS,
    DEFAULT_BEAM_SETTINGS,
    DEFAULT_BETAS,
    LM_DECODING_FILE,
    BeamSettings,
    LogProbCache,
    MlplBeamSearchDecoder,
    grid_search_lm_weights,
    load_lm_decoding,
)
from .files import atomic_writer, save_figure_atomically, write_text_atomically
from .inference import FRAMES_PER_SECOND, transcribe_batch
from .metrics import compute_asr_metrics

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
REPORT_FILE = "report.md"
PREDICTIONS_FILE = "predictions.jsonl"
CER_PLOT_FILE = "cer_per_language.png"
LID_PLOT_FILE = "lid_confusion.png"
SECONDS_PER_HOUR = 3600.0
REFERENCE_LANGUAGE = "reference"  # language_constraint: each utterance's reference language (an oracle LID)


@dataclass
class EvaluationResult:
    """What `evaluate_model` returns: the metrics (as in metrics.json), one prediction dict per utterance
    (dataset order; as in predictions.jsonl) and the files written."""

    metrics: dict[str, Any]
    predictions: list[dict[str, Any]]
    files: dict[str, Path] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Which LM decodes which language
# ---------------------------------------------------------------------------------------------


def resolve_language_models(lm, languages: Sequence[str]) -> dict[str, str]:
    """`{language or "*": ARPA path}` from the `lm` argument.

    `lm` may be a path (every language), a path containing `{language}` (one file per language; languages
    without a file are decoded greedily only, with a warning), a mapping `{language: path}`, or a list of
    `LANG=PATH` strings (the command line's form) and plain paths.
    """
    if lm is None:
        return {}
    if isinstance(lm, (str, os.PathLike)):
        lm = [lm]
    if isinstance(lm, Mapping):
        entries = {str(key): os.fspath(value) for key, value in lm.items()}
    else:
        entries = {}
        for item in lm:
            item = os.fspath(item)
            key, separator, path = item.partition("=")
            if separator and not Path(item).exists():
                entries[key] = path
            elif "{language}" in item:
                for language in sorted(set(languages)):
                    candidate = item.format(language=language)
                    if Path(candidate).is_file():
                        entries[language] = candidate
                    else:
                        logger.warning("no LM %s for language %s: decoded greedily only", candidate, language)
            else:
                entries[ALL_LANGUAGES] = item
    for key, path in entries.items():
        if not Path(path).is_file():
            raise FileNotFoundError(f"LM file {path} (for {key}) does not exist; build it with scripts/build_lm.py")
    return entries


def _lm_key(language: str, language_models: Mapping[str, str]) -> str | None:
    if language in language_models:
        return language
    return ALL_LANGUAGES if ALL_LANGUAGES in language_models else None


def _stored_settings(lm_decoding_path, key: str, lm_path: str) -> dict[str, Any] | None:
    """The `lm_decoding.json` entry for `key` (or "*"), if there is one next to the model."""
    if lm_decoding_path is None:
        return None
    path = Path(lm_decoding_path)
    path = path / LM_DECODING_FILE if path.is_dir() else path
    if not path.is_file():
        return None
    decoders = load_lm_decoding(path)
    settings = decoders.get(key) or decoders.get(ALL_LANGUAGES)
    if settings is None:
        return None
    if settings.get("lm_path") and Path(settings["lm_path"]).resolve() != Path(lm_path).resolve():
        logger.warning("%s was tuned for LM %s; its weights are applied to %s", path, settings["lm_path"], lm_path)
    logger.info("LM weights for %s from %s: alpha=%s beta=%s", key, path, settings["alpha"], settings["beta"])
    return settings


# ---------------------------------------------------------------------------------------------
# The evaluation pass
# ---------------------------------------------------------------------------------------------


def evaluate_model(
    model,
    processor,
    dataset: Dataset,
    *,
    output_dir: str | os.PathLike | None = None,
    max_batch_seconds: float = 200.0,
    max_batch_size: int | None = None,
    chunk_seconds: float | None = None,
    num_workers: int = 0,
    lm=None,
    lexicon=None,
    alpha: float | None = None,
    beta: float | None = None,
    grid_search: bool = False,
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    betas: Sequence[float] = DEFAULT_BETAS,
    beam: BeamSettings | None = None,
    lm_decoding_path: str | os.PathLike | None = None,
    normalized: bool = True,
    plots: bool = True,
    progress: bool = True,
    description: Mapping[str, Any] | None = None,
    language_constraint: str | None = None,
) -> EvaluationResult:
    """Transcribe a labeled map-style dataset and score it (see the module doc).

    Args:
        model: an `MlplForCTC`, on the device to run on (its train/eval mode is restored afterwards).
        processor: its `MlplProcessor` (feature extractor + tokenizer).
        dataset: map-style, in the data layer's schema, with transcripts (`sources.load_labeled_source`).
        output_dir: where to write the report files; None writes nothing.
        max_batch_seconds, max_batch_size: duration batching (count x longest clip <= max_batch_seconds).
        chunk_seconds: run the model on crops of this many seconds, stitched (long audio); None: whole.
        num_workers: DataLoader workers decoding audio.
        lm: ARPA path(s), see `resolve_language_models`; None: greedy only.
        lexicon: the decoder's lexicon (None: lexicon-free; "lm": the LM's words; a file or words).
        alpha, beta: LM weight and word score; both None and no grid search: `lm_decoding.json` or defaults.
        grid_search: choose alpha and beta on this dataset from `alphas` x `betas` and save them to
            `lm_decoding_path` (or `output_dir`) as `lm_decoding.json`.
        beam: the beam search's `BeamSettings` (its alpha and beta unless `alpha`/`beta` or `lm_decoding.json`
            give them); None: `lm_decoding.json`'s settings, else the defaults.
        lm_decoding_path: the `lm_decoding.json` (or its folder) to read weights from / write them to.
        normalized: also report the normalized variant (lowercase, no punctuation) beside the raw scores.
        plots: write the PNG plots (matplotlib).
        progress: show progress bars.
        description: extra entries for metrics.json (model name, data source, split...).
        language_constraint: script-constrained decoding (docs/design.md §3.1), greedy and LM alike: a language
            code, "auto" (each utterance's LID top-1) or "reference" (each utterance's reference language);
            None: unconstrained.
    """
    if not isinstance(dataset, Dataset):
        raise TypeError(
            f"evaluate_model needs a map-style datasets.Dataset (durations for batching), got {type(dataset).__name__}; "
            "load the source with streaming=False"
        )
    tokenizer = processor.tokenizer
    records = records_of(dataset).select_columns(["id", "sentence", "language", "duration"])[:]
    ids, references, languages, durations = (records[key] for key in ("id", "sentence", "language", "duration"))
    if any(reference is None for reference in references):
        raise ValueError("the dataset has utterances without a transcript; evaluation needs a labeled source")
    row_of_id = {identifier: row for row, identifier in enumerate(ids)}
    if len(row_of_id) != len(ids):
        raise ValueError("utterance ids are not unique; predictions could not be matched to references")

    # LID classes: the model's; a language the head does not know gets no LID target (-100), not an error.
    codes = list(getattr(model.config, "language_codes", []) or [])
    language_to_id = {language: (codes.index(language) if language in codes else -100) for language in set(languages)}
    has_lid = getattr(model, "lid_head", None) is not None and bool(codes)

    language_models = resolve_language_models(lm, languages)
    decoders, caches, cache_rows = _prepare_lm_decoding(
        tokenizer, language_models, lexicon, alpha, beta, grid_search, beam, lm_decoding_path,
    )

    collator = MlplCollator(processor.feature_extractor, tokenizer, language_to_id)
    sampler = DurationBatchSampler(durations, max_batch_seconds, max_batch_size=max_batch_size, ids=ids)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=collator, num_workers=num_workers)
    chunk_frames = None if chunk_seconds is None else int(chunk_seconds * FRAMES_PER_SECOND)
    was_training = model.training
    model.eval()

    greedy: list[str | None] = [None] * len(ids)
    with_lm: list[str | None] = [None] * len(ids)
    predicted: list[str | None] = [None] * len(ids)
    try:
        for batch in tqdm(loader, desc="evaluating", unit="batch", disable=progress_bars_off() or not progress):
            rows = [row_of_id[identifier] for identifier in batch["ids"]]
            constraint = language_constraint
            if language_constraint == REFERENCE_LANGUAGE:
                constraint = [languages[row] for row in rows]
            with torch.inference_mode():
                decoded = transcribe_batch(model, batch, tokenizer, chunk_frames, language=constraint, return_logits=bool(decoders))
            if decoders:  # the same (constrained) logits for the LM decoders
                logits, output_lengths = decoded["logits"].cpu(), decoded["output_lengths"].cpu()
            for position, row in enumerate(rows):
                greedy[row] = decoded["texts"][position]
                if has_lid and decoded["language_ids"] is not None:
                    predicted[row] = codes[int(decoded["language_ids"][position])]
                key = _lm_key(languages[row], language_models)
                if key is None:
                    continue
                if key in caches:  # grid search later: keep the log-probabilities
                    caches[key].add(logits[position : position + 1], output_lengths[position : position + 1])
                    cache_rows[key].append(row)
                else:
                    with_lm[row] = decode_with_lm(decoders, languages[row], logits, output_lengths, position)
    finally:
        model.train(was_training)

    lm_settings = {}
    for key, decoder in decoders.items():
        if key in caches:
            if not cache_rows[key]:
                continue
            search = grid_search_lm_weights(
                caches[key],
                [references[row] for row in cache_rows[key]],
                decoder=decoder,
                languages=[languages[row] for row in cache_rows[key]],
                alphas=alphas,
                betas=betas,
                output_path=_lm_decoding_file(lm_decoding_path, output_dir),
                key=key,
                progress=progress,
            )
            for row, text in zip(cache_rows[key], search.hypotheses):
                with_lm[row] = text
            lm_settings[key] = search.to_json()
        else:
            lm_settings[key] = decoder.settings()

    metrics, predictions = _score(
        ids, references, languages, durations, greedy, with_lm, predicted if has_lid else None, codes, normalized,
    )
    if lm_settings:
        metrics["lm"]["decoders"] = lm_settings
    metrics = {**dict(description or {}), **metrics, "language_constraint": language_constraint}
    result = EvaluationResult(metrics, predictions)
    if output_dir is not None:
        result.files = write_evaluation_files(result, output_dir, plots=plots)
    return result


def _lm_decoding_file(lm_decoding_path, output_dir) -> Path | None:
    folder = lm_decoding_path if lm_decoding_path is not None else output_dir
    if folder is None:
        return None
    folder = Path(folder)
    return folder if folder.suffix == ".json" else folder / LM_DECODING_FILE


def _prepare_lm_decoding(tokenizer, language_models, lexicon, alpha, beta, grid_search, beam, lm_decoding_path):
    """One decoder per LM (and a log-probability cache per LM when searching the weights). Settings: `beam`
    (else the stored ones, else the defaults), with the stored alpha and beta, and `alpha` / `beta` over all."""
    decoders, caches, cache_rows = {}, {}, {}
    for key, path in language_models.items():
        settings = beam or DEFAULT_BEAM_SETTINGS
        stored = None if grid_search or (alpha is not None and beta is not None) else _stored_settings(lm_decoding_path, key, path)
        if stored is not None:
            stored_names = ("alpha", "beta") if beam is not None else ("alpha", "beta", "beam_size", "beam_size_token", "beam_threshold", "smearing", "sil_score")
            settings = dataclasses.replace(settings, **{name: stored[name] for name in stored_names if name in stored})
        if alpha is not None:
            settings = dataclasses.replace(settings, alpha=alpha)
        if beta is not None:
            settings = dataclasses.replace(settings, beta=beta)
        decoders[key] = MlplBeamSearchDecoder.from_settings(tokenizer, path, lexicon, settings)
        if grid_search:
            decoder = decoders[key]
            caches[key] = LogProbCache(decoder.vocab_size, (decoder.blank_index, decoder.sil_index), top_k=max(128, decoder.beam_size_token))
            cache_rows[key] = []
    return decoders, caches, cache_rows


def lm_decoders(tokenizer, options, languages: Sequence[str], model: str | os.PathLike | None = None) -> dict:
    """`{language or "*": MlplBeamSearchDecoder}` for pseudo-labels (`options`: `mlpl.config.LMDecodingOptions`,
    as stage 4 and slimIPL hold them; `{}` without `options.lm`). Weights: `lm_alpha` / `lm_beta`, else those
    chosen on dev in `lm_decoding`, else in the labeling model's folder (`model/lm_decoding.json`, as
    `scripts/evaluate.py --grid-search` leaves it), else the decoder's defaults. `decode_with_lm` picks an
    utterance's decoder."""
    if options.lm is None:
        return {}
    lm_decoding = options.lm_decoding
    if lm_decoding is None and model is not None and (Path(model) / LM_DECODING_FILE).is_file():  # (a Hub id has none)
        lm_decoding = Path(model) / LM_DECODING_FILE
    language_models = resolve_language_models(options.lm, languages)
    decoders, _, _ = _prepare_lm_decoding(tokenizer, language_models, options.lexicon, options.lm_alpha, options.lm_beta, False, None, lm_decoding)
    for key, decoder in decoders.items():
        logger.info("pseudo-labels of %s from the LM beam search: %s", key, decoder.settings())
    return decoders


def decode_with_lm(decoders: Mapping, language: str, logits: torch.Tensor, output_lengths: torch.Tensor, position: int) -> str | None:
    """The LM beam search's transcript of row `position` of a batch's logits with its language's decoder (or the
    one for every language); None where no LM covers the language."""
    key = _lm_key(language, decoders)
    if key is None:
        return None
    return decoders[key].decode(logits[position : position + 1], output_lengths[position : position + 1])[0]


def _score(ids, references, languages, durations, greedy, with_lm, predicted, codes, normalized):
    """metrics.json's content and the prediction rows, from the per-utterance lists (None = not decoded)."""
    decoded = [row for row, text in enumerate(greedy) if text is not None]
    if len(decoded) < len(ids):
        missing = [ids[row] for row in range(len(ids)) if greedy[row] is None]
        logger.warning("%d of %d utterances could not be decoded (e.g. %s); they are left out of the scores", len(missing), len(ids), missing[:3])
    pick = lambda values, rows: [values[row] for row in rows]  # noqa: E731
    lid_labels = None
    if predicted is not None:
        seen = set(pick(languages, decoded)) | set(pick(predicted, decoded))
        lid_labels = [code for code in codes if code in seen] + sorted(seen - set(codes))
    greedy_metrics = compute_asr_metrics(
        pick(greedy, decoded), pick(references, decoded), pick(languages, decoded), normalized=normalized,
        predicted_languages=None if predicted is None else pick(predicted, decoded), lid_labels=lid_labels,
    )
    metrics: dict[str, Any] = {
        "num_utterances": len(decoded),
        "num_skipped": len(ids) - len(decoded),
        "hours": sum(pick(durations, decoded)) / SECONDS_PER_HOUR,
        "hours_per_language": {
            language: sum(durations[row] for row in decoded if languages[row] == language) / SECONDS_PER_HOUR
            for language in greedy_metrics["languages"]
        },
        "convention": (
            "corpus-level CER/WER per language (total edits / total reference length); headline = unweighted "
            "mean over languages; raw strings (case and punctuation count, the paper's convention); *_normalized: "
            "lowercased, punctuation removed"
        ),
        "greedy": greedy_metrics,
    }
    lm_rows = [row for row in decoded if with_lm[row] is not None]
    if lm_rows:
        metrics["lm"] = compute_asr_metrics(
            pick(with_lm, lm_rows), pick(references, lm_rows), pick(languages, lm_rows), normalized=normalized
        )
        # The same utterances without the LM, so that the LM's gain is read off like for like.
        metrics["lm"]["greedy_on_same_utterances"] = {
            key: value
            for key, value in compute_asr_metrics(pick(greedy, lm_rows), pick(references, lm_rows), pick(languages, lm_rows)).items()
            if key in ("cer", "wer")
        }
    predictions = []
    for row in decoded:
        entry = {
            "id": ids[row],
            "language": languages[row],
            "reference": references[row],
            "hypothesis": greedy[row],
            "predicted_language": None if predicted is None else predicted[row],
            "duration": durations[row],
        }
        if with_lm[row] is not None:
            entry["hypothesis_lm"] = with_lm[row]
        predictions.append(entry)
    return metrics, predictions


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f}"


def markdown_report(metrics: Mapping[str, Any]) -> str:
    """report.md: one Markdown table row per language (CER/WER in %, greedy, normalized, with LM, LID)."""
    greedy = metrics["greedy"]
    lm = metrics.get("lm")
    has_lid = "lid_accuracy" in greedy
    has_normalized = "cer_normalized" in greedy
    header = ["language", "utterances", "hours", "CER", "WER"]
    if has_normalized:
        header += ["CER (normalized)", "WER (normalized)"]
    if lm:
        header += ["CER + LM", "WER + LM"]
    if has_lid:
        header += ["LID accuracy"]
    lines = []
    title = " ".join(str(metrics[key]) for key in ("model", "data", "split") if metrics.get(key))
    lines.append(f"# Evaluation{': ' + title if title else ''}\n")
    lines.append(
        "Corpus-level error rates per language, in %; the average row is the unweighted mean over languages. "
        "CER and WER score the raw text (case and punctuation count: the paper's convention); the normalized "
        "columns lowercase and drop punctuation first.\n"
    )
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join("---" if index == 0 else "---:" for index in range(len(header))) + "|")

    def row_cells(label, row, lm_row, lid, hours, utterances):
        cells = [label, str(utterances), f"{hours:.3f}", _percent(row.get("cer")), _percent(row.get("wer"))]
        if has_normalized:
            cells += [_percent(row.get("cer_normalized")), _percent(row.get("wer_normalized"))]
        if lm:
            cells += [_percent(lm_row.get("cer")), _percent(lm_row.get("wer"))] if lm_row else ["–", "–"]
        if has_lid:
            cells += [_percent(lid)]
        return "| " + " | ".join(cells) + " |"

    for language in greedy["languages"]:
        row = greedy["per_language"][language]
        lm_row = lm["per_language"].get(language) if lm else None
        lid = greedy.get("lid_accuracy_per_language", {}).get(language)
        lines.append(row_cells(language, row, lm_row, lid, metrics["hours_per_language"][language], row["num_utterances"]))
    lines.append(
        row_cells("**average**", greedy, lm, greedy.get("lid_accuracy"), metrics["hours"], metrics["num_utterances"])
    )
    if lm:
        same = lm.get("greedy_on_same_utterances", {})
        lines.append(
            f"\nWith the LM (languages {', '.join(lm['languages'])}): CER {_percent(lm['cer'])} / WER {_percent(lm['wer'])}, "
            f"against greedy CER {_percent(same.get('cer'))} / WER {_percent(same.get('wer'))} on the same utterances.\n"
        )
        for key, settings in lm.get("decoders", {}).items():
            shown = {name: settings.get(name) for name in ("lm_path", "lexicon", "alpha", "beta", "beam_size", "beam_size_token", "beam_threshold")}
            lines.append(f"- LM decoder `{key}`: " + ", ".join(f"{name}={value}" for name, value in shown.items()))
    if has_lid:
        lines.append(f"\nLanguage ID accuracy: {_percent(greedy['lid_accuracy'])} % (confusion matrix: {LID_PLOT_FILE}).")
    if metrics.get("num_skipped"):
        lines.append(f"\n{metrics['num_skipped']} utterance(s) could not be decoded and are not scored.")
    return "\n".join(lines) + "\n"


def plot_cer_per_language(metrics: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Bar chart of CER per language (greedy, and with the LM where one was used), average as a line."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    greedy = metrics["greedy"]
    lm = metrics.get("lm")
    languages = greedy["languages"]
    values = [100 * (greedy["per_language"][language]["cer"] or 0.0) for language in languages]
    figure = Figure(figsize=(max(4.0, 0.6 * len(languages) + 2), 3.5))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    width = 0.4 if lm else 0.8
    positions = list(range(len(languages)))
    axes.bar([p - (width / 2 if lm else 0) for p in positions], values, width, label="greedy")
    if lm:
        lm_values = [100 * ((lm["per_language"].get(language) or {}).get("cer") or 0.0) for language in languages]
        axes.bar([p + width / 2 for p in positions], lm_values, width, label="+ LM")
    if greedy["cer"] is not None:
        axes.axhline(100 * greedy["cer"], color="gray", linestyle="--", linewidth=1, label="average (greedy)")
    axes.set_xticks(positions, languages)
    axes.set_ylabel("CER (%)")
    axes.set_title("Character error rate per language")
    axes.legend(fontsize="small")
    figure.tight_layout()
    save_figure_atomically(figure, path, dpi=120)


def plot_lid_confusion(metrics: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Heat map of the LID confusion matrix (rows: reference, columns: predicted), row-normalized, with counts."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    greedy = metrics["greedy"]
    labels, matrix = greedy["lid_labels"], greedy["lid_confusion_matrix"]
    size = max(3.5, 0.5 * len(labels) + 1.5)
    figure = Figure(figsize=(size + 1, size))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    fractions = [[count / max(sum(row), 1) for count in row] for row in matrix]
    image = axes.imshow(fractions, cmap="Blues", vmin=0.0, vmax=1.0)
    for i, row in enumerate(matrix):
        for j, count in enumerate(row):
            if count:
                axes.text(j, i, str(count), ha="center", va="center", fontsize=8, color="white" if fractions[i][j] > 0.5 else "black")
    axes.set_xticks(range(len(labels)), labels)
    axes.set_yticks(range(len(labels)), labels)
    axes.set_xlabel("predicted language")
    axes.set_ylabel("reference language")
    axes.set_title(f"Language ID (accuracy {_percent(greedy['lid_accuracy'])} %)")
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
    figure.tight_layout()
    save_figure_atomically(figure, path, dpi=120)


def write_evaluation_files(result: EvaluationResult, output_dir: str | os.PathLike, plots: bool = True) -> dict[str, Path]:
    """metrics.json, report.md, predictions.jsonl and the plots; returns `{file name: path}`."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    files = {name: output_dir / name for name in (METRICS_FILE, REPORT_FILE, PREDICTIONS_FILE)}
    with atomic_writer(files[METRICS_FILE]) as output:
        json.dump(result.metrics, output, indent=2, ensure_ascii=False, default=_json_default)
    write_text_atomically(files[REPORT_FILE], markdown_report(result.metrics))
    with atomic_writer(files[PREDICTIONS_FILE]) as output:
        for prediction in result.predictions:
            output.write(json.dumps(prediction, ensure_ascii=False) + "\n")
    if plots:
        files[CER_PLOT_FILE] = output_dir / CER_PLOT_FILE
        plot_cer_per_language(result.metrics, files[CER_PLOT_FILE])
        if "lid_confusion_matrix" in result.metrics["greedy"]:
            files[LID_PLOT_FILE] = output_dir / LID_PLOT_FILE
            plot_lid_confusion(result.metrics, files[LID_PLOT_FILE])
    return files


def _json_default(value):
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


__all__ = [
    "CER_PLOT_FILE",
    "LID_PLOT_FILE",
    "METRICS_FILE",
    "PREDICTIONS_FILE",
    "REPORT_FILE",
    "EvaluationResult",
    "evaluate_model",
    "markdown_report",
    "plot_cer_per_language",
    "plot_lid_confusion",
    "resolve_language_models",
    "lm_decoders",
    "decode_with_lm",
    "write_evaluation_files",
]
