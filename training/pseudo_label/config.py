# Copyright 2026 The mlpl authors. Licensed under the Apache License, Version 2.0.
"""What pseudo-labeling keeps and how (docs/design.md §6, §10): `PseudoLabelConfig` and the names of its
choices (language routings, where a row's language came from, why a pseudo-label was dropped)."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

from ..config import LMDecodingOptions
from ..inference import FRAMES_PER_SECOND

# docs/design.md §3 / 6: pseudo-labels longer than 630 characters are dropped (Flashlight's label length limit).
MAX_LABEL_LENGTH = 630
# Languages that mean "not known": ISO 639-2 "und" (undetermined), or nothing at all.
UNKNOWN_LANGUAGES = frozenset({"und", ""})
LANGUAGE_ROUTINGS = ("source", "lid")
# Where a row's `language` came from (its `language_source` column): the source's own label, or an LID head's
# prediction (language_routing="lid", or routed by mlpl.routing; `language_score` is then that prediction's
# probability).
LANGUAGE_FROM_SOURCE = "source"
LANGUAGE_FROM_LID = "lid"

# Why a pseudo-label was dropped: the keys of the summary's "dropped".
DROP_EMPTY = "empty pseudo-label"
DROP_TOO_LONG = "pseudo-label too long"
DROP_LOW_CONFIDENCE = "confidence below min_confidence"
UNREADABLE = "unreadable audio"



@dataclasses.dataclass
class PseudoLabelConfig(LMDecodingOptions):
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
        lm, lexicon, lm_alpha, lm_beta, lm_decoding: PLs from an n-gram LM's beam search instead of greedy CTC
            (`mlpl.config.LMDecodingOptions`); the row's confidence stays the greedy best path's.
        split: split name in the part files' names (`data/<split>-*.parquet`).
        buffer_size: streams only: examples per bucketing buffer (decoded audio is held: 200 x 30 s x 64 kB/s
            = 384 MB).
        num_workers: DataLoader workers decoding audio and computing features.
        prefetch_batches: without workers, batches decoded and featurized ahead in a background thread,
            overlapping the forward (0: none, everything in turn). Only where a core is free for the thread:
            on a CPU whose every core runs torch's threads, batches are read in turn (docs/design.md §6).
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
        self.check_lm_options("pseudo_labels")
        if self.languages is not None:
            self.languages = sorted(set(map(str, self.languages)))

    @property
    def chunk_frames(self) -> int | None:
        return None if not self.chunk_seconds else int(round(self.chunk_seconds * FRAMES_PER_SECOND))
