"""The cards of what the recipe publishes: a model card per checkpoint, a dataset card per pseudo-label set.

`write_model_card(folder, ...)` / `write_dataset_card(folder, ...)` render the Jinja2 templates of the
`hub_cards` package (read through importlib.resources) with huggingface_hub's `ModelCard.from_template` /
`DatasetCard.from_template` and replace README.md atomically. Model cards carry the stage
(`mlpl.stages`), the lineage (initial checkpoint, labeled data, pseudo-label sets), the
hyper-parameters, per-language CER/WER as a `model-index` and a table, usage and the citation;
pseudo-label cards carry per-language counts, hours, dropped utterances and why, the producing models, the
schema and how to load them (docs/design.md §6).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Optional, Union

from huggingface_hub import DatasetCard, DatasetCardData, EvalResult, ModelCard, ModelCardData
from huggingface_hub.utils import validate_repo_id

from ..files import write_text_atomically
from ..stages import STAGES, Stage, recipe_stage
from .checks import pseudo_label_shards, read_json
from .naming import HubReference
from .shards import data_files_by_config, read_run_summary, rows_with_audio_bytes, summarize_pseudo_label_shards

logger = logging.getLogger("mlpl.hub")

# The card templates: hub_cards/*.md, package data of the `hub_cards` package.
MODEL_CARD_TEMPLATE = resources.files("hub_cards") / "model_card.md"
DATASET_CARD_TEMPLATE = resources.files("hub_cards") / "dataset_card.md"

CARD_TAGS = ("automatic-speech-recognition", "ctc", "pseudo-labeling", "mlpl")
PAPER_BIBTEX = """@inproceedings{lugosch2022pseudo,
  title     = {Pseudo-Labeling for Massively Multilingual Speech Recognition},
  author    = {Lugosch, Loren and Likhomanenko, Tatiana and Synnaeve, Gabriel and Collobert, Ronan},
  booktitle = {ICASSP 2022 - IEEE International Conference on Acoustics, Speech and Signal Processing},
  year      = {2022},
  eprint    = {2111.00161},
  archivePrefix = {arXiv}
}"""

Lineage = Union[HubReference, str]  # a Hub repo, or a plain description of local data


def _describe(item: Lineage) -> str:
    return item.markdown() if isinstance(item, HubReference) else str(item)


@dataclass(frozen=True)
class EvaluationSet:
    """The data the card's results were measured on (one `dataset` of the model-index).

    `dataset_id`: a Hub dataset id or a short identifier ("common_voice"); `name`: a readable name
    ("Common Voice 6.1"); each language is reported as the dataset config of the same code.
    """

    dataset_id: str
    name: str
    split: str = "test"
    revision: Optional[str] = None


# --- Rendering the cards ------------------------------------------------------------------------


def _format_number(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _percent(rate: Optional[float]) -> Optional[float]:
    """A rate (0.1234) as a percentage with 2 decimals (12.34); None stays None (undefined rate)."""
    return None if rate is None else round(100.0 * float(rate), 2)


def _percent_text(rate: Optional[float]) -> str:
    """A rate for a card's table: "12.34", or "n/a" when undefined."""
    return "n/a" if rate is None else f"{100.0 * float(rate):.2f}"


def _flatten(values: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Nested hyper-parameters as dotted names: {"slimipl": {"cache_size": 1000}} -> slimipl.cache_size."""
    items = []
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            items.extend(_flatten(value, prefix=f"{name}."))
        else:
            items.append((name, value))
    return items


def _render(card_class, card_data, template: Union[Path, resources.abc.Traversable], variables: Mapping[str, Any]):
    """`card_class.from_template` after checking that every variable the template uses is given.

    Jinja2 renders a missing variable as an empty string; a card missing its lineage silently would
    be worse than an error.
    """
    import jinja2
    import jinja2.meta

    source = template.read_text(encoding="utf-8")
    used = jinja2.meta.find_undeclared_variables(jinja2.Environment().parse(source))
    missing = sorted(used - set(variables) - set(card_data.to_dict()) - {"card_data"})
    if missing:
        raise ValueError(f"card template {template} uses {missing}, which the renderer does not provide")
    return card_class.from_template(card_data, template_str=source, **variables)


def _results_rows(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Per-language rates (fractions) from a `mlpl.metrics.compute_asr_metrics` result."""
    if "per_language" not in results:
        raise ValueError(
            "results must be a mlpl.metrics.compute_asr_metrics(...) result (with a 'per_language' table); "
            f"got keys {sorted(results)}"
        )
    lid = results.get("lid_accuracy_per_language") or {}
    return [
        {
            "language": language,
            "utterances": row.get("num_utterances"),
            "cer": row.get("cer"),
            "wer": row.get("wer"),
            "lid_accuracy": lid.get(language),
        }
        for language, row in results["per_language"].items()
    ]


def _eval_results(rows: Sequence[Mapping[str, Any]], evaluation_set: EvaluationSet) -> list[EvalResult]:
    """The model-index entries: CER and WER of each language (languages with an undefined rate are left out)."""
    entries = []
    for row in rows:
        for metric in ("cer", "wer"):
            value = _percent(row[metric])
            if value is None:
                continue
            entries.append(
                EvalResult(
                    task_type="automatic-speech-recognition",
                    task_name="Speech Recognition",
                    dataset_type=evaluation_set.dataset_id,
                    dataset_name=f"{evaluation_set.name} ({row['language']})",
                    dataset_config=row["language"],
                    dataset_split=evaluation_set.split,
                    dataset_revision=evaluation_set.revision,
                    metric_type=metric,
                    metric_value=value,
                    metric_name=f"{evaluation_set.split.capitalize()} {metric.upper()} (%)",
                )
            )
    return entries


def render_model_card(
    *,
    repo_id: str,
    stage: Union[int, str, Stage],
    languages: Sequence[str],
    language: Optional[str] = None,
    initialized_from: Optional[HubReference] = None,
    labeled_data: Sequence[Lineage] = (),
    pseudo_label_data: Sequence[Lineage] = (),
    hyperparameters: Optional[Mapping[str, Any]] = None,
    results: Optional[Mapping[str, Any]] = None,
    evaluation_set: Optional[EvaluationSet] = None,
    adapter_of: Optional[HubReference] = None,
    license: str = "apache-2.0",
    template: Union[Path, resources.abc.Traversable] = MODEL_CARD_TEMPLATE,
) -> ModelCard:
    """The model card of one stage's checkpoint (or, with `adapter_of`, of its PEFT adapter).

    Args:
        repo_id: where the checkpoint is published (the card's name and its usage examples).
        stage: the recipe stage that made it (number, slug or name; `recipe_stage`).
        languages: the model's languages (its `config.languages`, the LID classes).
        language: the target language of a per-language stage (2, 3).
        initialized_from: the checkpoint training started from; None: random initialization.
        labeled_data, pseudo_label_data: what it was trained on: `HubReference(..., repo_type="dataset")`
            for Hub data sets (they also go to the card's `datasets:`), or a plain description.
        hyperparameters: training settings shown as a table (nested mappings become dotted names).
        results: a `mlpl.metrics.compute_asr_metrics` result on `evaluation_set`.
        evaluation_set: what `results` were measured on (required with `results`).
        adapter_of: the checkpoint is a PEFT (LoRA) adapter of this base model (docs/design.md §6, "Per-language
            adapters"): the card's `base_model:` names it, `library_name: peft`, and the usage loads base + adapter.
        license: the license of the weights (a Hub license id).
        template: the Jinja2 card template.
    """
    stage = recipe_stage(stage)
    if stage.repo_type != "model":
        raise ValueError(f"stage {stage.number} ({stage.slug}) produces a dataset; use render_dataset_card")
    if stage.per_language and language is None:
        raise ValueError(f"stage {stage.number} ({stage.slug}) is per language: pass language=")
    if not languages:
        raise ValueError("languages is empty; pass the model's config.languages")
    if results is not None and evaluation_set is None:
        raise ValueError("results were given without evaluation_set; say what they were measured on")
    validate_repo_id(repo_id)
    rows = _results_rows(results) if results is not None else []
    datasets = [item.repo_id for item in (*labeled_data, *pseudo_label_data) if isinstance(item, HubReference)]
    model_name = repo_id.split("/")[-1]
    card_data = ModelCardData(
        language=list(languages),
        license=license,
        library_name="peft" if adapter_of is not None else "transformers",
        pipeline_tag="automatic-speech-recognition",
        tags=list(CARD_TAGS) + (["multilingual"] if len(languages) > 1 else []) + (["peft", "lora"] if adapter_of else []),
        datasets=datasets or None,
        base_model=(adapter_of or initialized_from).repo_id if (adapter_of or initialized_from) is not None else None,
        metrics=["cer", "wer"] if rows else None,
        model_name=model_name,
        eval_results=_eval_results(rows, evaluation_set) if rows else None,
    )
    variables = {
        "citation": PAPER_BIBTEX,
        "repo_id": repo_id,
        "model_name": model_name,
        "stage": stage,
        "stages": STAGES,
        "target_language": language,
        "model_languages": list(languages),
        "initialized_from": initialized_from.markdown() if initialized_from else None,
        "labeled_data": [_describe(item) for item in labeled_data],
        "pseudo_label_data": [_describe(item) for item in pseudo_label_data],
        "hyperparameters": [(name, _format_number(value)) for name, value in _flatten(hyperparameters or {})],
        "results": [
            {key: value if key in ("language", "utterances") else _percent_text(value) for key, value in row.items()}
            for row in rows
        ],
        "show_lid": any(row["lid_accuracy"] is not None for row in rows),
        "average_cer": _percent_text(results.get("cer")) if results else None,
        "average_wer": _percent_text(results.get("wer")) if results else None,
        "evaluation_set": evaluation_set,
        "adapter_of": adapter_of.markdown() if adapter_of else None,
        "base_repo_id": adapter_of.repo_id if adapter_of else None,
    }
    return _render(ModelCard, card_data, template, variables)


@dataclass(frozen=True)
class PseudoLabelLanguage:
    """What one language contributes to a pseudo-label set.

    `utterances` / `hours`: kept pseudo-labels; `dropped`: utterances left out, by reason
    (e.g. {"empty pseudo-label": 12, "longer than 630 characters": 3}); `model`: the checkpoint
    that labeled this language (its stage-3 model; pin `revision` to the commit used).
    """

    language: str
    utterances: int
    hours: float
    model: HubReference
    dropped: Mapping[str, int] = field(default_factory=dict)

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())


# What the columns of a pseudo-label shard hold (mlpl.pseudo_label.PSEUDO_LABEL_FEATURES); the card's
# schema table lists the shards' real columns and types, described from here.
PSEUDO_LABEL_COLUMN_DESCRIPTIONS = {
    "id": "utterance name, as in the source corpus",
    "audio": "reference to the source clip: `path` as the pseudo-labeling run read it; `bytes` only when the "
    "source held the clip as bytes",
    "language": "language code the pseudo-label is in (the source's, or the LID head's prediction)",
    "source_language": "language code the source gave the clip",
    "pseudo_label": "the pseudo-label: greedy CTC transcript, case and punctuation as the model wrote them",
    "duration": "length of the clip in seconds",
    "confidence": "mean best-path log-probability per frame (<= 0; closer to 0 is more confident)",
    "predicted_language": "language predicted by the model's LID head (null without one)",
    "predicted_language_probability": "probability of that prediction",
    "model_name": "the model that made the pseudo-label (Hub repo id or local path)",
    "model_revision": "commit (or weights hash) of that model",
}


# The Hub's `size_categories` buckets, one per power of ten of rows from 10^3 to 10^12.
_SIZE_CATEGORIES = ("n<1K", "1K<n<10K", "10K<n<100K", "100K<n<1M", "1M<n<10M", "10M<n<100M", "100M<n<1B",
                    "1B<n<10B", "10B<n<100B", "100B<n<1T", "n>1T")


def _size_category(count: int) -> str:
    """The Hub's `size_categories` bucket of `count` rows (999 -> "n<1K", 1000 -> "1K<n<10K")."""
    for exponent, label in enumerate(_SIZE_CATEGORIES[:-1], start=3):
        if count < 10**exponent:
            return label
    return _SIZE_CATEGORIES[-1]


def render_dataset_card(
    *,
    repo_id: str,
    languages: Sequence[PseudoLabelLanguage],
    schema: Mapping[str, str],
    data_files: Mapping[str, Sequence[str]],
    source_data: Sequence[Lineage],
    source_license: str,
    stage: Union[int, str, Stage] = 4,
    rows_with_audio: Optional[int] = 0,
    drop_reasons: Optional[Mapping[str, int]] = None,
    template: Union[Path, resources.abc.Traversable] = DATASET_CARD_TEMPLATE,
) -> DatasetCard:
    """The dataset card of a pseudo-label set.

    Args:
        repo_id: where the set is published (the card's loading examples).
        languages: one `PseudoLabelLanguage` per language (counts, hours, drops, producing model).
        schema: column name -> Arrow type of the shards (`write_dataset_card` reads it from them).
        data_files: `load_dataset` configs: name -> file patterns of its train split; "default"
            holds all shards (`write_dataset_card` builds it from the folder layout).
        source_data: where the unlabeled audio comes from (Hub data sets or descriptions).
        source_license: license of the source audio, which the set inherits (e.g. "cc0-1.0").
        stage: the recipe stage that made the set (4).
        rows_with_audio: rows that embed their clip's audio bytes (0: transcripts only; None: unknown).
        drop_reasons: dropped utterances of all languages per reason, when the per-language counts are
            not broken down by reason; default: summed from `languages`.
        template: the Jinja2 card template.
    """
    stage = recipe_stage(stage)
    if stage.repo_type != "dataset":
        raise ValueError(f"stage {stage.number} ({stage.slug}) produces a model; use render_model_card")
    if not languages:
        raise ValueError("languages is empty: a pseudo-label set needs at least one language")
    if not source_data:
        raise ValueError("source_data is empty: name where the unlabeled audio comes from (Hub id or description)")
    if "default" not in data_files:
        raise ValueError(f"data_files needs a 'default' config with all shards; got configs {sorted(data_files)}")
    validate_repo_id(repo_id)
    codes = [entry.language for entry in languages]
    if len(set(codes)) != len(codes):
        raise ValueError(f"languages repeats a code: {codes}")
    total_utterances = sum(entry.utterances for entry in languages)
    total_dropped = sum(entry.dropped_total for entry in languages)
    if drop_reasons is None:
        reasons = sorted({reason for entry in languages for reason in entry.dropped})
        drop_reasons = {reason: sum(entry.dropped.get(reason, 0) for entry in languages) for reason in reasons}
    elif sum(drop_reasons.values()) != total_dropped:
        raise ValueError(
            f"drop_reasons count {sum(drop_reasons.values())} dropped utterances ({dict(drop_reasons)}) but the "
            f"languages {total_dropped}; pass the counts of the same run"
        )
    # A language whose every utterance was dropped is in the tables, not in the card's `language:`.
    labeled_codes = [entry.language for entry in languages if entry.utterances > 0] or codes
    configs = [
        {"config_name": name, "data_files": [{"split": "train", "path": list(patterns)}]}
        for name, patterns in sorted(data_files.items(), key=lambda item: (item[0] != "default", item[0]))
    ]
    card_data = DatasetCardData(
        language=labeled_codes,
        license=source_license,
        pretty_name=f"mlpl pseudo-labels ({stage.name}, {', '.join(labeled_codes)})",
        task_categories=["automatic-speech-recognition"],
        size_categories=_size_category(total_utterances),
        source_datasets=[item.repo_id for item in source_data if isinstance(item, HubReference)] or None,
        tags=list(CARD_TAGS),
        configs=configs,
    )
    variables = {
        "citation": PAPER_BIBTEX,
        "repo_id": repo_id,
        "stage": stage,
        "rows": [
            {
                "language": entry.language,
                "utterances": _format_number(entry.utterances),
                "hours": f"{entry.hours:.2f}",
                "dropped": _format_number(entry.dropped_total),
                "reasons": ", ".join(
                    f"{reason}: {_format_number(count)}" for reason, count in sorted(entry.dropped.items())
                )
                or "-",
                "model": entry.model.markdown(),
            }
            for entry in languages
        ],
        "total_utterances": _format_number(total_utterances),
        "plural_utterances": total_utterances != 1,
        "total_hours": f"{sum(entry.hours for entry in languages):.2f}",
        "total_dropped": _format_number(total_dropped),
        "drop_reasons": [(reason, _format_number(count)) for reason, count in sorted(drop_reasons.items()) if count],
        "schema": [
            (name, dtype, PSEUDO_LABEL_COLUMN_DESCRIPTIONS.get(name, "-")) for name, dtype in schema.items()
        ],
        "language_configs": sorted(name for name in data_files if name != "default"),
        "source_data": [_describe(item) for item in source_data],
        "source_license": source_license,
        "rows_with_audio": _format_number(rows_with_audio) if rows_with_audio else rows_with_audio,
    }
    return _render(DatasetCard, card_data, template, variables)


# --- Writing cards into folders -----------------------------------------------------------------


def write_model_card(
    folder: Union[str, Path], *, languages: Optional[Sequence[str]] = None, **card_arguments
) -> Path:
    """Render the model card (`render_model_card` arguments) into `folder/README.md`; returns its path.

    `languages` defaults to the `languages` of the folder's config.json (an adapter folder: its local base model's).
    """
    folder = Path(folder)
    if languages is None:
        config_folder = folder
        if (folder / "adapter_config.json").is_file() and not (folder / "config.json").is_file():
            base = read_json(folder / "adapter_config.json").get("base_model_name_or_path")
            config_folder = Path(base) if base and Path(base).is_dir() else folder
        config = read_json(config_folder / "config.json")
        languages = config.get("languages")
        if not languages:
            raise ValueError(f"{folder / 'config.json'} has no `languages`; pass languages= to write_model_card")
    card = render_model_card(languages=languages, **card_arguments)
    readme = folder / "README.md"
    write_text_atomically(readme, str(card))
    logger.info("wrote the model card %s", readme)
    return readme




def write_dataset_card(
    folder: Union[str, Path],
    *,
    repo_id: str,
    source_data: Sequence[Lineage],
    source_license: str,
    models: Optional[Mapping[str, HubReference]] = None,
    dropped: Optional[Mapping[str, Mapping[str, int]]] = None,
    stage: Union[int, str, Stage] = 4,
) -> Path:
    """Render the card of the pseudo-label set in `folder` into `folder/README.md`; returns its path.

    The kept counts, hours, schema and whether rows embed audio are read from the shards themselves
    (so the card cannot disagree with the data). `models` (language -> producing checkpoint) and
    `dropped` (language -> reason -> count) default to the `summary.json` that
    `mlpl.pseudo_label.generate_pseudo_labels` writes beside the shards. A language whose every
    utterance was dropped is listed with 0 kept.
    """
    folder = Path(folder)
    schema, kept = summarize_pseudo_label_shards(folder)
    summary = read_run_summary(folder, list(kept), read_models=models is None) if models is None or dropped is None else None
    drop_reasons = None
    if models is None:
        models = summary.models if summary is not None else {}
    if dropped is None:
        dropped = summary.dropped if summary is not None else {}
        drop_reasons = summary.drop_reasons if summary is not None else None
    codes = sorted({*kept, *dropped})
    unlabeled = [language for language in codes if language not in models]
    if unlabeled:
        raise ValueError(
            f"the set holds languages {unlabeled} with no producing model; pass models={{language: HubReference}}"
        )
    languages = [
        PseudoLabelLanguage(language, *kept.get(language, (0, 0.0)), models[language], dict(dropped.get(language, {})))
        for language in codes
    ]
    shards = pseudo_label_shards(folder)
    card = render_dataset_card(
        repo_id=repo_id,
        languages=languages,
        schema=schema,
        data_files=data_files_by_config(shards, list(kept)),
        source_data=source_data,
        source_license=source_license,
        stage=stage,
        rows_with_audio=rows_with_audio_bytes(folder, shards),
        drop_reasons=drop_reasons,
    )
    readme = folder / "README.md"
    write_text_atomically(readme, str(card))
    logger.info("wrote the dataset card %s", readme)
    return readme



__all__ = [
    "CARD_TAGS",
    "EvaluationSet",
    "PAPER_BIBTEX",
    "PSEUDO_LABEL_COLUMN_DESCRIPTIONS",
    "PseudoLabelLanguage",
    "render_dataset_card",
    "render_model_card",
    "write_dataset_card",
    "write_model_card",
]
