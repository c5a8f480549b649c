"""The command-line commands (`mlpl-*` console scripts; scripts/*.py are thin wrappers of them).

One module per command (train, recipe, ablations, pseudo_label, evaluate, publish, build_lm, demo_corpus),
each with a `main(argv=None)`; all speak the dialect of `mlpl.cli.arguments`. Here: what every command
shares, logging set up once, the same way, per process.
"""

from __future__ import annotations

import logging
import os

QUIET_LOGGERS = ("accelerate", "httpx", "urllib3", "filelock")


def process_state():
    """accelerate's `PartialState` of this process, the one every script and the recipe use.

    `PartialState()` alone ignores `ACCELERATE_USE_CPU` (only `AcceleratorState` reads it), so under
    `ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes 2` on a machine without CUDA the
    first state made would be non-distributed and every process would train alone as "the main process"
    (and race on the same checkpoints). Reading the flag here makes them one gloo group.
    """
    from accelerate.state import PartialState
    from accelerate.utils import parse_flag_from_env

    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))


def setup_logging(level: int = logging.INFO, label: str | None = None) -> None:
    """Log to stderr with time, process rank (or `label`, e.g. a recipe worker's "worker 1234") and logger name;
    processes other than the main one only report warnings (launched with `accelerate launch`, every process
    would otherwise repeat each line)."""
    state = process_state()
    logging.basicConfig(
        level=level if state.is_main_process else logging.WARNING,
        format=f"%(asctime)s [{label or f'rank {state.process_index}'}] %(name)s %(levelname)s %(message)s",
    )
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(level, logging.WARNING))


def progress_bars_off() -> bool:
    """Whether tqdm's own switch, `TQDM_DISABLE`, is set (a recipe worker sets it, mlpl.unit_pool): every progress
    bar then stays off, also where a call passes `disable=` (tqdm lets an explicit argument win over the variable)."""
    return os.environ.get("TQDM_DISABLE", "").strip().lower() in ("1", "true", "yes", "on")


__all__ = ["process_state", "progress_bars_off", "setup_logging"]
