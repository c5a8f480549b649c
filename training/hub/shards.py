"""What a pseudo-label folder holds, read from its parquet shards (its card and its pre-upload check use it).

The counts, hours, schema and `load_dataset` configs a dataset card shows come from the shards themselves,
so the card cannot disagree with the data (docs/design.md §6, stage 4).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

from .checks import pseudo_label_shards, read_json
from .naming import HubReference


def summarize_pseudo_label_shards(folder: Union[str, Path]) -> tuple[dict[str, str], dict[str, tuple[int, float]]]:
    """The shards' schema (column -> Arrow type) and, per language, (utterances, hours) read from
    their `language` and `duration` columns."""
    import pyarrow.compute
    import pyarrow.parquet

    folder = Path(folder)
    shards = pseudo_label_shards(folder)
    if not shards:
        raise ValueError(f"{folder} holds no .parquet shard; write the pseudo-labels first (stage 4)")
    schema = None
    counts: dict[str, list[float]] = {}
    for shard in shards:
        shard_schema = {item.name: str(item.type) for item in pyarrow.parquet.read_schema(folder / shard)}
        if schema is None:
            schema = shard_schema
        elif shard_schema != schema:
            raise ValueError(f"shard {shard} has columns {shard_schema}, unlike the first shard's {schema}")
        missing = [name for name in ("language", "duration") if name not in shard_schema]
        if missing:
            raise ValueError(f"shard {shard} has no {missing} column(s); its columns are {list(shard_schema)}")
        table = pyarrow.parquet.read_table(folder / shard, columns=["language", "duration"])
        count_all = pyarrow.compute.CountOptions(mode="all")  # a row with a missing duration still counts
        grouped = table.group_by("language").aggregate([("duration", "count", count_all), ("duration", "sum")])
        for language, count, seconds in zip(
            grouped["language"].to_pylist(), grouped["duration_count"].to_pylist(), grouped["duration_sum"].to_pylist()
        ):
            entry = counts.setdefault(language, [0, 0.0])
            entry[0] += count
            entry[1] += seconds or 0.0
    return schema, {language: (int(count), seconds / 3600.0) for language, (count, seconds) in sorted(counts.items())}


def rows_with_audio_bytes(folder: Path, shards: Sequence[Path]) -> Optional[int]:
    """How many rows carry audio bytes (`audio.bytes` not null), from the parquet statistics without
    reading the data; 0 when there is no such column; None when a shard has no statistics."""
    import pyarrow.parquet

    rows = 0
    for shard in shards:
        metadata = pyarrow.parquet.ParquetFile(folder / shard).metadata
        for group in range(metadata.num_row_groups):
            for index in range(metadata.num_columns):
                column = metadata.row_group(group).column(index)
                if column.path_in_schema != "audio.bytes":
                    continue
                if column.statistics is None or not column.statistics.has_null_count:
                    return None
                rows += column.num_values - column.statistics.null_count
    return rows


def data_files_by_config(shards: Sequence[Path], languages: Sequence[str]) -> dict[str, list[str]]:
    """`load_dataset` configs from the folder layout: "default" = every shard folder; one config per
    language whose shards sit in a folder named after it (e.g. `el/train-00000-of-00002.parquet`)."""
    folders = sorted({shard.parent.as_posix() for shard in shards})

    def pattern(parent: str) -> str:
        return "*.parquet" if parent == "." else f"{parent}/*.parquet"

    configs = {"default": [pattern(parent) for parent in folders]}
    for language in languages:
        language_folders = [parent for parent in folders if Path(parent).name == language]
        if language_folders and language != "default":
            configs[language] = [pattern(parent) for parent in language_folders]
    return configs




# The per-language "why dropped" of a multi-language run, whose summary counts reasons over all languages.
REASON_NOT_PER_LANGUAGE = "reason not recorded per language"


@dataclass(frozen=True)
class RunSummary:
    """What the `summary.json` of `mlpl.pseudo_label` says beyond the shards."""

    models: dict[str, HubReference]
    dropped: dict[str, dict[str, int]]
    drop_reasons: Optional[dict[str, int]]


def read_run_summary(folder: Path, languages: Sequence[str], read_models: bool = True) -> Optional[RunSummary]:
    """The producing model and the drops of the run that wrote `folder` (None without summary.json).

    The summary counts drop reasons over all the run's languages, so they are given per language only
    when the run had one language (stage 4 runs once per language). `read_models=False`: the caller names
    the producing models itself (the summary's may be a local folder, e.g. the recipe's stage 3 model).
    """
    path = folder / "summary.json"
    if not path.is_file():
        return None
    summary = read_json(path)
    per_language = summary.get("languages") or {}
    run = summary.get("run") or {}
    models = {}
    if read_models and run.get("model_name"):
        name = run["model_name"]
        try:
            if "/" not in name:  # "MlplForCTC" (a model built in memory), "stage3" (a local folder)
                raise ValueError(name)
            model = HubReference(name, revision=run.get("model_revision"))
        except ValueError:
            raise ValueError(
                f"{path} names the producing model {name!r}, which is not a Hub repo id (a local folder?); publish "
                "that model first and pass models={language: HubReference(repo_id, revision)}"
            ) from None
        models = {language: model for language in sorted({*per_language, *languages})}
    reasons = {reason: int(count) for reason, count in (summary.get("dropped") or {}).items()}
    if len(per_language) == 1:
        return RunSummary(models, {next(iter(per_language)): reasons}, None)
    dropped = {
        language: {REASON_NOT_PER_LANGUAGE: int(values["dropped"])}
        for language, values in per_language.items()
        if values.get("dropped")
    }
    return RunSummary(models, dropped, reasons)

__all__ = [
    "REASON_NOT_PER_LANGUAGE",
    "RunSummary",
    "data_files_by_config",
    "read_run_summary",
    "rows_with_audio_bytes",
    "summarize_pseudo_label_shards",
]
