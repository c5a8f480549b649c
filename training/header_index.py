# Copyright 2026 The mlpl authors. Licensed under the Apache License, Version 2.0.
"""Clip durations read from audio headers, in parallel processes, and cached per folder (issue 14.3).

A map-style source needs every clip's duration before the first batch (duration batching, docs/design.md §4). Reading
a header costs ~0.1 ms for an mp3 and ~0.5 ms for an ogg, so a Common Voice or VoxPopuli folder of millions
of files takes minutes on one core. `read_headers`:

- reads headers in `HeaderScan.workers` processes (not threads: soundfile's Python wrapper holds the GIL for much of
  the call), forked, in chunks, and in this process when there are few clips;
- with a `HeaderScan.cache_dir`, keeps what it read in one file per clip folder, `<cache_dir>/<hash of the folder>.npz`
  (file names, seconds, and the failure of each unreadable clip), and on the next run reads headers only of
  clips that are not in it. The cache lives beside the run, never in the dataset folder (which may be
  read-only or shared).

Invalidation: an entry is valid while its folder's modification time is unchanged. Adding, removing or
renaming a file in a folder changes it (POSIX), which drops the whole entry. A clip rewritten in place under
the same name does not change its folder's time and is not noticed: delete the cache folder after editing
clips in place. (Clips given as bytes, as Hub datasets embed them, have no file: the data layer reads those
in its own process, uncached.)

Each result is either seconds (float) or `(error class name, message)` for a clip whose header cannot be
read; the data layer turns those into its skip reasons.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from tqdm.auto import tqdm

from .audio import AudioDecodeError, audio_value_source, describe_audio_source, probe_duration
from .cli import progress_bars_off
from .files import atomic_writer

logger = logging.getLogger("mlpl.data")

HeaderResult = float | tuple[str, str]

# Below this many uncached clips, a process pool costs more to start (~1 s) than it saves.
MIN_CLIPS_FOR_WORKERS = 4096
CHUNK_SIZE = 2048
CACHE_VERSION = 1


def describe_error(error: Exception) -> str:
    """`ErrorType: message` of an error's cause (or of the error itself), for skip reports."""
    cause = error.__cause__ or error
    return f"{type(cause).__name__}: {cause}"


def read_header(audio: Any) -> HeaderResult:
    """Seconds of one clip (a path or an `Audio(decode=False)` value) from its header, or its failure."""
    try:
        return probe_duration(audio_value_source(audio), name=describe_audio_source(audio))
    except AudioDecodeError as error:
        return type(error).__name__, describe_error(error)


def _read_chunk(paths: list[str]) -> list[HeaderResult]:
    return [read_header(path) for path in paths]


def default_workers() -> int:
    """The CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@dataclass
class HeaderScan:
    """How a map-style source reads its clips' durations: `cache_dir` (None: no cache) and `workers`
    (processes; None: every CPU this process may use)."""

    cache_dir: str | os.PathLike | None = None
    workers: int | None = None


def _read_paths(paths: list[str], workers: int, description: str) -> list[HeaderResult]:
    chunks = [paths[start : start + CHUNK_SIZE] for start in range(0, len(paths), CHUNK_SIZE)]
    progress = tqdm(total=len(paths), desc=f"reading headers of {description}", unit="clip", disable=progress_bars_off() or len(paths) < MIN_CLIPS_FOR_WORKERS)
    results: list[HeaderResult] = []
    if workers <= 1 or len(paths) < MIN_CLIPS_FOR_WORKERS:
        for chunk in chunks:
            results.extend(_read_chunk(chunk))
            progress.update(len(chunk))
    else:
        # fork, as torch's DataLoader workers on Linux: the workers only call libsndfile on paths, never CUDA or
        # the process group. spawn and forkserver children run __main__ again (scripts/train.py: torch and
        # transformers, ~8 s each before the first header; measured), so they are only the fallback elsewhere.
        context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else None)
        with ProcessPoolExecutor(max_workers=min(workers, len(chunks)), mp_context=context) as pool:
            for chunk in pool.map(_read_chunk, chunks):
                results.extend(chunk)
                progress.update(len(chunk))
    progress.close()
    return results


# ---- the cache: one file per clip folder ------------------------------------------------------------


class FolderEntry:
    """What is known about the clips of one folder, valid for one modification time of that folder."""

    def __init__(self, folder: str, mtime_ns: int, results: dict[str, HeaderResult] | None = None):
        self.folder, self.mtime_ns, self.results = folder, mtime_ns, results or {}
        self.changed = False

    @staticmethod
    def file_for(cache_dir: Path, folder: str) -> Path:
        return cache_dir / f"{hashlib.sha256(folder.encode()).hexdigest()[:32]}.npz"

    @classmethod
    def load(cls, cache_dir: Path, folder: str) -> "FolderEntry":
        """The cached entry of `folder`, or an empty one if there is none or the folder changed since."""
        mtime_ns = os.stat(folder).st_mtime_ns
        path = cls.file_for(cache_dir, folder)
        if not path.is_file():
            return cls(folder, mtime_ns)
        try:
            with np.load(path, allow_pickle=False) as stored:
                meta = json.loads(bytes(stored["meta"]).decode())
                if meta["version"] != CACHE_VERSION or meta["folder"] != folder or meta["mtime_ns"] != mtime_ns:
                    logger.info("duration cache %s: %s changed since it was written; its headers are read again", path, folder)
                    return cls(folder, mtime_ns)
                names = bytes(stored["names"]).decode().split("\n") if stored["names"].size else []
                seconds = stored["seconds"].tolist()
        except Exception as error:  # a truncated or foreign file: ignore it, it is rewritten
            logger.warning("duration cache %s is unreadable (%s); its headers are read again", path, describe_error(error))
            return cls(folder, mtime_ns)
        results: dict[str, HeaderResult] = dict(zip(names, seconds))
        for name, failure in meta["failures"].items():
            results[name] = tuple(failure)
        return cls(folder, mtime_ns, results)

    def save(self, cache_dir: Path) -> None:
        """Written under a temporary name and renamed: concurrent writers (processes of one run) never leave
        a partial file."""
        names = list(self.results)
        seconds = np.array([value if isinstance(value, float) else np.nan for value in self.results.values()], dtype=np.float64)
        failures = {name: list(value) for name, value in self.results.items() if not isinstance(value, float)}
        meta = {"version": CACHE_VERSION, "folder": self.folder, "mtime_ns": self.mtime_ns, "failures": failures}
        with atomic_writer(self.file_for(cache_dir, self.folder), "wb") as file:
            np.savez(
                file,
                meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
                names=np.frombuffer("\n".join(names).encode(), dtype=np.uint8),
                seconds=seconds,
            )


def read_headers(paths: Sequence[str | os.PathLike], scan: HeaderScan | None = None, description: str = "clips") -> list[HeaderResult]:
    """Seconds (or the failure) of every clip file in `paths`, in order.

    Args:
        paths: the clips' files.
        scan: cache folder and worker processes (see `HeaderScan`; default: no cache, every CPU).
        description: names the source in the progress bar and the log line.
    """
    start = time.perf_counter()
    scan = scan or HeaderScan()
    workers = default_workers() if scan.workers is None else scan.workers
    cache = Path(scan.cache_dir) if scan.cache_dir is not None else None
    results: list[HeaderResult | None] = [None] * len(paths)
    entries: dict[str, FolderEntry] = {}
    missing: list[tuple[int, str, str]] = []  # (position, folder, name)
    for index, path in enumerate(paths):
        folder, name = os.path.split(os.path.abspath(os.fspath(path)))
        entry = entries.get(folder)
        if entry is None:
            usable = cache is not None and os.path.isdir(folder)
            entry = entries[folder] = FolderEntry.load(cache, folder) if usable else FolderEntry(folder, 0)
        known = entry.results.get(name)
        if known is None:
            missing.append((index, folder, name))
        else:
            results[index] = known
    read = _read_paths([os.fspath(paths[index]) for index, _, _ in missing], workers, description)
    for (index, folder, name), result in zip(missing, read):
        results[index] = entries[folder].results[name] = result
        entries[folder].changed = True
    if cache is not None:
        for entry in entries.values():
            if entry.changed and entry.mtime_ns:
                entry.save(cache)
    logger.info(
        "%s: %d clip durations, %d from the cache%s, %d headers read in %.1f s%s",
        description, len(paths), len(paths) - len(missing), f" {cache}" if cache is not None else "", len(missing),
        time.perf_counter() - start, f" by {workers} processes" if len(missing) >= MIN_CLIPS_FOR_WORKERS and workers > 1 else "",
    )  # fmt: skip
    return results


__all__ = ["HeaderResult", "HeaderScan", "describe_error", "default_workers", "read_header", "read_headers"]
