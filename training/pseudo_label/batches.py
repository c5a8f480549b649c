# Copyright 2026 The mlpl authors. Licensed under the Apache License, Version 2.0.
"""The batches a pseudo-labeling (or routing) pass reads: each process's disjoint share of the source in
duration batches (map-style: `DurationBatchSampler`; streams: `DurationBucketingStream`, docs/design.md §4),
collated by `PseudoLabelCollator`, optionally decoded ahead in a thread (`Prefetched`), with the position a
resumed run continues from (`state` / `restore`)."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import logging
import queue
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
from datasets import Dataset, IterableDataset

from .. import data as data_layer
from ..audio import SAMPLING_RATE
from ..batching import DurationBatchSampler, DurationBucketingStream
from ..collate import MlplCollator
from ..data import AUDIO_REFERENCE, DecodeTransform, SkipCounter, example_durations, records_of
from ..header_index import default_workers
from .config import UNREADABLE, PseudoLabelConfig

logger = logging.getLogger("mlpl.pseudo_label")


class PseudoLabelCollator(MlplCollator):
    """`MlplCollator` for audio to pseudo-label: transcripts are ignored, a language the LID head does not
    know (or "und") is not an error (no LID target is needed), and the batch also carries each clip's
    `audio_references` and source `languages`. An empty list (every clip of the batch unreadable) gives None.
    """

    def language_ids(self, examples: Sequence[Mapping]) -> torch.Tensor:
        return torch.tensor([self.language_to_id.get(example["language"], -100) for example in examples])

    def __call__(self, examples: Sequence[Mapping]) -> dict | None:
        if not examples:
            return None
        if AUDIO_REFERENCE not in examples[0]:
            raise ValueError(
                f"examples carry no {AUDIO_REFERENCE!r} (example {examples[0].get('id')!r}), so the PL set could not "
                "say which clip a pseudo-label belongs to. Build the source with keep_audio_reference=True, e.g. "
                "load_voxpopuli_folder(folder, streaming=True, keep_audio_reference=True)."
            )
        batch = super().__call__([dict(example, sentence=None) for example in examples])
        batch["audio_references"] = [example[AUDIO_REFERENCE] for example in examples]
        batch["languages"] = [example["language"] for example in examples]
        return batch


@dataclasses.dataclass
class Processes:
    """This process's place among the processes (an accelerate Accelerator, or one process without it)."""

    rank: int
    world_size: int
    device: torch.device
    accelerator: Any = None

    @classmethod
    def of(cls, accelerator, model) -> "Processes":
        if accelerator is None:
            return cls(0, 1, next(model.parameters()).device)
        return cls(accelerator.process_index, accelerator.num_processes, accelerator.device, accelerator)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wait_for_everyone(self) -> None:
        if self.accelerator is not None:
            self.accelerator.wait_for_everyone()


class MapStyleBatches:
    """This process's duration batches of a map-style source, decoded by DataLoader workers."""

    def __init__(self, source: Dataset, config: PseudoLabelConfig, processes: Processes, collator):
        records = records_of(source)
        missing = [column for column in ("id", "audio", "language", "duration") if column not in records.column_names]
        if missing:
            raise ValueError(
                f"the map-style source lacks the columns {missing} (it has {records.column_names}); build it with a "
                "mlpl.data loader (load_voxpopuli_folder, load_flashlight_list, load_hub_dataset)"
            )
        if config.languages is not None:
            wanted = set(config.languages)
            records = records.filter(lambda language: language in wanted, input_columns=["language"])
        self.records = records
        # Pack all clips once (same on every process), shuffle the batch order, deal every world_size-th
        # batch to this process: disjoint shares, every clip once. No evening-out (no collective per step).
        sampler = DurationBatchSampler(
            example_durations(records), config.max_batch_seconds, seed=config.seed, max_batch_size=config.max_batch_size
        )
        self.batches = sampler.epoch_batches(0)[processes.rank :: processes.world_size]
        self.num_examples = len(records)
        self.config = config
        self.collator = collator
        self.position = 0  # batches of self.batches done

    def run_parameters(self) -> dict:
        # Which clips, in which order: a resumed run must deal the same batches.
        digest = hashlib.sha256()
        for chunk in self.records.with_format("arrow").select_columns(["id", "duration"]).iter(batch_size=100_000):
            digest.update("\n".join(chunk["id"].to_pylist()).encode())
            digest.update(chunk["duration"].to_numpy().tobytes())
        return {"kind": "map-style", "num_examples": self.num_examples, "clips_sha256": digest.hexdigest()}

    def state(self) -> dict:
        return {"batches": self.position}

    def restore(self, state: Mapping) -> None:
        self.position = int(state["batches"])

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[tuple[dict | None, list[str]]]:
        """(collated batch or None, ids of the clips asked for) per batch, from the current position."""
        remaining = self.batches[self.position :]
        decoded = self.records.with_transform(DecodeTransform(SAMPLING_RATE, keep_audio_reference=True))
        loader = torch.utils.data.DataLoader(
            decoded, batch_sampler=remaining, collate_fn=self.collator, num_workers=self.config.num_workers
        )
        ids = self.records.select_columns(["id"])
        for indices, batch in zip(remaining, loader):
            self.position += 1
            yield batch, ids[indices]["id"]


class StreamBatches:
    """This process's duration batches of a stream (split by node, bucketed by DurationBucketingStream)."""

    def __init__(self, source: Iterable, config: PseudoLabelConfig, processes: Processes, collator):
        if config.languages is not None:
            if not isinstance(source, IterableDataset):
                raise TypeError(
                    f"languages= needs a datasets.IterableDataset stream to filter, got {type(source).__name__}"
                )
            wanted = set(config.languages)
            source = source.filter(lambda example: example["language"] in wanted)
        self.stream = DurationBucketingStream(
            source,
            config.max_batch_seconds,
            buffer_size=config.buffer_size,
            seed=config.seed,
            num_replicas=processes.world_size,
            rank=processes.rank,
            max_batch_size=config.max_batch_size,
        )
        self.num_shards = getattr(source, "num_shards", None)
        self.config = config
        self.collator = collator
        self._resumable = config.num_workers == 0  # with workers, the stream's position lives in the workers

    def run_parameters(self) -> dict:
        return {"kind": "stream", "num_shards": self.num_shards}

    def state(self) -> dict:
        return {"stream": self.stream.state_dict() if self._resumable else None}

    def restore(self, state: Mapping) -> None:
        if state.get("stream") is None:
            raise ValueError("no stream position recorded")
        self.stream.load_state_dict(state["stream"])

    def __len__(self):
        raise TypeError("a stream has no length")

    def __iter__(self) -> Iterator[tuple[dict | None, None]]:
        loader = torch.utils.data.DataLoader(
            self.stream, batch_size=None, collate_fn=self.collator, num_workers=self.config.num_workers
        )
        for batch in loader:
            yield batch, None


def thread_has_a_free_core(device: torch.device | str) -> bool:
    """Whether a decoding thread beside the forward runs on a core the forward leaves free: always when the
    forward runs on an accelerator; on the CPU only when torch's intra-op threads are fewer than the CPUs this
    process may use. Otherwise the thread preempts the forward's threads, which then wait for each other at
    every op: on 2 cores the demo model's pseudo-labeling ran at 0.54 of the pure forward with the thread and
    0.81 in turn (benchmarks/bench_pseudo_label.py)."""
    if torch.device(device).type != "cpu":
        return True
    return torch.get_num_threads() < default_workers()


class Prefetched:
    """Iterate `batches` in a background thread, `depth` batches ahead: audio decoding (soundfile, soxr) and
    features (torch) release the GIL, so they overlap the forward of the batch before. Each item comes with
    what was true right after the thread read it, `batches.state()` and the data layer's count of skipped
    stream clips (`state`, `stream_skips`), so a flush records what was consumed, not what was read ahead.
    The thread's errors are raised here; leaving the loop stops the thread. `depth` 0 reads in the calling
    thread, with the same `state` and `stream_skips`."""

    _END = object()

    def __init__(self, batches, depth: int = 2):
        self.batches, self.depth = batches, depth
        self.state, self.stream_skips = copy.deepcopy(batches.state()), data_layer.stream_skipped_total()

    @classmethod
    def of(cls, batches, config: PseudoLabelConfig, device: torch.device | str = "cpu") -> "Prefetched":
        """Without DataLoader workers, decoding and features run `config.prefetch_batches` batches ahead of the
        forward where a core is free for them (`thread_has_a_free_core`); with workers (which decode ahead
        themselves), or when the forward's threads take every core, in turn."""
        depth = config.prefetch_batches if config.num_workers == 0 else 0
        if depth and not thread_has_a_free_core(device):
            logger.info(
                "pseudo-labeling decodes in turn with the forward: torch's %d threads take all %d CPUs here, and a "
                "prefetching thread would take cores from the forward (docs/design.md §6, stage 4)", torch.get_num_threads(), default_workers()
            )
            depth = 0
        return cls(batches, depth)

    @property
    def total(self) -> int | None:
        """The number of batches (for a progress bar), None for a stream."""
        try:
            return len(self.batches)
        except TypeError:
            return None

    def __iter__(self):
        if self.depth == 0:
            yield from self._in_turn()
            return
        items: queue.Queue = queue.Queue(maxsize=self.depth)
        stop = threading.Event()

        def put(item) -> bool:
            while not stop.is_set():
                try:
                    items.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def snapshot(item):
            return item, copy.deepcopy(self.batches.state()), data_layer.stream_skipped_total()

        def produce():
            try:
                for item in self.batches:
                    if not put(snapshot(item)):
                        return
                put(snapshot(self._END))
            except BaseException as error:  # handed to the consumer
                put((error, None, None))

        thread = threading.Thread(target=produce, name="pseudo-label-prefetch", daemon=True)
        thread.start()
        try:
            while True:
                item, state, stream_skips = items.get()
                if isinstance(item, BaseException):
                    raise item
                self.state, self.stream_skips = state, stream_skips
                if item is self._END:
                    return
                yield item
        finally:
            stop.set()
            thread.join()

    def _in_turn(self):
        for item in self.batches:
            self.state, self.stream_skips = copy.deepcopy(self.batches.state()), data_layer.stream_skipped_total()
            yield item
        self.state, self.stream_skips = copy.deepcopy(self.batches.state()), data_layer.stream_skipped_total()


def count_undecoded(requested_ids: Sequence[str] | None, batch: Mapping | None, skips: SkipCounter) -> None:
    """Count as unreadable the clips of a batch that DecodeTransform dropped (and logged): asked for
    (`requested_ids`, map-style batches only) but not in the collated `batch` (their header read, their body did
    not decode)."""
    returned = [] if batch is None else batch["ids"]
    for identifier in sorted(set(requested_ids or ()) - set(returned)):
        skips.seen += 1
        skips.skip(UNREADABLE, identifier)
