"""What the trainer trains on: the config's sources loaded as map-style sets or streams, and their languages.

`load_training_data(config, accelerator)` gives a run's `TrainingData` (mlpl.trainer's set-up; it sizes the process's decoded-audio cache,
`mlpl.audio_cache`); the pieces
serve the benchmarks and the tests too: `load_map_style` (sources -> one decoded dataset, clips over
`max_clip_seconds` skipped, docs/design.md §4 and §8), `training_sampler` (duration batches, natural or
language-balanced, docs/design.md §4), the languages and character inventories of the data
(docs/design.md §3.1) and the summary's hours per language.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from accelerate import Accelerator
from datasets import concatenate_datasets

from modeling_mlpl import build_language_characters

from .audio_cache import auto_budget_gb, available_memory_bytes, set_audio_cache_budget
from .batching import DurationBatchSampler, LanguageBalancedBatchSampler, language_sampling_shares
from .config import ExperimentConfig, SourceConfig
from .data import EXAMPLE_COLUMNS, DecodeTransform, drop_long_clips, example_durations, example_languages, records_of
from .header_index import HeaderScan
from .streaming import load_balanced_stream, load_training_stream, stream_languages, stream_transcripts, streams_requested
from .sources import load_source

logger = logging.getLogger("mlpl.trainer_data")

DURATION_CACHE = "duration_cache"  # clip durations of local folders, per clip folder (mlpl.header_index)


def load_map_style(sources: list[SourceConfig], what: str, max_clip_seconds: float | None = None, header_scan: HeaderScan | None = None):
    """The sources as ONE map-style dataset (records concatenated, decoded on access), or None; clips longer
    than `max_clip_seconds` (data.max_clip_seconds) are counted skips. `header_scan`: how clip durations are
    read (worker processes, cache folder)."""
    if not sources:
        return None
    datasets = []
    for source in sources:
        if source.streaming:
            raise ValueError(
                f"{what} source {source.path} has streaming: true; only data.train can be streamed (mlpl.streaming). "
                f"Load the {what} data map-style (streaming: false)"
            )
        datasets.append(load_source(source, header_scan=header_scan))
    if len(datasets) == 1:
        dataset = datasets[0]
    else:
        records = [records_of(d).select_columns(list(EXAMPLE_COLUMNS)) for d in datasets]
        records = [r.cast(records[0].features) for r in records]
        dataset = concatenate_datasets(records).with_transform(DecodeTransform())
    return drop_long_clips(dataset, max_clip_seconds, f"{what} data", "data.max_clip_seconds")


def size_audio_cache(data, map_style_sets) -> None:
    """Set this process's decoded-audio budget from `data.audio_cache_gb` (a number, or `auto`: from the hours of
    `map_style_sets`, `mlpl.audio_cache.auto_budget_gb`). Nothing has been decoded yet: the sets read headers only."""
    if data.audio_cache_gb != "auto":
        set_audio_cache_budget(data.audio_cache_gb)
        return
    hours = sum(float(example_durations(dataset).sum()) for dataset in map_style_sets if dataset is not None) / 3600
    budget, why = auto_budget_gb(hours, data.num_workers, available_memory_bytes())
    set_audio_cache_budget(budget)
    logger.info("data.audio_cache_gb=auto: %s", why)


def training_sampler(dataset, data, seed: int, num_replicas: int, rank: int) -> DurationBatchSampler:
    """The batch sampler of the labeled training data: natural proportions (`data.language_temperature` 1),
    or language-balanced by temperature (`LanguageBalancedBatchSampler`)."""
    options = {"seed": seed, "num_replicas": num_replicas, "rank": rank, "max_batch_size": data.max_batch_size}
    if data.language_temperature == 1:
        return DurationBatchSampler.from_dataset(dataset, data.max_batch_seconds, **options)
    return LanguageBalancedBatchSampler.from_dataset(dataset, data.max_batch_seconds, data.language_temperature, **options)


def language_hours_report(dataset, temperature: float, realized_seconds: dict[str, float]) -> dict:
    """What the run summary says about the languages of the training data: the natural and target shares
    of its audio, and the hours (and shares) of it that training steps actually used."""
    seconds: dict[str, float] = {}
    for language, duration in zip(example_languages(dataset), example_durations(dataset)):
        seconds[language] = seconds.get(language, 0.0) + float(duration)
    realized_total = sum(realized_seconds.values())
    return {
        "temperature": temperature,
        "hours": {code: value / 3600 for code, value in sorted(seconds.items())},
        "natural_share": language_sampling_shares(dict(sorted(seconds.items())), 1.0),
        "target_share": language_sampling_shares(dict(sorted(seconds.items())), temperature),
        "realized_hours": {code: realized_seconds.get(code, 0.0) / 3600 for code in sorted(seconds)},
        "realized_share": {code: realized_seconds.get(code, 0.0) / realized_total if realized_total else 0.0 for code in sorted(seconds)},
    }


def dataset_languages(dataset) -> list[str]:
    return sorted(records_of(dataset).unique("language")) if dataset is not None else []


def training_language_characters(sources, existing: dict[str, str] | None = None) -> dict[str, str] | None:
    """Each language's character inventory for the model's config (docs/design.md §3.1): the characters of the
    labeled training transcripts (pseudo-label sets left out: their stray letters are what script-constrained
    decoding removes), added to those the initial model already has."""
    labeled = [source for source in sources if source.kind != "pseudo_labels"]
    merged = dict(existing or {})
    for code, characters in (build_language_characters(stream_transcripts(labeled)) if labeled else {}).items():
        merged[code] = "".join(sorted(set(merged.get(code, "")) | set(characters)))
    return merged or None


@dataclass
class TrainingData:
    """The datasets of a run: map-style sets, or streams for `streaming: true` sources (mlpl.streaming)."""

    train_set: Any  # map-style data.train, or None when streamed
    train_stream: Any
    stream_mix: dict | None  # streamed data.train with a language temperature: its target mix
    dev_sets: dict
    unlabeled_set: Any
    unlabeled_stream: Any
    transcripts: list | None  # (language, sentence) of the streamed data.train, no audio
    languages: list[str]  # of every set, sorted
    streaming: bool  # data.train is streamed
    unlabeled_streaming: bool


def load_training_data(config: ExperimentConfig, accelerator: Accelerator) -> TrainingData:
    """The run's data (`data.train`, `data.dev`, with slimIPL `data.unlabeled`), map-style or streamed; the main
    process reads clip headers first (the others find them in the duration cache)."""
    max_seconds, slimipl = config.data.max_clip_seconds, config.slimipl
    scan = HeaderScan(config.data.duration_cache_dir or Path(config.train.output_dir) / DURATION_CACHE, config.data.scan_workers)
    if not config.data.train:
        raise ValueError("data.train is empty: the trainer needs labeled data (add a source under data.train)")
    streaming = streams_requested(config.data.train, "train")
    temperature = config.data.language_temperature
    stream_mix = None
    with accelerator.main_process_first():  # the first process reads the headers, the others find them cached
        train_set = None if streaming else load_map_style(config.data.train, "train", max_seconds, scan)
        if streaming and temperature != 1:
            train_stream, stream_mix = load_balanced_stream(config.data.train, max_seconds, temperature, config.train.seed)
        else:
            train_stream = load_training_stream(config.data.train, max_seconds) if streaming else None
        dev_sets = {f"{s.kind}:{Path(s.path).name}:{s.split}": load_map_style([s], "dev", max_seconds, scan) for s in config.data.dev}
        if slimipl.enabled and not config.data.unlabeled:
            raise ValueError("slimipl.enabled is true but data.unlabeled is empty: add the unlabeled source(s)")
        unlabeled_streaming = slimipl.enabled and streams_requested(config.data.unlabeled, "unlabeled")
        unlabeled_set = load_map_style(config.data.unlabeled, "unlabeled", max_seconds, scan) if slimipl.enabled and not unlabeled_streaming else None
        unlabeled_stream = load_training_stream(config.data.unlabeled, max_seconds, "unlabeled") if unlabeled_streaming else None

    size_audio_cache(config.data, [train_set, *dev_sets.values(), unlabeled_set])
    transcripts = stream_transcripts(config.data.train) if streaming else None
    train_languages = sorted({language for language, _ in transcripts}) if streaming else dataset_languages(train_set)
    languages = sorted(
        set(train_languages).union(
            *(dataset_languages(d) for d in dev_sets.values()),
            stream_languages(config.data.unlabeled) if unlabeled_streaming else dataset_languages(unlabeled_set),
        )
    )
    return TrainingData(
        train_set, train_stream, stream_mix, dev_sets, unlabeled_set, unlabeled_stream, transcripts, languages, streaming, unlabeled_streaming
    )


__all__ = [
    "DURATION_CACHE",
    "TrainingData",
    "dataset_languages",
    "language_hours_report",
    "load_map_style",
    "load_training_data",
    "training_language_characters",
    "training_sampler",
]
