"""Writing files and folders so that a crash leaves the old version or the new one, never half of one.

Every place in the package that publishes a result on disk (configs, summaries, cards, markers, model
folders, checkpoints, evaluation reports, ARPA files, Flashlight lists, parquet parts, the demo corpus)
goes through these functions: the result is written under a temporary name in its own folder (same
file system), flushed to disk, then renamed over the old one with `os.replace`, which is atomic.

- `atomic_writer(path)`: a file handle for writers that stream their output (line by line, csv, json).
- `atomic_path(path)`: a temporary path for libraries that write by path themselves (pyarrow's
  `pq.write_table`, `np.savez`, soundfile).
- `write_text_atomically`, `write_json_atomically`: a whole text or JSON value in one call;
  `save_figure_atomically`: a matplotlib figure.
- `atomic_directory(path)`: a folder built aside (`.<name>.building-*`), swapped in for the old one on
  success (`replace_directory`), deleted on an exception.

Deliberate exceptions, which do not publish a result in one piece:
- append-only logs (the trainer's `metrics.jsonl`): each line is appended as it happens, and a crash
  loses at most the last line, which the reader skips; rewriting the whole log per line would be
  quadratic.
- `run_folder.acquire_lock`: the lock is created with `O_CREAT | O_EXCL`, whose point is to fail when
  the file exists; a rename would silently replace another process's lock.
- files inside a folder that is itself built aside and swapped in whole: the demo corpus's audio clips
  (soundfile writes them into `.<name>.building-*`, `atomic_directory`), the files a library's
  `save_pretrained` writes into a checkpoint folder the trainer renames into place, the fixture files of
  scripts/make_mctct_fixture.py: the folder's rename is what publishes them.
- `modeling_mlpl/` (the processor's vocab.json): that package is loaded by `trust_remote_code` without
  this one, so it cannot import it; it writes inside `save_pretrained`'s folder, as above.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


# The process's umask, read once (os.umask can only be read by setting it): temporaries are created 0600 /
# 0700 by tempfile, and get the permissions a plain open() / mkdir() would have given the result.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def _temporary_in(path: Path) -> tuple[int, Path]:
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(descriptor, 0o666 & ~_UMASK)
    return descriptor, Path(temporary)


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path in `path`'s folder for a library that writes by path; on success it is flushed to
    disk and renamed to `path` (replacing any old file), on an exception it is deleted and `path` is left
    as it was. The temporary exists (empty) when the block starts; libraries that overwrite are fine.

        with atomic_path(folder / "part.parquet") as temporary:
            pq.write_table(table, temporary)
    """
    path = Path(path)
    descriptor, temporary = _temporary_in(path)
    os.close(descriptor)
    try:
        yield temporary
        _fsync(temporary)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_writer(
    path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8", newline: str | None = None
) -> Iterator[IO]:
    """A file handle on a temporary file in `path`'s folder; when the block ends without an exception the
    file is flushed to disk and renamed to `path`, otherwise it is deleted and `path` is left as it was.

    `mode` is "w" (text, with `encoding` and `newline` as in `open`) or "wb" (bytes).

        with atomic_writer(folder / "report.md") as output:
            output.write(text)
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"mode={mode!r}; atomic_writer writes a new file: use 'w' (text) or 'wb' (bytes)")
    path = Path(path)
    descriptor, temporary = _temporary_in(path)
    try:
        if mode == "wb":
            handle = os.fdopen(descriptor, "wb")
        else:
            handle = os.fdopen(descriptor, "w", encoding=encoding, newline=newline)
        with handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_text_atomically(path: str | os.PathLike, text: str) -> Path:
    """Write `text` (UTF-8) to `path` through `atomic_writer`."""
    with atomic_writer(path) as handle:
        handle.write(text)
    return Path(path)


def save_figure_atomically(figure: Any, path: str | os.PathLike, **savefig_options: Any) -> Path:
    """`figure.savefig` (matplotlib) through `atomic_writer`; the format comes from `path`'s suffix, as with
    savefig's own path argument (no suffix: matplotlib's default format)."""
    path = Path(path)
    with atomic_writer(path, "wb") as output:
        figure.savefig(output, format=path.suffix[1:] or None, **savefig_options)
    return path


def write_json_atomically(path: str | os.PathLike, value: Any) -> Path:
    """`value` as indented UTF-8 JSON, written atomically."""
    return write_text_atomically(path, json.dumps(value, indent=2, ensure_ascii=False) + "\n")


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """A new temporary folder `.<name>.building-*` next to `path` to build a whole folder in; on success it
    replaces `path` (`replace_directory`), on an exception it is deleted and `path` is left as it was.

        with atomic_directory(out_dir) as building:
            (building / "manifest.json").write_text(...)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f".{path.name}.building-", dir=path.parent))
    os.chmod(building, 0o777 & ~_UMASK)
    try:
        yield building
        replace_directory(building, path)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise


def replace_directory(temporary: str | os.PathLike, final: str | os.PathLike) -> Path:
    """Move the finished folder `temporary` to `final`, replacing any previous `final`.

    The previous folder is first renamed aside (`<final>.old`) and deleted only once the new one is in
    place, so at every moment either the old or the new folder exists under a known name.
    """
    temporary, final = Path(temporary), Path(final)
    if final.exists():
        old = final.with_name(final.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(temporary, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(temporary, final)
    return final


__all__ = [
    "atomic_directory",
    "atomic_path",
    "atomic_writer",
    "replace_directory",
    "save_figure_atomically",
    "write_json_atomically",
    "write_text_atomically",
]
