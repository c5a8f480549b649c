# Copyright 2026 The mlpl authors. Licensed under the Apache License, Version 2.0.
"""Writing a PL set atomically and resumably, from one process or many (the layout: mlpl.pseudo_label.layout).

icefall's "skip finished work by a marker written last": every process writes into the temporary folder
`<parent>/.<name>.incomplete/`; each parquet part is written under a temporary name and renamed, then the
process's progress file (`progress/rank-<r>.json`: its parts, how far its batches got, its counts) is
replaced (`RankWriter`). When all processes are done (`wait_for_all_ranks`), the main process renames the
parts into their final names, writes summary.json and renames the folder to `<output_dir>` (`finish_set`):
a crash never leaves a partial folder under the final name. A rerun with the same parameters reuses the
finished parts (`prepare_work_dir` keeps the folder, `RankWriter.load` takes them over); anything else
starts afresh.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ..data import SkipCounter
from ..files import atomic_path, replace_directory, write_json_atomically
from .config import PseudoLabelConfig
from .layout import DATA_FOLDER, PSEUDO_LABEL_FEATURES, SUMMARY_FILE

logger = logging.getLogger("mlpl.pseudo_label")

_RUN_FILE = "run.json"
_PROGRESS_FOLDER = "progress"


@dataclasses.dataclass
class Counts:
    """What one process kept and dropped; JSON round-trips through its progress file."""

    kept: int = 0
    kept_seconds: float = 0.0
    audio_seconds: float = 0.0  # all transcribed audio, kept or dropped
    elapsed_seconds: float = 0.0
    unreadable_counted: bool = True  # False: a stream decoded in DataLoader workers, whose skips stay there
    languages: dict = dataclasses.field(default_factory=dict)  # language -> {utterances, seconds, dropped}
    dropped: SkipCounter = dataclasses.field(default_factory=SkipCounter)

    def language(self, code: str) -> dict:
        return self.languages.setdefault(code, {"utterances": 0, "seconds": 0.0, "dropped": 0})

    def to_json(self) -> dict:
        values = dataclasses.asdict(self)
        values["dropped"] = dataclasses.asdict(self.dropped)
        return values

    @classmethod
    def from_json(cls, values: Mapping) -> "Counts":
        values = dict(values)
        values["dropped"] = SkipCounter(**values["dropped"])
        return cls(**values)

    def merge(self, other: "Counts") -> "Counts":
        self.kept += other.kept
        self.kept_seconds += other.kept_seconds
        self.audio_seconds += other.audio_seconds
        self.elapsed_seconds = max(self.elapsed_seconds, other.elapsed_seconds)  # processes run side by side
        self.unreadable_counted = self.unreadable_counted and other.unreadable_counted
        for code, values in other.languages.items():
            mine = self.language(code)
            for key, value in values.items():
                mine[key] += value
        self.dropped.merge(other.dropped)
        return self


def _write_parquet_atomically(path: Path, rows: Mapping[str, list]) -> None:
    with atomic_path(path) as temporary:
        pq.write_table(pa.Table.from_pydict(dict(rows), schema=PSEUDO_LABEL_FEATURES), temporary)


class RankWriter:
    """One process's parquet parts and progress file inside the temporary folder.

    Rows wait in memory until `rows_per_shard` of them are there; at the end of that batch they go to a part
    file, then the progress file (parts, batch position, counts) is replaced: the marker written last.
    """

    def __init__(self, work_dir: Path, rank: int, rows_per_shard: int):
        self.data_dir = work_dir / DATA_FOLDER
        self.progress_path = work_dir / _PROGRESS_FOLDER / f"rank-{rank:05d}.json"
        self.rank = rank
        self.rows_per_shard = rows_per_shard
        self.parts: list[str] = []
        self.position: dict | None = None
        self.counts = Counts()
        self.rows = {name: [] for name in PSEUDO_LABEL_FEATURES.names}
        self.done = False

    def load(self) -> bool:
        """Take over the finished parts of an interrupted run; remove parts its progress file does not list."""
        if self.progress_path.is_file():
            progress = json.loads(self.progress_path.read_text(encoding="utf-8"))
            self.parts, self.position = progress["parts"], progress["position"]
            self.counts, self.done = Counts.from_json(progress["counts"]), progress["done"]
        # and the temporaries (files.atomic_path's hidden `.<part>.*.tmp`) of a part it was writing when killed
        for path in [*self.data_dir.glob(f"rank-{self.rank:05d}-*"), *self.data_dir.glob(f".rank-{self.rank:05d}-*.tmp")]:
            if path.name not in self.parts:
                path.unlink()
        return self.position is not None

    def reset(self) -> None:
        for name in self.parts:
            (self.data_dir / name).unlink(missing_ok=True)
        self.parts, self.position, self.counts, self.done = [], None, Counts(), False
        self.progress_path.unlink(missing_ok=True)

    @property
    def pending(self) -> int:
        return len(self.rows["id"])

    def add(self, row: Mapping[str, Any]) -> None:
        for name, values in self.rows.items():
            values.append(row[name])

    def flush(self, position: dict, done: bool = False) -> None:
        if self.pending:
            name = f"rank-{self.rank:05d}-part-{len(self.parts):05d}.parquet"
            _write_parquet_atomically(self.data_dir / name, self.rows)
            self.parts.append(name)
            self.rows = {name: [] for name in PSEUDO_LABEL_FEATURES.names}
        self.position, self.done = position, done
        progress = {"rank": self.rank, "parts": self.parts, "position": position, "done": done,
                    "counts": self.counts.to_json()}  # fmt: skip
        write_json_atomically(self.progress_path, progress)


def prepare_work_dir(work_dir: Path, parameters: dict, resume: bool) -> None:
    """Main process: keep an interrupted run's folder if it was made with the same parameters, else start afresh."""
    run_file = work_dir / _RUN_FILE
    if work_dir.exists():
        previous = json.loads(run_file.read_text(encoding="utf-8")) if run_file.is_file() else None
        if resume and previous == parameters:
            logger.info("resuming the interrupted run in %s", work_dir)
            return
        if previous is not None and resume:
            keys = set(previous) | set(parameters)
            differing = sorted(key for key in keys if previous.get(key) != parameters.get(key))
            logger.warning("discarding the interrupted run in %s: it differs in %s", work_dir, differing)
        shutil.rmtree(work_dir)
    (work_dir / DATA_FOLDER).mkdir(parents=True)
    (work_dir / _PROGRESS_FOLDER).mkdir()
    write_json_atomically(run_file, parameters)


def wait_for_all_ranks(work_dir: Path, world_size: int, poll_seconds: float = 2.0) -> None:
    """Wait, on the file system, until every process has written its final progress file.

    Processes can finish far apart (their shares of a stream differ); a collective barrier would time out
    after its default 10-30 minutes, this does not.
    """
    started, last_report = time.monotonic(), time.monotonic()
    while True:
        waiting = []
        for rank in range(world_size):
            path = work_dir / _PROGRESS_FOLDER / f"rank-{rank:05d}.json"
            if not path.is_file() or not json.loads(path.read_text(encoding="utf-8"))["done"]:
                waiting.append(rank)
        if not waiting:
            return
        if time.monotonic() - last_report > 60:
            logger.info("waiting for processes %s to finish (%.0f s so far)", waiting, time.monotonic() - started)
            last_report = time.monotonic()
        time.sleep(poll_seconds)


def finish_set(work_dir: Path, output_dir: Path, world_size: int, parameters: dict, config: PseudoLabelConfig, scan: SkipCounter) -> dict:
    """Main process: name the parts `data/<split>-i-of-n.parquet`, write summary.json, rename into place.

    `scan`: the clips the source's header scan dropped before any process saw them (`data.scan_skips`),
    counted in the summary's `dropped` so that `utterances` is every clip of the source."""
    counts, parts = Counts(), []
    counts.dropped.merge(scan)
    for rank in range(world_size):
        progress = json.loads((work_dir / _PROGRESS_FOLDER / f"rank-{rank:05d}.json").read_text(encoding="utf-8"))
        counts.merge(Counts.from_json(progress["counts"]))
        parts.extend(progress["parts"])
    data_dir = work_dir / DATA_FOLDER
    if not parts:  # nothing kept: one empty part, so that the folder still loads as a dataset
        _write_parquet_atomically(data_dir / "empty.parquet", {name: [] for name in PSEUDO_LABEL_FEATURES.names})
        parts = ["empty.parquet"]
    files = []
    for index, name in enumerate(parts):
        final = f"{config.split}-{index:05d}-of-{len(parts):05d}.parquet"
        if not (data_dir / final).exists():  # else renamed by a finish that was interrupted
            os.replace(data_dir / name, data_dir / final)
        files.append(f"{DATA_FOLDER}/{final}")
    summary = _summary(counts, files, parameters, output_dir)
    write_json_atomically(work_dir / SUMMARY_FILE, summary)
    shutil.rmtree(work_dir / _PROGRESS_FOLDER)
    (work_dir / _RUN_FILE).unlink()
    replace_directory(work_dir, output_dir)  # an existing output_dir: overwrite=True was checked at the start
    return summary


def _summary(counts: Counts, files: list[str], parameters: dict, output_dir: Path) -> dict:
    hours = lambda seconds: round(seconds / 3600, 4)  # noqa: E731
    dropped = dict(sorted(counts.dropped.counts.items()))
    return {
        "output_dir": str(output_dir),
        "files": files,
        "kept": counts.kept,
        "kept_hours": hours(counts.kept_seconds),
        "dropped": dropped,
        "dropped_examples": counts.dropped.examples,
        "unreadable_counted": counts.unreadable_counted,
        "utterances": counts.kept + sum(dropped.values()),
        "languages": {
            code: {"utterances": values["utterances"], "hours": hours(values["seconds"]), "dropped": values["dropped"]}
            for code, values in sorted(counts.languages.items())
        },
        "transcribed_hours": hours(counts.audio_seconds),
        "elapsed_seconds": round(counts.elapsed_seconds, 2),
        "audio_seconds_per_second": round(counts.audio_seconds / max(counts.elapsed_seconds, 1e-9), 2),
        "run": parameters,
    }


def summary_line(summary: Mapping) -> str:
    """One log line: kept, dropped and why, per language, throughput."""
    dropped = ", ".join(f"{count} {reason}" for reason, count in summary["dropped"].items()) or "none"
    languages = ", ".join(
        f"{code} {values['utterances']} ({values['hours']:.2f} h)" for code, values in summary["languages"].items()
    )
    return (
        f"kept {summary['kept']} of {summary['utterances']} pseudo-labels ({summary['kept_hours']:.2f} h); "
        f"dropped: {dropped}; per language: {languages or 'none'}; "
        f"{summary['audio_seconds_per_second']:.1f} s of audio per second"
    )
