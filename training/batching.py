# Copyright 2026 The mlpl authors. Licensed under the Apache License, Version 2.0.
"""Dynamic batching by total audio duration (docs/design.md §4), for map-style datasets and for streams.

The rule is Flashlight's `fl::dynamicPartitionByRoundRobin` (flashlight/fl/dataset/Utils.cpp), used by
`--batching_strategy=dynamic` (flashlight/pkg/speech/runtime/Helpers.cpp, `createDataset`):

    sort utterances by duration, longest first (stable), then pack greedily: an utterance joins
    the current batch while  (count + 1) x max_duration_in_batch  <=  max_batch_seconds,
    otherwise it opens the next batch.

Every padded batch therefore holds at most `max_batch_seconds` of (padded) audio. `pack_by_duration`
is the ONE implementation of that rule; `DurationBatchSampler` (map-style: all durations known up
front) and `DurationBucketingStream` (streams: a buffer of N examples at a time) both call it.

Where we differ from Flashlight, deliberately:
- An utterance longer than the limit becomes a batch of its own and is logged (Flashlight throws).
- The last batch is always kept (Flashlight keeps it only when count x max < limit, strictly, so a
  final batch that fills the limit exactly is dropped).
- Batches are dealt to the processes from a freshly shuffled order every epoch, and the batch count
  is evened out across processes by splitting batches rather than by dropping the remainder
  (Flashlight deals the sorted batches round robin once and drops what does not divide).

With accelerate: both classes shard by `rank` themselves, so their DataLoaders must NOT go through
`accelerator.prepare` (it would wrap the batch sampler in `BatchSamplerShard` and shard a second time,
and call `set_epoch` with its own iteration counter). Build them with
`num_replicas=accelerator.num_processes, rank=accelerator.process_index`, move batches to
`accelerator.device` yourself, and save `state_dict()` with the checkpoint (or register the sampler
with `accelerator.register_for_checkpointing`).
"""

import heapq
import itertools
import logging
import math
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch


logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# The packing rule
# --------------------------------------------------------------------------------------------


def pack_by_duration(
    durations: Sequence[float],
    max_batch_seconds: float,
    max_batch_size: int | None = None,
    names: Sequence[str] | None = None,
) -> list[list[int]]:
    """Flashlight's dynamic batching: groups of indices into `durations`.

    Args:
        durations: seconds of audio per utterance (any order).
        max_batch_seconds: limit on `len(batch) * max(durations in batch)`, i.e. on the padded audio
            of one batch, in seconds (Flashlight `--batching_max_duration`; paper: 200 s per GPU for
            base, 50 s for large, docs/design.md §4).
        max_batch_size: optional cap on the number of utterances per batch (short clips can otherwise
            make batches of hundreds).
        names: optional utterance ids, only used to name oversized utterances in the log.

    Returns:
        Batches of indices, longest utterances first; within a batch indices are in descending
        duration order (ties keep input order). Every index appears in exactly one batch. An
        utterance longer than `max_batch_seconds` forms a batch on its own (logged as a warning).
    """
    if not max_batch_seconds > 0:
        raise ValueError(f"max_batch_seconds must be > 0, got {max_batch_seconds}")
    if max_batch_size is not None and max_batch_size < 1:
        raise ValueError(f"max_batch_size must be >= 1 or None, got {max_batch_size}")
    durations = np.asarray(durations, dtype=np.float64)
    if durations.ndim != 1:
        raise ValueError(f"durations must be 1-D, got shape {durations.shape}")
    if len(durations) and (not np.all(np.isfinite(durations)) or durations.min() < 0):
        bad = int(np.flatnonzero(~np.isfinite(durations) | (durations < 0))[0])
        raise ValueError(f"duration of utterance {names[bad] if names else bad} is {durations[bad]}; must be >= 0")

    # Flashlight: std::stable_sort(..., sizes[l] > sizes[r]) -- longest first, ties in input order.
    order = np.argsort(-durations, kind="stable")
    batches: list[list[int]] = []
    oversized: list[int] = []
    current: list[int] = []
    current_max = 0.0  # = duration of the batch's first utterance, since the order is descending
    for index in order.tolist():
        duration = float(durations[index])
        if current:
            fits = (len(current) + 1) * current_max <= max_batch_seconds
            if fits and (max_batch_size is None or len(current) < max_batch_size):
                current.append(index)
                continue
            batches.append(current)
        current, current_max = [index], duration
        if duration > max_batch_seconds:
            oversized.append(index)
    if current:
        batches.append(current)

    if oversized:
        longest = oversized[0]
        logger.warning(
            "%d utterance(s) are longer than max_batch_seconds=%g and each form a batch of their own "
            "(longest: %s, %.2f s). Raise the limit or filter them out if they do not fit in memory.",
            len(oversized),
            max_batch_seconds,
            names[longest] if names is not None else f"index {longest}",
            durations[longest],
        )
    return batches


def even_out_batches(batches: list[list[int]], num_replicas: int) -> list[list[int]]:
    """Split the fullest batches until `len(batches)` is a multiple of `num_replicas`.

    DDP needs every process to run the same number of steps per epoch (each step all-reduces
    gradients). Splitting keeps each example exactly once per epoch, and halving a batch keeps it
    within the duration limit (count drops, max duration does not grow). At most
    `num_replicas - 1` splits are needed, out of typically thousands of batches.

    Returns the batches in the same sorted order with split halves adjacent. When there are fewer
    examples than the split needs (a single-utterance batch cannot be halved), the result is
    shorter than a multiple of `num_replicas`; `DurationBatchSampler` then repeats batches.
    """
    missing = -len(batches) % num_replicas
    # Max-heap on size; ties go to the earlier batch. A piece's key is its path in the split tree,
    # (position, 0 | 1, 0 | 1, ...), so sorting by key restores the original order with halves adjacent.
    heap = [(-len(batch), (position,), batch) for position, batch in enumerate(batches)]
    heapq.heapify(heap)
    for _ in range(missing):
        if -heap[0][0] < 2:
            break  # only single-utterance batches left: nothing to split
        _, key, batch = heapq.heappop(heap)
        half = len(batch) // 2
        heapq.heappush(heap, (-half, key + (0,), batch[:half]))
        heapq.heappush(heap, (-(len(batch) - half), key + (1,), batch[half:]))
    return [list(batch) for _, _, batch in sorted(heap, key=lambda item: item[1])]


# --------------------------------------------------------------------------------------------
# Map-style datasets
# --------------------------------------------------------------------------------------------


class DurationBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Duration-packed batches of dataset indices, shuffled per epoch, sharded across processes.

    Use it as `DataLoader(dataset, batch_sampler=sampler, collate_fn=collator)`. The batches are
    computed once (`pack_by_duration` over all durations) and never change; every epoch their order
    is shuffled with `numpy.random.default_rng([seed, epoch])`, identical on all processes, and
    process `rank` takes every `num_replicas`-th batch of that order starting at `rank`. Call
    `set_epoch(epoch)` before each epoch (as with torch's `DistributedSampler`).

    Even batch counts across processes (needed for DDP, docs/design.md §4):
      - `drop_last=False` (default): before sharding, the fullest batches are split in two until the
        batch count divides `num_replicas` (`even_out_batches`). Every example is then seen exactly
        once per epoch across all processes. Only when the dataset has too few examples to split
        (fewer than `num_replicas` utterances, for instance) are the first batches of the epoch's
        order repeated to fill the gap, which is logged.
      - `drop_last=True`: the last `len(batches) % num_replicas` batches of each epoch's shuffled
        order are left out (Flashlight's choice, but a different remainder every epoch). No example
        twice; a few missing per epoch.

    Resume: `state_dict()` holds the epoch and the number of batches this process has consumed in
    it; `load_state_dict()` on a sampler built with the same data and arguments makes the next
    `__iter__` yield exactly the batches that the interrupted run had not yet consumed.

    Args:
        durations: seconds per dataset item, indexed like the dataset (`dataset["duration"]`).
        max_batch_seconds: limit on count x longest duration per batch, in seconds.
        seed: shuffling seed; must be the same on all processes.
        num_replicas: number of processes (world size).
        rank: this process's index in `[0, num_replicas)`.
        drop_last: see above.
        max_batch_size: optional cap on utterances per batch.
        ids: optional utterance ids (only for log messages).
    """

    # Natural proportions: every utterance once per epoch (`LanguageBalancedBatchSampler` reweights).
    language_temperature = 1.0

    def __init__(
        self,
        durations: Sequence[float],
        max_batch_seconds: float,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        drop_last: bool = False,
        max_batch_size: int | None = None,
        ids: Sequence[str] | None = None,
    ):
        self._set_arguments(len(durations), max_batch_seconds, seed, num_replicas, rank, drop_last, max_batch_size)
        self.batches = self._pack(durations, ids)

    def _set_arguments(self, num_examples, max_batch_seconds, seed, num_replicas, rank, drop_last, max_batch_size) -> None:
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"need 0 <= rank < num_replicas, got rank={rank}, num_replicas={num_replicas}")
        self.max_batch_seconds = max_batch_seconds
        self.max_batch_size = max_batch_size
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.drop_last = drop_last
        self.num_examples = num_examples
        self.epoch = 0
        self._batches_yielded = 0  # in the current epoch, by the current or last __iter__
        self._resume_position: int | None = None  # set by load_state_dict, used by the next __iter__

    def _pack(self, durations: Sequence[float], ids: Sequence[str] | None) -> list[list[int]]:
        """All processes' batches of one epoch before shuffling: packed, evened out unless `drop_last`."""
        packed = pack_by_duration(durations, self.max_batch_seconds, self.max_batch_size, names=ids)
        batches = packed if self.drop_last else even_out_batches(packed, self.num_replicas)
        if not self.drop_last and len(batches) % self.num_replicas:
            logger.warning(
                "only %d examples in %d batches for %d processes: %d batch(es) will be repeated per epoch "
                "so that every process runs the same number of steps",
                len(durations),
                len(batches),
                self.num_replicas,
                -len(batches) % self.num_replicas,
            )
        return batches

    def batches_of_epoch(self, epoch: int) -> list[list[int]]:
        """All processes' batches of `epoch` before shuffling (here the same every epoch; subclasses such as
        `LanguageBalancedBatchSampler` draw a new set per epoch)."""
        return self.batches

    @classmethod
    def from_dataset(cls, dataset, max_batch_seconds: float, duration_column: str = "duration", **kwargs):
        """Build from a map-style `datasets.Dataset`: reads only its `duration_column`, without the
        dataset's decoding transform (reading `dataset["duration"]` through it would decode every clip)."""
        from .data import example_durations

        return cls(example_durations(dataset, duration_column), max_batch_seconds, **kwargs)

    # ---- the epoch's schedule --------------------------------------------------------------

    def batches_per_replica(self, epoch: int | None = None) -> int:
        """Batches each process runs in `epoch` (default: the current one); the same on all processes."""
        count = len(self.batches_of_epoch(self.epoch if epoch is None else epoch))
        return count // self.num_replicas if self.drop_last else math.ceil(count / self.num_replicas)

    def epoch_batches(self, epoch: int | None = None) -> list[list[int]]:
        """This process's batches for `epoch` (default: the current one), in order."""
        epoch = self.epoch if epoch is None else epoch
        batches = self.batches_of_epoch(epoch)
        order = np.random.default_rng([self.seed, epoch]).permutation(len(batches)).tolist()
        total = self.batches_per_replica(epoch) * self.num_replicas
        # drop_last: truncate; otherwise (only when splitting could not even out) wrap around.
        order = list(itertools.islice(itertools.cycle(order), total)) if order else []
        return [batches[position] for position in order[self.rank :: self.num_replicas]]

    def __len__(self) -> int:
        return self.batches_per_replica()

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose shuffled order the next `__iter__` follows. A pending resume
        (from `load_state_dict`) for another epoch is discarded."""
        if self._resume_position is not None and epoch != self.epoch:
            logger.info("set_epoch(%d) discards the resume position of epoch %d", epoch, self.epoch)
            self._resume_position = None
        if epoch != self.epoch:
            self._batches_yielded = 0
        self.epoch = epoch

    def __iter__(self) -> Iterator[list[int]]:
        start = self._resume_position or 0
        self._resume_position = None
        self._batches_yielded = start
        for batch in self.epoch_batches()[start:]:
            self._batches_yielded += 1
            yield list(batch)

    # ---- checkpointing -------------------------------------------------------------------

    def state_dict(self, batches_consumed: int | None = None) -> dict:
        """Where this process stands: `{"epoch", "position", ...}` plus the arguments that define the
        batches (checked by `load_state_dict`).

        Args:
            batches_consumed: batches of the current epoch the training loop has actually used. By
                default, the number `__iter__` has handed out, which is exact with a DataLoader
                without workers; with `num_workers > 0` the DataLoader fetches indices ahead (up to
                `num_workers * prefetch_factor` batches), so pass the loop's own count then.
        """
        position = self._batches_yielded if batches_consumed is None else batches_consumed
        if not 0 <= position <= len(self):
            raise ValueError(f"batches_consumed={position} is outside [0, {len(self)}] for this epoch")
        return {
            "epoch": self.epoch,
            "position": position,
            "seed": self.seed,
            "num_replicas": self.num_replicas,
            "num_examples": self.num_examples,
            "num_batches": len(self.batches_of_epoch(self.epoch)),
            "max_batch_seconds": self.max_batch_seconds,
            "max_batch_size": self.max_batch_size,
            "drop_last": self.drop_last,
            "language_temperature": self.language_temperature,
        }

    def load_state_dict(self, state_dict: dict) -> None:
        """Continue from `state_dict`: the next `__iter__` yields the remaining batches of its epoch."""
        # Arguments first, then what they produce, so the message names the cause.
        checked = ("seed", "num_replicas", "max_batch_seconds", "max_batch_size", "drop_last", "num_examples", "language_temperature", "num_batches")
        for key in checked:
            current = getattr(self, key) if key != "num_batches" else len(self.batches_of_epoch(int(state_dict["epoch"])))
            if key in state_dict and state_dict[key] != current:
                raise ValueError(
                    f"cannot resume: the checkpoint's sampler had {key}={state_dict[key]!r}, this one has "
                    f"{current!r}. Resume with the same data, batching arguments and number of processes."
                )
        self.epoch = int(state_dict["epoch"])
        self._resume_position = int(state_dict["position"])
        self._batches_yielded = self._resume_position


# --------------------------------------------------------------------------------------------
# Language-balanced sampling (map-style)
# --------------------------------------------------------------------------------------------


def language_sampling_shares(hours: Mapping[str, float], temperature: float) -> dict[str, float]:
    """Target share of each language's audio: p_l proportional to n_l ** (1 / T), n_l its hours.

    T = 1 keeps the natural proportions, T = 5 is common in multilingual ASR, T = inf is uniform; T < 1
    sharpens towards the largest languages. Languages without audio get 0.
    """
    if not temperature > 0:
        raise ValueError(f"language temperature must be > 0 (1 = natural proportions, inf = uniform), got {temperature}")
    weights = {language: float(value) ** (1.0 / temperature) if value > 0 else 0.0 for language, value in hours.items()}
    total = sum(weights.values())
    if not total > 0:
        raise ValueError(f"no language has any audio ({dict(hours)}); nothing to sample")
    return {language: weight / total for language, weight in weights.items()}


class LanguageBalancedBatchSampler(DurationBatchSampler):
    """`DurationBatchSampler` whose epochs hold each language's audio in the share
    `language_sampling_shares(hours, temperature)` instead of its natural share.

    An epoch keeps the data's total duration. For each language l, its target seconds
    `share_l x total` are filled from a seeded permutation of its utterances (repeated, each time
    reshuffled, when the language is upsampled; cut short when it is downsampled). The epoch's utterances are then packed by duration as usual, so batches
    mix languages and respect `max_batch_seconds`; the batch order is shuffled and dealt to processes as in
    the base class. Everything is a function of `(seed, epoch)`, identical on all processes, so
    `state_dict` / `load_state_dict` resume exactly (the temperature is saved and checked).

    Each epoch's seconds of a language are within one utterance of its target, and equal to it in
    expectation (the last utterance is taken with the probability that makes it so), so realized shares
    converge to the targets over epochs.

    Args:
        durations: seconds per dataset item.
        languages: language code per dataset item.
        max_batch_seconds: limit on count x longest duration per batch.
        temperature: T of `language_sampling_shares` (> 0; inf is uniform).
        Others: as `DurationBatchSampler`.
    """

    def __init__(
        self,
        durations: Sequence[float],
        languages: Sequence[str],
        max_batch_seconds: float,
        temperature: float,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        drop_last: bool = False,
        max_batch_size: int | None = None,
        ids: Sequence[str] | None = None,
    ):
        if len(languages) != len(durations):
            raise ValueError(f"{len(durations)} durations but {len(languages)} languages; give one language per utterance")
        self._set_arguments(len(durations), max_batch_seconds, seed, num_replicas, rank, drop_last, max_batch_size)
        self.language_temperature = float(temperature)
        self.durations = np.asarray(durations, dtype=np.float64)
        self.ids = ids
        codes, inverse = np.unique(np.asarray(languages, dtype=object).astype(str), return_inverse=True)
        self.languages = codes.tolist()
        self._members = [np.flatnonzero(inverse == k) for k in range(len(codes))]
        seconds = {code: float(self.durations[members].sum()) for code, members in zip(self.languages, self._members)}
        self.natural_shares = {code: value / sum(seconds.values()) for code, value in seconds.items()}
        self.target_shares = language_sampling_shares(seconds, self.language_temperature)
        self._target_seconds = {code: share * sum(seconds.values()) for code, share in self.target_shares.items()}
        self._epoch_batches: dict[int, list[list[int]]] = {}  # the last epoch's, computed once
        self.batches = None  # no fixed set: see batches_of_epoch

    @classmethod
    def from_dataset(cls, dataset, max_batch_seconds: float, temperature: float = 1.0, duration_column: str = "duration", **kwargs):
        """From a map-style source: reads its duration and language columns without decoding audio."""
        from .data import example_durations, example_languages

        return cls(example_durations(dataset, duration_column), example_languages(dataset), max_batch_seconds, temperature, **kwargs)

    def epoch_indices(self, epoch: int) -> np.ndarray:
        """The dataset indices of `epoch` (with repeats for upsampled languages), language by language."""
        chosen = []
        for position, (code, members) in enumerate(zip(self.languages, self._members)):
            target = self._target_seconds[code]
            rng = np.random.default_rng([self.seed, epoch, position])
            natural = float(self.durations[members].sum())
            passes = max(1, math.ceil(target / natural) + 1) if natural > 0 else 1
            order = np.concatenate([members[rng.permutation(len(members))] for _ in range(passes)])
            cumulative = np.cumsum(self.durations[order])
            count = int(np.searchsorted(cumulative, target))  # cumulative[count] >= target
            # `count` utterances fall short of the target, one more reaches it: take that one with the
            # probability that makes the expected seconds equal the target (unbiased rounding).
            below = cumulative[count - 1] if count > 0 else 0.0
            if count < len(order) and rng.random() * self.durations[order[count]] < target - below:
                count += 1
            chosen.append(order[:count])
        return np.concatenate(chosen) if chosen else np.zeros(0, dtype=np.int64)

    def batches_of_epoch(self, epoch: int) -> list[list[int]]:
        if epoch not in self._epoch_batches:
            indices = self.epoch_indices(epoch)
            names = [self.ids[i] for i in indices] if self.ids is not None else None
            batches = [[int(indices[i]) for i in batch] for batch in self._pack(self.durations[indices], names)]
            self._epoch_batches = {epoch: batches}
        return self._epoch_batches[epoch]


# --------------------------------------------------------------------------------------------
# Streams
# --------------------------------------------------------------------------------------------


def shard_stream_for_process(source, num_replicas: int, rank: int):
    """This process's disjoint share of a `datasets.IterableDataset` (`split_dataset_by_node`).

    `split_dataset_by_node` hands whole shards to processes only when `n_shards % num_replicas == 0`
    (docs/design.md §8); otherwise every process reads the whole stream and keeps one example in
    `num_replicas`, which multiplies reading and download cost by `num_replicas`. We warn then.
    """
    if num_replicas == 1:
        return source
    from datasets import IterableDataset as DatasetsIterableDataset
    from datasets.distributed import split_dataset_by_node

    if not isinstance(source, DatasetsIterableDataset):
        raise TypeError(
            f"cannot shard a {type(source).__name__} across {num_replicas} processes; pass a "
            "datasets.IterableDataset (load_dataset(..., streaming=True) or Dataset.to_iterable_dataset(num_shards=...))"
        )
    if source.num_shards % num_replicas:
        warnings.warn(
            f"the stream has {source.num_shards} shards, not a multiple of {num_replicas} processes: "
            f"each process will read the whole stream and keep 1 example in {num_replicas} "
            f"(docs/design.md §8). Use a multiple of {num_replicas} shards (e.g. IterableDataset.reshard() for parquet).",
            stacklevel=2,
        )
    return split_dataset_by_node(source, rank=rank, world_size=num_replicas)


class DurationBucketingStream(torch.utils.data.IterableDataset):
    """Duration-packed batches from a stream: read `buffer_size` examples, pack them with
    `pack_by_duration`, yield the batches in a seeded random order, repeat.

    Yields lists of examples (dicts of the shared schema); use it as
    `DataLoader(stream, batch_size=None, collate_fn=collator)`. With `num_replicas > 1` the source is
    split with `split_dataset_by_node` (see `shard_stream_for_process`), so processes read disjoint
    examples. Processes can then run different numbers of batches per pass (their shares differ in
    size); DDP training should run by update count with `infinite=True` (each process cycles through
    its share, epoch after epoch) rather than stop at the end of a pass.

    Resume (`state_dict` / `load_state_dict`): the state records the epoch, the index of the current
    buffer, how many of its batches were yielded, the number of examples read before it
    (`examples_consumed`), and, when the source is a `datasets.IterableDataset`, the source's own
    `state_dict()` taken just before the buffer was filled. Resuming reloads that source state, refills
    the same buffer, packs and shuffles it the same way and skips the batches already yielded, so the
    remaining batches are exactly those of the uninterrupted run. Sources without `state_dict` are
    fast-forwarded by reading and discarding `examples_consumed` examples. Two limits: (1) examples in a
    `datasets` shuffle buffer (`IterableDataset.shuffle`) are lost on resume (documented behaviour of
    `datasets`); (2) the state is that of the process iterating this object, so use a DataLoader without
    workers, or torchdata's `StatefulDataLoader`, which collects `state_dict()` from its workers. (With
    `num_workers > 0`, `datasets` gives each worker its own shards, so coverage stays complete; each
    worker then buckets its own share.)

    Args:
        source: an iterable of schema examples, typically a streaming `datasets.IterableDataset`.
        max_batch_seconds: limit on count x longest duration per batch, in seconds.
        buffer_size: examples per bucketing buffer; larger = less padding, more memory (audio is held).
        seed: shuffling seed for the batch order within each buffer.
        num_replicas, rank: processes and this process's index.
        max_batch_size: optional cap on utterances per batch.
        infinite: cycle through the stream forever, advancing the epoch after each pass.
        duration_key, id_key: schema fields read for packing and for log messages.
    """

    def __init__(
        self,
        source: Iterable[dict],
        max_batch_seconds: float,
        buffer_size: int = 1000,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        max_batch_size: int | None = None,
        infinite: bool = False,
        duration_key: str = "duration",
        id_key: str = "id",
    ):
        if buffer_size < 1:
            raise ValueError(f"buffer_size must be >= 1, got {buffer_size}")
        self.source = shard_stream_for_process(source, num_replicas, rank)
        self.max_batch_seconds = max_batch_seconds
        self.buffer_size = buffer_size
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.max_batch_size = max_batch_size
        self.infinite = infinite
        self.duration_key = duration_key
        self.id_key = id_key
        self.epoch = 0
        self._position = self._fresh_position()
        self._resume: dict | None = None

    @staticmethod
    def _fresh_position() -> dict:
        return {"buffer_index": 0, "batches_yielded_in_buffer": 0, "examples_consumed": 0, "source_state": None}

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch of the next pass (also forwarded to the source, whose shard order and
        shuffling depend on it)."""
        if self._resume is not None and epoch != self._resume["epoch"]:
            self._resume = None
        self.epoch = epoch

    def _pack_buffer(self, buffer: list[dict], buffer_index: int) -> list[list[dict]]:
        """Batches of one buffer in the order they are yielded (seeded by seed, rank, epoch, buffer)."""
        durations = [example[self.duration_key] for example in buffer]
        names = [str(example.get(self.id_key, position)) for position, example in enumerate(buffer)]
        batches = pack_by_duration(durations, self.max_batch_seconds, self.max_batch_size, names=names)
        order = np.random.default_rng([self.seed, self.rank, self.epoch, buffer_index]).permutation(len(batches))
        return [[buffer[index] for index in batches[position]] for position in order]

    def _one_pass(self) -> Iterator[list[dict]]:
        """One pass over this process's share of the source for `self.epoch`, from the resume
        position if `load_state_dict` set one."""
        resume, self._resume = self._resume, None
        position = resume["position"] if resume else self._fresh_position()
        restores_source = hasattr(self.source, "state_dict") and hasattr(self.source, "load_state_dict")
        if hasattr(self.source, "set_epoch"):
            self.source.set_epoch(self.epoch)
        if restores_source:
            # None = from the start of the epoch; also clears a state loaded for an earlier resume,
            # which datasets would otherwise re-apply to every pass of the same epoch.
            self.source.load_state_dict(position["source_state"])
        examples = iter(self.source)
        if not restores_source and position["examples_consumed"]:
            # No source state to restore: read and drop what the interrupted run had consumed.
            examples = itertools.islice(examples, position["examples_consumed"], None)

        buffer_index = position["buffer_index"]
        examples_consumed = position["examples_consumed"]
        skip_batches = position["batches_yielded_in_buffer"]
        source_state = position["source_state"]  # the source's state just before this buffer
        while True:
            buffer = list(itertools.islice(examples, self.buffer_size))
            if not buffer:
                return
            for batch_number, batch in enumerate(self._pack_buffer(buffer, buffer_index)):
                if batch_number < skip_batches:
                    continue
                self._position = {
                    "buffer_index": buffer_index,
                    "batches_yielded_in_buffer": batch_number + 1,
                    "examples_consumed": examples_consumed,
                    "source_state": source_state,
                }
                yield batch
            if len(buffer) < self.buffer_size:
                return
            skip_batches = 0
            buffer_index += 1
            examples_consumed += len(buffer)
            # Taken between two examples, so it points just after the last example of this buffer.
            source_state = self.source.state_dict() if restores_source else None

    def __iter__(self) -> Iterator[list[dict]]:
        while True:
            self._position = self._fresh_position() if self._resume is None else self._resume["position"]
            yield from self._one_pass()
            if not self.infinite:
                return
            self.set_epoch(self.epoch + 1)
            # (here, where the epoch changes: the consumer may be another process's copy, a DataLoader worker)
            logger.info("training stream: epoch %d begins (each process cycles through its share)", self.epoch)

    def state_dict(self) -> dict:
        """`{"epoch", "examples_consumed", "buffer_index", "batches_yielded_in_buffer", "source_state", ...}`
        after the last yielded batch. `examples_consumed` counts examples of this process's share read
        before the current buffer."""
        return {
            "epoch": self.epoch,
            **self._position,
            "seed": self.seed,
            "rank": self.rank,
            "num_replicas": self.num_replicas,
            "buffer_size": self.buffer_size,
            "max_batch_seconds": self.max_batch_seconds,
            "max_batch_size": self.max_batch_size,
        }

    def load_state_dict(self, state_dict: dict) -> None:
        """Continue from `state_dict`: the next `__iter__` yields the remaining batches of its epoch."""
        for key in ("seed", "rank", "num_replicas", "buffer_size", "max_batch_seconds", "max_batch_size"):
            if key in state_dict and state_dict[key] != getattr(self, key):
                raise ValueError(
                    f"cannot resume: the checkpoint's stream had {key}={state_dict[key]!r}, this one has "
                    f"{getattr(self, key)!r}. Resume with the same batching arguments and number of processes."
                )
        position = {key: state_dict[key] for key in self._fresh_position()}
        self.epoch = int(state_dict["epoch"])
        self._resume = {"epoch": self.epoch, "position": position}
        self._position = dict(position)


__all__ = [
    "pack_by_duration",
    "even_out_batches",
    "DurationBatchSampler",
    "DurationBucketingStream",
    "LanguageBalancedBatchSampler",
    "language_sampling_shares",
    "shard_stream_for_process",
]
