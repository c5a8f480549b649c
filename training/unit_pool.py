# Copyright 2026 The mlpl authors. Licensed under the Apache License, Version 2.0.
"""Units of work side by side: worker processes that each get a share of the cores (docs/design.md §6, "Units side
by side").

A small model's training step does not keep every core of a CPU busy (the demo's 2.1M-parameter encoder on 2
cores: two stage-3 units one after the other at 2 threads took 86-87 s, the same two side by side at 1 thread
each 54-63 s). The recipe therefore runs the units that do not depend on each other (each language's stages 2-3,
an arm and its control) in `jobs` worker processes of `cores / jobs` threads each when `jobs > 1`:

    with UnitPool(jobs=2, threads=1) as pool:
        pool.run("stage 3 (el slimIPL)", train_model, experiment)   # blocks this thread until the worker is done

`side_by_side(tasks, pool)` runs callables in threads of this process, each marked so that its `pool.run` calls
go to a worker (`in_side_by_side_task()`); everything else, and everything when `pool` is None, runs here as
before. The parent holds no model while workers train; a worker is started once (spawned: a fresh interpreter,
not a fork of one that holds torch's thread pools) and serves many units.

This module imports nothing heavy at the top: a spawned worker runs `_start_worker` first, which fixes the thread
count before torch is imported and turns off tqdm's bars (two processes' bars would overwrite each other on one
terminal; the trainer's log lines still show each unit's progress).
"""

from __future__ import annotations

import concurrent.futures
import logging
import multiprocessing
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures.process import BrokenProcessPool
from typing import Any

logger = logging.getLogger("mlpl.unit_pool")

_LOCAL = threading.local()  # .side_by_side: this thread runs one of side_by_side's tasks


def _start_worker(threads: int) -> None:
    """A worker's set-up, before anything imports torch or tqdm: `threads` threads, no progress bars, log lines."""
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(threads)
    os.environ["TQDM_DISABLE"] = "1"
    import torch

    torch.set_num_threads(threads)
    from .cli import setup_logging

    setup_logging(label=f"worker {os.getpid()}")


def _call(label: str, function: Callable, args: tuple) -> Any:
    logger.info("%s: running in worker process %d (%d threads)", label, os.getpid(), _threads())
    return function(*args)


def _threads() -> int:
    import torch

    return torch.get_num_threads()


class UnitPool:
    """`jobs` spawned worker processes of `threads` threads each; `run` hands one call to a free one and waits."""

    def __init__(self, jobs: int, threads: int):
        if jobs < 2:
            raise ValueError(f"jobs={jobs}: a pool of workers needs jobs >= 2 (jobs: 1 runs every unit in this process)")
        if threads < 1:
            raise ValueError(f"threads={threads} must be >= 1")
        self.jobs, self.threads = jobs, threads
        # At most `jobs` calls at once (the recipe's units hold a slot each), so no call waits for a worker
        # and a unit's time is its own.
        self.slots = threading.BoundedSemaphore(jobs)
        self._executor: concurrent.futures.ProcessPoolExecutor | None = None

    def __enter__(self) -> "UnitPool":
        self._executor = concurrent.futures.ProcessPoolExecutor(
            max_workers=self.jobs, mp_context=multiprocessing.get_context("spawn"), initializer=_start_worker, initargs=(self.threads,)
        )
        logger.info("units side by side: %d worker processes of %d thread(s) each", self.jobs, self.threads)
        return self

    def __exit__(self, *exc_info) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)

    def run(self, label: str, function: Callable, *args) -> Any:
        """`function(*args)` in a worker (a picklable module-level function and arguments); its result or its error."""
        if self._executor is None:
            raise RuntimeError("UnitPool.run outside `with UnitPool(...)`")
        future = self._executor.submit(_call, label, function, args)
        try:
            return future.result()
        except BrokenProcessPool as error:
            raise RuntimeError(
                f"{label}: its worker process died ({error}), e.g. killed for memory. Run the same command again: finished "
                "units are skipped and this one resumes from its newest checkpoint; with less memory, use jobs: 1"
            ) from error


def in_side_by_side_task() -> bool:
    """Whether this thread runs one of `side_by_side`'s tasks (its units then go to the pool's workers)."""
    return getattr(_LOCAL, "side_by_side", False)


def side_by_side(tasks: Sequence[Callable[[], Any]], pool: UnitPool | None) -> None:
    """Run `tasks` (callables without arguments) one after the other, or with a pool and more than one task, each
    in its own thread, all at once; then raise the first task's error, if any, once every task has ended."""
    if pool is None or len(tasks) < 2:
        for task in tasks:
            task()
        return

    def marked(task):
        _LOCAL.side_by_side = True
        try:
            return task()
        finally:
            _LOCAL.side_by_side = False

    with concurrent.futures.ThreadPoolExecutor(max_workers=len(tasks), thread_name_prefix="mlpl-unit") as threads:
        futures = [threads.submit(marked, task) for task in tasks]
        concurrent.futures.wait(futures)
    for future in futures:
        future.result()


__all__ = ["UnitPool", "in_side_by_side_task", "side_by_side"]
