"""Data sources: the one place that dispatches on `SourceConfig.kind` (docs/design.md §8).

`SOURCE_KIND_READERS` maps each kind of the vocabulary `mlpl.config.SOURCE_KINDS` to how it is read:
its loader (`load_source`: the trainer, the recipe and the command-line scripts all load data there), how
its languages are listed without reading audio (`source_languages`) and how its transcripts are read
without audio (`source_transcripts`). The kind names live in the schema (`mlpl.config`), so that a
config naming an unknown kind fails when it is built.

Scripts take one string, `--data SOURCE`, and `resolve_source` decides what it is:

| SOURCE                                                   | kind              | loader                        |
|----------------------------------------------------------|-------------------|-------------------------------|
| folder with `<lang>/clips/` + `<split>.tsv` (or one lang) | `common_voice`    | `load_common_voice_folder`    |
| folder holding such a release as `cv/` (the demo corpus)  | `common_voice`    | `load_common_voice_folder`    |
| folder of `<lang>/asr_<split>.tsv` + `<lang>/<year>/*.ogg` | `voxpopuli_asr` | `load_voxpopuli_asr_folder`   |
| folder of `<lang>/**/*.ogg`                               | `voxpopuli`       | `load_voxpopuli_folder`       |
| folder of parquet files                                   | `hub` (local)     | `load_hub_dataset`            |
| a file                                                    | `flashlight`      | `load_flashlight_list`        |
| anything else (`owner/name`)                              | `hub` (dataset id)| `load_hub_dataset`            |

(`pseudo_labels`, a folder written by mlpl.pseudo_label, is named in configs only.)
`load_labeled_source` gives a map-style dataset with transcripts (evaluation: unlabeled VoxPopuli folders
are refused; VoxPopuli's transcribed data is labeled); `source_transcripts` reads only the text of a source (building an LM), without
touching audio.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from datasets import Dataset, IterableDataset

from . import data as data_layer
from . import loaders
from .config import COMMON_VOICE, FLASHLIGHT_LIST, HUB, PSEUDO_LABELS, SOURCE_KINDS, VOXPOPULI, VOXPOPULI_ASR, SourceConfig


def _is_common_voice(folder: Path) -> bool:
    return (folder / "clips").is_dir() or any((child / "clips").is_dir() for child in folder.iterdir() if child.is_dir())


def _is_voxpopuli_asr(folder: Path) -> bool:
    return any(folder.glob("asr_*.tsv")) or any(folder.glob("*/asr_*.tsv"))


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
        if _is_voxpopuli_asr(path):
            return VOXPOPULI_ASR, path
        if _has_files(path, "*.ogg"):
            return VOXPOPULI, path
        if _has_files(path, "*.parquet"):
            return HUB, path
        raise ValueError(
            f"{path} is a folder, but not a Common Voice release (<lang>/clips/ + <split>.tsv), a VoxPopuli folder "
            "(<lang>/**/*.ogg) or a folder of parquet files; point --data at one of those"
        )
    text = os.fspath(source)
    if text.startswith((".", "/", "~")) or text.count("/") > 1 or "\\" in text:
        raise FileNotFoundError(f"{text} does not exist (and does not look like a Hub dataset id 'owner/name')")
    return HUB, text


# ---------------------------------------------------------------------------------------------------------
# The readers of each kind
# ---------------------------------------------------------------------------------------------------------


def _hub_location(source: SourceConfig) -> tuple[str, dict]:
    """`load_dataset`'s path and extra arguments: a local folder of parquet files, or a Hub id."""
    return ("parquet", {"data_dir": source.path}) if Path(source.path).is_dir() else (source.path, {})


def _load_common_voice(source: SourceConfig, options: dict):
    return loaders.load_common_voice_folder(source.path, source.split, languages=source.languages, **options)


def _load_voxpopuli(source: SourceConfig, options: dict):
    return loaders.load_voxpopuli_folder(source.path, languages=source.languages, **options)


def _voxpopuli_asr_column(source: SourceConfig) -> str:
    return (source.columns or {}).get("sentence") or loaders.VOXPOPULI_ASR_TRANSCRIPT_COLUMN


def _load_voxpopuli_asr(source: SourceConfig, options: dict):
    return loaders.load_voxpopuli_asr_folder(
        source.path, source.split, languages=source.languages, transcript_column=_voxpopuli_asr_column(source), **options
    )


def _load_flashlight(source: SourceConfig, options: dict):
    dataset = loaders.load_flashlight_list(source.path, language=source.language, labeled=source.labeled, **options)
    return data_layer.select_languages(dataset, source.languages, f"{source.path} ({source.split})")


def _load_hub(source: SourceConfig, options: dict):
    options = {key: value for key, value in options.items() if key != "num_shards"}  # Hub streams bring their own shards
    path, extra = _hub_location(source)
    # unlabeled: ignore any transcript column
    columns = dict(source.columns or {}) if source.labeled else {**(source.columns or {}), "sentence": None}
    dataset = loaders.load_hub_dataset(path, source.name, source.split, columns=columns, language=source.language, **options, **extra)
    return data_layer.select_languages(dataset, source.languages, f"{source.path} ({source.split})")


def _load_pseudo_labels(source: SourceConfig, options: dict):
    from .pseudo_label import load_pseudo_label_set

    return load_pseudo_label_set(source.path, languages=source.languages, streaming=source.streaming)


def _common_voice_records(source: SourceConfig) -> Iterable[dict]:
    return loaders.common_voice_records(source.path, source.split, source.languages)


def _voxpopuli_records(source: SourceConfig) -> Iterable[dict]:
    return loaders.voxpopuli_records(source.path, source.languages)


def _voxpopuli_asr_records(source: SourceConfig) -> Iterable[dict]:
    return loaders.voxpopuli_asr_records(source.path, source.split, source.languages, _voxpopuli_asr_column(source))


def _flashlight_records(source: SourceConfig) -> Iterable[dict]:
    return loaders.read_flashlight_list(source.path, language=source.language)


def _pseudo_label_records(source: SourceConfig) -> Iterable[dict]:
    """A PL set's rows as records: its transcript is the `pseudo_label` column (mlpl.pseudo_label)."""
    from .pseudo_label import iter_pseudo_labels

    for row in iter_pseudo_labels(source.path, ["language", "pseudo_label"]):
        yield {"language": row["language"], "sentence": row["pseudo_label"]}


def _hub_records(source: SourceConfig) -> Iterable[dict]:
    """The text columns of a Hub / parquet dataset, streamed, audio left undecoded."""
    from datasets import load_dataset

    path, extra = _hub_location(source)
    stream = load_dataset(path, source.name, split=source.split, streaming=True, **extra)
    # The data layer's column detection (sentence/normalized_text/..., language/locale/...).
    stream = loaders.standardize_hub_columns(stream, dict(source.columns or {}), source.language)
    return stream.select_columns(["sentence", "language"])


@dataclasses.dataclass(frozen=True)
class SourceKindReader:
    """How one kind of source is read.

    load: `(source, options)` -> the Dataset / IterableDataset in the data layer's example schema; `options`
        are `streaming`, `keep_audio_reference`, `header_scan` and (local streams) `num_shards`.
    metadata_records: `source` -> records with a `language`, read from the metadata without touching audio;
        None: the kind's languages are those of the loaded dataset.
    transcript_records: `source` -> records with `language` and `sentence`, read without touching audio;
        None: the kind holds no transcripts (VoxPopuli folders are unlabeled audio).
    """

    load: Callable[[SourceConfig, dict], Any]
    metadata_records: Callable[[SourceConfig], Iterable[dict]] | None
    transcript_records: Callable[[SourceConfig], Iterable[dict]] | None


SOURCE_KIND_READERS: dict[str, SourceKindReader] = {
    COMMON_VOICE: SourceKindReader(_load_common_voice, _common_voice_records, _common_voice_records),
    VOXPOPULI: SourceKindReader(_load_voxpopuli, _voxpopuli_records, None),
    FLASHLIGHT_LIST: SourceKindReader(_load_flashlight, None, _flashlight_records),
    HUB: SourceKindReader(_load_hub, None, _hub_records),
    PSEUDO_LABELS: SourceKindReader(_load_pseudo_labels, None, _pseudo_label_records),
    VOXPOPULI_ASR: SourceKindReader(_load_voxpopuli_asr, _voxpopuli_asr_records, _voxpopuli_asr_records),
}
assert tuple(SOURCE_KIND_READERS) == SOURCE_KINDS, "every source kind needs a reader"


def load_source(
    source: SourceConfig, *, keep_audio_reference: bool = False, num_shards: int | None = None, header_scan=None
) -> Dataset | IterableDataset:
    """The source as a datasets Dataset / IterableDataset in the data layer's example schema.

    `keep_audio_reference` keeps each clip's undecoded reference (pseudo-labeling); `num_shards` sets the
    shard count of local streams; `header_scan` (a `mlpl.header_index.HeaderScan`) how map-style
    sources read their clips' durations (worker processes, cache folder).
    """
    options = {"streaming": source.streaming, "keep_audio_reference": keep_audio_reference, "header_scan": header_scan}
    if num_shards:
        options["num_shards"] = num_shards
    return SOURCE_KIND_READERS[source.kind].load(source, options)


def source_languages(source: SourceConfig, *, load: bool = True) -> list[str]:
    """The languages a source holds, sorted; local folders are listed from their metadata, without reading
    audio (loading would probe every clip's header, which the training stages do anyway). Other kinds are
    loaded to read them, or with `load=False` refused (a stream's languages must be known before its audio)."""
    records = SOURCE_KIND_READERS[source.kind].metadata_records
    if records is not None:
        return sorted({record["language"] for record in records(source)})
    if not load:
        raise ValueError(f"{source.kind} source {source.path}: its metadata does not list its languages; name them (`languages: [..]`)")
    return sorted(data_layer.records_of(load_source(source)).unique("language"))


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
        kind=kind, path=os.fspath(location), split=split, languages=list(languages) if languages else None,
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
    if SOURCE_KIND_READERS[config.kind].transcript_records is None:
        raise ValueError(
            f"{config.path} is a VoxPopuli folder: unlabeled audio, with no transcripts to score against. Evaluate on a "
            "labeled source (a Common Voice folder, a Flashlight list with transcripts, or a Hub dataset with a "
            "transcript column); to transcribe unlabeled audio, generate pseudo-labels instead (mlpl.pseudo_label)."
        )
    dataset = load_source(config)
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
    yield from configured_transcripts(source_config(source, split, languages=languages, language=language, hub_config=hub_config))


def configured_transcripts(source: SourceConfig) -> Iterator[tuple[str, str]]:
    """`source_transcripts` of a `SourceConfig` (any kind with transcripts, PL sets included)."""
    read = SOURCE_KIND_READERS[source.kind].transcript_records
    if read is None:
        raise ValueError(f"{source.path} is a VoxPopuli folder of unlabeled audio: it has no transcripts to read")
    wanted = set(source.languages) if source.languages else None
    for record in read(source):
        sentence = record.get("sentence")
        if sentence and sentence.strip() and (wanted is None or record["language"] in wanted):
            yield record["language"], sentence.strip()


__all__ = [
    "SOURCE_KIND_READERS",
    "SourceKindReader",
    "load_labeled_source",
    "load_source",
    "resolve_source",
    "configured_transcripts",
    "source_config",
    "source_languages",
    "source_transcripts",
]
