# Copyright 2026 The mlpl authors. Licensed under the Apache License, Version 2.0.
"""`data.train` and `data.unlabeled` as streams (issue 14.1): sources with `streaming: true`, batched by
duration on the fly.

    sources (IterableDataset each, decoded lazily) -> interleaved when several -> clips over
    data.max_clip_seconds dropped -> DurationBucketingStream (buffer of data.stream_buffer_size examples,
    packed by duration, this process's shards only, cycled forever: training runs by update count)
    -> DataLoader without workers -> collator

Nothing reads audio up front: the vocabulary and the languages of a new model come from the sources'
transcripts (`mlpl.sources.source_transcripts`: TSV / list lines / text columns only).

Resume: the trainer saves `DurationBucketingStream.state_dict()` with each process's checkpoint (the
stream's epoch, the buffer being consumed, the batches of it already yielded and the `datasets` state of
the source just before that buffer); a resumed run refills the same buffer and skips the batches already
trained on, so it continues with exactly the batches the uninterrupted run would have used. The state is
that of the process iterating the stream, hence a DataLoader without workers (`data.num_workers` is not
used for streams; decoding runs in the main process; see `stream_batches` for why not torchdata's
StatefulDataLoader).

Language temperature (`data.language_temperature` != 1, issue 14.2): each (source, language) pair becomes
its own stream (`languages: [l]`; a source that mixes languages in one file set is then read once per
language, so give large corpora one source per language, as Common Voice's Hub configurations are), and
`datasets.interleave_datasets` draws the next example from language l with probability proportional to
n_l ** (1 / T). Streams have no durations before their audio is read, so n_l is language l's utterance
count (its transcripts, which the vocabulary reads anyway): the target is a share of utterances, where
map-style sampling (`LanguageBalancedBatchSampler`) targets a share of hours. The interleaving's random
state is part of the `datasets` state that the checkpoint keeps, so resume stays exact.

Map-style data stays the default: it shuffles whole epochs and, with the duration cache
(mlpl.header_index), starts in seconds on folders of a few million clips. Streams suit Hub datasets
(nothing downloaded up front) and corpora whose index would not fit in memory (~1.7 kB per clip).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import replace
from typing import Iterator

import torch
from datasets import IterableDataset, interleave_datasets

from .batching import DurationBucketingStream, language_sampling_shares
from .sources import load_source

logger = logging.getLogger("mlpl.trainer")


def streams_requested(sources, what: str) -> bool:
    """Whether `sources` are streams; a mix of streamed and map-style sources is an error naming them."""
    streaming = {source.streaming for source in sources}
    if len(streaming) > 1:
        listed = ", ".join(f"{source.path} (streaming: {str(source.streaming).lower()})" for source in sources)
        raise ValueError(f"data.{what} mixes streamed and map-style sources ({listed}); set the same `streaming:` on all of them")
    return streaming == {True}


def _load_stream(source, what: str) -> IterableDataset:
    stream = load_source(source)
    if not isinstance(stream, IterableDataset):
        raise ValueError(f"data.{what} source {source.path} ({source.kind}) did not load as a stream; it cannot be read with streaming: true")
    return stream


def _drop_long_clips(stream: IterableDataset, max_clip_seconds: float | None) -> IterableDataset:
    return stream if max_clip_seconds is None else stream.filter(lambda example: example["duration"] <= max_clip_seconds)


def load_training_stream(sources, max_clip_seconds: float | None, what: str = "train") -> IterableDataset:
    """The sources as one stream of decoded examples (interleaved when several), long clips dropped."""
    streams = [_load_stream(source, what) for source in sources]
    stream = streams[0] if len(streams) == 1 else interleave_datasets(streams, stopping_strategy="all_exhausted")
    return _drop_long_clips(stream, max_clip_seconds)


def load_balanced_stream(sources, max_clip_seconds: float | None, temperature: float, seed: int) -> tuple[IterableDataset, dict]:
    """The labeled sources as one stream whose next example is of language l with probability proportional to
    n_l ** (1 / temperature), n_l the utterances of l (module docstring); returns the stream and its mix
    (`temperature`, `utterances`, `natural_share`, `target_share`), which the trainer logs and summarizes."""
    parts, part_counts = [], []
    for source in sources:
        counts = Counter(language for language, _ in stream_transcripts([source]))
        for language, count in sorted(counts.items()):
            parts.append((replace(source, languages=[language]), language))
            part_counts.append(count)
    utterances: dict[str, int] = {}
    for (_, language), count in zip(parts, part_counts):
        utterances[language] = utterances.get(language, 0) + count
    target = language_sampling_shares(utterances, temperature)
    probabilities = [target[language] * count / utterances[language] for (_, language), count in zip(parts, part_counts)]
    streams = [_load_stream(source, "train") for source, _ in parts]
    stream = streams[0] if len(streams) == 1 else interleave_datasets(streams, probabilities=probabilities, seed=seed, stopping_strategy="all_exhausted")
    mix = {"temperature": temperature, "utterances": utterances, "natural_share": language_sampling_shares(utterances, 1.0), "target_share": target}
    return _drop_long_clips(stream, max_clip_seconds), mix


def stream_transcripts(sources) -> list[tuple[str, str]]:
    """`(language, transcript)` of every labeled utterance of the sources, read without audio."""
    from .sources import configured_transcripts

    pairs = [pair for source in sources for pair in configured_transcripts(source)]
    if not pairs:
        raise ValueError(f"data.train streams {[s.path for s in sources]} have no transcript; the trainer needs labeled data")
    return pairs


def stream_languages(sources) -> list[str]:
    """The languages of streamed sources without reading audio: their `languages:`, or what a local folder's
    metadata names (Common Voice TSVs, VoxPopuli language folders); other kinds must name theirs."""
    from .sources import source_languages

    languages = set()
    for source in sources:
        if source.languages:
            languages.update(source.languages)
        elif source.language:
            languages.add(source.language)
        else:
            try:
                languages.update(source_languages(source, load=False))
            except ValueError as error:
                raise ValueError(f"streamed {error}, so that the model's LID classes are known before any audio is read") from None
    return sorted(languages)


def training_stream(stream: IterableDataset, data, seed: int, num_replicas: int, rank: int) -> DurationBucketingStream:
    """Duration batches of this process's share, cycled epoch after epoch (training runs by update count)."""
    return DurationBucketingStream(
        stream, data.max_batch_seconds, buffer_size=data.stream_buffer_size, seed=seed, num_replicas=num_replicas, rank=rank,
        max_batch_size=data.max_batch_size, infinite=True,
    )  # fmt: skip


def stream_batches(stream: DurationBucketingStream, collator) -> Iterator[dict]:
    """Collated batches of the stream, forever, read in this process (module docstring); the checkpoint keeps
    the stream's own state. An epoch boundary is logged by the stream, never a stop.

    torchdata's `StatefulDataLoader` with workers was tried for streams: its resume was bit-exact in some runs
    and not in others (the CTC head differed after a resume in 1 of 2-3 runs of the same test), cause not
    found, so streams decode here until it is.
    """
    # Its own generator: starting the iterator draws a seed, which must not come from the global RNG (dropout's),
    # or a resumed run would draw other dropout masks than the uninterrupted one.
    generator = torch.Generator().manual_seed(stream.seed)
    loader = torch.utils.data.DataLoader(stream, batch_size=None, collate_fn=collator, num_workers=0, generator=generator)
    for batch in loader:
        if batch is not None:
            yield batch


__all__ = ["load_balanced_stream", "load_training_stream", "stream_batches", "stream_languages", "stream_transcripts", "streams_requested", "training_stream"]
