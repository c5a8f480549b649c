"""Decoded-audio cache: a clip decoded once per process is not decoded again (docs/design.md §8, "Decoded-audio cache").

A training run reads its labeled set once per epoch and its dev sets at every evaluation; a demo stage reads
its few minutes of audio tens of times. Decoding an mp3 and resampling it to 16 kHz is ~15 % of a demo
training update on 2 cores (profile in docs/design.md §8), and it gives the same samples every time. The
cache keeps the decoded 16 kHz float32 waveform of each clip, up to a byte budget (`data.audio_cache_gb`,
0 = off; `auto` sizes it to the run's map-style sets, `auto_budget_gb`), in the process that decodes: the main process with `data.num_workers: 0`, each DataLoader worker
otherwise (workers started again every epoch start empty).

- Exact: a hit returns a copy of the very array the decode gave, so a run with the cache trains bit for
  bit as one without it (tests/test_audio_cache.py).
- Keyed by what the audio is: a file path with its size and modification time (a file rewritten in place
  is decoded again), or the BLAKE2 digest of embedded bytes (Hub parquet mirrors), and the target rate.
- Bounded: once the budget is full, further clips are decoded every time (no eviction: with shuffled epochs
  an evicting cache would only churn). Failed decodes are not cached: they are skipped and counted again,
  as without the cache.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from typing import Any, Callable, Hashable

import numpy as np

from .audio import SAMPLING_RATE, audio_value_source

logger = logging.getLogger("mlpl.audio_cache")

GIB = 1 << 30


def audio_cache_key(audio: Any, target_sr: int) -> Hashable | None:
    """The cache key of an audio value (`Audio(decode=False)` dict or path) at `target_sr`, or None for a value
    that is not worth caching (an already decoded array) or whose file cannot be stat'ed (the decode reports it)."""
    if isinstance(audio, dict) and audio.get("array") is not None:
        return None
    source = audio_value_source(audio)
    if isinstance(source, (bytes, bytearray)):
        return ("bytes", hashlib.blake2b(source, digest_size=16).digest(), len(source), target_sr)
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        try:
            status = os.stat(path)
        except OSError:
            return None
        return ("path", path, status.st_size, status.st_mtime_ns, target_sr)
    return None


class DecodedAudioCache:
    """Decoded waveforms by `audio_cache_key`, up to `budget_bytes` of samples. Thread-safe."""

    def __init__(self, budget_bytes: int = 0):
        self.budget_bytes = int(budget_bytes)
        self._waveforms: dict[Hashable, np.ndarray] = {}
        self._lock = threading.Lock()
        self.held_bytes = 0
        self.hits = 0
        self.decodes = 0
        self.full = False  # a clip was left out because the budget was full

    def decode(self, audio: Any, target_sr: int, decoder: Callable[[Any, int], np.ndarray]) -> np.ndarray:
        """`decoder(audio, target_sr)`, or a copy of its earlier result for the same clip."""
        key = audio_cache_key(audio, target_sr) if self.budget_bytes > 0 else None
        if key is not None:
            with self._lock:
                cached = self._waveforms.get(key)
                if cached is not None:
                    self.hits += 1
                    return cached.copy()
        waveform = decoder(audio, target_sr)
        with self._lock:
            self.decodes += 1
            if key is not None and key not in self._waveforms:
                if self.held_bytes + waveform.nbytes <= self.budget_bytes:
                    self._waveforms[key] = waveform.copy()
                    self.held_bytes += waveform.nbytes
                elif not self.full:
                    self.full = True
                    logger.info(
                        "decoded-audio cache full (%.2f GB held, data.audio_cache_gb = %.2f): further clips are decoded on every read",
                        self.held_bytes / GIB, self.budget_bytes / GIB,
                    )
        return waveform

    def stats(self, since: dict | None = None) -> dict:
        """Hits and decodes (since the `stats()` given as `since`: one run of a process that runs several), clips
        and GB held, and the budget, for logs and run summaries."""
        with self._lock:
            return {
                "budget_gb": round(self.budget_bytes / GIB, 3),
                "held_gb": round(self.held_bytes / GIB, 3),
                "clips": len(self._waveforms),
                "hits": self.hits - (since or {}).get("hits", 0),
                "decodes": self.decodes - (since or {}).get("decodes", 0),
                "full": self.full,
            }


GB_PER_HOUR = SAMPLING_RATE * 4 * 3600 / GIB  # float32 samples of one hour at 16 kHz: 0.21 GiB


def available_memory_bytes() -> int | None:
    """Memory the kernel says a new allocation can take (`MemAvailable`), or free pages; None if unknown."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        return None


def auto_budget_gb(hours: float, num_workers: int, available_bytes: int | None) -> tuple[float, str]:
    """`data.audio_cache_gb: auto`: the budget for `hours` of map-style audio (5 % slack), at most a quarter of
    `available_bytes` (2 GB when unknown); 0 when DataLoader workers decode (`num_workers` > 0: their caches
    would start empty every epoch). Returns (GB, why), for the log."""
    if num_workers > 0:
        return 0.0, f"off: data.num_workers={num_workers}, whose DataLoader workers decode and start again every epoch"
    need = hours * GB_PER_HOUR * 1.05
    cap = available_bytes / 4 / GIB if available_bytes else 2.0
    if need <= cap:
        return need, f"{need:.2f} GB for the {hours:.2f} h of audio of the run's map-style sets"
    where = f"a quarter of the {available_bytes / GIB:.1f} GB available" if available_bytes else "2 GB (available memory unknown)"
    return cap, f"{cap:.2f} GB, capped at {where}; the run's map-style sets hold {hours:.2f} h ({need:.2f} GB)"


_PROCESS_CACHE = DecodedAudioCache(0)


def process_audio_cache() -> DecodedAudioCache:
    """The cache every decode of this process goes through (`mlpl.data`); off until `set_audio_cache_budget`."""
    return _PROCESS_CACHE


def set_audio_cache_budget(gigabytes: float) -> DecodedAudioCache:
    """Set the budget of this process's cache (`data.audio_cache_gb`). Lowering it empties the cache; raising it
    keeps what is held (a recipe's units in one worker share the clips they have in common)."""
    budget = int(gigabytes * GIB)
    with _PROCESS_CACHE._lock:
        if budget < _PROCESS_CACHE.held_bytes:
            _PROCESS_CACHE._waveforms.clear()
            _PROCESS_CACHE.held_bytes = 0
        _PROCESS_CACHE.budget_bytes = budget
        _PROCESS_CACHE.full = False
    return _PROCESS_CACHE


__all__ = [
    "DecodedAudioCache", "audio_cache_key", "auto_budget_gb", "available_memory_bytes", "process_audio_cache", "set_audio_cache_budget",
]  # fmt: skip
