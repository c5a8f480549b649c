# Copyright 2026 The mlpl authors. Licensed under the Apache License, Version 2.0.
"""A data source named on the command line -> the data layer's loader (`training.data`).

Scripts take one string, `--data SOURCE`, and this module decides what it is:

| SOURCE                                                   | kind              | loader                        |
|----------------------------------------------------------|-------------------|-------------------------------|
| folder with `<lang>/clips/` + `<split>.tsv` (or one lang) | Common Voice      | `load_common_voice_folder`    |
| folder holding such a release as `cv/` (the demo corpus)  | Common Voice      | `load_common_voice_folder`    |
| folder of `<lang>/**/*.ogg`                               | VoxPopuli         | `load_voxpopuli_folder`       |
| folder of parquet files                                   | Hub layout, local | `load_hub_dataset`            |
| a file                                                    | Flashlight list   | `load_flashlight_list`        |
| anything else (`owner/name`)                              | Hub dataset id    | `load_hub_dataset`            |

`load_labeled_source` gives a map-style dataset with transcripts (evaluation: VoxPopuli folders are
unlabeled and refused); `source_transcripts` reads only the text of a source (building an LM), without
touching audio.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from datasets import Dataset

from . import data as data_layer
from .config import SourceConfig

COMMON_VOICE = "common voice folder"
VOXPOPULI = "voxpopuli folder"
FLASHLIGHT_LIST = "flashlight list"
HUB = "hub dataset"
LOCAL_PARQUET = "parquet folder"


def _is_common_voice(folder: Path) -> bool:
    return (folder / "clips").is_dir() or any((child / "clips").is_dir() for child in folder.iterdir() if child.is_dir())


def _has_files(folder: Path, pattern: str, depth: int = 3) -> bool:
    """Whether `folder` holds a `pattern` file within `depth` levels (bounded: VoxPopuli has 100k+ files)."""
    return any(next(iter(folder.glob("/".join(["*"] * level + [pattern]))), None) for level in range(depth))


def resolve_source(source: str | os.PathLike) -> tuple[str, Path | str]:
    """`(kind, location)` of a `--data` argument; see the module table. A path-like string that does not
    exist is an error (not a Hub id)."""
    path = Path(source)
    if path.is_file():
        return FLASHLIGHT_LIST, path
    if path.is_dir():
        if _is_common_voice(path):
            return COMMON_VOICE, path
        if (path / "cv").is_dir() and _is_common_voice(path / "cv"):
            return COMMON_VOICE, path / "cv"
        if _has_files(path, "*.ogg"):
            return VOXPOPULI, path
        if _has_files(path, "*.parquet"):
            return LOCAL_PARQUET, path
        raise ValueError(
            f"{path} is a folder, but not a Common Voice release (<lang>/clips/ + <split>.tsv), a VoxPopuli folder "
            "(<lang>/**/*.ogg) or a folder of parquet files; point --data at one of those"
        )
    text = os.fspath(source)
    if text.startswith((".", "/", "~")) or text.count("/") > 1 or "\\" in text:
        raise FileNotFoundError(f"{text} does not exist (and does not look like a Hub dataset id 'owner/name')")
    return HUB, text


_KINDS = {COMMON_VOICE: "common_voice", VOXPOPULI: "voxpopuli", FLASHLIGHT_LIST: "flashlight", HUB: "hub", LOCAL_PARQUET: "hub"}


def source_config(
    source: str | os.PathLike,
    split: str = "train",
    *,
    languages: Sequence[str] | None = None,
    language: str | None = None,
    hub_config: str | None = None,
    streaming: bool = False,
    labeled: bool = True,
) -> SourceConfig:
    """The `SourceConfig` (what training YAMLs write explicitly) of a `--data` argument."""
    kind, location = resolve_source(source)
    if kind == FLASHLIGHT_LIST and language is None:
        raise ValueError(f"{location} is a Flashlight list, which names no language; pass its language (--language xx)")
    return SourceConfig(
        kind=_KINDS[kind], path=os.fspath(location), split=split, languages=list(languages) if languages else None,
        language=language, name=hub_config, streaming=streaming, labeled=labeled,
    )  # fmt: skip


def load_labeled_source(
    source: str | os.PathLike,
    split: str = "dev",
    *,
    languages: Sequence[str] | None = None,
    language: str | None = None,
    hub_config: str | None = None,
) -> Dataset:
    """A labeled, map-style dataset in the data layer's schema (durations known: duration batching).

    Args:
        source: see the module table.
        split: the Common Voice TSV or Hub split (a Flashlight list is a split by itself).
        languages: keep only these languages.
        language: language code of a Flashlight list (required) or of a Hub dataset without a language column.
        hub_config: the Hub dataset's configuration (e.g. a language of a per-language mirror).
    """
    config = source_config(source, split, languages=languages, language=language, hub_config=hub_config)
    if config.kind == "voxpopuli":
        raise ValueError(
            f"{config.path} is a VoxPopuli folder: unlabeled audio, with no transcripts to score against. Evaluate on a "
            "labeled source (a Common Voice folder, a Flashlight list with transcripts, or a Hub dataset with a "
            "transcript column); to transcribe unlabeled audio, generate pseudo-labels instead (training.pseudo_label)."
        )
    dataset = config.load()
    sentences = data_layer.records_of(dataset).select_columns(["sentence"])[:]["sentence"]
    unlabeled = sum(sentence is None for sentence in sentences)
    if unlabeled:
        raise ValueError(
            f"{config.path} ({split}): {unlabeled} of {len(sentences)} utterances have no transcript; evaluation needs "
            "a labeled source (for a Hub dataset, name its transcript column)"
        )
    return dataset


def source_transcripts(
    source: str | os.PathLike,
    split: str = "train",
    *,
    languages: Sequence[str] | None = None,
    language: str | None = None,
    hub_config: str | None = None,
) -> Iterator[tuple[str, str]]:
    """`(language, transcript)` of every labeled utterance of a source, read without decoding audio.

    Common Voice reads the split's TSVs, a Flashlight list its lines, a Hub dataset streams only its text
    columns. Empty transcripts are skipped.
    """
    kind, location = resolve_source(source)
    if kind == VOXPOPULI:
        raise ValueError(f"{location} is a VoxPopuli folder of unlabeled audio: it has no transcripts to read")
    if kind == COMMON_VOICE:
        records = data_layer.common_voice_records(location, split, languages)
    elif kind == FLASHLIGHT_LIST:
        if language is None:
            raise ValueError(f"{location} is a Flashlight list, which names no language; pass its language (--language xx)")
        records = data_layer.read_flashlight_list(location, language=language)
    else:
        from datasets import load_dataset

        path, extra = (location, {}) if kind == HUB else ("parquet", {"data_dir": os.fspath(location)})
        stream = load_dataset(path, hub_config, split=split, streaming=True, **extra)
        # The data layer's column detection (sentence/normalized_text/..., language/locale/...), audio left undecoded.
        stream = data_layer.standardize_hub_columns(stream, {}, language)
        records = stream.select_columns(["sentence", "language"])
    wanted = set(languages) if languages else None
    for record in records:
        sentence = record.get("sentence")
        if sentence and sentence.strip() and (wanted is None or record["language"] in wanted):
            yield record["language"], sentence.strip()


__all__ = [
    "COMMON_VOICE",
    "FLASHLIGHT_LIST",
    "HUB",
    "LOCAL_PARQUET",
    "VOXPOPULI",
    "load_labeled_source",
    "resolve_source",
    "source_config",
    "source_transcripts",
]
