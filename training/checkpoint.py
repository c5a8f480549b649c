"""The trainer's checkpoints: what one holds beyond accelerate's state, and its safe save and load.

A checkpoint is a folder `checkpoints/step_N/` of the run folder:

- accelerate's `save_state`: the model, the optimizer and the RNG states of every process;
- `trainer_state_rank{r}.pt`, one per process: a `TrainerState` (below), only tensors and plain values;
- `config.yaml`, the run's config.

It is written as `step_N.tmp` and renamed into place (`files.replace_directory`), so a killed run leaves
its previous checkpoint whole; only the newest `train.keep_last` ones are kept. Everything is read back
with the restricted unpickler (`weights_only=True`): a crafted file is refused with an error naming it,
and its payload never runs. A resumed run continues bit-identically (docs/design.md §4: the sampler
position; §5: the schedule, the cache, the teacher and the counters, per process).

    state = TrainerState(counters, scheduler.state_dict(), ...)
    save_checkpoint(accelerator, output_dir, state, config)
    saved = TrainerState.from_dict(load_checkpoint(accelerator, newest_checkpoint(output_dir)), counters)
"""

from __future__ import annotations

import logging
import math
import pickle
import shutil
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator

from .config import ExperimentConfig, save_config
from .files import replace_directory

logger = logging.getLogger("mlpl.trainer")

CHECKPOINTS = "checkpoints"  # the run folder's sub-folder of step_N/ checkpoints


@dataclass
class RunCounters:
    """The training loop's counters: where the run stands, saved with each checkpoint (under "state")."""

    num_updates: int = 0
    best_dev_cer: float = math.inf
    skipped_non_finite: int = 0
    regularization_lowered: bool = False  # slimIPL has started (docs/design.md §5): reapplied on resume
    pseudo_labeled_batches: int = 0
    cropped_pseudo_labeled_batches: int = 0  # made during the cropping warm-up (docs/design.md §5)
    pseudo_labeled_utterances: int = 0  # counted with slimipl.min_confidence
    dropped_pseudo_labels: int = 0  # of those, below slimipl.min_confidence
    spec_augmented_batches: int = 0  # trained batches that SpecAugment masked (spec_augment.batches, start_update)
    language_seconds: list[float] = field(default_factory=list)  # this process's labeled audio trained on, per language id


@dataclass
class TrainerState:
    """What one process's `trainer_state_rank{r}.pt` holds: everything a resumed run needs that accelerate's
    state does not (the lr schedule is stepped by hand, the data and slimIPL pieces are the trainer's own)."""

    counters: RunCounters
    scheduler: dict  # the LambdaLR's state_dict
    train_sampler: dict  # a map-style sampler's epoch and consumed batches, or a stream's state
    augment_generator: torch.Tensor  # SpecAugment's generator state
    schedule: dict  # SlimIPLSchedule
    cache: dict  # PseudoLabelCache: contents, order, RNG
    unlabeled_sampler: dict | None = None  # with slimIPL
    teacher: dict | None = None  # EmaTeacher, once slimIPL has made one

    def to_dict(self) -> dict[str, Any]:
        """The file's layout: the counters under "state", the rest under their field names."""
        return {
            "state": asdict(self.counters),
            "scheduler": self.scheduler,
            "train_sampler": self.train_sampler,
            "augment_generator": self.augment_generator,
            "schedule": self.schedule,
            "cache": self.cache,
            "unlabeled_sampler": self.unlabeled_sampler,
            "teacher": self.teacher,
        }

    @classmethod
    def from_dict(cls, saved: dict[str, Any], counters: RunCounters) -> TrainerState:
        """A loaded file (`load_checkpoint`) as a TrainerState; its counters replace those of `counters`."""
        return cls(
            replace(counters, **saved["state"]),
            saved["scheduler"],
            saved["train_sampler"],
            saved["augment_generator"],
            saved["schedule"],
            saved["cache"],
            saved.get("unlabeled_sampler"),
            saved.get("teacher"),
        )


def trainer_state_file(rank: int) -> str:
    return f"trainer_state_rank{rank}.pt"


def checkpoint_steps(output_dir: Path) -> list[Path]:
    """The finished `checkpoints/step_N/` folders, oldest first (`step_N.tmp` is a save in progress)."""
    steps = [p for p in (output_dir / CHECKPOINTS).glob("step_*") if p.name[len("step_") :].isdigit()]
    return sorted(steps, key=lambda p: int(p.name[len("step_") :]))


def newest_checkpoint(output_dir: Path) -> Path | None:
    steps = [p for p in checkpoint_steps(output_dir) if (p / trainer_state_file(0)).is_file()]
    return steps[-1] if steps else None


def save_checkpoint(accelerator: Accelerator, output_dir: Path, state: TrainerState, config: ExperimentConfig) -> Path:
    """accelerate's save_state (model, optimizer, RNG of every process) + each process's own `state`, written
    to step_N.tmp then renamed to `checkpoints/step_N/`; older ones beyond `train.keep_last` are deleted.
    A collective: every process calls it."""
    final = output_dir / CHECKPOINTS / f"step_{state.counters.num_updates}"
    temporary = final.with_name(final.name + ".tmp")
    main = accelerator.is_main_process
    if main:
        shutil.rmtree(temporary, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(temporary))
    torch.save(state.to_dict(), temporary / trainer_state_file(accelerator.process_index))
    accelerator.wait_for_everyone()
    if main:
        save_config(config, temporary / "config.yaml")
        replace_directory(temporary, final)
        keep_last = config.train.keep_last
        for old in checkpoint_steps(output_dir)[:-keep_last] if keep_last > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
        logger.info("checkpoint %s", final)
    accelerator.wait_for_everyone()
    return final


def _unpickling_reason(error: Exception) -> str:
    """The line of torch's weights_only error that says what the file asked for."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return next((line for line in lines if "GLOBAL" in line), lines[0] if lines else type(error).__name__)


def _refusal(path: Path, error: Exception, what: str) -> ValueError:
    return ValueError(
        f"{path}: refusing to load this {what}: it holds objects other than tensors and plain values "
        f"({_unpickling_reason(error)}). A genuine mlpl checkpoint never does; delete the checkpoint folder "
        f"{path.parent} (or train into a new output_dir) and resume from an older one."
    )


def load_trainer_state(path: Path) -> dict:
    """A process's trainer state (`trainer_state_rank{r}.pt`) as saved (`TrainerState.to_dict`), read with
    `weights_only=True`.

    The file holds only tensors, numbers, strings, lists and dicts, so the restricted unpickler reads a
    genuine one; a file that asks for anything else (a crafted pickle that would run code on `--resume`)
    is refused with an error naming it, and its payload never runs.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise _refusal(path, error, "trainer state") from None


def _offending_file(checkpoint: Path) -> tuple[Path, Exception] | tuple[None, None]:
    """The first pickle of an accelerate checkpoint folder that the restricted unpickler refuses."""
    from accelerate.utils import load as accelerate_load  # accelerate's own loader: weights_only + numpy RNG types

    for path in sorted(checkpoint.iterdir()):
        if path.suffix in (".bin", ".pkl", ".pt") and path.is_file():
            try:
                accelerate_load(path, map_location="cpu")
            except pickle.UnpicklingError as error:
                return path, error
    return None, None


def load_checkpoint(accelerator: Accelerator, checkpoint: Path) -> dict:
    """accelerate's state (model, optimizer, RNG) and this process's trainer state from `checkpoint`; returns
    the latter as saved (`load_trainer_state`; `TrainerState.from_dict` reads it).

    Everything is read with the restricted unpickler (accelerate loads with `weights_only=True`): a crafted
    file is refused with an error naming it, and its payload never runs. accelerate skips random states
    it cannot read with an INFO line only; here that is a WARNING naming the file, since the resumed run
    then draws other dropout masks and augmentations than an uninterrupted one.
    """
    from accelerate.utils import load as accelerate_load

    random_states = checkpoint / f"random_states_{accelerator.process_index}.pkl"
    try:
        accelerate_load(random_states)
    except Exception as error:  # accelerate catches every error here too, and goes on
        logger.warning(
            "could not load the random states %s (%s): resuming without them, so this run is no longer an exact "
            "continuation of the interrupted one (dropout masks and augmentation will differ)",
            random_states, str(error).splitlines()[0] if str(error) else type(error).__name__,
        )
    try:
        accelerator.load_state(str(checkpoint))
    except pickle.UnpicklingError as error:
        path, refused = _offending_file(checkpoint)
        raise _refusal(path or checkpoint, refused or error, "checkpoint file") from None
    return load_trainer_state(checkpoint / trainer_state_file(accelerator.process_index))


__all__ = [
    "CHECKPOINTS",
    "RunCounters",
    "TrainerState",
    "checkpoint_steps",
    "load_checkpoint",
    "load_trainer_state",
    "newest_checkpoint",
    "save_checkpoint",
    "trainer_state_file",
]
