# Copyright 2026 The mlpl authors. Licensed under the Apache License, Version 2.0.
"""`generate_pseudo_labels`: one pass of a model over unlabeled audio, written as a PL set (recipe stage 4,
docs/design.md §6; the package docstring shows the whole path).

Each process transcribes its share of the batches (mlpl.pseudo_label.batches) with
`mlpl.inference.transcribe_batch`, filters the transcripts (docs/design.md §3/6: empty, longer than
630 characters, optionally below `min_confidence`), and hands rows to its writer
(mlpl.pseudo_label.writer), which writes parts as they fill and records how far it got.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset, IterableDataset
from tqdm.auto import tqdm

from modeling_mlpl import AUTO_LANGUAGE

from .. import data as data_layer
from ..cli import progress_bars_off
from ..data import SkipCounter
from ..inference import transcribe_batch
from ..slimipl import pseudo_labeling_mode
from .batches import MapStyleBatches, Prefetched, Processes, PseudoLabelCollator, StreamBatches, count_undecoded
from .config import (
    DROP_EMPTY,
    DROP_LOW_CONFIDENCE,
    DROP_TOO_LONG,
    LANGUAGE_FROM_LID,
    LANGUAGE_FROM_SOURCE,
    UNKNOWN_LANGUAGES,
    UNREADABLE,
    PseudoLabelConfig,
)
from .layout import SUMMARY_FILE, work_dir_of
from .model import describe_model
from .writer import RankWriter, finish_set, prepare_work_dir, summary_line, wait_for_all_ranks

logger = logging.getLogger("mlpl.pseudo_label")


def generate_pseudo_labels(
    model,
    processor,
    source: Dataset | IterableDataset | Iterable[dict],
    output_dir: str | os.PathLike,
    config: PseudoLabelConfig | None = None,
    *,
    accelerator=None,
    model_name: str | None = None,
    model_revision: str | None = None,
    routed_languages: Mapping[str, tuple[str, float]] | None = None,
) -> dict:
    """Pseudo-label every clip of `source` and write the PL set to `output_dir` (see the module docstring).

    Args:
        model: an `MlplForCTC`; put in eval mode for the run (its mode is restored afterwards) and moved to
            the accelerator's device.
        processor: its `MlplProcessor` (feature extractor + character tokenizer).
        source: unlabeled audio from mlpl.data: a map-style `Dataset` (any loader), or a stream built
            with `keep_audio_reference=True` (e.g. `load_voxpopuli_folder(folder, streaming=True,
            keep_audio_reference=True)`), ideally with a multiple of the process count as shards.
        output_dir: the PL set's folder; must not exist unless `config.overwrite`.
        config: batching, cropping, filtering, output options (`PseudoLabelConfig`).
        accelerator: an `accelerate.Accelerator` to share the work across its processes (each reads a
            disjoint share); None runs in this process alone.
        model_name, model_revision: stored in every row; by default the folder the model was loaded from
            and `model_revision(folder)` (or a hash of the weights for a model built in memory).
        routed_languages: clip id -> (language, LID probability) decided by a router before this run
            (mlpl.routing, docs/design.md §10): those rows get that language, `language_source` "lid" and
            `language_score` the probability, whatever the source says.

    Returns:
        The summary (also `<output_dir>/summary.json`): kept, dropped per reason, hours and utterances per
        language, throughput, and the run's parameters. Every process returns it once the folder exists.
    """
    config = config or PseudoLabelConfig()
    output_dir = Path(output_dir).absolute()
    processes = Processes.of(accelerator, model)
    if output_dir.exists() and not config.overwrite:
        raise FileExistsError(
            f"{output_dir} already exists (a finished pseudo-label set); pass overwrite=True (--overwrite) to "
            "replace it once the new one is complete, or choose another output folder"
        )
    if config.language_routing == "lid" and getattr(model, "lid_head", None) is None:
        raise ValueError("language_routing='lid' needs a model with a LID head (config.num_languages > 0)")
    if config.language_constraint and getattr(model.config, "language_characters", None) is None:
        model.config.script_token_ids("", {})  # raises the error that names the fix
    name, revision = describe_model(model, model_name, model_revision)
    language_codes = model.config.language_codes
    collator = PseudoLabelCollator(
        processor.feature_extractor, processor.tokenizer, {code: index for index, code in enumerate(language_codes)}
    )
    decoders = {}
    if config.lm is not None:  # an LM beam search instead of greedy PLs
        from ..evaluation import lm_decoders

        decoders = lm_decoders(processor.tokenizer, config, language_codes, model=name)  # routed clips may be of any
    batches_class = MapStyleBatches if isinstance(source, Dataset) else StreamBatches
    batches = batches_class(source, config, processes, collator)
    parameters = {
        "model_name": name,
        "model_revision": revision,
        "source": _describe_source(source),
        **batches.run_parameters(),
        "num_processes": processes.world_size,
        "routed_languages": _routes_digest(routed_languages),
        # resume, overwrite and prefetch_batches say how to run, not what the output is.
        "config": {
            k: v for k, v in dataclasses.asdict(config).items() if k not in ("resume", "overwrite", "prefetch_batches")
        },
    }

    work_dir = work_dir_of(output_dir)
    if processes.is_main:
        output_dir.parent.mkdir(parents=True, exist_ok=True)
        prepare_work_dir(work_dir, parameters, config.resume)
    processes.wait_for_everyone()

    writer = RankWriter(work_dir, processes.rank, config.rows_per_shard)
    if writer.load():
        try:
            batches.restore(writer.position)
            logger.info(
                "process %d: reusing %d finished part(s) of the interrupted run", processes.rank, len(writer.parts)
            )
        except ValueError as error:
            logger.warning("process %d: cannot continue its share (%s); starting it again", processes.rank, error)
            writer.reset()
    if not writer.done:
        _pseudo_label_share(model, processor, batches, writer, config, name, revision, processes, routed_languages, decoders)

    if processes.world_size > 1:
        wait_for_all_ranks(work_dir, processes.world_size)
    processes.wait_for_everyone()
    if processes.is_main:
        scan = data_layer.scan_skips(source) if isinstance(source, Dataset) else SkipCounter()
        summary = finish_set(work_dir, output_dir, processes.world_size, parameters, config, scan)
        logger.info("wrote %d part(s) to %s: %s", len(summary["files"]), output_dir, summary_line(summary))
    processes.wait_for_everyone()
    return json.loads((output_dir / SUMMARY_FILE).read_text(encoding="utf-8"))


def _routes_digest(routes: Mapping[str, tuple[str, float]] | None) -> str | None:
    """A hash of a router's decisions (run parameters: a resumed run must have been routed the same way)."""
    if routes is None:
        return None
    digest = hashlib.sha256()
    for identifier in sorted(routes):
        language, score = routes[identifier]
        digest.update(f"{identifier}\t{language}\t{float(score)!r}\n".encode())
    return digest.hexdigest()


def _pseudo_label_share(model, processor, batches, writer: RankWriter, config, name, revision, processes, routes=None, decoders=None) -> None:
    """Transcribe this process's batches, filter, and write rows as the parts fill."""
    counts = writer.counts
    skips_before = data_layer.stream_skipped_total()
    observes_stream_skips = isinstance(batches, StreamBatches) and config.num_workers == 0
    if isinstance(batches, StreamBatches) and not observes_stream_skips:
        counts.unreadable_counted = False  # decoded in the workers: the data layer logs them there
    started = time.monotonic() - counts.elapsed_seconds
    read = Prefetched.of(batches, config, processes.device)  # a thread decodes ahead where a core is free for it
    progress = tqdm(total=read.total, initial=writer.position.get("batches", 0) if writer.position else 0,
                    desc=f"pseudo-labeling ({name})", unit="batch", disable=progress_bars_off() or not processes.is_main or None)  # fmt: skip
    model.to(processes.device)

    def count_stream_skips() -> None:
        nonlocal skips_before
        if observes_stream_skips:  # the data layer's stream generator skipped (and logged) these
            skipped, skips_before = read.stream_skips - skips_before, read.stream_skips
            if skipped:
                counts.dropped.seen += skipped
                counts.dropped.counts[UNREADABLE] = counts.dropped.counts.get(UNREADABLE, 0) + skipped

    with pseudo_labeling_mode(model), torch.inference_mode():
        for batch, requested_ids in read:
            count_undecoded(requested_ids, batch, counts.dropped)
            if batch is not None:
                _transcribe_and_keep(model, processor, batch, writer, config, name, revision, routes, decoders)
            count_stream_skips()
            counts.elapsed_seconds = time.monotonic() - started
            progress.update(1)
            progress.set_postfix(kept=counts.kept, hours=f"{counts.audio_seconds / 3600:.2f}")
            if writer.pending >= config.rows_per_shard:
                writer.flush(read.state)
    count_stream_skips()  # clips skipped after the last batch (the last snapshot, at the end)
    progress.close()
    counts.elapsed_seconds = time.monotonic() - started
    writer.flush(read.state, done=True)
    logger.info(
        "process %d: %d pseudo-labels kept, %d dropped, in %d part(s) under %s",
        processes.rank, counts.kept, counts.dropped.skipped, len(writer.parts), writer.data_dir,
    )  # fmt: skip


def _transcribe_and_keep(model, processor, batch, writer, config, name, revision, routes=None, decoders=None) -> None:
    """One batch: greedy PLs (mlpl.inference), or the LM's where `decoders` cover the language, filters, rows."""
    counts = writer.counts
    constraint = None  # docs/design.md §3.1: the utterance's language, or the LID's guess where it is unknown
    if config.language_constraint:
        languages = [routes[i][0] if routes and i in routes else code for i, code in zip(batch["ids"], batch["languages"])]  # routed: its language
        constraint = [AUTO_LANGUAGE if code in UNKNOWN_LANGUAGES else code for code in languages]
    result = transcribe_batch(
        model, batch, processor.tokenizer, config.chunk_frames, config.max_chunks_per_forward, language=constraint,
        return_logits=bool(decoders),
    )
    if decoders:
        from ..evaluation import decode_with_lm

        logits, output_lengths = result["logits"].float().cpu(), result["output_lengths"].cpu()
    predicted = probabilities = [None] * len(batch["ids"])
    if result["language_ids"] is not None:
        predicted = [model.config.language_codes[index] for index in result["language_ids"].tolist()]
        probabilities = result["language_probabilities"].tolist()
    for index, identifier in enumerate(batch["ids"]):
        source_language = language = batch["languages"][index]
        language_source, language_score = LANGUAGE_FROM_SOURCE, None
        if routes is not None and identifier in routes:  # decided by a router (mlpl.routing)
            language, language_score = routes[identifier][0], float(routes[identifier][1])
            language_source = LANGUAGE_FROM_LID
        elif config.language_routing == "lid" and source_language in UNKNOWN_LANGUAGES:
            language, language_source, language_score = predicted[index], LANGUAGE_FROM_LID, probabilities[index]
        duration = float(batch["durations"][index])
        text, confidence = result["texts"][index], float(result["confidences"][index])
        if decoders:
            with_lm = decode_with_lm(decoders, language, logits, output_lengths, index)
            text = text if with_lm is None else with_lm  # None: no LM for this language; "" is an empty PL
        counts.dropped.seen += 1
        counts.audio_seconds += duration
        reason = _drop_reason(text, confidence, config)
        if reason is not None:
            detail = f"{len(text)} characters, confidence {confidence:.3f}"
            counts.dropped.skip(reason, f"{identifier} ({language})", detail)
            counts.language(language)["dropped"] += 1
            continue
        counts.kept += 1
        counts.kept_seconds += duration
        per_language = counts.language(language)
        per_language["utterances"] += 1
        per_language["seconds"] += duration
        writer.add(
            {
                "id": identifier,
                "audio": _audio_reference(batch["audio_references"][index]),
                "language": language,
                "source_language": source_language,
                "language_source": language_source,
                "language_score": language_score,
                "pseudo_label": text,
                "duration": duration,
                "confidence": confidence,
                "predicted_language": predicted[index],
                "predicted_language_probability": probabilities[index],
                "model_name": name,
                "model_revision": revision,
            }
        )


def _describe_source(source) -> str:
    if isinstance(source, (Dataset, IterableDataset)) and source.info.description:
        return source.info.description
    if isinstance(source, Dataset):
        return f"map-style dataset of {len(source)} clips"
    return f"stream ({type(source).__name__}, {getattr(source, 'num_shards', '?')} shards)"


def _audio_reference(reference: Any) -> dict:
    """`{"bytes", "path"}` of a clip: local paths made absolute so the set loads from any working folder."""
    if isinstance(reference, Mapping):
        clip_bytes, path = reference.get("bytes"), reference.get("path")
    else:
        clip_bytes, path = None, os.fspath(reference)
    if clip_bytes is None and path and not os.path.isabs(path):
        path = os.path.abspath(path)
    return {"bytes": clip_bytes, "path": path}


def _drop_reason(text: str, confidence: float, config: PseudoLabelConfig) -> str | None:
    """Why a pseudo-label is dropped (docs/design.md §3/6: empty or longer than 630 characters; optional confidence)."""
    if not text:
        return DROP_EMPTY
    if len(text) > config.max_label_length:
        return DROP_TOO_LONG
    if config.min_confidence is not None and confidence < config.min_confidence:
        return DROP_LOW_CONFIDENCE
    return None
