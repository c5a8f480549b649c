"""Writing files and folders so that a crash leaves the old version or the new one, never half of one.

Every place in the package that publishes a result on disk (configs, summaries, cards, markers, model
folders, checkpoints) goes through these functions.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any


def write_text_atomically(path: str | os.PathLike, text: str) -> Path:
    """Write `text` to `path` through a temporary file in the same folder, then `os.replace`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def write_json_atomically(path: str | os.PathLike, value: Any) -> Path:
    """`value` as indented UTF-8 JSON, written atomically."""
    return write_text_atomically(path, json.dumps(value, indent=2, ensure_ascii=False) + "\n")


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


__all__ = ["replace_directory", "write_json_atomically", "write_text_atomically"]
