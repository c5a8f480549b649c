"""The loaders of each source layout, all into the data layer's one example schema (`mlpl.data`, docs/design.md §8):

1. a Hub dataset id (parquet mirrors of Common Voice, facebook/voxpopuli) or a `datasets.Dataset` (`load_hub_dataset`);
2. a local Common Voice release folder, `<root>/<lang>/{train,dev,test}.tsv` + `clips/` (`load_common_voice_folder`);
3. a local VoxPopuli unlabeled folder, `<root>/<lang>/<year>/*.ogg` (`load_voxpopuli_folder`);
4. a Flashlight list file, `id path duration_ms transcript` (`load_flashlight_list`, `write_flashlight_list`);
5. a local VoxPopuli transcribed (ASR) folder, `<root>/<lang>/asr_<split>.tsv` + `<lang>/<year>/<id>.ogg`
   (`load_voxpopuli_asr_folder`).

Each reads only metadata and hands its records to `data.dataset_from_records` (local layouts) or to the
data layer's map-style / stream builders (Hub), so decoding and bad-clip skipping are the same for all.
`mlpl.sources` picks the loader of a configured source kind.
"""

from __future__ import annotations

import csv
import functools
import logging
import math
import os
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

from datasets import Audio, ClassLabel, Dataset, IterableDataset, Value, load_dataset

from .audio import SAMPLING_RATE
from .data import (
    AUDIO_REFERENCE_FEATURE,
    DEFAULT_NUM_SHARDS,
    SKIP_BAD_ROW,
    SkipCounter,
    dataset_from_records,
    map_style_dataset,
    require_languages,
    stream_dataset,
)
from .files import atomic_writer
from .header_index import HeaderScan

logger = logging.getLogger("mlpl.data")

# Column names tried, in order, when a Hub dataset's columns are not given (Common Voice mirrors use
# path/sentence/locale; facebook/voxpopuli uses audio_id/normalized_text/language).
HUB_COLUMN_CANDIDATES = {
    "id": ("id", "audio_id", "path", "segment_id"),
    "audio": ("audio",),
    "sentence": ("sentence", "normalized_text", "raw_text", "transcription", "text"),
    "language": ("language", "locale", "lang"),
}

# ---------------------------------------------------------------------------------------------
# Source 1: a Hub dataset id (parquet mirrors of Common Voice, facebook/voxpopuli) or a Dataset object
# ---------------------------------------------------------------------------------------------


class _HubShard:
    """One shard of a streamed Hub dataset, iterated as records. Picklable (the dataset pickles)."""

    def __init__(self, dataset: IterableDataset, index: int):
        self.dataset = dataset
        self.index = index

    def __iter__(self) -> Iterator[dict]:
        return iter(self.dataset.shard(num_shards=self.dataset.num_shards, index=self.index))


def _pick_column(role: str, columns: Mapping[str, str | None], available: Sequence[str]) -> str | None:
    if role in columns:
        chosen = columns[role]
        if chosen is not None and chosen not in available:
            raise ValueError(f"columns[{role!r}]={chosen!r} is not a column of the dataset; it has {list(available)}")
        return chosen
    return next((name for name in HUB_COLUMN_CANDIDATES[role] if name in available), None)


def _fill_hub_columns(
    batch: Mapping[str, list], indices: Sequence[int], *, missing: tuple, language: str | None, language_names
) -> dict[str, list]:
    """Columns a Hub dataset lacks or stores differently: row-number ids, None sentences, language names."""
    size = len(indices)
    filled = {}
    if "id" in missing:
        filled["id"] = [str(index) for index in indices]
    if "sentence" in missing:
        filled["sentence"] = [None] * size
    if language is not None:
        filled["language"] = [language] * size
    elif language_names is not None:
        filled["language"] = [language_names[value] for value in batch["language"]]
    return filled


def standardize_hub_columns(
    dataset: Dataset | IterableDataset, columns: Mapping[str, str | None], language: str | None
) -> Dataset | IterableDataset:
    """Rename a Hub dataset's columns to id/audio/sentence/language and keep only those, without decoding."""
    features = dataset.features
    if features is None:  # a stream whose schema is only known after reading: look at one row
        available = list(next(iter(dataset)).keys())
    else:
        available = list(features)
    picked = {role: _pick_column(role, columns, available) for role in HUB_COLUMN_CANDIDATES}
    if picked["audio"] is None:
        raise ValueError(f"no audio column among {available}; pass columns={{'audio': '<name>'}}")
    if picked["language"] is None and language is None:
        raise ValueError(f"no language column among {available}; pass language='<code>' (e.g. language='fi')")
    if picked["sentence"] is None:
        logger.info("no transcript column among %s: the examples are unlabeled (sentence None)", available)

    if features is not None and isinstance(features[picked["audio"]], Audio):
        # First: the later steps (streams implement them as maps) would otherwise decode through torchcodec.
        dataset = dataset.cast_column(picked["audio"], dict(AUDIO_REFERENCE_FEATURE))  # undecoded {bytes, path}
    dataset = dataset.select_columns([name for name in picked.values() if name is not None])
    dataset = dataset.rename_columns({name: role for role, name in picked.items() if name is not None and name != role})
    language_names = None
    if picked["language"] is not None and features is not None and isinstance(features[picked["language"]], ClassLabel):
        language_names = features[picked["language"]].names  # facebook/voxpopuli stores languages as class ids
    fill = functools.partial(
        _fill_hub_columns,
        missing=tuple(role for role in ("id", "sentence") if picked[role] is None),
        language=language,
        language_names=language_names,
    )
    if not (fill.keywords["missing"] or language is not None or language_names is not None):
        return dataset
    if isinstance(dataset, IterableDataset):
        # map merges the returned columns into each batch, lazily (nothing is read until iterated).
        return dataset.map(fill, batched=True, with_indices=True)
    # Map-style: add_column leaves the (possibly large) audio bytes where they are; .map would rewrite them.
    languages = {"language": dataset.with_format(None)["language"][:]} if language_names is not None else {}
    for role, values in fill(languages, range(len(dataset))).items():
        if role in dataset.column_names:
            dataset = dataset.remove_columns(role)
        dataset = dataset.add_column(role, values, feature=Value("string"))
    return dataset


def load_hub_dataset(
    path: str | Dataset | IterableDataset,
    name: str | None = None,
    split: str = "train",
    *,
    columns: Mapping[str, str | None] | None = None,
    language: str | None = None,
    streaming: bool = True,
    target_sr: int = SAMPLING_RATE,
    keep_audio_reference: bool = False,
    header_scan: HeaderScan | None = None,
    **load_dataset_kwargs: Any,
) -> Dataset | IterableDataset:
    """A Hub dataset (or a local path `load_dataset` understands, or a Dataset object) in the example schema.

    Args:
        path: a Hub id, e.g. a parquet mirror of Common Voice; "parquet" with `data_files=`; a local folder of
            parquet files; or an already loaded `Dataset` / `IterableDataset`.
            Common Voice now comes from the Mozilla Data Collective (docs/design.md §8), whose client hands back a
            datasets Dataset that is passed here as it is::

                from datacollective import load_dataset as load_from_mdc  # pip install datacollective; API key
                common_voice_fi = load_from_mdc("<dataset id from datacollective.mozillafoundation.org>")
                train = load_hub_dataset(common_voice_fi["train"], language="fi")

        name: the dataset configuration (e.g. a language for per-language mirrors).
        split: which split to load.
        columns: schema role -> source column, for roles that the defaults do not find
            (e.g. `{"sentence": "normalized_text"}`; `{"sentence": None}` marks the data unlabeled).
            Defaults: id from id/audio_id/path, sentence from sentence/normalized_text/raw_text/
            transcription/text, language from language/locale/lang (class ids are turned into names).
        language: a fixed language code for every example (overrides any language column).
        streaming: stream (the default: nothing downloaded up front) or load map-style.
        target_sr: sampling rate of the decoded audio in Hz.
        keep_audio_reference: also give each example its undecoded audio value under `"audio_reference"`
            (what pseudo-label generation stores; see mlpl.pseudo_label).
        header_scan: map-style only: how clip files' durations are read (see `load_common_voice_folder`).
        load_dataset_kwargs: passed to `datasets.load_dataset` (data_files, revision, token...).

    Returns:
        IterableDataset with one shard per source shard when streaming, else a map-style Dataset with a
        `duration` column; items follow the module's schema.
    """
    if isinstance(path, (Dataset, IterableDataset)):
        dataset, description = path, f"dataset {path.info.dataset_name or 'object'} ({split})"
    else:
        dataset = load_dataset(path, name, split=split, streaming=streaming, **load_dataset_kwargs)
        description = f"{path}{'/' + name if name else ''} ({split})"
    dataset = standardize_hub_columns(dataset, columns or {}, language)
    if isinstance(dataset, IterableDataset):
        shards = [_HubShard(dataset, index) for index in range(dataset.num_shards)]
        return stream_dataset(shards, target_sr, description, keep_audio_reference)
    return map_style_dataset(dataset, target_sr, description, keep_audio_reference, header_scan)


# ---------------------------------------------------------------------------------------------
# Sources 2 and 3: local Common Voice and VoxPopuli folders
# ---------------------------------------------------------------------------------------------


def _language_folders(roots: str | os.PathLike | Sequence[str | os.PathLike], is_language_folder, languages) -> list[Path]:
    """Language folders under `roots`: each root holds several, or else is one itself (children are tried first)."""
    roots = [roots] if isinstance(roots, (str, os.PathLike)) else list(roots)
    folders, found = [], set()
    for root in map(Path, roots):
        if not root.is_dir():
            raise ValueError(f"{root} is not a folder; give the release folder or one language folder in it")
        candidates = sorted(p for p in root.iterdir() if p.is_dir() and is_language_folder(p))
        if not candidates and is_language_folder(root):
            candidates = [root]
        folders.extend(folder for folder in candidates if languages is None or folder.name in languages)
        found.update(folder.name for folder in candidates)
    if not folders:
        raise ValueError(f"no language folders found under {roots} for languages={languages} (it has {sorted(found)}); see the expected layout")
    require_languages(languages or (), found, "languages", f"{[os.fspath(r) for r in roots]}")
    return folders


def common_voice_records(
    roots: str | os.PathLike | Sequence[str | os.PathLike], split: str = "train", languages: Sequence[str] | None = None
) -> list[dict]:
    """Records of local Common Voice releases: `<root>/<lang>/{clips/*.mp3, <split>.tsv}` (docs/design.md §8)."""
    records = []
    for folder in _language_folders(roots, lambda p: (p / "clips").is_dir(), languages):
        table_path = folder / f"{split}.tsv"
        if not table_path.is_file():
            available = sorted(p.stem for p in folder.glob("*.tsv"))
            raise ValueError(f"{table_path} does not exist; splits in {folder}: {available}")
        records.extend(_common_voice_table(table_path, folder))
    return records


# Columns every Common Voice split TSV has and the data layer needs.
_COMMON_VOICE_COLUMNS = ("path", "sentence")


def _tsv_rows(table_path: Path, required: Sequence[str], layout: str) -> Iterator[tuple[int, dict]]:
    """`(line number, row)` of a tab-separated table with a header (QUOTE_NONE: bare quotes in transcripts are
    text, not CSV quoting). A header without a `required` column is an error naming the file and `layout`."""
    with open(table_path, encoding="utf-8", newline="") as table:
        reader = csv.DictReader(table, delimiter="\t", quoting=csv.QUOTE_NONE)
        missing = [column for column in required if column not in (reader.fieldnames or ())]
        if missing:
            raise ValueError(f"{table_path}: no {' or '.join(repr(m) for m in missing)} column (its header has {reader.fieldnames}); {layout}")
        for row in reader:
            yield reader.line_num, row


def transcripts_by_id(table_path: str | os.PathLike) -> dict[str, str]:
    """`{id: sentence}` of a tab-separated table with `id` and `sentence` columns and a header (e.g. the demo
    corpus's `voxpopuli/answer_key.tsv`), for slimIPL's oracle topline (`slimipl.oracle_transcripts`)."""
    table_path = Path(table_path)
    if not table_path.is_file():
        raise FileNotFoundError(f"{table_path}: no such transcript table (slimipl.oracle_transcripts); give a TSV with id and sentence columns")
    layout = "a transcript table has tab-separated columns id and sentence, with a header"
    return {row["id"]: row["sentence"] or "" for _, row in _tsv_rows(table_path, ("id", "sentence"), layout)}


def _common_voice_table(table_path: Path, folder: Path) -> list[dict]:
    """Records of one split TSV. A table without the needed columns is an error naming it; a row without an
    audio path (a short or broken line) is a counted skip naming `file:line`, summarised in a warning."""
    counter, records = SkipCounter(), []
    clips = os.fspath(folder / "clips")
    layout = "a Common Voice split TSV has tab-separated columns including path and sentence"
    for line_number, row in _tsv_rows(table_path, _COMMON_VOICE_COLUMNS, layout):
        counter.seen += 1
        path = row.get("path")
        if not path or not path.strip():
            counter.skip(SKIP_BAD_ROW, f"{table_path}:{line_number}", f"no audio path in {list(row.values())[:4]!r}")
            continue
        records.append(
            {
                # Strings, not Paths: pathlib costs ~30 us a clip, half a minute for a million-clip release.
                "id": os.path.splitext(os.path.basename(path))[0],
                "audio": os.path.join(clips, path),
                "sentence": row.get("sentence") or "",
                "language": row.get("locale") or folder.name,
            }
        )
    if counter.skipped:
        counter.log_summary(f"{table_path} (rows)")
    return records


def load_common_voice_folder(
    roots: str | os.PathLike | Sequence[str | os.PathLike],
    split: str = "train",
    *,
    languages: Sequence[str] | None = None,
    streaming: bool = False,
    num_shards: int = DEFAULT_NUM_SHARDS,
    target_sr: int = SAMPLING_RATE,
    keep_audio_reference: bool = False,
    header_scan: HeaderScan | None = None,
) -> Dataset | IterableDataset:
    """Local Common Voice release(s) in the example schema, one or many languages at once.

    Args:
        roots: a release folder holding `<lang>/clips/*.mp3` and `<lang>/{train,dev,test,validated}.tsv`, one
            language folder, or a list of such folders.
        split: the TSV to read ("train", "dev", "test", "validated", or any other TSV of the release).
        languages: keep only these language folders (default: all).
        streaming: an IterableDataset in `num_shards` shards instead of a map-style Dataset.
        num_shards: shards of the stream (64 divides evenly over up to 64 processes).
        target_sr: sampling rate of the decoded audio in Hz.
        keep_audio_reference: also give each example its audio path under `"audio_reference"` (undecoded).
        header_scan: map-style only: the worker processes that read the clips' durations and the folder that
            caches them between runs (`mlpl.header_index`; default: every CPU, no cache).
    """
    records = common_voice_records(roots, split, languages)
    description = f"common voice {split} ({', '.join(sorted({r['language'] for r in records}))})"
    return dataset_from_records(
        records,
        streaming=streaming,
        num_shards=num_shards,
        target_sr=target_sr,
        description=description,
        keep_audio_reference=keep_audio_reference,
        header_scan=header_scan,
    )


def _is_voxpopuli_language_folder(folder: Path) -> bool:
    # <lang>/*.ogg or <lang>/<year>/*.ogg; a year folder (digits) is never a language.
    return not folder.name.isdigit() and (any(folder.glob("*.ogg")) or any(folder.glob("*/*.ogg")))


def voxpopuli_languages(roots: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    """The language folders of VoxPopuli-layout roots (`<root>/<lang>/**/*.ogg`), without reading audio."""
    return sorted({folder.name for folder in _language_folders(roots, _is_voxpopuli_language_folder, None)})


def voxpopuli_records(
    roots: str | os.PathLike | Sequence[str | os.PathLike], languages: Sequence[str] | None = None
) -> list[dict]:
    """Records of unlabeled VoxPopuli segments: `<root>/<lang>/**/*.ogg` (docs/design.md §8), sentence None."""
    records = []
    for folder in _language_folders(roots, _is_voxpopuli_language_folder, languages):
        for clip in sorted(folder.rglob("*.ogg")):
            records.append({"id": clip.stem, "audio": clip, "sentence": None, "language": folder.name})
    return records


def load_voxpopuli_folder(
    roots: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    languages: Sequence[str] | None = None,
    streaming: bool = False,
    num_shards: int = DEFAULT_NUM_SHARDS,
    target_sr: int = SAMPLING_RATE,
    keep_audio_reference: bool = False,
    header_scan: HeaderScan | None = None,
) -> Dataset | IterableDataset:
    """A local unlabeled VoxPopuli folder (per-language folders of .ogg segments) in the example schema.

    Args as `load_common_voice_folder`; every example has `sentence=None`.
    """
    records = voxpopuli_records(roots, languages)
    description = f"voxpopuli unlabeled ({', '.join(sorted({r['language'] for r in records}))})"
    return dataset_from_records(
        records,
        streaming=streaming,
        num_shards=num_shards,
        target_sr=target_sr,
        description=description,
        keep_audio_reference=keep_audio_reference,
        header_scan=header_scan,
    )


# ---------------------------------------------------------------------------------------------
# Source 5: VoxPopuli's transcribed (ASR) data, a local copy
# ---------------------------------------------------------------------------------------------

# VoxPopuli's transcribed release (docs/design.md §8): `transcribed_data/<lang>/asr_{train,dev,test}.tsv`, tab
# separated with a header (id, raw_text, normalized_text, speaker_id, split, gender, is_gold_transcript,
# accent), and the audio of segment `<id>` at `<lang>/<year>/<id>.ogg`, the year being the id's first 4 digits.
VOXPOPULI_ASR_TRANSCRIPT_COLUMN = "raw_text"  # cased and punctuated, like Common Voice's sentences


def _is_voxpopuli_asr_language_folder(folder: Path) -> bool:
    return any(folder.glob("asr_*.tsv"))


def voxpopuli_asr_records(
    roots: str | os.PathLike | Sequence[str | os.PathLike],
    split: str = "test",
    languages: Sequence[str] | None = None,
    transcript_column: str = VOXPOPULI_ASR_TRANSCRIPT_COLUMN,
) -> list[dict]:
    """Records of VoxPopuli transcribed segments (`<root>/<lang>/asr_<split>.tsv`, audio `<lang>/<year>/<id>.ogg`).

    `transcript_column`: `raw_text` (default; case and punctuation, as Common Voice) or `normalized_text`.
    A row whose audio file is missing is a counted skip naming `file:line`, summarised in a warning.
    """
    records = []
    for folder in _language_folders(roots, _is_voxpopuli_asr_language_folder, languages):
        table_path = folder / f"asr_{split}.tsv"
        if not table_path.is_file():
            available = sorted(p.stem.removeprefix("asr_") for p in folder.glob("asr_*.tsv"))
            raise ValueError(f"{table_path} does not exist; VoxPopuli ASR splits in {folder}: {available}")
        counter = SkipCounter()
        layout = "a VoxPopuli ASR table has tab-separated columns id, raw_text, normalized_text, speaker_id, ..."
        for line_number, row in _tsv_rows(table_path, ("id", transcript_column), layout):
            counter.seen += 1
            identifier = (row.get("id") or "").strip()
            audio = os.path.join(folder, identifier[:4], identifier + ".ogg")
            if not identifier or not os.path.isfile(audio):
                counter.skip(SKIP_BAD_ROW, f"{table_path}:{line_number}", f"no audio file {audio}")
                continue
            records.append({"id": identifier, "audio": audio, "sentence": row.get(transcript_column) or "", "language": folder.name})
        if counter.skipped:
            counter.log_summary(f"{table_path} (rows)")
    return records


def load_voxpopuli_asr_folder(
    roots: str | os.PathLike | Sequence[str | os.PathLike],
    split: str = "test",
    *,
    languages: Sequence[str] | None = None,
    transcript_column: str = VOXPOPULI_ASR_TRANSCRIPT_COLUMN,
    streaming: bool = False,
    num_shards: int = DEFAULT_NUM_SHARDS,
    target_sr: int = SAMPLING_RATE,
    keep_audio_reference: bool = False,
    header_scan: HeaderScan | None = None,
) -> Dataset | IterableDataset:
    """A local copy of VoxPopuli's transcribed data (labeled), one or many languages, in the example schema.

    Args as `load_common_voice_folder`; `split` names the `asr_<split>.tsv` table, `transcript_column` its text.
    """
    records = voxpopuli_asr_records(roots, split, languages, transcript_column)
    description = f"voxpopuli asr {split} ({', '.join(sorted({r['language'] for r in records}))})"
    return dataset_from_records(
        records,
        streaming=streaming,
        num_shards=num_shards,
        target_sr=target_sr,
        description=description,
        keep_audio_reference=keep_audio_reference,
        header_scan=header_scan,
    )


# ---------------------------------------------------------------------------------------------
# Source 4: Flashlight list files, read and written
# ---------------------------------------------------------------------------------------------

# Flashlight's list column `input_size` is "typically audio duration in milliseconds" (flashlight
# app/asr/README.md); PlGenerator.cpp writes pseudo-label lists as id \t path \t duration \t words.
_MILLISECONDS_PER_SECOND = 1000.0


def read_flashlight_list(path: str | os.PathLike, *, language: str, labeled: bool = True) -> list[dict]:
    """Records of a Flashlight list file: lines `id path duration_ms transcript...` (whitespace separated).

    Relative audio paths are taken relative to the list's folder (Flashlight itself wants absolute paths).
    `labeled=False` reads unlabeled lists (transcript column empty or ignored): sentence None.
    Each record also keeps `duration` in seconds (the list's value / 1000).
    """
    path = Path(path)
    records = []
    with open(path, encoding="utf-8") as lines:
        for line_number, line in enumerate(lines, start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) < 3:
                raise ValueError(
                    f"{path}:{line_number}: expected 'id path duration transcript...', got {line.strip()!r}"
                )
            audio = Path(fields[1])
            records.append(
                {
                    "id": fields[0],
                    "audio": audio if audio.is_absolute() else path.parent / audio,
                    "sentence": " ".join(fields[3:]) if labeled else None,
                    "language": language,
                    "duration": float(fields[2]) / _MILLISECONDS_PER_SECOND,
                }
            )
    return records


def load_flashlight_list(
    paths: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    language: str,
    labeled: bool = True,
    streaming: bool = False,
    num_shards: int = DEFAULT_NUM_SHARDS,
    target_sr: int = SAMPLING_RATE,
    keep_audio_reference: bool = False,
    header_scan: HeaderScan | None = None,
) -> Dataset | IterableDataset:
    """One or more Flashlight list files of one language in the example schema.

    The list's duration column is only informational here: map-style durations are read from the audio
    headers and streamed ones from the decoded audio, so a list in another unit still works.
    """
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    records = [
        {key: value for key, value in record.items() if key != "duration"}
        for path in paths
        for record in read_flashlight_list(path, language=language, labeled=labeled)
    ]
    description = f"flashlight list {', '.join(Path(p).name for p in paths)} ({language})"
    return dataset_from_records(
        records,
        streaming=streaming,
        num_shards=num_shards,
        target_sr=target_sr,
        description=description,
        keep_audio_reference=keep_audio_reference,
        header_scan=header_scan,
    )


def _audio_location(row: Mapping[str, Any]) -> str:
    audio = row.get("path") or row.get("audio")
    if isinstance(audio, Mapping):
        audio = audio.get("path")
    if not audio:
        raise ValueError(f"row {row.get('id')!r} has no audio path (keys {sorted(row)}); Flashlight lists need one")
    return os.fspath(audio)


def write_flashlight_list(rows: Iterable[Mapping[str, Any]], path: str | os.PathLike) -> int:
    """Write rows as a Flashlight list: `id \\t path \\t duration_ms \\t transcript` per line (PlGenerator's layout).

    Args:
        rows: mappings with `id`, `duration` (seconds), `sentence` (None writes an empty transcript) and the
            audio path under `path` or `audio` (a path or an Audio(decode=False) value), e.g.
            `records_of(dataset)` of a map-style source, or pseudo-labels.
        path: the list file to write.

    Returns:
        The number of lines written. Whitespace inside transcripts is collapsed to single spaces (the format
        is whitespace separated); ids and paths must not contain whitespace. The list is written through
        `files.atomic_writer`: a bad row or a crash leaves any previous list at `path` as it was.
    """
    count = 0
    with atomic_writer(path) as output:
        for row in rows:
            identifier, audio = str(row["id"]), _audio_location(row)
            for value in (identifier, audio):
                if not value or len(value.split()) != 1:
                    raise ValueError(f"{value!r} contains whitespace or is empty; Flashlight lists cannot hold it")
            duration_ms = float(row["duration"]) * _MILLISECONDS_PER_SECOND
            if not math.isfinite(duration_ms) or duration_ms < 0:
                raise ValueError(f"row {identifier!r} has duration {row['duration']!r}; expected seconds >= 0")
            transcript = " ".join((row.get("sentence") or "").split())
            output.write(f"{identifier}\t{audio}\t{duration_ms:.2f}\t{transcript}\n")
            count += 1
    return count


__all__ = [
    "HUB_COLUMN_CANDIDATES",
    "common_voice_records",
    "load_common_voice_folder",
    "load_flashlight_list",
    "load_hub_dataset",
    "load_voxpopuli_asr_folder",
    "load_voxpopuli_folder",
    "read_flashlight_list",
    "standardize_hub_columns",
    "voxpopuli_asr_records",
    "voxpopuli_languages",
    "voxpopuli_records",
    "write_flashlight_list",
]
