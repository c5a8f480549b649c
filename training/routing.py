# Copyright 2026 The mlpl authors. Licensed under the Apache License, Version 2.0.
"""Pseudo-labels for audio of unknown language, routed by an LID head (docs/design.md §10).

Unlabeled audio whose language is unknown (`language: und`, e.g. a VoxPopuli-layout folder named `und/`,
or a Hub / Flashlight source with `language: und`) cannot go to the per-language stage-3 model the recipe
pseudo-labels each language with. Routing gives it one:

    source (every clip of unknown language)
      -> router pass: the router's forward (mlpl.inference.forward_batch, the same crops as
         pseudo-labeling) gives each clip's LID probabilities; top-1 language p and probability s
         (mlpl.inference.predict_languages, as the PL rows' predicted_language)
      -> s < threshold: dropped ("LID probability below routing_threshold");
         no model for p: dropped ("no model for predicted language"); else routed to p
      -> routing.parquet (id, duration, predicted_language, language_score, routed_to, reason)
      -> per routed language: mlpl.pseudo_label.generate_pseudo_labels with that language's model on the
         clips routed to it (`routed_languages`: the rows get language p, language_source "lid",
         language_score s), one PL set each under <output_dir>/pseudo_labels/<language>/
      -> summary.json: utterances, routed and dropped per reason, per language kept / hours

The router is any `MlplForCTC` with an LID head (the recipe's default: the stage-1 multilingual model,
whose LID head knows every labeled language); the models are only loaded one at a time. The PL sets are
ordinary ones (`load_pseudo_label_set` reads them; stage 5 trains on them).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import torch
from datasets import Dataset, IterableDataset
from tqdm.auto import tqdm

from . import data as data_layer
from .cli import progress_bars_off
from .data import SkipCounter, records_of
from .files import atomic_path, write_json_atomically
from .inference import forward_batch, predict_languages
from .pseudo_label import (
    SUMMARY_FILE,
    UNREADABLE,
    PseudoLabelCollator,
    PseudoLabelConfig,
    describe_model,
    generate_pseudo_labels,
    load_model_for_pseudo_labeling,
)
from .pseudo_label.batches import MapStyleBatches, Prefetched, Processes, StreamBatches, count_undecoded
from .slimipl import pseudo_labeling_mode

logger = logging.getLogger("mlpl.routing")

# Why a clip of unknown language gets no pseudo-label at the routing step: the keys of the summary's "dropped".
DROP_BELOW_THRESHOLD = "LID probability below routing_threshold"
DROP_NO_MODEL = "no model for predicted language"
DEFAULT_ROUTING_THRESHOLD = 0.9
# The recipe's `pseudo_labels:` keys that configure routing (the others are PseudoLabelConfig fields):
# `router` ("stage1", or a model folder / Hub id; unset: audio of unknown language is not pseudo-labeled) and
# `routing_threshold` (DEFAULT_ROUTING_THRESHOLD).
RECIPE_ROUTING_KEYS = ("router", "routing_threshold")

ROUTING_FILE = "routing.parquet"
PSEUDO_LABEL_FOLDER = "pseudo_labels"
_ROUTING_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("duration", pa.float64()),
        ("predicted_language", pa.string()),
        ("language_score", pa.float64()),
        ("routed_to", pa.string()),  # null: dropped
        ("reason", pa.string()),  # null: routed
    ]
)
_PARTS_FOLDER = ".routing_parts"

# A model of a language: a folder / Hub id (`load_model_for_pseudo_labeling`), or a callable returning
# (model, processor, model_name, model_revision), so that only one is in memory at a time.
ModelSpec = str | os.PathLike | Callable[[], tuple[Any, Any, str, str]]


def route_decision(language: str, score: float, threshold: float, models: Mapping[str, Any] | set) -> tuple[str | None, str | None]:
    """(routed_to, reason): routed when the top-1 probability is >= `threshold` and `language` has a model."""
    if score < threshold:
        return None, DROP_BELOW_THRESHOLD
    if language not in models:
        return None, DROP_NO_MODEL
    return language, None


def route_utterances(
    router,
    processor,
    source: Dataset | IterableDataset,
    threshold: float,
    languages: set[str] | Mapping[str, Any],
    config: PseudoLabelConfig | None = None,
    *,
    accelerator=None,
) -> tuple[list[dict], SkipCounter]:
    """The router pass: each clip's LID top-1 from the router's forward, and where it goes.

    Batching, crops and decoding are pseudo-labeling's (`config`); the LID logits of a clip cut into crops are
    the length-weighted average of the crops' (`mlpl.inference.chunked_logits`). Each process routes its own share.

    Returns:
        (rows of this process, unreadable clips): one row per clip read, with `id`, `duration`,
        `predicted_language`, `language_score` (top-1 probability), `routed_to` (None when dropped) and
        `reason` (`DROP_BELOW_THRESHOLD`, `DROP_NO_MODEL`, or None when routed).
    """
    config = config or PseudoLabelConfig()
    if getattr(router, "lid_head", None) is None:
        raise ValueError("the router needs an LID head (config.num_languages > 0); use e.g. the stage-1 multilingual model")
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"routing_threshold={threshold} must be a probability in [0, 1] (e.g. 0.9)")
    processes = Processes.of(accelerator, router)
    codes = router.config.language_codes
    collator = PseudoLabelCollator(processor.feature_extractor, processor.tokenizer, {code: i for i, code in enumerate(codes)})
    batches = (MapStyleBatches if isinstance(source, Dataset) else StreamBatches)(source, config, processes, collator)
    unreadable, rows = SkipCounter(), []
    skips_before = data_layer.stream_skipped_total()
    read = Prefetched.of(batches, config, processes.device)
    progress = tqdm(total=read.total, desc="routing by LID", unit="batch", disable=progress_bars_off() or not processes.is_main or None)
    router.to(processes.device)
    with pseudo_labeling_mode(router), torch.inference_mode():
        for batch, requested_ids in read:
            count_undecoded(requested_ids, batch, unreadable)
            if batch is not None:
                _, _, lid_logits = forward_batch(router, batch, config.chunk_frames, config.max_chunks_per_forward)
                indices, scores = predict_languages(lid_logits)
                for identifier, duration, index, score in zip(batch["ids"], batch["durations"], indices.tolist(), scores.tolist()):
                    language = codes[index]
                    routed_to, reason = route_decision(language, score, threshold, languages)
                    rows.append({"id": identifier, "duration": float(duration), "predicted_language": language,
                                 "language_score": float(score), "routed_to": routed_to, "reason": reason})  # fmt: skip
            progress.update(1)
            progress.set_postfix(routed=sum(row["routed_to"] is not None for row in rows))
    progress.close()
    if isinstance(batches, StreamBatches) and config.num_workers == 0:  # the stream generator skipped these
        for _ in range(read.stream_skips - skips_before):
            unreadable.skip(UNREADABLE, "a clip of the stream (see the data layer's log)")
    return rows, unreadable


def _load(spec: ModelSpec):
    if callable(spec):
        return spec()
    return load_model_for_pseudo_labeling(os.fspath(spec))


def _write_table(path: Path, rows: list[dict]) -> None:
    table = pa.Table.from_pylist(rows, schema=_ROUTING_SCHEMA) if rows else _ROUTING_SCHEMA.empty_table()
    with atomic_path(path) as temporary:
        pq.write_table(table, temporary)


def _subset(source, identifiers: set[str]):
    """The clips of `source` with these ids (map-style: the records, without the header scan's skips,
    which the routing summary already counts; streams: filtered as they come)."""
    if isinstance(source, Dataset):
        records = records_of(source)
        ids = records.select_columns(["id"])[:]["id"]
        return records.select([index for index, identifier in enumerate(ids) if identifier in identifiers])
    return source.filter(lambda example: example["id"] in identifiers)


def route_and_pseudo_label(
    router,
    router_processor,
    source: Dataset | IterableDataset,
    output_dir: str | os.PathLike,
    models: Mapping[str, ModelSpec],
    *,
    threshold: float = DEFAULT_ROUTING_THRESHOLD,
    config: PseudoLabelConfig | None = None,
    accelerator=None,
    router_name: str | None = None,
    router_revision: str | None = None,
) -> dict:
    """Route every clip of `source` by the router's LID and pseudo-label it with its language's model.

    Args:
        router: an `MlplForCTC` with an LID head (the recipe: stage 1) and its processor.
        source: unlabeled clips of unknown language from mlpl.data (map-style or a stream built with
            `keep_audio_reference=True`).
        output_dir: gets `routing.parquet`, `pseudo_labels/<language>/` (one PL set per language that got
            clips) and `summary.json`; rerunning replaces them (finished PL parts of an interrupted run are
            reused by `generate_pseudo_labels`).
        models: language -> its model (a folder or Hub id, or a callable returning (model, processor,
            name, revision)); clips predicted in another language are dropped and counted.
        threshold: minimum top-1 LID probability to route a clip (else dropped and counted).
        config: pseudo-labeling options, for the router pass (batching, crops) and the PL sets.

    Returns:
        The summary (also `<output_dir>/summary.json`).
    """
    config = dataclasses.replace(config or PseudoLabelConfig(), overwrite=True, languages=None)
    output_dir = Path(output_dir).absolute()
    processes = Processes.of(accelerator, router)
    started = time.monotonic()
    name, revision = describe_model(router, router_name, router_revision)
    rows, unreadable = route_utterances(router, router_processor, source, threshold, models, config, accelerator=accelerator)
    parts = output_dir / _PARTS_FOLDER
    if processes.is_main:
        shutil.rmtree(parts, ignore_errors=True)
        parts.mkdir(parents=True)
    processes.wait_for_everyone()
    _write_table(parts / f"rank-{processes.rank:05d}.parquet", rows)
    write_json_atomically(parts / f"rank-{processes.rank:05d}.json", dataclasses.asdict(unreadable))
    processes.wait_for_everyone()
    # Every process reads all decisions (each pseudo-labels its share of every language's clips).
    rows = [row for rank in range(processes.world_size) for row in pq.read_table(parts / f"rank-{rank:05d}.parquet").to_pylist()]
    rows.sort(key=lambda row: row["id"])
    duplicates = sorted({a["id"] for a, b in zip(rows, rows[1:]) if a["id"] == b["id"]})
    if duplicates:  # the routed sets and their rows are keyed by clip id
        raise ValueError(f"{len(duplicates)} clip ids occur more than once among the clips to route (e.g. {duplicates[:3]}); "
                         "give every clip its own name (two sources holding the same clips?)")  # fmt: skip
    unreadable = SkipCounter()  # every process's, and what the source's header scan dropped before any saw them
    for rank in range(processes.world_size):
        unreadable.merge(SkipCounter(**json.loads((parts / f"rank-{rank:05d}.json").read_text(encoding="utf-8"))))
    if isinstance(source, Dataset):
        unreadable.merge(data_layer.scan_skips(source))
    if processes.is_main:
        _write_table(output_dir / ROUTING_FILE, rows)
        logger.info("wrote the routing of %d clips to %s", len(rows), output_dir / ROUTING_FILE)
    processes.wait_for_everyone()

    pl_summaries = {}
    for language in sorted(models):
        routed = {row["id"]: (language, row["language_score"]) for row in rows if row["routed_to"] == language}
        if not routed:
            continue
        model, processor, model_name, model_revision = _load(models[language])
        logger.info("pseudo-labeling the %d clips routed to %s with %s", len(routed), language, model_name)
        pl_summaries[language] = generate_pseudo_labels(
            model, processor, _subset(source, set(routed)), output_dir / PSEUDO_LABEL_FOLDER / language, config,
            accelerator=accelerator, model_name=model_name, model_revision=model_revision, routed_languages=routed,
        )  # fmt: skip
        del model
    summary = routing_summary(rows, unreadable, pl_summaries, threshold=threshold, router=(name, revision),
                              models={code: str(spec) for code, spec in models.items() if not callable(spec)})  # fmt: skip
    summary["output_dir"], summary["elapsed_seconds"] = str(output_dir), round(time.monotonic() - started, 2)
    if processes.is_main:
        write_json_atomically(output_dir / SUMMARY_FILE, summary)
        shutil.rmtree(parts, ignore_errors=True)
        logger.info("routing: %s", routing_summary_line(summary))
    processes.wait_for_everyone()
    return json.loads((output_dir / SUMMARY_FILE).read_text(encoding="utf-8"))


def routing_summary(rows: list[dict], unreadable: SkipCounter, pl_summaries: Mapping[str, dict], *, threshold: float,
                    router: tuple[str, str], models: Mapping[str, str]) -> dict:  # fmt: skip
    """Counts of a routing run: every clip once, routed (per language) or dropped (per reason, routing's and
    the PL sets' own: empty, too long, ...), kept PLs and hours per language."""
    dropped: dict[str, int] = dict(unreadable.counts)
    routed: dict[str, int] = {}
    for row in rows:
        if row["routed_to"] is None:
            dropped[row["reason"]] = dropped.get(row["reason"], 0) + 1
        else:
            routed[row["routed_to"]] = routed.get(row["routed_to"], 0) + 1
    pl_dropped: dict[str, int] = {}
    for summary in pl_summaries.values():
        for reason, count in summary["dropped"].items():
            pl_dropped[reason] = pl_dropped.get(reason, 0) + count
    kept = sum(summary["kept"] for summary in pl_summaries.values())
    return {
        "utterances": len(rows) + unreadable.skipped,
        "routed": dict(sorted(routed.items())),
        "dropped": dict(sorted(dropped.items())),  # at routing
        "pseudo_label_dropped": dict(sorted(pl_dropped.items())),  # by the PL filters, after routing
        "kept": kept,
        "kept_hours": round(sum(summary["kept_hours"] for summary in pl_summaries.values()), 4),
        "languages": {code: {"routed": routed.get(code, 0), "kept": pl_summaries[code]["kept"],
                             "hours": pl_summaries[code]["kept_hours"], "pseudo_labels": pl_summaries[code]["output_dir"]}
                      for code in sorted(pl_summaries)},  # fmt: skip
        "predicted": _counts(row["predicted_language"] for row in rows),
        "threshold": threshold,
        "router": {"name": router[0], "revision": router[1]},
        "models": dict(models),
        "dropped_examples": unreadable.examples,
    }


def _counts(values) -> dict[str, int]:
    counts: dict[str, int] = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return dict(sorted(counts.items()))


def routing_summary_line(summary: Mapping) -> str:
    """One log line: routed per language, dropped per reason, PLs kept."""
    routed = ", ".join(f"{code} {count}" for code, count in summary["routed"].items()) or "none"
    dropped = ", ".join(f"{count} {reason}" for reason, count in {**summary["dropped"], **summary["pseudo_label_dropped"]}.items()) or "none"
    return (
        f"{summary['utterances']} clips of unknown language: routed {routed}; dropped {dropped}; "
        f"kept {summary['kept']} pseudo-labels ({summary['kept_hours']:.2f} h), threshold {summary['threshold']}"
    )


def read_routing(folder: str | os.PathLike) -> list[dict]:
    """The rows of a routing run's `routing.parquet` (see `route_utterances`)."""
    path = Path(folder) / ROUTING_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: not a finished routing folder (mlpl.routing.route_and_pseudo_label)")
    return pq.read_table(path).to_pylist()


__all__ = [
    "DEFAULT_ROUTING_THRESHOLD",
    "DROP_BELOW_THRESHOLD",
    "DROP_NO_MODEL",
    "PSEUDO_LABEL_FOLDER",
    "RECIPE_ROUTING_KEYS",
    "ROUTING_FILE",
    "read_routing",
    "route_and_pseudo_label",
    "route_decision",
    "route_utterances",
    "routing_summary",
    "routing_summary_line",
]
