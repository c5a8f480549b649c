"""What every command-line script shares: logging set up once, the same way, per process."""

from __future__ import annotations

import logging

QUIET_LOGGERS = ("accelerate", "httpx", "urllib3", "filelock")


def setup_logging(level: int = logging.INFO) -> None:
    """Log to stderr with time, process rank and logger name; processes other than the main one only
    report warnings (launched with `accelerate launch`, every process would otherwise repeat each line)."""
    from accelerate.state import PartialState

    state = PartialState()
    logging.basicConfig(
        level=level if state.is_main_process else logging.WARNING,
        format=f"%(asctime)s [rank {state.process_index}] %(name)s %(levelname)s %(message)s",
    )
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(level, logging.WARNING))


__all__ = ["setup_logging"]
