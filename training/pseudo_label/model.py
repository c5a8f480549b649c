# Copyright 2026 The mlpl authors. Licensed under the Apache License, Version 2.0.
"""The model a PL set was made with: its name and a deterministic revision (stored in every row), and
loading one from a folder or a Hub id."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from collections.abc import Sequence
from pathlib import Path

import torch

_WEIGHTS_FILE = re.compile(r"^(model|pytorch_model|adapter_model)(-\d+-of-\d+)?\.(safetensors|bin)$")  # adapter_model: a PEFT adapter folder
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


def _weights_files(folder: Path) -> list[Path]:
    return sorted(path for path in folder.iterdir() if _WEIGHTS_FILE.match(path.name))


def _git_commit(folder: Path, files: Sequence[Path]) -> str | None:
    """HEAD of the git checkout holding `folder`, if its weights are tracked and unmodified there."""
    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=60)

    try:
        tracked = git("ls-files", "--error-unmatch", *[path.name for path in files])
        if tracked.returncode != 0 or git("status", "--porcelain", "--", ".").stdout.strip():
            return None
        head = git("rev-parse", "HEAD").stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head if _COMMIT.match(head) else None


def model_revision(folder: str | os.PathLike) -> str:
    """A deterministic name of the weights in `folder`.

    The commit hash when `folder` is a Hub snapshot (`.../models--org--name/snapshots/<commit>`) or sits in a
    git checkout with its weights committed and unmodified; otherwise "sha256:" + the SHA-256 of the weights
    files (model*.safetensors / pytorch_model*.bin, names and contents, in name order).
    """
    folder = Path(folder)
    files = _weights_files(folder) if folder.is_dir() else []
    if not files:
        raise ValueError(
            f"{folder} holds no model weights (model.safetensors or pytorch_model.bin); save the model there"
        )
    resolved = folder.resolve()
    if resolved.parent.name == "snapshots" and _COMMIT.match(resolved.name):
        return resolved.name
    commit = _git_commit(folder, files)
    if commit is not None:
        return commit
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode())
        with open(path, "rb") as weights:
            for block in iter(lambda: weights.read(1 << 24), b""):
                digest.update(block)
    return "sha256:" + digest.hexdigest()


def _state_dict_revision(model: torch.nn.Module) -> str:
    """"sha256:" + a hash of the parameters and buffers, for a model that was not loaded from a folder."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return "sha256:" + digest.hexdigest()


def describe_model(model, name: str | None = None, revision: str | None = None) -> tuple[str, str]:
    """(model_name, model_revision) for the PL rows: the given values, else the folder it was loaded from."""
    source = str(getattr(model, "name_or_path", "") or "")
    name = name or source or type(model).__name__
    if revision is None:
        revision = model_revision(source) if source and Path(source).is_dir() else _state_dict_revision(model)
    return name, revision


def load_model_for_pseudo_labeling(name_or_path: str, revision: str | None = None, dtype: torch.dtype | None = None):
    """Load `MlplForCTC` + `MlplProcessor` from a folder or a Hub id (resolved to its local snapshot, so the
    revision is the snapshot's commit). Returns (model, processor, model_name, model_revision)."""
    from modeling_mlpl import MlplForCTC, MlplProcessor

    folder = Path(name_or_path)
    if not folder.is_dir():
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(name_or_path, revision=revision))
    model = MlplForCTC.from_pretrained(folder, dtype=dtype) if dtype is not None else MlplForCTC.from_pretrained(folder)
    processor = MlplProcessor.from_pretrained(folder)
    return model, processor, name_or_path, model_revision(folder)
