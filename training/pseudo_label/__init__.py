# Copyright 2026 The mlpl authors. Licensed under the Apache License, Version 2.0.
"""Pseudo-label generation: recipe stage 4 (docs/design.md §6), also usable on its own.

A model (MlplForCTC + processor) transcribes unlabeled audio with greedy CTC in eval mode, without an LM
(docs/design.md §5), and the transcripts are written as a pseudo-label (PL) set that stage 5 trains on:

    source (any unlabeled source of mlpl.data)
      -> duration batches (map-style: DurationBatchSampler; streams: DurationBucketingStream),
         each process taking a disjoint share                                       .batches
      -> PseudoLabelCollator (features; keeps each clip's audio reference)          .batches
      -> transcribe_batch (mlpl.inference: crops of `chunk_seconds`, stitched logits, greedy CTC,
         confidence, LID prediction) in eval mode under torch.inference_mode        .generate
      -> filters (docs/design.md §3/6: drop empty PLs and PLs longer than 630 characters; optional
         min_confidence)                                                            .generate, .config
      -> parquet shards of `rows_per_shard` rows, written as they fill (memory does not grow with the
         number of utterances), atomically and resumably                            .writer
      -> <output_dir>/data/<split>-*.parquet + summary.json                         .layout
      -> load_pseudo_label_set / iter_pseudo_labels / export_flashlight_list        .reader

The model's name and revision stored in every row come from `.model` (`model_revision`: the commit of a Hub
snapshot or a clean git checkout, else "sha256:" + a hash of the weights files).

Stage 4 of the recipe runs this once per language with that language's stage-3 model
(`languages=[code]`, one output folder each); stage 5 mixes the folders with labeled data through
`load_pseudo_label_set([folder, ...])`. Audio of unknown language is routed to a language first by
mlpl.routing (docs/design.md §10).
"""

from .config import (
    DROP_EMPTY,
    DROP_LOW_CONFIDENCE,
    DROP_TOO_LONG,
    LANGUAGE_FROM_LID,
    LANGUAGE_FROM_SOURCE,
    LANGUAGE_ROUTINGS,
    MAX_LABEL_LENGTH,
    UNKNOWN_LANGUAGES,
    UNREADABLE,
    PseudoLabelConfig,
)
from .layout import PSEUDO_LABEL_FEATURES, SUMMARY_FILE
from .model import describe_model, load_model_for_pseudo_labeling, model_revision
from .batches import PseudoLabelCollator
from .writer import summary_line
from .reader import export_flashlight_list, iter_pseudo_labels, load_pseudo_label_set, pseudo_label_files
from .generate import generate_pseudo_labels

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
    "UNREADABLE",
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
