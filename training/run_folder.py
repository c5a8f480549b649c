"""A run folder knows whose it is (issue 13.4): one run per folder, one process at a time.

`claim_run_folder(folder, values)` is what train.py and the recipe do before writing anything:

1. Lock: `run.lock` is created exclusively and holds the holder's pid and host. A second run on the same
   folder is refused, naming the holder; a lock left by a process that no longer runs (same host, dead
   pid: a SIGKILL, a power cut) is taken over with a warning.
2. Identity: `run.json` stores the resolved config (flattened) and its fingerprint, written at the start.
   A folder whose `run.json` holds a different run is refused, naming the keys that differ, unless
   `overwrite` (then the old run's files are deleted first). Keys in `ignore` (the output folder, the
   update budget, trackers, workers...) may change between invocations of one run.
3. `resume=False` into a folder that already holds this same run (checkpoints of it) is refused too: it
   would mix two runs' checkpoints and metrics. Resume it, or overwrite it.

The lock is released when the `with` block ends, however it ends.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import logging
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from .config import mask_secrets
from .files import write_json_atomically

logger = logging.getLogger("mlpl.run_folder")

LOCK_FILE = "run.lock"
RUN_FILE = "run.json"


# RecipeConfig keys that may change between invocations of one recipe run (publishing, reporting, controls, how
# many units run side by side, the decoded-audio cache, which changes no result).
RECIPE_IGNORED_KEYS = (
    "output_dir", "hub", "controls", "bootstrap_resamples", "evaluation_max_batch_seconds", "jobs",
    *(f"{section}.data.audio_cache_gb" for section in ("common", *(f"stage{number}" for number in range(1, 7)))),
)  # fmt: skip


class RunFolderError(RuntimeError):
    """The folder is locked by a live run, or holds a different run. The message says what to do."""


def flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{"train": {"seed": 0}}` -> `{"train.seed": 0}`; lists and scalars are leaves."""
    flat = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def without_keys_added_later(values: Mapping[str, Any], added_later: Mapping[str, Any]) -> dict[str, Any]:
    """`values` less the keys that a later version added, where they hold the value that means "not used"
    (`added_later`: key -> that value, or a nested mapping for a section), so that a run folder recorded before
    those keys existed is still the same run (every key is compared)."""
    kept = {}
    for key, value in values.items():
        if key in added_later:
            unused = added_later[key]
            if isinstance(unused, Mapping) and unused and isinstance(value, Mapping):
                value = without_keys_added_later(value, unused)
            elif value == unused:
                continue
        kept[key] = value
    return kept


def _identity(values: Mapping[str, Any], ignore: Iterable[str]) -> dict[str, Any]:
    ignored = tuple(ignore)
    # JSON round trip: tuples and lists compare alike, as they do once written.
    # Secrets masked: run.json must never hold a token (and a new token is the same run).
    flat = json.loads(json.dumps(flatten(mask_secrets(dict(values))), sort_keys=True, default=str))
    return {key: value for key, value in flat.items() if not any(key == i or key.startswith(i + ".") for i in ignored)}


def fingerprint(values: Mapping[str, Any], ignore: Iterable[str] = ()) -> str:
    """sha256 of the flattened config without the `ignore` keys (and what is under them)."""
    text = json.dumps(_identity(values, ignore), sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def differing_keys(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """`key: old -> new` for every key whose value differs (missing on one side shows as <absent>)."""
    absent = "<absent>"
    return [
        f"{key}: {old.get(key, absent)!r} -> {new.get(key, absent)!r}"
        for key in sorted(set(old) | set(new))
        if old.get(key, absent) != new.get(key, absent)
    ]


def _process_is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def _read_lock(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # a lock being written, or garbage: treated as held by an unknown process


def acquire_lock(folder: Path, what: str) -> Path | None:
    """Create `folder/run.lock` exclusively; take over a stale one (same host, dead pid) with a warning.
    Returns the lock, or None when this process holds it already (then the outer holder releases it)."""
    path = folder / LOCK_FILE
    mine = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "what": what}
    for _ in range(2):
        try:
            descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _read_lock(path)
            pid, host = holder.get("pid"), holder.get("host")
            if (pid, host) == (mine["pid"], mine["host"]):
                return None  # this process holds it already (a recipe run again in the same process)
            if isinstance(pid, int) and host == mine["host"] and not _process_is_alive(pid):
                logger.warning(
                    "%s: taking over a stale lock of process %d on %s (started %s), which no longer runs",
                    path, pid, host, holder.get("started", "?"),
                )
                path.unlink(missing_ok=True)
                continue
            raise RunFolderError(
                f"{folder} is in use by another run: {path} is held by process {pid} on host {host} "
                f"(started {holder.get('started', '?')}, {holder.get('what', '?')}). Wait for it to finish or use "
                f"another output folder; if that process is gone (another host crashed), delete {path}."
            ) from None
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            json.dump(mine, handle)
        return path
    raise RunFolderError(f"{path}: could not take the lock (another process took it over at the same time)")


def release_lock(path: Path | None) -> None:
    """Delete the lock if this process still holds it (None: a re-entrant claim, nothing to release)."""
    if path is not None and _read_lock(path).get("pid") == os.getpid():
        path.unlink(missing_ok=True)


def _clear(folder: Path, keep: Iterable[str]) -> None:
    keep = set(keep)
    for entry in folder.iterdir():
        if entry.name in keep:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def check_run_folder(
    folder: str | os.PathLike,
    values: Mapping[str, Any],
    *,
    ignore: Iterable[str] = (),
    overwrite: bool = False,
    resume: bool = True,
    has_progress: bool = False,
    option: str = "pass --overwrite",
) -> None:
    """Steps 2-3 of the module docstring (the caller holds the lock): refuse, or clear, or record the run.

    `has_progress`: the folder holds this run's work (checkpoints), which `resume=False` would mix with a
    new start. `option` names how the user asks for an overwrite in the refusal message.
    """
    folder = Path(folder)
    record_path = folder / RUN_FILE
    identity = _identity(values, ignore)
    mark = fingerprint(values, ignore)
    recorded = record_path.is_file()
    if recorded or has_progress:  # a folder without either is new (or holds only files of other tools)
        old = {"fingerprint": None, "config": {}}
        if recorded:
            try:
                old = json.loads(record_path.read_text(encoding="utf-8"))
            except ValueError:
                pass  # unreadable: treated as a different run
        same = old.get("fingerprint") == mark
        if overwrite:
            logger.warning("%s: overwrite requested, deleting the run it holds (%s)", folder, "same config" if same else "another config")
            _clear(folder, keep=(LOCK_FILE,))
        elif recorded and not same:
            differences = differing_keys(old.get("config", {}), identity)
            raise RunFolderError(
                f"{folder} holds a different run ({len(differences)} key(s) differ: {'; '.join(differences[:12])}"
                f"{' ...' if len(differences) > 12 else ''}). Use another output folder, or {option} to replace it."
            )
        elif not resume and has_progress:
            raise RunFolderError(
                f"{folder} already holds {'this run' if recorded else 'a run'}, with checkpoints; starting again there "
                f"would mix two runs. Resume it (--resume), or {option} to start over."
            )
        elif not recorded:
            logger.warning("%s holds a run that recorded no %s (an older version wrote it); resuming it unchecked", folder, RUN_FILE)
    write_json_atomically(record_path, {"fingerprint": mark, "config": identity, "ignored": sorted(ignore)})


def hold_run_folder(
    folder: str | os.PathLike, values: Mapping[str, Any], *, ignore: Iterable[str] = (), what: str = "a run",
    option: str = "delete the folder",
) -> Path:
    """`claim_run_folder` for a whole process (the recipe): lock, check, and release at interpreter exit.

    A re-run of a run (same values) continues it, as the recipe's stages resume; another run is refused
    with the differing keys. Returns the lock file.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock = acquire_lock(folder, what)
    try:
        check_run_folder(folder, values, ignore=ignore, option=option)
    except BaseException:
        release_lock(lock)
        raise
    atexit.register(release_lock, lock)
    return lock


@contextlib.contextmanager
def claim_run_folder(
    folder: str | os.PathLike,
    values: Mapping[str, Any],
    *,
    ignore: Iterable[str] = (),
    overwrite: bool = False,
    resume: bool = True,
    has_progress=lambda folder: False,
    what: str = "a run",
    option: str = "pass --overwrite",
) -> Iterator[Path]:
    """Lock `folder`, check (or record) whose run it holds, yield it, release the lock (module docstring).

    `has_progress(folder)` tells whether the folder holds work of the run (called after the lock is taken).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock = acquire_lock(folder, what)
    try:
        check_run_folder(
            folder, values, ignore=ignore, overwrite=overwrite, resume=resume, has_progress=has_progress(folder), option=option
        )
        yield folder
    finally:
        release_lock(lock)


__all__ = [
    "LOCK_FILE",
    "RECIPE_IGNORED_KEYS",
    "RUN_FILE",
    "RunFolderError",
    "acquire_lock",
    "check_run_folder",
    "claim_run_folder",
    "differing_keys",
    "fingerprint",
    "flatten",
    "hold_run_folder",
    "release_lock",
]
