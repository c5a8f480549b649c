"""Data sources: one example schema for Common Voice, VoxPopuli, Hub datasets and Flashlight lists (docs/design.md §8).

Every source returns a `datasets.Dataset` (map-style) or `datasets.IterableDataset` (streaming) whose
items are

    {"id": str,                 # unique clip name
     "audio": np.ndarray,       # float32 (n_samples,), mono, 16 kHz (docs/design.md §1)
     "sentence": str | None,    # transcript; None for unlabeled audio
     "language": str,           # language code, e.g. "en"
     "duration": float}         # n_samples / 16000, seconds

How the two kinds are built (one code path each, shared by all sources):
- Streaming: the clips' metadata ("records": id, audio reference, sentence, language) is cut into
  `num_shards` contiguous shards and decoded lazily by a generator, so `split_dataset_by_node` and
  DataLoader workers read disjoint shares (docs/design.md §8: shards divide evenly when n_shards % world_size == 0,
  hence 64 by default). Bad clips are skipped as they come; each shard ends with a logged summary and
  the process's running total.
- Map-style: the records become an Arrow table with a `duration` column read from the file headers
  (about 0.1 ms per mp3, 1 ms per ogg; no decoding), so duration batching (docs/design.md §4) can sort without
  touching audio. Bad clips found by that scan are dropped and summarised; audio is decoded on access
  by a transform. Read the durations with `example_durations(dataset)`: `dataset["duration"]` would run
  the transform (decode every clip). A clip whose header reads but whose body does not is dropped from
  the batch it is fetched in (`dataset[[i, j]]`, DataLoader batches), with a warning naming it.

The loaders of each source layout (Hub datasets, Common Voice and VoxPopuli folders, Flashlight lists)
are in `mlpl.loaders`; this module is what they share: the schema, skip counting, decoding, and the two
ways a list of records becomes a dataset (`dataset_from_records`).

Bad data never stops a run (STYLE 7): clips that cannot be decoded, are empty, hold NaN/inf samples, are
truncated (decode to under 80 % of their header's length), are too short for CTC to align their
transcript, or whose transcript is empty are skipped and counted by a `SkipCounter`; its summary names
a few of each. So are rows of a Common Voice TSV without an audio path, and (`drop_long_clips`, in
training) clips over a length limit.
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets import Audio, Dataset, DatasetInfo, Features, IterableDataset, Value
from datasets.table import InMemoryTable

from .audio import (
    SAMPLING_RATE,
    AudioDecodeError,
    NonFiniteAudioError,
    TruncatedAudioError,
    decode_audio_column,
    describe_audio_source,
)
from .audio_cache import process_audio_cache
from .header_index import HeaderResult, HeaderScan, describe_error, read_header, read_headers

logger = logging.getLogger("mlpl.data")

EXAMPLE_COLUMNS = ("id", "audio", "sentence", "language", "duration")
# Extra field of examples from sources built with `keep_audio_reference=True`: the clip's undecoded audio
# reference (a path or an Audio(decode=False) value), which pseudo-label sets store instead of samples.
AUDIO_REFERENCE = "audio_reference"

# Why an example was skipped; the keys of SkipCounter.counts.
SKIP_UNDECODABLE = "undecodable"
SKIP_EMPTY_AUDIO = "empty audio"
SKIP_EMPTY_TRANSCRIPT = "empty transcript"
SKIP_NON_FINITE = "non-finite audio"
SKIP_TRUNCATED = "truncated audio"
SKIP_TOO_SHORT = "too short for its transcript"
SKIP_TOO_LONG = "too long"
SKIP_BAD_ROW = "bad table row"

# The skip reason of each decoding error, most specific first.
_DECODE_ERROR_REASONS = ((NonFiniteAudioError, SKIP_NON_FINITE), (TruncatedAudioError, SKIP_TRUNCATED), (AudioDecodeError, SKIP_UNDECODABLE))
_REASON_OF_ERROR_NAME = {kind.__name__: reason for kind, reason in _DECODE_ERROR_REASONS}

# 64 shards divide evenly over 1, 2, 4, ..., 64 processes (docs/design.md §8: split_dataset_by_node).
DEFAULT_NUM_SHARDS = 64

# Arrow type of an audio reference: the storage of datasets' Audio feature, as a plain struct. Not
# Audio(decode=False) itself: datasets 5 *encodes* Audio values (even plain paths) through torchcodec,
# which it does whenever a stream's rows pass through the features.
AUDIO_REFERENCE_FEATURE = {"bytes": Value("binary"), "path": Value("string")}
RECORD_FEATURES = Features(
    {"id": Value("string"), "audio": AUDIO_REFERENCE_FEATURE, "sentence": Value("string"), "language": Value("string")}
)



# ---------------------------------------------------------------------------------------------
# Counting what is skipped
# ---------------------------------------------------------------------------------------------


@dataclass
class SkipCounter:
    """Examples skipped per reason, with a few named examples of each; picklable and mergeable.

    Workers or processes keep their own counter; `merge` (or `+`) adds them up afterwards.
    """

    max_examples: int = 3
    seen: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)
    last: str | None = None  # the most recent skip, "reason: what: detail"

    @property
    def skipped(self) -> int:
        return sum(self.counts.values())

    def skip(self, reason: str, what: str, detail: str | None = None) -> None:
        """Record one skipped example (`what`: its path or id; `detail`: the error, if any)."""
        self.counts[reason] = self.counts.get(reason, 0) + 1
        named = self.examples.setdefault(reason, [])
        description = f"{what}: {detail}" if detail else what
        if len(named) < self.max_examples:
            named.append(description)
        self.last = f"{reason}: {description}"

    def merge(self, other: "SkipCounter") -> "SkipCounter":
        """Add `other`'s counts into this counter (in place) and return it."""
        self.seen += other.seen
        for reason, count in other.counts.items():
            self.counts[reason] = self.counts.get(reason, 0) + count
        for reason, named in other.examples.items():
            mine = self.examples.setdefault(reason, [])
            mine.extend(named[: max(0, self.max_examples - len(mine))])
        return self

    def __add__(self, other: "SkipCounter") -> "SkipCounter":
        return SkipCounter(max_examples=self.max_examples).merge(self).merge(other)

    def summary(self) -> str:
        """E.g. "skipped 3 of 1000: 2 undecodable (e.g. clips/x.mp3: <error>), 1 empty transcript (e.g. 17)"."""
        if not self.skipped:
            return f"skipped 0 of {self.seen}"
        parts = [
            f"{count} {reason} (e.g. {'; '.join(self.examples.get(reason, []))})"
            for reason, count in sorted(self.counts.items(), key=lambda item: -item[1])
        ]
        return f"skipped {self.skipped} of {self.seen}: " + ", ".join(parts)

    def log_summary(self, description: str) -> None:
        """Log the summary under "mlpl.data": a warning when anything was skipped, else info."""
        level = logging.WARNING if self.skipped else logging.INFO
        logger.log(level, "%s: %s", description, self.summary())


# ---------------------------------------------------------------------------------------------
# Decoding one record into one example (every source, both kinds)
# ---------------------------------------------------------------------------------------------


class _HeaderFailure(AudioDecodeError):
    """A header that `header_index` could not read (in a worker process, or in an earlier run: cached)."""

    def __init__(self, error_name: str, detail: str):
        super().__init__(detail)
        self.reason = _REASON_OF_ERROR_NAME.get(error_name, SKIP_UNDECODABLE)
        self.detail = detail


def _skip_of(error: AudioDecodeError) -> tuple[str, str]:
    """(skip reason, detail) of a decoding error."""
    if isinstance(error, _HeaderFailure):
        return error.reason, error.detail
    return next(reason for kind, reason in _DECODE_ERROR_REASONS if isinstance(error, kind)), describe_error(error)


@functools.lru_cache(maxsize=1)
def _feature_extractor():
    from modeling_mlpl import MlplFeatureExtractor

    return MlplFeatureExtractor()


def ctc_output_frames(seconds: float) -> int:
    """Encoder output frames of a clip of `seconds` (docs/design.md §1-2: 10 ms feature frames, conv stride 3)."""
    from modeling_mlpl.modeling_mlpl import compute_output_lengths

    return compute_output_lengths(_feature_extractor().num_frames(round(seconds * SAMPLING_RATE)))


_EQUAL_NEIGHBOURS = re.compile(r"(.)(?=\1)", re.DOTALL)  # each character followed by the same one


def ctc_frames_needed(sentence: str) -> int:
    """The fewest output frames a CTC alignment of `sentence` needs: one per character token ("|" between
    words, docs/design.md §3) plus a blank between each pair of equal neighbours."""
    tokens = "|".join(sentence.split())
    return len(tokens) + len(_EQUAL_NEIGHBOURS.findall(tokens))


def _too_short(seconds: float, sentence: str | None) -> str | None:
    """Why a labeled clip is too short for CTC (its loss would be infinite, zeroed), or None."""
    if not sentence:
        return None
    frames, needed = ctc_output_frames(seconds), ctc_frames_needed(sentence)
    if frames >= needed:
        return None
    return f"{seconds:.3f} s gives {frames} output frames, its transcript needs at least {needed}"


def _transcript_is_empty(sentence: str | None) -> bool:
    # None means unlabeled (VoxPopuli, pseudo-labeling input) and is kept; "" means a broken label.
    return sentence is not None and not sentence.strip()


def _read_checked(record: Mapping[str, Any], counter: SkipCounter, read) -> tuple[Any, float] | None:
    """The skip rules, shared by the map-style scan and decoding: None (and counted) for a bad record.

    `read(audio_reference)` returns `(value, seconds)` or raises AudioDecodeError.
    """
    counter.seen += 1
    name = describe_audio_source(record["audio"])
    if _transcript_is_empty(record.get("sentence")):
        counter.skip(SKIP_EMPTY_TRANSCRIPT, f"{record['id']} ({name})")
        return None
    try:
        value, seconds = read(record["audio"])
    except AudioDecodeError as error:
        reason, detail = _skip_of(error)
        counter.skip(reason, name, detail)
        return None
    if seconds <= 0:
        counter.skip(SKIP_EMPTY_AUDIO, name)
        return None
    too_short = _too_short(seconds, record.get("sentence"))
    if too_short:
        counter.skip(SKIP_TOO_SHORT, name, too_short)
        return None
    return value, seconds


def _decode(audio: Any, target_sr: int) -> tuple[np.ndarray, float]:
    waveform = process_audio_cache().decode(audio, target_sr, decode_audio_column)  # off unless data.audio_cache_gb > 0
    return waveform, waveform.size / target_sr


def _header_read_before(header: HeaderResult, audio: Any) -> tuple[None, float]:
    """The `read` of `_read_checked` for a header that `read_headers` has already read (or failed to)."""
    if isinstance(header, tuple):
        raise _HeaderFailure(*header)
    return None, header


def decode_record(
    record: Mapping[str, Any], counter: SkipCounter, target_sr: int = SAMPLING_RATE, keep_audio_reference: bool = False
) -> dict | None:
    """Turn one record (id, audio reference, sentence, language) into a schema example, or None if skipped.

    The audio reference is a path or an `Audio(decode=False)` value. `counter` gets the reason of a skip.
    Returns `{"id", "audio": float32 (n_samples,), "sentence", "language", "duration": seconds}`, plus
    `"audio_reference"` (the record's audio value, undecoded) when `keep_audio_reference`.
    """
    checked = _read_checked(record, counter, functools.partial(_decode, target_sr=target_sr))
    if checked is None:
        return None
    sentence = record.get("sentence")
    example = {
        "id": str(record["id"]),
        "audio": checked[0],
        "sentence": sentence.strip() if sentence is not None else None,
        "language": str(record["language"]),
        "duration": checked[1],
    }
    if keep_audio_reference:
        example[AUDIO_REFERENCE] = record["audio"]
    return example


# ---------------------------------------------------------------------------------------------
# Streaming: records in shards, decoded by a generator
# ---------------------------------------------------------------------------------------------


# Per process: what each streaming source skipped in all the shards this process has read so far.
_STREAM_TOTALS: dict[str, SkipCounter] = {}


def stream_skipped_total() -> int:
    """Clips the streams of this process have skipped so far, all sources together (their generators count them)."""
    return sum(counter.skipped for counter in _STREAM_TOTALS.values())


def _generate_examples(
    shards: list, shard_indices: list[int], target_sr: int, description: str, keep_audio_reference: bool = False
) -> Iterator[dict]:
    """Generator behind every streaming source; datasets calls it with this worker's share of the shards.

    A pass over a stream has no end that a shard can see (workers and processes each read their own
    shards), so every shard ends with its own summary plus this process's running total: a warning when
    the shard skipped anything, a debug line otherwise.
    """
    for shard, shard_index in zip(shards, shard_indices):
        counter = SkipCounter()
        for record in shard:
            example = decode_record(record, counter, target_sr, keep_audio_reference)
            if example is not None:
                yield example
        total = _STREAM_TOTALS.setdefault(description, SkipCounter()).merge(counter)
        level = logging.WARNING if counter.skipped else logging.DEBUG
        logger.log(
            level,
            "%s, shard %d: %s; %d of %d skipped so far in this process",
            description, shard_index, counter.summary(), total.skipped, total.seen,
        )


def _split_into_shards(records: Sequence[dict], num_shards: int) -> list[list[dict]]:
    """Contiguous, near-equal shards (sizes differ by at most one); never more shards than records."""
    num_shards = max(1, min(num_shards, len(records)))
    bounds = np.linspace(0, len(records), num_shards + 1).round().astype(int)
    return [list(records[start:stop]) for start, stop in zip(bounds[:-1], bounds[1:])]


def stream_dataset(shards: list, target_sr: int, description: str, keep_audio_reference: bool = False) -> IterableDataset:
    # gen_kwargs lists are what datasets splits across DataLoader workers and split_dataset_by_node.
    # No `features`: declaring a List(float32) column would turn every waveform into a Python list.
    return IterableDataset.from_generator(
        _generate_examples,
        gen_kwargs={
            "shards": shards,
            "shard_indices": list(range(len(shards))),
            "target_sr": target_sr,
            "description": description,
            "keep_audio_reference": keep_audio_reference,
        },
    )


# ---------------------------------------------------------------------------------------------
# Map-style: an Arrow table of records with durations, decoded on access
# ---------------------------------------------------------------------------------------------


class DecodeTransform:
    """The `with_transform` of map-style sources: decodes a batch of records, dropping bad clips.

    Picklable (DataLoader workers each hold a copy with its own counter). `scan` is what the header scan
    skipped before the table was built (read it with `scan_skips(dataset)`).
    """

    def __init__(self, target_sr: int = SAMPLING_RATE, keep_audio_reference: bool = False, scan: SkipCounter | None = None):
        self.target_sr = target_sr
        self.keep_audio_reference = keep_audio_reference
        self.counter = SkipCounter()
        self.scan = scan if scan is not None else SkipCounter()

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        columns = EXAMPLE_COLUMNS + ((AUDIO_REFERENCE,) if self.keep_audio_reference else ())
        output = {column: [] for column in columns}
        size = len(batch["id"])
        for index in range(size):
            record = {column: batch[column][index] for column in batch}
            example = decode_record(record, self.counter, self.target_sr, self.keep_audio_reference)
            if example is None:
                logger.warning("%s; skipped, %d of %d so far", self.counter.last, self.counter.skipped, self.counter.seen)
                continue
            for column in columns:
                output[column].append(example[column])
        return output


def _probe(records: Dataset, description: str, scan: HeaderScan | None = None) -> tuple[list[float], list[int], SkipCounter]:
    """Read every clip's duration from its header; return (durations of kept rows, kept indices, counter).

    Clip files are read by `header_index.read_headers` (parallel processes, cached per folder when `scan` names
    a cache folder); clips embedded as bytes are read here, one by one. Two passes over the table in batches:
    the files' paths (as Arrow, so embedded bytes are never copied), then the skip rules row by row."""
    batch_size = 8192
    paths, positions = [], []
    for start, batch in zip(itertools.count(0, batch_size), records.select_columns(["audio"]).with_format("arrow").iter(batch_size)):
        audio = batch.column("audio").combine_chunks()
        is_file = pc.and_(audio.field("bytes").is_null(), audio.field("path").is_valid()).to_pylist()
        files = [offset for offset, flag in enumerate(is_file) if flag]
        positions.extend(start + offset for offset in files)
        paths.extend(audio.field("path").take(pa.array(files, type=pa.int64())).to_pylist())
    headers = dict(zip(positions, read_headers(paths, scan, description)))
    del paths, positions
    counter = SkipCounter()
    durations, kept = [], []
    index = 0
    for batch in records.select_columns(["id", "audio", "sentence"]).iter(batch_size):
        for identifier, audio, sentence in zip(batch["id"], batch["audio"], batch["sentence"]):
            header = headers.pop(index) if index in headers else read_header(audio)  # embedded bytes: read here
            row = {"id": identifier, "audio": audio, "sentence": sentence}
            checked = _read_checked(row, counter, functools.partial(_header_read_before, header))
            if checked is not None:
                durations.append(checked[1])
                kept.append(index)
            index += 1
    return durations, kept, counter


def map_style_dataset(
    records: Dataset, target_sr: int, description: str, keep_audio_reference: bool = False, scan: HeaderScan | None = None
) -> Dataset:
    """records: columns id, audio (path / Audio(decode=False)), sentence, language -> decoded-on-access Dataset."""
    durations, kept, counter = _probe(records, description, scan)
    counter.log_summary(f"{description} (scan)")
    if not kept:
        raise ValueError(f"{description}: every clip was skipped, nothing is left to use ({counter.summary()})")
    if len(kept) < len(records):
        records = records.select(kept)
    records = records.add_column("duration", durations)
    return records.with_transform(DecodeTransform(target_sr, keep_audio_reference, scan=counter))


def scan_skips(dataset: Dataset) -> SkipCounter:
    """What the header scan of a map-style source skipped (its clips are not in the table, so a summary
    that counts only what it read would omit them); an empty counter for other datasets."""
    transform = ((getattr(dataset, "format", None) or {}).get("format_kwargs") or {}).get("transform")
    return transform.scan if isinstance(transform, DecodeTransform) else SkipCounter()


def _records_dataset(records: list[dict]) -> Dataset:
    """A list of records (audio given as a path) as an Arrow table, audio typed like Hub data's audio storage.

    Built column by column with pyarrow (`Dataset.from_list` encodes row by row: ~20 us a record)."""
    columns = {name: [record[name] for record in records] for name in ("id", "sentence", "language")}
    columns["audio"] = [{"bytes": None, "path": os.fspath(record["audio"])} for record in records]
    table = pa.Table.from_pydict(columns, schema=RECORD_FEATURES.arrow_schema)
    return Dataset(InMemoryTable(table), info=DatasetInfo(features=RECORD_FEATURES))


def dataset_from_records(
    records: list[dict],
    *,
    streaming: bool,
    num_shards: int,
    target_sr: int,
    description: str,
    keep_audio_reference: bool = False,
    header_scan: HeaderScan | None = None,
) -> Dataset | IterableDataset:
    """The one place where local sources become datasets: streamed, or map-style with durations."""
    if not records:
        raise ValueError(f"{description}: no clips found; check the folder layout and the language codes")
    if streaming:
        return stream_dataset(_split_into_shards(records, num_shards), target_sr, description, keep_audio_reference)
    return map_style_dataset(_records_dataset(records), target_sr, description, keep_audio_reference, header_scan)


def drop_long_clips(dataset: Dataset, max_seconds: float | None, description: str, setting: str = "max_seconds") -> Dataset:
    """A map-style source without its clips longer than `max_seconds` (None: all kept), read from the durations
    (no decoding). Each one is a counted skip naming the clip and `setting` (the option that sets the limit);
    the summary is logged. Memory of a forward pass grows with the clip (10 min: a 12.8 GB tensor)."""
    if max_seconds is None:
        return dataset
    durations = example_durations(dataset)
    counter = SkipCounter(seen=len(durations))
    long_ones = np.flatnonzero(durations > max_seconds)
    if not long_ones.size:
        return dataset
    audio = records_of(dataset).select(long_ones)["audio"]
    for index, reference in zip(long_ones, audio):
        counter.skip(SKIP_TOO_LONG, describe_audio_source(reference), f"{durations[index]:.1f} s > {setting}={max_seconds:g} s")
    counter.log_summary(f"{description} (length limit; raise {setting} to keep longer clips)")
    keep = np.flatnonzero(durations <= max_seconds)
    if not keep.size:
        raise ValueError(f"{description}: every clip is longer than {setting}={max_seconds:g} s ({counter.summary()})")
    return dataset.select(keep)


def example_durations(dataset: Dataset, column: str = "duration") -> np.ndarray:
    """Durations in seconds of a map-style source, `(len(dataset),)` float64, read without decoding audio."""
    return np.asarray(dataset.with_format(None).select_columns([column])[:][column], dtype=np.float64)


def example_languages(dataset: Dataset, column: str = "language") -> list[str]:
    """Language code of every item of a map-style source, read without decoding audio."""
    return records_of(dataset).select_columns([column])[:][column]


def select_languages(dataset: Dataset | IterableDataset, languages: Sequence[str] | None, description: str = "the source"):
    """Keep only `languages` (None or empty: everything). Map-style: selects rows by the language column,
    without decoding audio; streams: a lazy filter. An empty result is an error naming what there is."""
    if not languages:
        return dataset
    wanted = set(languages)
    if isinstance(dataset, IterableDataset):
        return dataset.filter(lambda example: example["language"] in wanted)
    available = example_languages(dataset)
    keep = [index for index, language in enumerate(available) if language in wanted]
    require_languages(wanted, available, "languages", description)
    return dataset if len(keep) == len(available) else dataset.select(keep)


def require_languages(wanted: Iterable[str], available: Iterable[str], setting: str, where: str) -> None:
    """ValueError naming the `wanted` languages that `where` does not hold, and the ones it does (a language
    code that is not in the data is a mistake, not a filter that keeps nothing)."""
    available = sorted(set(available))
    missing = sorted(set(wanted) - set(available))
    if missing:
        raise ValueError(f"{setting}: {where} has no utterance in languages {missing}; it has {available}; fix `{setting}`")


def records_of(dataset: Dataset) -> Dataset:
    """A map-style source without its decoding transform: rows of id, audio reference, sentence, language, duration.

    Useful to write the source as a Flashlight list (`write_flashlight_list(records_of(dataset), path)`).
    """
    return dataset.with_format(None)


__all__ = [
    "AUDIO_REFERENCE",
    "AUDIO_REFERENCE_FEATURE",
    "DEFAULT_NUM_SHARDS",
    "EXAMPLE_COLUMNS",
    "RECORD_FEATURES",
    "SKIP_BAD_ROW",
    "SKIP_EMPTY_AUDIO",
    "SKIP_EMPTY_TRANSCRIPT",
    "SKIP_NON_FINITE",
    "SKIP_TOO_LONG",
    "SKIP_TOO_SHORT",
    "SKIP_TRUNCATED",
    "SKIP_UNDECODABLE",
    "DecodeTransform",
    "SkipCounter",
    "ctc_frames_needed",
    "ctc_output_frames",
    "dataset_from_records",
    "decode_record",
    "drop_long_clips",
    "example_durations",
    "example_languages",
    "map_style_dataset",
    "records_of",
    "require_languages",
    "scan_skips",
    "select_languages",
    "stream_dataset",
    "stream_skipped_total",
]
