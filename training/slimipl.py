# Copyright 2026 The mlpl authors. Licensed under the Apache License, Version 2.0.
"""slimIPL, type "fixed pre-cache" (docs/design.md §5): the step schedule, the pseudo-label cache, the optional EMA
teacher and the regularization switch. No model code here: the trainer supplies the model-facing parts
as callables, so every rule below is testable with plain tensors (tests/test_slimipl_cache.py).

The rules (docs/design.md §5; slimIPL = Likhomanenko et al., arXiv:2010.11524; mling_pl = Lugosch et al., ICASSP 2022):

- `SlimIPLSchedule`: supervised only for the first M updates (slimIPL: M = 20k), then cycles of
  1 labeled + lambda unlabeled steps in a random order per cycle (mling_pl: lambda = 10). Also says
  when the mling_pl cropping warm-up is on (the first K = 10k slimIPL updates).
- `PseudoLabelCache`: C batches of unlabeled data with their pseudo-labels (slimIPL: C = 1000).
  Filling: the first C unlabeled steps only pseudo-label a new batch and store it -- no update.
  Once full, an unlabeled step returns the next cached batch with its stored PLs to train on, and with
  probability p (slimIPL: 0.1) that slot is refilled with a fresh batch pseudo-labeled by the current
  model. The read order is a random permutation of the slots, redrawn after every C reads, so every
  slot is read exactly once per C reads.
- `EmaTeacher`: optional teacher whose weights are an exponential moving average of the student's
  (decay 0.999); pseudo-label with it instead of the student.
- `lower_regularization`: dropout and layerdrop drop to 0.1 once slimIPL starts (docs/design.md §5).

Usage -- one process's share of the trainer loop (PLs come from the model in eval mode, greedy CTC, no
LM, no SpecAugment; the PL batch itself is trained WITH SpecAugment, docs/design.md §5)::

    schedule = SlimIPLSchedule(supervised_warmup_updates=20_000, unlabeled_ratio=10, seed=seed)
    cache = PseudoLabelCache(capacity=1000, replace_probability=0.1, seed=seed + accelerator.process_index)
    student = accelerator.unwrap_model(model)

    def pseudo_label(batch):                        # CPU batch dict in, CPU label tensor out
        with pseudo_labeling_mode(student):         # or: with ema_teacher.pseudo_labeling() as teacher:
            logits = student(**model_inputs(batch)).logits
        return greedy_ctc_labels(logits, batch)     # e.g. (B, L) long, padded with -100

    while num_updates < max_updates:
        if schedule.is_active(num_updates) and not regularization_lowered:
            lower_regularization(student, dropout=0.1, layerdrop=0.1)
            regularization_lowered = True
        if schedule.next_step(num_updates) == LABELED_STEP:
            batch = next(labeled_batches)
            labels = batch["labels"]
        else:
            step = cache.step(lambda: next(unlabeled_batches), pseudo_label)
            if not step.trains:                     # FILL: PLs made and stored, no update
                continue
            batch, labels = step.batch, step.labels
        train_one_update(batch, labels)             # SpecAugment, loss, backward, optimizer step
        num_updates += 1                            # (and ema_teacher.update(student) if used)

`cache.step` calls `next_unlabeled_batch()` and `pseudo_label_fn(batch)` only when it needs a new batch
(every filling step, and each replacement), so the unlabeled stream advances C + replacements times.
The fresh PL of a replacement is made before the caller trains on the step's batch, i.e. by the model
as it is at this step; replacing after the update instead would differ by one update's worth of
training, which is immaterial with C = 1000 reads between two uses of a slot.

Memory: the cache owns CPU copies of C whole batches plus their labels, per process. With the paper's
200 s of audio per batch (docs/design.md §4), 80 float32 features every 10 ms (docs/design.md §1) and an int64 attention mask,
a batch is ~200 x 100 x (80 x 4 + 8) B = 6.6 MB, so C = 1000 holds ~6.6 GB of host RAM per process
(8 processes per node: ~53 GB). `PseudoLabelCache.memory_bytes()` reports the actual figure; lower C or
the batch size if that does not fit. Tensors are never kept on the accelerator.
"""

import contextlib
import copy
import logging
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


logger = logging.getLogger(__name__)

# What `SlimIPLSchedule.next_step` returns.
LABELED_STEP = "labeled"
UNLABELED_STEP = "unlabeled"

# What `PseudoLabelCache.step` did (`PseudoLabelCacheStep.action`).
FILL = "fill"
TRAIN = "train"
TRAIN_AND_REPLACE = "train_and_replace"


# ---------------------------------------------------------------------------------------------------------
# Small shared helpers: argument checks, seeded generators, walking nested batch structures.
# ---------------------------------------------------------------------------------------------------------


def _check_count(name: str, value, minimum: int) -> int:
    """An int >= minimum, or a ValueError naming the value (bool is not accepted as an int)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}={value!r} must be an integer >= {minimum}")
    return value


def _check_probability(name: str, value, upper_inclusive: bool = True) -> float:
    upper_ok = value <= 1.0 if upper_inclusive else value < 1.0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0.0 <= value and upper_ok):
        bound = "[0, 1]" if upper_inclusive else "[0, 1)"
        raise ValueError(f"{name}={value!r} must be a number in {bound}")
    return float(value)


def _new_generator(seed: int) -> torch.Generator:
    """A CPU generator private to one object, so that no other code's draws shift its sequence."""
    return torch.Generator().manual_seed(int(seed))


def _map_tensors(value, function: Callable[[torch.Tensor], torch.Tensor]):
    """Apply `function` to every tensor in a nest of dicts / lists / tuples; other leaves are kept."""
    if isinstance(value, torch.Tensor):
        return function(value)
    if isinstance(value, Mapping):
        return {key: _map_tensors(item, function) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_map_tensors(item, function) for item in value)
    return value


def _iter_tensors(value) -> Iterator[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _iter_tensors(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _iter_tensors(item)


def _on_cpu(value):
    return _map_tensors(value, lambda tensor: tensor.detach().to("cpu"))


def _cpu_copy(value):
    """Detached CPU copies of every tensor: the cache owns its data (a later in-place change by the
    caller cannot reach it, and pinned or accelerator memory is not held for the life of the cache)."""
    return _map_tensors(value, lambda tensor: tensor.detach().to("cpu", copy=True))


# ---------------------------------------------------------------------------------------------------------
# The step schedule.
# ---------------------------------------------------------------------------------------------------------


class SlimIPLSchedule:
    """Which kind of batch the next step uses (docs/design.md §5).

    - `num_updates < supervised_warmup_updates`: always `LABELED_STEP`, and no cycle state is consumed.
    - Afterwards: cycles of `1 + unlabeled_ratio` steps, exactly one `LABELED_STEP` and `unlabeled_ratio`
      `UNLABELED_STEP`s each; the labeled step's place in the cycle is drawn uniformly per cycle, which
      is the same as a uniformly random order of the cycle's steps.

    One call = one step, not one update: a cache-filling unlabeled step takes its place in the cycle
    although it makes no update (slimIPL fills the cache during its first C unlabeled steps). With
    gradient accumulation, ask once per micro-batch.

    Args:
        supervised_warmup_updates: M, updates of supervised-only training (slimIPL: 20k).
        unlabeled_ratio: lambda, unlabeled steps per labeled step (mling_pl: 10).
        cropping_warmup_updates: K, the first K updates after M run the mling_pl cropping warm-up
            (docs/design.md §5: 10k; 0 turns it off). See `crops_unlabeled`.
        seed: seeds the cycle order. Use the SAME seed on every process: all processes must take the
            same kind of step together, since a distributed update needs every rank.
    """

    def __init__(
        self,
        supervised_warmup_updates: int = 20_000,  # slimIPL: M = 20k supervised updates first
        unlabeled_ratio: int = 10,  # mling_pl: lambda = 10
        cropping_warmup_updates: int = 10_000,  # mling_pl: crop to 10 s for the first 10k slimIPL updates
        seed: int = 0,
    ):
        self.supervised_warmup_updates = _check_count("supervised_warmup_updates", supervised_warmup_updates, 0)
        self.unlabeled_ratio = _check_count("unlabeled_ratio", unlabeled_ratio, 1)
        self.cropping_warmup_updates = _check_count("cropping_warmup_updates", cropping_warmup_updates, 0)
        self.seed = int(seed)
        self._generator = _new_generator(seed)
        self._cycle_position = 0  # steps of the current cycle already taken
        self._labeled_position = -1  # the current cycle's labeled step; drawn when the cycle starts
        self._warmup_steps = 0
        self._labeled_steps = 0
        self._unlabeled_steps = 0
        self._cycles = 0  # completed cycles

    @property
    def cycle_length(self) -> int:
        return 1 + self.unlabeled_ratio

    def is_active(self, num_updates: int) -> bool:
        """True once slimIPL runs: `num_updates` (finished optimizer updates, 0-based) reached M."""
        return _check_count("num_updates", num_updates, 0) >= self.supervised_warmup_updates

    def crops_unlabeled(self, num_updates: int) -> bool:
        """True during the cropping warm-up, M <= num_updates < M + K (docs/design.md §5, mling_pl): pseudo-label
        unlabeled audio in 10 s crops with stitched logits, train on the whole utterance."""
        cropping_ends = self.supervised_warmup_updates + self.cropping_warmup_updates
        return self.is_active(num_updates) and num_updates < cropping_ends

    def next_step(self, num_updates: int) -> str:
        """`LABELED_STEP` or `UNLABELED_STEP` for the step about to run, `num_updates` updates done."""
        if not self.is_active(num_updates):
            self._warmup_steps += 1
            return LABELED_STEP
        if self._cycle_position == 0:
            self._labeled_position = int(torch.randint(self.cycle_length, (1,), generator=self._generator))
        kind = LABELED_STEP if self._cycle_position == self._labeled_position else UNLABELED_STEP
        self._cycle_position += 1
        if self._cycle_position == self.cycle_length:
            self._cycle_position = 0
            self._cycles += 1
        if kind == LABELED_STEP:
            self._labeled_steps += 1
        else:
            self._unlabeled_steps += 1
        return kind

    def counters(self) -> dict[str, int]:
        """For logging: steps before M, labeled and unlabeled steps after M, completed cycles."""
        return {
            "supervised_warmup_steps": self._warmup_steps,
            "labeled_steps": self._labeled_steps,
            "unlabeled_steps": self._unlabeled_steps,
            "cycles": self._cycles,
        }

    def state_dict(self) -> dict:
        return {
            "supervised_warmup_updates": self.supervised_warmup_updates,
            "unlabeled_ratio": self.unlabeled_ratio,
            "cropping_warmup_updates": self.cropping_warmup_updates,
            "seed": self.seed,
            "generator": self._generator.get_state(),
            "cycle_position": self._cycle_position,
            "labeled_position": self._labeled_position,
            "counters": self.counters(),
        }

    def load_state_dict(self, state: Mapping) -> None:
        """Restore a `state_dict()`; the constructor's M, lambda and K must equal the saved ones (a resumed
        run that changed them would no longer continue the same schedule)."""
        for name in ("supervised_warmup_updates", "unlabeled_ratio", "cropping_warmup_updates"):
            if state[name] != getattr(self, name):
                raise ValueError(
                    f"saved schedule has {name}={state[name]}, this one {getattr(self, name)}; "
                    f"build the schedule with the checkpoint's value to resume"
                )
        self.seed = int(state["seed"])
        self._generator.set_state(state["generator"].clone())
        self._cycle_position = int(state["cycle_position"])
        self._labeled_position = int(state["labeled_position"])
        counters = state["counters"]
        self._warmup_steps = int(counters["supervised_warmup_steps"])
        self._labeled_steps = int(counters["labeled_steps"])
        self._unlabeled_steps = int(counters["unlabeled_steps"])
        self._cycles = int(counters["cycles"])

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(supervised_warmup_updates={self.supervised_warmup_updates}, "
            f"unlabeled_ratio={self.unlabeled_ratio}, cropping_warmup_updates={self.cropping_warmup_updates}, "
            f"seed={self.seed})"
        )


# ---------------------------------------------------------------------------------------------------------
# The pseudo-label cache.
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeptRows:
    """What a `pseudo_label_fn` returns when it keeps only some utterances of the batch (confidence filtering,
    docs/design.md §5): the cache then stores `batch` (those rows) with `labels` instead of the whole batch."""

    batch: Any
    labels: Any


def select_rows(batch: Mapping, rows: Sequence[int]) -> dict:
    """The utterances `rows` of a collated batch: every tensor and list whose first dimension is the batch's."""
    size = len(batch["input_features"])
    index = torch.as_tensor(list(rows), dtype=torch.long)
    selected = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor) and value.dim() > 0 and len(value) == size:
            selected[key] = value.index_select(0, index)
        elif isinstance(value, (list, tuple)) and len(value) == size:
            selected[key] = type(value)(value[row] for row in rows)
        else:
            selected[key] = value
    return selected


@dataclass(frozen=True)
class PseudoLabelCacheStep:
    """What one unlabeled step did.

    Attributes:
        action: `FILL` (a new batch was pseudo-labeled and stored; make NO update), `TRAIN` (train on
            `batch` with `labels`) or `TRAIN_AND_REPLACE` (train on them; their slot was refilled).
        batch: the batch dict (CPU tensors, owned by the cache: read-only, move to the device yourself).
            For `FILL` the newly stored batch; otherwise the cached batch to train on.
        labels: its pseudo-labels, as `pseudo_label_fn` returned them (CPU copies).
        slot: the cache slot read or filled, 0 <= slot < capacity.
    """

    action: str
    batch: Any
    labels: Any
    slot: int

    @property
    def trains(self) -> bool:
        """Whether the caller makes an update on this step (every step except filling)."""
        return self.action != FILL


class PseudoLabelCache:
    """slimIPL's cache of C unlabeled batches with their pseudo-labels (docs/design.md §5).

    The cache stores opaque batch dicts (any nest of dicts / lists / tuples of tensors and plain values,
    e.g. `input_features`, `attention_mask`, `language_ids`, `ids`) and the labels that the caller's
    `pseudo_label_fn` made for them; it never looks inside. Everything is copied to CPU when stored.

    Args:
        capacity: C, batches held (slimIPL: 1000). Host memory ~ C x one batch; see the module docstring.
        replace_probability: p, chance that a read slot is refilled with a freshly pseudo-labeled batch
            (slimIPL: 0.1). 0 keeps the first PLs forever; 1 replaces on every read.
        seed: seeds the read orders and the replacement draws. Each process has its own cache of its own
            share of the unlabeled data; `seed + process_index` decorrelates the processes' draws (any
            choice keeps the ranks in step: filling vs training depends only on the step count).
    """

    def __init__(self, capacity: int = 1000, replace_probability: float = 0.1, seed: int = 0):
        self.capacity = _check_count("capacity", capacity, 1)  # slimIPL: C = 1000
        self.replace_probability = _check_probability("replace_probability", replace_probability)  # slimIPL: p = 0.1
        self.seed = int(seed)
        self._generator = _new_generator(seed)
        self._slots: list[tuple[Any, Any]] = []  # (batch, labels) per slot, in filling order
        self._order: list[int] = []  # read order of the current pass; drawn when the cache becomes full
        self._read_position = 0  # reads done in the current pass
        self._filling_steps = 0
        self._training_reads = 0
        self._replacements = 0
        self._reshuffles = 0

    def __len__(self) -> int:
        return len(self._slots)

    @property
    def is_full(self) -> bool:
        return len(self._slots) == self.capacity

    def step(
        self,
        next_unlabeled_batch: Callable[[], Any],
        pseudo_label_fn: Callable[[Any], Any],
    ) -> PseudoLabelCacheStep:
        """Run one unlabeled step of slimIPL.

        Args:
            next_unlabeled_batch: returns the next unlabeled batch (a dict of tensors; no labels needed).
                Called once per filling step and once per replacement, never otherwise.
            pseudo_label_fn: batch -> its pseudo-labels (a tensor or a nest of tensors), made by the
                current model in eval mode (or the EMA teacher). It receives the cache's CPU copy. It may
                return `KeptRows(rows_of_the_batch, their_labels)` instead: the cache stores those.

        Returns:
            A `PseudoLabelCacheStep`; train on `.batch` with `.labels` when `.trains`, else make no update.
        """
        if not self.is_full:
            slot = len(self._slots)
            self._slots.append(self._pseudo_label_new_batch(next_unlabeled_batch, pseudo_label_fn))
            self._filling_steps += 1
            if self.is_full:
                self._order = self._draw_order()
            batch, labels = self._slots[slot]
            return PseudoLabelCacheStep(FILL, batch, labels, slot)

        slot = self._order[self._read_position]
        batch, labels = self._slots[slot]
        self._training_reads += 1
        # One draw per read, whatever the outcome, so the RNG sequence depends only on the read count.
        replace = bool(torch.rand((), generator=self._generator) < self.replace_probability)
        if replace:
            self._slots[slot] = self._pseudo_label_new_batch(next_unlabeled_batch, pseudo_label_fn)
            self._replacements += 1
        self._read_position += 1
        if self._read_position == self.capacity:  # a full pass: every slot read once -> new order
            self._order = self._draw_order()
            self._read_position = 0
            self._reshuffles += 1
        return PseudoLabelCacheStep(TRAIN_AND_REPLACE if replace else TRAIN, batch, labels, slot)

    def _pseudo_label_new_batch(self, next_unlabeled_batch, pseudo_label_fn) -> tuple[Any, Any]:
        batch = _cpu_copy(next_unlabeled_batch())
        labels = pseudo_label_fn(batch)
        if labels is None:
            raise ValueError("pseudo_label_fn returned None; it must return the batch's pseudo-label tensor(s)")
        if isinstance(labels, KeptRows):  # only these rows are kept (and stored)
            batch, labels = labels.batch, labels.labels
        return batch, _cpu_copy(labels)

    def _draw_order(self) -> list[int]:
        return torch.randperm(self.capacity, generator=self._generator).tolist()

    def counters(self) -> dict[str, int]:
        """For logging. `reshuffles` counts the orders redrawn after a full pass of C reads (the first
        order, drawn when filling ends, is not counted)."""
        return {
            "filling_steps": self._filling_steps,
            "training_reads": self._training_reads,
            "replacements": self._replacements,
            "reshuffles": self._reshuffles,
        }

    def memory_bytes(self) -> int:
        """Bytes of tensor data held (batches and labels), for logging the cost of C."""
        return sum(tensor.nbytes for slot in self._slots for tensor in _iter_tensors(slot))

    def state_dict(self) -> dict:
        """Everything needed to continue exactly: contents, read order and position, counters, RNG.

        Tensors are shared with the cache (not copied): `torch.save` it right away, as with a module's
        state_dict. It holds only tensors, numbers, strings, lists and dicts, so `torch.load(...,
        weights_only=True)` reads it back when the batches hold nothing else. Save it per process
        (`accelerator.register_for_checkpointing` saves the main process's object only).
        """
        return {
            "capacity": self.capacity,
            "replace_probability": self.replace_probability,
            "seed": self.seed,
            "generator": self._generator.get_state(),
            "batches": [batch for batch, _ in self._slots],
            "labels": [labels for _, labels in self._slots],
            "order": torch.tensor(self._order, dtype=torch.long),
            "read_position": self._read_position,
            "counters": self.counters(),
        }

    def load_state_dict(self, state: Mapping) -> None:
        """Restore a `state_dict()`. The capacity must match; a changed replacement probability is taken
        from this cache (the constructor) and logged."""
        if state["capacity"] != self.capacity:
            raise ValueError(
                f"saved cache has capacity={state['capacity']}, this one {self.capacity}; "
                f"build the cache with the checkpoint's capacity to resume"
            )
        if not math.isclose(state["replace_probability"], self.replace_probability):
            logger.warning(
                "resuming a pseudo-label cache saved with replace_probability=%s using %s",
                state["replace_probability"],
                self.replace_probability,
            )
        batches, labels = state["batches"], state["labels"]
        if len(batches) != len(labels) or len(batches) > self.capacity:
            raise ValueError(
                f"saved cache holds {len(batches)} batches and {len(labels)} label sets for capacity "
                f"{self.capacity}; the checkpoint is damaged"
            )
        self.seed = int(state["seed"])
        self._generator.set_state(state["generator"].clone())
        # The cache never changes a stored tensor in place, so the loaded tensors are kept as they are
        # (no second copy of C batches in host memory); only tensors loaded onto a device are moved.
        self._slots = [(_on_cpu(batch), _on_cpu(label)) for batch, label in zip(batches, labels)]
        self._order = [int(slot) for slot in state["order"]]
        self._read_position = int(state["read_position"])
        counters = state["counters"]
        self._filling_steps = int(counters["filling_steps"])
        self._training_reads = int(counters["training_reads"])
        self._replacements = int(counters["replacements"])
        self._reshuffles = int(counters["reshuffles"])

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(capacity={self.capacity}, replace_probability={self.replace_probability}, "
            f"seed={self.seed}, filled={len(self)})"
        )


# ---------------------------------------------------------------------------------------------------------
# Pseudo-labeling model helpers: eval mode, the EMA teacher, lowered regularization.
# ---------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def pseudo_labeling_mode(model: nn.Module):
    """Eval mode (dropout and layerdrop off, docs/design.md §5) and no autograd for the block; the model's
    train/eval mode is restored afterwards. Pass the unwrapped model (`accelerator.unwrap_model`): a
    DDP-wrapped forward may synchronize buffers across ranks, and ranks pseudo-label at different steps."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(was_training)


class EmaTeacher:
    """An exponential-moving-average copy of the student, to pseudo-label with (docs/design.md §5, optional).

    After each optimizer update, `update(student)` sets every floating-point parameter and buffer to
        teacher = decay x teacher + (1 - decay) x student
    and copies integer buffers (e.g. counters) as they are. The teacher is a deep copy of the student
    made at construction (create it when slimIPL starts), kept in eval mode without gradients, on the
    student's device: memory = one more copy of the weights.

    Args:
        model: the student, unwrapped (its state_dict keys must not carry a DDP `module.` prefix).
        decay: EMA decay in [0, 1) (docs/design.md §5: 0.999).

    The teacher's weights are identical on every process (DDP keeps the students identical), so its
    `state_dict()` can be checkpointed from the main process alone.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999):  # docs/design.md §5: EMA decay 0.999
        self.decay = _check_probability("decay", decay, upper_inclusive=False)
        self.model = copy.deepcopy(model)
        self.model.eval()
        self.model.requires_grad_(False)
        self.num_updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the teacher towards the student `model` by one EMA step."""
        teacher_state = self.model.state_dict()
        student_state = model.state_dict()
        if teacher_state.keys() != student_state.keys():
            missing = sorted(teacher_state.keys() ^ student_state.keys())[:5]
            raise ValueError(
                f"student and EMA teacher differ in parameter names (e.g. {missing}); "
                f"pass the unwrapped student (accelerator.unwrap_model(model))"
            )
        for name, teacher_value in teacher_state.items():
            student_value = student_state[name].to(device=teacher_value.device)
            if teacher_value.is_floating_point():
                teacher_value.lerp_(student_value.to(teacher_value.dtype), 1.0 - self.decay)
            else:
                teacher_value.copy_(student_value)
        self.num_updates += 1

    def pseudo_labeling(self):
        """Context manager yielding the teacher in eval mode under `torch.no_grad()`."""
        return pseudo_labeling_mode(self.model)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "num_updates": self.num_updates, "model": self.model.state_dict()}

    def load_state_dict(self, state: Mapping) -> None:
        self.decay = _check_probability("decay", state["decay"], upper_inclusive=False)
        self.num_updates = int(state["num_updates"])
        self.model.load_state_dict(state["model"])


def lower_regularization(model: nn.Module, dropout: float = 0.1, layerdrop: float = 0.1) -> None:
    """Set dropout and layerdrop for slimIPL (docs/design.md §5: both lowered to 0.1 when slimIPL starts).

    Calls `model.set_regularization(dropout=..., layerdrop=...)` (`MlplForCTC` has it). Idempotent: call
    it when `schedule.is_active(num_updates)` first holds, and again after resuming past that point if
    the model was rebuilt from a config that still has the supervised values.
    """
    set_regularization = getattr(model, "set_regularization", None)
    if set_regularization is None:
        raise TypeError(
            f"{type(model).__name__} has no set_regularization(dropout=, layerdrop=); pass the unwrapped "
            f"mlpl model (accelerator.unwrap_model(model))"
        )
    set_regularization(dropout=dropout, layerdrop=layerdrop)
    logger.info("slimIPL: dropout set to %s, layerdrop to %s", dropout, layerdrop)


__all__ = [
    "FILL",
    "LABELED_STEP",
    "TRAIN",
    "TRAIN_AND_REPLACE",
    "UNLABELED_STEP",
    "EmaTeacher",
    "KeptRows",
    "PseudoLabelCache",
    "PseudoLabelCacheStep",
    "SlimIPLSchedule",
    "lower_regularization",
    "pseudo_labeling_mode",
    "select_rows",
]
