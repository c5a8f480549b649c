# Copyright 2026 The mlpl authors. Licensed under the Apache License, Version 2.0.
"""What a pseudo-label (PL) set is on disk: the folder, its files and the columns of its rows.

A `datasets` parquet dataset in the Hub's layout (`datasets.load_dataset("parquet", data_dir=folder)`):

    <output_dir>/data/<split>-00000-of-00003.parquet    columns PSEUDO_LABEL_FEATURES
    <output_dir>/summary.json                           kept, dropped and why, hours per language, run

While it is being written it is `<parent>/.<name>.incomplete/` (`work_dir_of`); the writer
(mlpl.pseudo_label.writer) renames it to `<output_dir>` once complete, and the reader
(mlpl.pseudo_label.reader) refuses a folder without `summary.json`.

Columns: `id`; `audio` = the clip's undecoded reference `{"bytes", "path"}` (the storage of datasets'
Audio feature: an absolute path for local files; the original bytes only when the source held the clip
as bytes, e.g. a parquet mirror), never decoded samples; `language` (the source's, or the LID head's
prediction with `language_routing="lid"`, or the router's with `routed_languages`); `source_language`;
`language_source` ("source" or "lid": where `language` came from) and `language_score` (the LID probability
it was taken with, null for "source"; docs/design.md §10); `pseudo_label`; `duration` (seconds);
`confidence` (`mlpl.inference.sequence_confidence`: mean best-path log-probability per frame, <= 0);
`predicted_language` and `predicted_language_probability` from the LID head (null without one);
`model_name`; `model_revision` (`mlpl.pseudo_label.model.model_revision`).
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

SUMMARY_FILE = "summary.json"
DATA_FOLDER = "data"

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


def work_dir_of(output_dir: Path) -> Path:
    """The temporary folder a PL set is written in before it is renamed to `output_dir`."""
    return output_dir.parent / f".{output_dir.name}.incomplete"
