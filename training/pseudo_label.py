# Copyright 2026 The mlpl authors. Licensed under the Apache License, Version 2.0.
"""Pseudo-label generation: recipe stage 4 (docs/design.md §6), also usable on its own.

A model (MlplForCTC + processor) transcribes unlabeled audio with greedy CTC in eval mode, without an LM
(docs/design.md §5), and the transcripts are written as a pseudo-label (PL) set that stage 5 trains on:

    source (any unlabeled source of training.data)
      -> duration batches (map-style: DurationBatchSampler; streams: DurationBucketingStream),
         each process taking a disjoint share
      -> PseudoLabelCollator (features; keeps each clip's audio reference)
      -> transcribe_batch (training.inference: crops of `chunk_seconds`, stitched logits, greedy CTC,
         confidence, LID prediction) in eval mode under torch.inference_mode
      -> filters (docs/design.md §3/6: drop empty PLs and PLs longer than 630 characters; optional min_confidence)
      -> parquet shards of `rows_per_shard` rows, written as they fill (memory does not grow with the
         number of utterances)

The output folder is a `datasets` parquet dataset in the Hub's layout, so it loads with
`datasets.load_dataset("parquet", data_dir=folder)` (or `load_dataset(folder)`), uploads to the Hub as
it is, and loads back in the data layer's example schema with `load_pseudo_label_set`:

    <output_dir>/data/<split>-00000-of-00003.parquet    columns PSEUDO_LABEL_FEATURES
    <output_dir>/summary.json                           kept, dropped and why, hours per language, run

(A set where every PL was dropped holds one part without rows; `datasets.load_dataset` refuses to build an
empty split, `load_pseudo_label_set` returns an empty dataset.)

Columns: `id`; `audio` = the clip's undecoded reference `{"bytes", "path"}` (the storage of datasets'
Audio feature: an absolute path for local files; the original bytes only when the source held the clip
as bytes, e.g. a parquet mirror), never decoded samples; `language` (the source's, or the LID head's
prediction with `language_routing="lid"`, or the router's with `routed_languages`); `source_language`;
`language_source` ("source" or "lid": where `language` came from) and `language_score` (the LID probability
it was taken with, null for "source"; docs/design.md §10); `pseudo_label`; `duration` (seconds);
`confidence` (`training.inference.sequence_confidence`: mean best-path log-probability per frame, <= 0);
`predicted_language` and `predicted_language_probability` from the LID head (null without one);
`model_name`; `model_revision` (the commit of a Hub snapshot or a clean git checkout, else
"sha256:" + a hash of the weights files: the same weights give the same revision).

Atomic and resumable (icefall's "skip finished work by a marker written last"): every process writes
into `<parent>/.<name>.incomplete/`; each parquet part is written under a temporary name and renamed,
then the process's progress file (`progress/rank-<r>.json`: its parts, how far its batches got, its
counts) is replaced. When all processes are done, the main process renames the parts into their final
names, writes summary.json and renames the folder to `<output_dir>`: a crash never leaves a partial
folder under the final name. A rerun with the same model, source and arguments (same number of
processes) reuses the finished parts of the crashed run and continues after them; anything else starts
afresh (the old temporary folder is discarded, with a warning saying what differs).

Stage 4 of the recipe runs this once per language with that language's stage-3 model
(`languages=[code]`, one output folder each); stage 5 mixes the folders with labeled data through
`load_pseudo_label_set([folder, ...])`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import copy
import queue
import shutil
import subprocess
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import torch
from datasets import Dataset, Features, IterableDataset, Value, load_dataset
from tqdm.auto import tqdm

from modeling_mlpl import AUTO_LANGUAGE

from . import data as data_layer
from .audio import SAMPLING_RATE
from .batching import DurationBatchSampler, DurationBucketingStream
from .collate import MlplCollator
from .data import (
    AUDIO_REFERENCE,
    DecodeTransform,
    SkipCounter,
    example_durations,
    load_hub_dataset,
    records_of,
    write_flashlight_list,
)
from .inference import FRAMES_PER_SECOND, transcribe_batch
from .files import atomic_path, replace_directory, write_json_atomically
from .slimipl import pseudo_labeling_mode

logger = logging.getLogger("mlpl.pseudo_label")

# docs/design.md §3 / 6: pseudo-labels longer than 630 characters are dropped (Flashlight's label length limit).
MAX_LABEL_LENGTH = 630
# Languages that mean "not known": ISO 639-2 "und" (undetermined), or nothing at all.
UNKNOWN_LANGUAGES = frozenset({"und", ""})
LANGUAGE_ROUTINGS = ("source", "lid")
# Where a row's `language` came from (its `language_source` column): the source's own label, or an LID head's
# prediction (language_routing="lid", or routed by training.routing; `language_score` is then that prediction's
# probability).
LANGUAGE_FROM_SOURCE = "source"
LANGUAGE_FROM_LID = "lid"

# Why a pseudo-label was dropped: the keys of the summary's "dropped".
DROP_EMPTY = "empty pseudo-label"
DROP_TOO_LONG = "pseudo-label too long"
DROP_LOW_CONFIDENCE = "confidence below min_confidence"
UNREADABLE = "unreadable audio"

SUMMARY_FILE = "summary.json"
_RUN_FILE = "run.json"
_PROGRESS_FOLDER = "progress"
_DATA_FOLDER = "data"

# The audio reference, typed like datasets' Audio storage (as the data layer's records are).
_AUDIO_REFERENCE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
PSEUDO_LABEL_FEATURES = pa.schema(
    [
        ("id", pa.string()),
        ("audio", _AUDIO_REFERENCE_TYPE),
        ("language", pa.string()),
        ("source_language", pa.string()),
        ("language_source", pa.string()),
        ("language_score", pa.float64()),
        ("pseudo_label", pa.string()),
        ("duration", pa.float64()),
        ("confidence", pa.float64()),
        ("predicted_language", pa.string()),
        ("predicted_language_probability", pa.float64()),
        ("model_name", pa.string()),
        ("model_revision", pa.string()),
    ]
)

# The example schema's records of a PL set with no rows (load_pseudo_label_set).
_EMPTY_SET_FEATURES = Features({**data_layer.RECORD_FEATURES, "duration": Value("float64")})

_WEIGHTS_FILE = re.compile(r"^(model|pytorch_model|adapter_model)(-\d+-of-\d+)?\.(safetensors|bin)$")  # adapter_model: a PEFT adapter folder
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


@dataclasses.dataclass
class PseudoLabelConfig:
    """How pseudo-labels are made and filtered; the defaults are the paper's where it has one.

    Args:
        max_batch_seconds: padded audio per batch and process (docs/design.md §4: 200 s per GPU for the base model;
            inference holds no activations for backward, so more fits).
        max_batch_size: optional cap on utterances per batch.
        chunk_seconds: crop length; longer audio is transcribed crop by crop and the logits stitched
            (`chunked_logits`). 30 s = 3000 feature frames covers whole VoxPopuli segments; None runs
            every utterance whole.
        max_chunks_per_forward: run at most this many crops per forward pass (bounds memory for long audio).
        rows_per_shard: rows per parquet part; what memory holds at most, and the unit a resumed run reuses.
        max_label_length: PLs with more characters are dropped (docs/design.md §3/6: 630).
        min_confidence: optionally drop PLs whose confidence (mean best-path log-probability per frame,
            <= 0) is below this (docs/design.md §10: confidence-filtered PLs). None keeps all.
        language_routing: "source" trusts the source's language; "lid" sets the language of utterances
            whose language is unknown ("und" or empty) from the LID head's prediction (docs/design.md §10).
        languages: read only these source languages (None: all).
        language_constraint: restrict each PL to its language's characters (docs/design.md §3.1: the model
            config's `language_characters`): the source language, or the LID's top-1 where it is unknown.
        split: split name in the part files' names (`data/<split>-*.parquet`).
        buffer_size: streams only: examples per bucketing buffer (decoded audio is held: 200 x 30 s x 64 kB/s
            = 384 MB).
        num_workers: DataLoader workers decoding audio and computing features.
        prefetch_batches: without workers, batches decoded and featurized ahead in a background thread,
            overlapping the forward (0: none, everything in turn).
        seed: order of the batches (the result does not depend on it).
        resume: reuse the finished parts of an interrupted run with the same parameters.
        overwrite: replace an existing output folder (only once the new one is complete).
    """

    max_batch_seconds: float = 200.0
    max_batch_size: int | None = None
    chunk_seconds: float | None = 30.0
    max_chunks_per_forward: int | None = None
    rows_per_shard: int = 5000
    max_label_length: int = MAX_LABEL_LENGTH
    min_confidence: float | None = None
    language_routing: str = "source"
    languages: Sequence[str] | None = None
    language_constraint: bool = False
    split: str = "train"
    buffer_size: int = 200
    num_workers: int = 0
    prefetch_batches: int = 2
    seed: int = 0
    resume: bool = True
    overwrite: bool = False

    def __post_init__(self):
        if not self.max_batch_seconds > 0:
            raise ValueError(f"max_batch_seconds={self.max_batch_seconds} must be > 0 (the paper uses 200)")
        if self.chunk_seconds and self.chunk_seconds * FRAMES_PER_SECOND < 3:
            raise ValueError(f"chunk_seconds={self.chunk_seconds} is too short; use e.g. 30, or None for no crops")
        if self.prefetch_batches < 0:
            raise ValueError(f"prefetch_batches={self.prefetch_batches} must be >= 0 (0: no prefetching thread)")
        if self.rows_per_shard < 1:
            raise ValueError(f"rows_per_shard={self.rows_per_shard} must be >= 1")
        if self.max_label_length < 1:
            raise ValueError(f"max_label_length={self.max_label_length} must be >= 1 (docs/design.md §3: 630)")
        if self.min_confidence is not None and self.min_confidence > 0:
            raise ValueError(
                f"min_confidence={self.min_confidence} is above 0, but confidences are log-probabilities (<= 0); "
                "use e.g. -0.5, or None"
            )
        if self.language_routing not in LANGUAGE_ROUTINGS:
            raise ValueError(f"language_routing={self.language_routing!r} must be one of {LANGUAGE_ROUTINGS}")
        if not re.fullmatch(r"[A-Za-z0-9_.]+", self.split):
            raise ValueError(f"split={self.split!r} must be a plain name such as 'train' (it names the part files)")
        if self.languages is not None:
            self.languages = sorted(set(map(str, self.languages)))

    @property
    def chunk_frames(self) -> int | None:
        return None if not self.chunk_seconds else int(round(self.chunk_seconds * FRAMES_PER_SECOND))


# ---------------------------------------------------------------------------------------------
# The model: name and revision
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Batches: collating unlabeled examples, sharding across processes
# ---------------------------------------------------------------------------------------------


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
class _Processes:
    """This process's place among the processes (an accelerate Accelerator, or one process without it)."""

    rank: int
    world_size: int
    device: torch.device
    accelerator: Any = None

    @classmethod
    def of(cls, accelerator, model) -> "_Processes":
        if accelerator is None:
            return cls(0, 1, next(model.parameters()).device)
        return cls(accelerator.process_index, accelerator.num_processes, accelerator.device, accelerator)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wait_for_everyone(self) -> None:
        if self.accelerator is not None:
            self.accelerator.wait_for_everyone()


def _describe_source(source) -> str:
    if isinstance(source, (Dataset, IterableDataset)) and source.info.description:
        return source.info.description
    if isinstance(source, Dataset):
        return f"map-style dataset of {len(source)} clips"
    return f"stream ({type(source).__name__}, {getattr(source, 'num_shards', '?')} shards)"


class _MapStyleBatches:
    """This process's duration batches of a map-style source, decoded by DataLoader workers."""

    def __init__(self, source: Dataset, config: PseudoLabelConfig, processes: _Processes, collator):
        records = records_of(source)
        missing = [column for column in ("id", "audio", "language", "duration") if column not in records.column_names]
        if missing:
            raise ValueError(
                f"the map-style source lacks the columns {missing} (it has {records.column_names}); build it with a "
                "training.data loader (load_voxpopuli_folder, load_flashlight_list, load_hub_dataset)"
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


class _StreamBatches:
    """This process's duration batches of a stream (split by node, bucketed by DurationBucketingStream)."""

    def __init__(self, source: Iterable, config: PseudoLabelConfig, processes: _Processes, collator):
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


class _Prefetched:
    """Iterate `batches` in a background thread, `depth` batches ahead: audio decoding (soundfile, soxr) and
    features (torch) release the GIL, so they overlap the forward of the batch before. Each item comes with
    what was true right after the thread read it, `batches.state()` and the data layer's count of skipped
    stream clips (`state`, `stream_skips`), so a flush records what was consumed, not what was read ahead.
    The thread's errors are raised here; leaving the loop stops the thread."""

    _END = object()

    def __init__(self, batches, depth: int = 2):
        self.batches, self.depth = batches, depth
        self.state, self.stream_skips = copy.deepcopy(batches.state()), data_layer.stream_skipped_total()

    def __iter__(self):
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


# ---------------------------------------------------------------------------------------------
# Rows, filters, counts
# ---------------------------------------------------------------------------------------------


def _audio_reference(reference: Any) -> dict:
    """`{"bytes", "path"}` of a clip: local paths made absolute so the set loads from any working folder."""
    if isinstance(reference, Mapping):
        clip_bytes, path = reference.get("bytes"), reference.get("path")
    else:
        clip_bytes, path = None, os.fspath(reference)
    if clip_bytes is None and path and not os.path.isabs(path):
        path = os.path.abspath(path)
    return {"bytes": clip_bytes, "path": path}


@dataclasses.dataclass
class _Counts:
    """What one process kept and dropped; JSON round-trips through its progress file."""

    kept: int = 0
    kept_seconds: float = 0.0
    audio_seconds: float = 0.0  # all transcribed audio, kept or dropped
    elapsed_seconds: float = 0.0
    unreadable_counted: bool = True  # False: a stream decoded in DataLoader workers, whose skips stay there
    languages: dict = dataclasses.field(default_factory=dict)  # language -> {utterances, seconds, dropped}
    dropped: SkipCounter = dataclasses.field(default_factory=SkipCounter)

    def language(self, code: str) -> dict:
        return self.languages.setdefault(code, {"utterances": 0, "seconds": 0.0, "dropped": 0})

    def to_json(self) -> dict:
        values = dataclasses.asdict(self)
        values["dropped"] = dataclasses.asdict(self.dropped)
        return values

    @classmethod
    def from_json(cls, values: Mapping) -> "_Counts":
        values = dict(values)
        values["dropped"] = SkipCounter(**values["dropped"])
        return cls(**values)

    def merge(self, other: "_Counts") -> "_Counts":
        self.kept += other.kept
        self.kept_seconds += other.kept_seconds
        self.audio_seconds += other.audio_seconds
        self.elapsed_seconds = max(self.elapsed_seconds, other.elapsed_seconds)  # processes run side by side
        self.unreadable_counted = self.unreadable_counted and other.unreadable_counted
        for code, values in other.languages.items():
            mine = self.language(code)
            for key, value in values.items():
                mine[key] += value
        self.dropped.merge(other.dropped)
        return self


def _drop_reason(text: str, confidence: float, config: PseudoLabelConfig) -> str | None:
    """Why a pseudo-label is dropped (docs/design.md §3/6: empty or longer than 630 characters; optional confidence)."""
    if not text:
        return DROP_EMPTY
    if len(text) > config.max_label_length:
        return DROP_TOO_LONG
    if config.min_confidence is not None and confidence < config.min_confidence:
        return DROP_LOW_CONFIDENCE
    return None


# ---------------------------------------------------------------------------------------------
# Writing: parts, progress, the final folder
# ---------------------------------------------------------------------------------------------


def _write_parquet_atomically(path: Path, rows: Mapping[str, list]) -> None:
    with atomic_path(path) as temporary:
        pq.write_table(pa.Table.from_pydict(dict(rows), schema=PSEUDO_LABEL_FEATURES), temporary)


class _RankWriter:
    """One process's parquet parts and progress file inside the temporary folder.

    Rows wait in memory until `rows_per_shard` of them are there; at the end of that batch they go to a part
    file, then the progress file (parts, batch position, counts) is replaced: the marker written last.
    """

    def __init__(self, work_dir: Path, rank: int, rows_per_shard: int):
        self.data_dir = work_dir / _DATA_FOLDER
        self.progress_path = work_dir / _PROGRESS_FOLDER / f"rank-{rank:05d}.json"
        self.rank = rank
        self.rows_per_shard = rows_per_shard
        self.parts: list[str] = []
        self.position: dict | None = None
        self.counts = _Counts()
        self.rows = {name: [] for name in PSEUDO_LABEL_FEATURES.names}
        self.done = False

    def load(self) -> bool:
        """Take over the finished parts of an interrupted run; remove parts its progress file does not list."""
        if self.progress_path.is_file():
            progress = json.loads(self.progress_path.read_text(encoding="utf-8"))
            self.parts, self.position = progress["parts"], progress["position"]
            self.counts, self.done = _Counts.from_json(progress["counts"]), progress["done"]
        # and the temporaries (files.atomic_path's hidden `.<part>.*.tmp`) of a part it was writing when killed
        for path in [*self.data_dir.glob(f"rank-{self.rank:05d}-*"), *self.data_dir.glob(f".rank-{self.rank:05d}-*.tmp")]:
            if path.name not in self.parts:
                path.unlink()
        return self.position is not None

    def reset(self) -> None:
        for name in self.parts:
            (self.data_dir / name).unlink(missing_ok=True)
        self.parts, self.position, self.counts, self.done = [], None, _Counts(), False
        self.progress_path.unlink(missing_ok=True)

    @property
    def pending(self) -> int:
        return len(self.rows["id"])

    def add(self, row: Mapping[str, Any]) -> None:
        for name, values in self.rows.items():
            values.append(row[name])

    def flush(self, position: dict, done: bool = False) -> None:
        if self.pending:
            name = f"rank-{self.rank:05d}-part-{len(self.parts):05d}.parquet"
            _write_parquet_atomically(self.data_dir / name, self.rows)
            self.parts.append(name)
            self.rows = {name: [] for name in PSEUDO_LABEL_FEATURES.names}
        self.position, self.done = position, done
        progress = {"rank": self.rank, "parts": self.parts, "position": position, "done": done,
                    "counts": self.counts.to_json()}  # fmt: skip
        write_json_atomically(self.progress_path, progress)


def _work_dir(output_dir: Path) -> Path:
    return output_dir.parent / f".{output_dir.name}.incomplete"


def _prepare_work_dir(work_dir: Path, parameters: dict, resume: bool) -> None:
    """Main process: keep an interrupted run's folder if it was made with the same parameters, else start afresh."""
    run_file = work_dir / _RUN_FILE
    if work_dir.exists():
        previous = json.loads(run_file.read_text(encoding="utf-8")) if run_file.is_file() else None
        if resume and previous == parameters:
            logger.info("resuming the interrupted run in %s", work_dir)
            return
        if previous is not None and resume:
            keys = set(previous) | set(parameters)
            differing = sorted(key for key in keys if previous.get(key) != parameters.get(key))
            logger.warning("discarding the interrupted run in %s: it differs in %s", work_dir, differing)
        shutil.rmtree(work_dir)
    (work_dir / _DATA_FOLDER).mkdir(parents=True)
    (work_dir / _PROGRESS_FOLDER).mkdir()
    write_json_atomically(run_file, parameters)


def _wait_for_all_ranks(work_dir: Path, world_size: int, poll_seconds: float = 2.0) -> None:
    """Wait, on the file system, until every process has written its final progress file.

    Processes can finish far apart (their shares of a stream differ); a collective barrier would time out
    after its default 10-30 minutes, this does not.
    """
    started, last_report = time.monotonic(), time.monotonic()
    while True:
        waiting = []
        for rank in range(world_size):
            path = work_dir / _PROGRESS_FOLDER / f"rank-{rank:05d}.json"
            if not path.is_file() or not json.loads(path.read_text(encoding="utf-8"))["done"]:
                waiting.append(rank)
        if not waiting:
            return
        if time.monotonic() - last_report > 60:
            logger.info("waiting for processes %s to finish (%.0f s so far)", waiting, time.monotonic() - started)
            last_report = time.monotonic()
        time.sleep(poll_seconds)


def _finish(work_dir: Path, output_dir: Path, world_size: int, parameters: dict, config: PseudoLabelConfig, scan: SkipCounter) -> dict:
    """Main process: name the parts `data/<split>-i-of-n.parquet`, write summary.json, rename into place.

    `scan`: the clips the source's header scan dropped before any process saw them (`data.scan_skips`),
    counted in the summary's `dropped` so that `utterances` is every clip of the source."""
    counts, parts = _Counts(), []
    counts.dropped.merge(scan)
    for rank in range(world_size):
        progress = json.loads((work_dir / _PROGRESS_FOLDER / f"rank-{rank:05d}.json").read_text(encoding="utf-8"))
        counts.merge(_Counts.from_json(progress["counts"]))
        parts.extend(progress["parts"])
    data_dir = work_dir / _DATA_FOLDER
    if not parts:  # nothing kept: one empty part, so that the folder still loads as a dataset
        _write_parquet_atomically(data_dir / "empty.parquet", {name: [] for name in PSEUDO_LABEL_FEATURES.names})
        parts = ["empty.parquet"]
    files = []
    for index, name in enumerate(parts):
        final = f"{config.split}-{index:05d}-of-{len(parts):05d}.parquet"
        if not (data_dir / final).exists():  # else renamed by a finish that was interrupted
            os.replace(data_dir / name, data_dir / final)
        files.append(f"{_DATA_FOLDER}/{final}")
    summary = _summary(counts, files, parameters, output_dir)
    write_json_atomically(work_dir / SUMMARY_FILE, summary)
    shutil.rmtree(work_dir / _PROGRESS_FOLDER)
    (work_dir / _RUN_FILE).unlink()
    replace_directory(work_dir, output_dir)  # an existing output_dir: overwrite=True was checked at the start
    return summary


def _summary(counts: _Counts, files: list[str], parameters: dict, output_dir: Path) -> dict:
    hours = lambda seconds: round(seconds / 3600, 4)  # noqa: E731
    dropped = dict(sorted(counts.dropped.counts.items()))
    return {
        "output_dir": str(output_dir),
        "files": files,
        "kept": counts.kept,
        "kept_hours": hours(counts.kept_seconds),
        "dropped": dropped,
        "dropped_examples": counts.dropped.examples,
        "unreadable_counted": counts.unreadable_counted,
        "utterances": counts.kept + sum(dropped.values()),
        "languages": {
            code: {"utterances": values["utterances"], "hours": hours(values["seconds"]), "dropped": values["dropped"]}
            for code, values in sorted(counts.languages.items())
        },
        "transcribed_hours": hours(counts.audio_seconds),
        "elapsed_seconds": round(counts.elapsed_seconds, 2),
        "audio_seconds_per_second": round(counts.audio_seconds / max(counts.elapsed_seconds, 1e-9), 2),
        "run": parameters,
    }


def summary_line(summary: Mapping) -> str:
    """One log line: kept, dropped and why, per language, throughput."""
    dropped = ", ".join(f"{count} {reason}" for reason, count in summary["dropped"].items()) or "none"
    languages = ", ".join(
        f"{code} {values['utterances']} ({values['hours']:.2f} h)" for code, values in summary["languages"].items()
    )
    return (
        f"kept {summary['kept']} of {summary['utterances']} pseudo-labels ({summary['kept_hours']:.2f} h); "
        f"dropped: {dropped}; per language: {languages or 'none'}; "
        f"{summary['audio_seconds_per_second']:.1f} s of audio per second"
    )


# ---------------------------------------------------------------------------------------------
# Generation
# ---------------------------------------------------------------------------------------------


def generate_pseudo_labels(
    model,
    processor,
    source: Dataset | IterableDataset | Iterable[dict],
    output_dir: str | os.PathLike,
    config: PseudoLabelConfig | None = None,
    *,
    accelerator=None,
    model_name: str | None = None,
    model_revision: str | None = None,
    routed_languages: Mapping[str, tuple[str, float]] | None = None,
) -> dict:
    """Pseudo-label every clip of `source` and write the PL set to `output_dir` (see the module docstring).

    Args:
        model: an `MlplForCTC`; put in eval mode for the run (its mode is restored afterwards) and moved to
            the accelerator's device.
        processor: its `MlplProcessor` (feature extractor + character tokenizer).
        source: unlabeled audio from training.data: a map-style `Dataset` (any loader), or a stream built
            with `keep_audio_reference=True` (e.g. `load_voxpopuli_folder(folder, streaming=True,
            keep_audio_reference=True)`), ideally with a multiple of the process count as shards.
        output_dir: the PL set's folder; must not exist unless `config.overwrite`.
        config: batching, cropping, filtering, output options (`PseudoLabelConfig`).
        accelerator: an `accelerate.Accelerator` to share the work across its processes (each reads a
            disjoint share); None runs in this process alone.
        model_name, model_revision: stored in every row; by default the folder the model was loaded from
            and `model_revision(folder)` (or a hash of the weights for a model built in memory).
        routed_languages: clip id -> (language, LID probability) decided by a router before this run
            (training.routing, docs/design.md §10): those rows get that language, `language_source` "lid" and
            `language_score` the probability, whatever the source says.

    Returns:
        The summary (also `<output_dir>/summary.json`): kept, dropped per reason, hours and utterances per
        language, throughput, and the run's parameters. Every process returns it once the folder exists.
    """
    config = config or PseudoLabelConfig()
    output_dir = Path(output_dir).absolute()
    processes = _Processes.of(accelerator, model)
    if output_dir.exists() and not config.overwrite:
        raise FileExistsError(
            f"{output_dir} already exists (a finished pseudo-label set); pass overwrite=True (--overwrite) to "
            "replace it once the new one is complete, or choose another output folder"
        )
    if config.language_routing == "lid" and getattr(model, "lid_head", None) is None:
        raise ValueError("language_routing='lid' needs a model with a LID head (config.num_languages > 0)")
    if config.language_constraint and getattr(model.config, "language_characters", None) is None:
        model.config.script_token_ids("", {})  # raises the error that names the fix
    name, revision = describe_model(model, model_name, model_revision)
    language_codes = model.config.language_codes
    collator = PseudoLabelCollator(
        processor.feature_extractor, processor.tokenizer, {code: index for index, code in enumerate(language_codes)}
    )
    batches_class = _MapStyleBatches if isinstance(source, Dataset) else _StreamBatches
    batches = batches_class(source, config, processes, collator)
    parameters = {
        "model_name": name,
        "model_revision": revision,
        "source": _describe_source(source),
        **batches.run_parameters(),
        "num_processes": processes.world_size,
        "routed_languages": _routes_digest(routed_languages),
        # resume, overwrite and prefetch_batches say how to run, not what the output is.
        "config": {
            k: v for k, v in dataclasses.asdict(config).items() if k not in ("resume", "overwrite", "prefetch_batches")
        },
    }

    work_dir = _work_dir(output_dir)
    if processes.is_main:
        output_dir.parent.mkdir(parents=True, exist_ok=True)
        _prepare_work_dir(work_dir, parameters, config.resume)
    processes.wait_for_everyone()

    writer = _RankWriter(work_dir, processes.rank, config.rows_per_shard)
    if writer.load():
        try:
            batches.restore(writer.position)
            logger.info(
                "process %d: reusing %d finished part(s) of the interrupted run", processes.rank, len(writer.parts)
            )
        except ValueError as error:
            logger.warning("process %d: cannot continue its share (%s); starting it again", processes.rank, error)
            writer.reset()
    if not writer.done:
        _pseudo_label_share(model, processor, batches, writer, config, name, revision, processes, routed_languages)

    if processes.world_size > 1:
        _wait_for_all_ranks(work_dir, processes.world_size)
    processes.wait_for_everyone()
    if processes.is_main:
        scan = data_layer.scan_skips(source) if isinstance(source, Dataset) else SkipCounter()
        summary = _finish(work_dir, output_dir, processes.world_size, parameters, config, scan)
        logger.info("wrote %d part(s) to %s: %s", len(summary["files"]), output_dir, summary_line(summary))
    processes.wait_for_everyone()
    return json.loads((output_dir / SUMMARY_FILE).read_text(encoding="utf-8"))


def _routes_digest(routes: Mapping[str, tuple[str, float]] | None) -> str | None:
    """A hash of a router's decisions (run parameters: a resumed run must have been routed the same way)."""
    if routes is None:
        return None
    digest = hashlib.sha256()
    for identifier in sorted(routes):
        language, score = routes[identifier]
        digest.update(f"{identifier}\t{language}\t{float(score)!r}\n".encode())
    return digest.hexdigest()


def _pseudo_label_share(model, processor, batches, writer: _RankWriter, config, name, revision, processes, routes=None) -> None:
    """Transcribe this process's batches, filter, and write rows as the parts fill."""
    counts = writer.counts
    skips_before = data_layer.stream_skipped_total()
    observes_stream_skips = isinstance(batches, _StreamBatches) and config.num_workers == 0
    if isinstance(batches, _StreamBatches) and not observes_stream_skips:
        counts.unreadable_counted = False  # decoded in the workers: the data layer logs them there
    started = time.monotonic() - counts.elapsed_seconds
    try:
        total = len(batches)
    except TypeError:
        total = None
    progress = tqdm(total=total, initial=writer.position.get("batches", 0) if writer.position else 0,
                    desc=f"pseudo-labeling ({name})", unit="batch", disable=not processes.is_main or None)  # fmt: skip
    model.to(processes.device)
    # Without DataLoader workers, decoding and features run in a thread one or two batches ahead of the forward.
    prefetched = _Prefetched(batches, config.prefetch_batches) if config.num_workers == 0 and config.prefetch_batches else None

    def position() -> dict:
        return prefetched.state if prefetched is not None else batches.state()

    def count_stream_skips() -> None:
        nonlocal skips_before
        if observes_stream_skips:  # the data layer's stream generator skipped (and logged) these
            total = prefetched.stream_skips if prefetched is not None else data_layer.stream_skipped_total()
            skipped, skips_before = total - skips_before, total
            if skipped:
                counts.dropped.seen += skipped
                counts.dropped.counts[UNREADABLE] = counts.dropped.counts.get(UNREADABLE, 0) + skipped

    with pseudo_labeling_mode(model), torch.inference_mode():
        for batch, requested_ids in prefetched if prefetched is not None else batches:
            returned = [] if batch is None else batch["ids"]
            if requested_ids is not None and len(returned) < len(requested_ids):
                # DecodeTransform dropped (and logged) clips whose header read but whose body did not decode.
                for identifier in sorted(set(requested_ids) - set(returned)):
                    counts.dropped.seen += 1
                    counts.dropped.skip(UNREADABLE, identifier)
            if batch is not None:
                _transcribe_and_keep(model, processor, batch, writer, config, name, revision, processes.device, routes)
            count_stream_skips()
            counts.elapsed_seconds = time.monotonic() - started
            progress.update(1)
            progress.set_postfix(kept=counts.kept, hours=f"{counts.audio_seconds / 3600:.2f}")
            if writer.pending >= config.rows_per_shard:
                writer.flush(position())
    count_stream_skips()  # clips skipped after the last batch (the thread's last snapshot, at its end)
    progress.close()
    counts.elapsed_seconds = time.monotonic() - started
    writer.flush(position(), done=True)
    logger.info(
        "process %d: %d pseudo-labels kept, %d dropped, in %d part(s) under %s",
        processes.rank, counts.kept, counts.dropped.skipped, len(writer.parts), writer.data_dir,
    )  # fmt: skip


def _transcribe_and_keep(model, processor, batch, writer, config, name, revision, device, routes=None) -> None:
    """One batch: greedy PLs (training.inference), filters, rows for the writer."""
    counts = writer.counts
    inputs = {
        "input_features": batch["input_features"].to(device, dtype=model.dtype),
        "attention_mask": batch["attention_mask"].to(device),
    }
    constraint = None  # docs/design.md §3.1: the utterance's language, or the LID's guess where it is unknown
    if config.language_constraint:
        languages = [routes[i][0] if routes and i in routes else code for i, code in zip(batch["ids"], batch["languages"])]  # routed: its language
        constraint = [AUTO_LANGUAGE if code in UNKNOWN_LANGUAGES else code for code in languages]
    result = transcribe_batch(
        model, inputs, processor.tokenizer, config.chunk_frames, config.max_chunks_per_forward, language=constraint
    )
    predicted = probabilities = [None] * len(batch["ids"])
    if result["language_ids"] is not None:
        predicted = [model.config.language_codes[index] for index in result["language_ids"].tolist()]
        probabilities = result["language_probabilities"].tolist()
    for index, identifier in enumerate(batch["ids"]):
        source_language = language = batch["languages"][index]
        language_source, language_score = LANGUAGE_FROM_SOURCE, None
        if routes is not None and identifier in routes:  # decided by a router (training.routing)
            language, language_score = routes[identifier][0], float(routes[identifier][1])
            language_source = LANGUAGE_FROM_LID
        elif config.language_routing == "lid" and source_language in UNKNOWN_LANGUAGES:
            language, language_source, language_score = predicted[index], LANGUAGE_FROM_LID, probabilities[index]
        duration = float(batch["durations"][index])
        text, confidence = result["texts"][index], float(result["confidences"][index])
        counts.dropped.seen += 1
        counts.audio_seconds += duration
        reason = _drop_reason(text, confidence, config)
        if reason is not None:
            detail = f"{len(text)} characters, confidence {confidence:.3f}"
            counts.dropped.skip(reason, f"{identifier} ({language})", detail)
            counts.language(language)["dropped"] += 1
            continue
        counts.kept += 1
        counts.kept_seconds += duration
        per_language = counts.language(language)
        per_language["utterances"] += 1
        per_language["seconds"] += duration
        writer.add(
            {
                "id": identifier,
                "audio": _audio_reference(batch["audio_references"][index]),
                "language": language,
                "source_language": source_language,
                "language_source": language_source,
                "language_score": language_score,
                "pseudo_label": text,
                "duration": duration,
                "confidence": confidence,
                "predicted_language": predicted[index],
                "predicted_language_probability": probabilities[index],
                "model_name": name,
                "model_revision": revision,
            }
        )


# ---------------------------------------------------------------------------------------------
# Reading a PL set back
# ---------------------------------------------------------------------------------------------


def pseudo_label_files(folders: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    """The parquet parts of one or more finished PL sets, in order."""
    folders = [folders] if isinstance(folders, (str, os.PathLike)) else list(folders)
    files = []
    for folder in map(Path, folders):
        if not (folder / SUMMARY_FILE).is_file():
            hint = f"; an interrupted run left {_work_dir(folder.absolute())}, rerun to finish it" if _work_dir(
                folder.absolute()).exists() else ""  # fmt: skip
            raise ValueError(f"{folder} is not a finished pseudo-label set (no {SUMMARY_FILE}){hint}")
        files.extend(sorted((folder / _DATA_FOLDER).glob("*.parquet")))
    return files


def load_pseudo_label_set(
    folders: str | os.PathLike | Sequence[str | os.PathLike],
    languages: Sequence[str] | None = None,
    streaming: bool = False,
    *,
    target_sr: int = SAMPLING_RATE,
    cache_dir: str | None = None,
) -> Dataset | IterableDataset:
    """One or more PL sets in the data layer's example schema, `sentence` = the pseudo-label.

    Audio is decoded on access exactly as the data layer's other sources do (map-style: DecodeTransform,
    with the stored durations, so `example_durations` and DurationBatchSampler work without decoding;
    streaming: the data layer's sharded generator, one shard per parquet part), so a trainer mixes these
    with labeled data (recipe stage 5). `languages` keeps only those languages (filtered before decoding).
    """
    # Parts without rows are left out: datasets cannot read them (nor build an empty split).
    files = [str(path) for path in pseudo_label_files(folders) if pq.ParquetFile(path).metadata.num_rows]
    if not files:
        empty = Dataset.from_dict({column: [] for column in _EMPTY_SET_FEATURES}, features=_EMPTY_SET_FEATURES)
        if streaming:
            return IterableDataset.from_generator(_no_examples)
        return empty.with_transform(DecodeTransform(target_sr))
    table = load_dataset("parquet", data_files=files, split="train", streaming=streaming, cache_dir=cache_dir)
    if languages is not None:
        wanted = set(languages)
        table = table.filter(lambda language: language in wanted, input_columns=["language"])
    if streaming:
        return load_hub_dataset(table, columns={"sentence": "pseudo_label"}, target_sr=target_sr)
    table = table.rename_column("pseudo_label", "sentence").select_columns(list(data_layer.EXAMPLE_COLUMNS))
    return table.with_transform(DecodeTransform(target_sr))


def _no_examples() -> Iterator[dict]:
    yield from ()


def iter_pseudo_labels(folders, columns: Sequence[str] | None = None) -> Iterator[dict]:
    """Rows of PL sets, read part by part (constant memory), as dicts of the stored columns."""
    for path in pseudo_label_files(folders):
        for record_batch in pq.ParquetFile(path).iter_batches(columns=list(columns) if columns else None):
            yield from record_batch.to_pylist()


def export_flashlight_list(folders, path: str | os.PathLike, languages: Sequence[str] | None = None) -> int:
    """Write PL sets as a Flashlight list (`id path duration_ms pseudo_label`, training.data's writer, which
    writes through files.atomic_writer). Clips stored as bytes (no file) cannot be listed: error.
    Returns the number of lines."""
    path = Path(path)
    wanted = None if languages is None else set(languages)
    rows = (
        {"id": row["id"], "audio": row["audio"], "duration": row["duration"], "sentence": row["pseudo_label"]}
        for row in iter_pseudo_labels(folders, ["id", "audio", "duration", "pseudo_label", "language"])
        if wanted is None or row["language"] in wanted
    )
    count = write_flashlight_list(rows, path)
    logger.info("wrote %d pseudo-labels as a Flashlight list to %s", count, path)
    return count


__all__ = [
    "DROP_EMPTY",
    "DROP_LOW_CONFIDENCE",
    "DROP_TOO_LONG",
    "LANGUAGE_FROM_LID",
    "LANGUAGE_FROM_SOURCE",
    "LANGUAGE_ROUTINGS",
    "MAX_LABEL_LENGTH",
    "PSEUDO_LABEL_FEATURES",
    "SUMMARY_FILE",
    "UNKNOWN_LANGUAGES",
    "PseudoLabelCollator",
    "PseudoLabelConfig",
    "describe_model",
    "export_flashlight_list",
    "generate_pseudo_labels",
    "iter_pseudo_labels",
    "load_model_for_pseudo_labeling",
    "load_pseudo_label_set",
    "model_revision",
    "pseudo_label_files",
    "summary_line",
]
