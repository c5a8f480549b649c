# Copyright 2026 The mlpl authors. Licensed under the Apache License, Version 2.0.
"""Reading PL sets back (the layout: mlpl.pseudo_label.layout): in the data layer's example schema for
training (`load_pseudo_label_set`, recipe stage 5, docs/design.md §6), row by row (`iter_pseudo_labels`), or
as a Flashlight list (`export_flashlight_list`).

(A set where every PL was dropped holds one part without rows; `datasets.load_dataset` refuses to build an
empty split, `load_pseudo_label_set` returns an empty dataset.)
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import pyarrow.parquet as pq
from datasets import Dataset, Features, IterableDataset, Value, load_dataset

from .. import data as data_layer
from ..audio import SAMPLING_RATE
from ..data import DecodeTransform
from ..loaders import load_hub_dataset, write_flashlight_list
from .layout import DATA_FOLDER, SUMMARY_FILE, work_dir_of

logger = logging.getLogger("mlpl.pseudo_label")

# The example schema's records of a PL set with no rows (load_pseudo_label_set).
_EMPTY_SET_FEATURES = Features({**data_layer.RECORD_FEATURES, "duration": Value("float64")})


def pseudo_label_files(folders: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    """The parquet parts of one or more finished PL sets, in order."""
    folders = [folders] if isinstance(folders, (str, os.PathLike)) else list(folders)
    files = []
    for folder in map(Path, folders):
        if not (folder / SUMMARY_FILE).is_file():
            hint = f"; an interrupted run left {work_dir_of(folder.absolute())}, rerun to finish it" if work_dir_of(
                folder.absolute()).exists() else ""  # fmt: skip
            raise ValueError(f"{folder} is not a finished pseudo-label set (no {SUMMARY_FILE}){hint}")
        files.extend(sorted((folder / DATA_FOLDER).glob("*.parquet")))
    return files


def load_pseudo_label_set(
    folders: str | os.PathLike | Sequence[str | os.PathLike],
    languages: Sequence[str] | None = None,
    streaming: bool = False,
    *,
    target_sr: int = SAMPLING_RATE,
    cache_dir: str | None = None,
) -> Dataset | IterableDataset:
    """One or more PL sets in the data layer's example schema, `sentence` = the pseudo-label.

    Audio is decoded on access exactly as the data layer's other sources do (map-style: DecodeTransform,
    with the stored durations, so `example_durations` and DurationBatchSampler work without decoding;
    streaming: the data layer's sharded generator, one shard per parquet part), so a trainer mixes these
    with labeled data (recipe stage 5). `languages` keeps only those languages (filtered before decoding).
    """
    # Parts without rows are left out: datasets cannot read them (nor build an empty split).
    files = [str(path) for path in pseudo_label_files(folders) if pq.ParquetFile(path).metadata.num_rows]
    if not files:
        empty = Dataset.from_dict({column: [] for column in _EMPTY_SET_FEATURES}, features=_EMPTY_SET_FEATURES)
        if streaming:
            return IterableDataset.from_generator(_no_examples)
        return empty.with_transform(DecodeTransform(target_sr))
    table = load_dataset("parquet", data_files=files, split="train", streaming=streaming, cache_dir=cache_dir)
    if languages is not None:
        wanted = set(languages)
        table = table.filter(lambda language: language in wanted, input_columns=["language"])
    if streaming:
        return load_hub_dataset(table, columns={"sentence": "pseudo_label"}, target_sr=target_sr)
    table = table.rename_column("pseudo_label", "sentence").select_columns(list(data_layer.EXAMPLE_COLUMNS))
    return table.with_transform(DecodeTransform(target_sr))


def _no_examples() -> Iterator[dict]:
    yield from ()


def iter_pseudo_labels(folders, columns: Sequence[str] | None = None) -> Iterator[dict]:
    """Rows of PL sets, read part by part (constant memory), as dicts of the stored columns."""
    for path in pseudo_label_files(folders):
        for record_batch in pq.ParquetFile(path).iter_batches(columns=list(columns) if columns else None):
            yield from record_batch.to_pylist()


def export_flashlight_list(folders, path: str | os.PathLike, languages: Sequence[str] | None = None) -> int:
    """Write PL sets as a Flashlight list (`id path duration_ms pseudo_label`, mlpl.data's writer, which
    writes through files.atomic_writer). Clips stored as bytes (no file) cannot be listed: error.
    Returns the number of lines."""
    path = Path(path)
    wanted = None if languages is None else set(languages)
    rows = (
        {"id": row["id"], "audio": row["audio"], "duration": row["duration"], "sentence": row["pseudo_label"]}
        for row in iter_pseudo_labels(folders, ["id", "audio", "duration", "pseudo_label", "language"])
        if wanted is None or row["language"] in wanted
    )
    count = write_flashlight_list(rows, path)
    logger.info("wrote %d pseudo-labels as a Flashlight list to %s", count, path)
    return count


