"""Publishing the recipe's checkpoints and pseudo-label sets to the Hugging Face Hub, with their cards.

docs/design.md §6: "Every stage's checkpoint and every PL set is published to the Hub." This module does the
three things that takes, each safe to re-run:

1. Name the repo: `repo_id_for(hub_config, stage, language)` fills `HubConfig.repo_id_template`
   ("{namespace}/{prefix}-{stage}[-{variant}][-{language}]" -> "my-org/mlpl-stage3-slimipl-el").
2. Write the card: `write_model_card(folder, ...)` / `write_dataset_card(folder, ...)` render the
   Jinja2 templates in `hub_cards/` through huggingface_hub's `ModelCard.from_template` /
   `DatasetCard.from_template` and replace README.md atomically. Model cards carry the stage, the
   lineage (initial checkpoint, labeled data, pseudo-label sets), the hyper-parameters, per-language
   CER/WER as a `model-index` and a table, usage and the citation; pseudo-label cards carry per-language
   counts, hours, dropped utterances and why, the producing models, the schema and how to load them.
3. Upload: `publish_folder(folder, repo_id, repo_type, hub_config)` checks the folder is complete
   (`hub_ready_folder_check`), creates the repo (`exist_ok=True`), uploads with `HfApi.upload_folder`
   and returns the commit URL. Transient failures (HTTP 5xx / 429, dropped connections) are retried
   with exponential backoff; 401 / 403 / 404 stop at once with what to do. Nothing on disk is changed,
   so a failed upload is re-run as is (`scripts/publish.py`); files already on the Hub with the same
   content are skipped, so re-running a finished upload makes no new commit.

Why `upload_folder` and not `upload_large_folder`: in huggingface_hub 2.x with `hf_xet` (one of its
dependencies; 2.4 here), `upload_folder` already streams a large folder in several commits and resumes
an interrupted upload when the same call is re-run (files already on the Hub are skipped by content).
`upload_large_folder` would add little, but it writes its resume state into
`<folder>/.cache/huggingface/` (the local folder would no longer be left untouched) and cannot set the
commit message. An older huggingface_hub (before the streamed pipeline) uploads the folder in one commit.

The token: `HubConfig.token`, else the `HF_TOKEN` environment variable, else the `hf auth login`
token file. It is held in a `HubToken`, whose repr and str are masked and which refuses to be
pickled; `HubConfig.to_dict()` (what to save beside a checkpoint) leaves it out; `publish_folder`
refuses to upload a folder in which a text file contains it; it is only sent in the Authorization
header.
"""

from __future__ import annotations

import hmac
import importlib
import json
import logging
import re
import shlex
import string
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, Optional, TypeVar, Union

import huggingface_hub
from huggingface_hub import constants as hub_constants
from huggingface_hub import DatasetCard, DatasetCardData, EvalResult, HfApi, ModelCard, ModelCardData
from huggingface_hub.utils import HFValidationError, validate_repo_id

from .config import MASKED
from .files import write_text_atomically

logger = logging.getLogger("mlpl.hub")

# Templates: the repository's hub_cards/ folder (next to training/).
CARD_TEMPLATE_FOLDER = Path(__file__).resolve().parent.parent / "hub_cards"
MODEL_CARD_TEMPLATE = CARD_TEMPLATE_FOLDER / "model_card.md"
DATASET_CARD_TEMPLATE = CARD_TEMPLATE_FOLDER / "dataset_card.md"

HUB_URL = "https://huggingface.co"  # links in the cards point at the public Hub
CARD_TAGS = ("automatic-speech-recognition", "ctc", "pseudo-labeling", "mlpl")
PAPER_BIBTEX = """@inproceedings{lugosch2022pseudo,
  title     = {Pseudo-Labeling for Massively Multilingual Speech Recognition},
  author    = {Lugosch, Loren and Likhomanenko, Tatiana and Synnaeve, Gabriel and Collobert, Ronan},
  booktitle = {ICASSP 2022 - IEEE International Conference on Acoustics, Speech and Signal Processing},
  year      = {2022},
  eprint    = {2111.00161},
  archivePrefix = {arXiv}
}"""
DEFAULT_REPO_ID_TEMPLATE = "{namespace}/{prefix}-{stage}[-{variant}][-{language}]"
REPO_ID_FIELDS = ("namespace", "prefix", "stage", "variant", "language")
# One field value of a repo id: Hub names allow letters, digits, "-", "_" and "." (validate_repo_id).
_REPO_NAME_PART = re.compile(r"[A-Za-z0-9._-]+")
# Text files scanned for the token before an upload (weights and parquet shards are not text).
_TEXT_SUFFIXES = {".json", ".md", ".txt", ".yaml", ".yml", ".py", ".cfg", ".toml", ".csv", ".tsv", ".log"}
_TEXT_SCAN_LIMIT_BYTES = 50 * 1024 * 1024
# Retried statuses: request timeout, rate limit, server errors (5xx are matched by range).
_TRANSIENT_STATUSES = {408, 429}
_MAX_RETRY_WAIT_SECONDS = 60.0

RepoType = Literal["model", "dataset"]
_Result = TypeVar("_Result")


# --- The recipe's stages (docs/design.md §6) ---------------------------------------------------------------


@dataclass(frozen=True)
class RecipeStage:
    """One stage of the recipe: its number, its name in repo ids, and what it produces."""

    number: int
    slug: str
    title: str
    description: str
    per_language: bool  # one checkpoint per language (stages 2 and 3)
    repo_type: RepoType  # "model" for checkpoints, "dataset" for the pseudo-label sets

    @property
    def name(self) -> str:
        """The stage as it appears in repo ids: `stage3-slimipl`."""
        return f"stage{self.number}-{self.slug}"


RECIPE_STAGES = (
    RecipeStage(
        1, "supervised", "Supervised multilingual model",
        "a joint CTC + language-ID model trained on the labeled data of all languages.",
        per_language=False, repo_type="model",
    ),
    RecipeStage(
        2, "finetune", "Per-language fine-tune",
        "the stage-1 model fine-tuned on one language's labeled data (10k updates), the starting point "
        "of that language's slimIPL.",
        per_language=True, repo_type="model",
    ),
    RecipeStage(
        3, "slimipl", "Per-language slimIPL",
        "the stage-2 model trained with slimIPL on that language's labeled data and unlabeled audio "
        "(cache of pseudo-labeled batches, 10 s cropping warm-up).",
        per_language=True, repo_type="model",
    ),
    RecipeStage(
        4, "pseudo-labels", "Pseudo-labels",
        "final pseudo-labels of every unlabeled utterance, each language labeled by its stage-3 model "
        "(greedy CTC, no LM); empty labels and labels longer than 630 characters are dropped.",
        per_language=False, repo_type="dataset",
    ),
    RecipeStage(
        5, "pl-training", "Training on labeled data and all pseudo-labels",
        "a model trained on the labeled data plus all pseudo-labels, either continuing stage 1 at a "
        "lower learning rate or from scratch (lr 0.01, SpecAugment delayed).",
        per_language=False, repo_type="model",
    ),
    RecipeStage(
        6, "pl-finetune", "Fine-tune on labeled data",
        "the stage-5 model fine-tuned on the labeled data only.",
        per_language=False, repo_type="model",
    ),
)


def recipe_stage(stage: Union[int, str, RecipeStage]) -> RecipeStage:
    """The recipe stage named by its number (3, "3"), slug ("slimipl") or repo-id name ("stage3-slimipl")."""
    if isinstance(stage, RecipeStage):
        return stage
    key = str(stage).strip().lower()
    for candidate in RECIPE_STAGES:
        if key in (str(candidate.number), candidate.slug, candidate.name, f"stage{candidate.number}"):
            return candidate
    choices = ", ".join(f"{candidate.number}/{candidate.slug}" for candidate in RECIPE_STAGES)
    raise ValueError(f"stage={stage!r} is not a stage of the recipe (docs/design.md §6); use one of {choices}")


# --- Configuration and token --------------------------------------------------------------------


class HubToken:
    """A Hub access token that does not show itself.

    repr() and str() print `***`, so a config printed or logged (even inside `dataclasses.asdict`)
    reveals nothing; pickling (torch.save of a config, yaml.dump of an object) is refused, since it
    would write the token to disk. `reveal()` is called only where the token is handed to `HfApi`.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str):
        if not isinstance(value, str) or not value.strip():
            raise ValueError("a Hub token must be a non-empty string (see https://huggingface.co/settings/tokens)")
        object.__setattr__(self, "_value", value.strip())

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "HubToken('***')"

    def __str__(self) -> str:
        return "***"

    def __setattr__(self, name, value):
        raise AttributeError("HubToken is immutable")

    def __eq__(self, other) -> bool:
        return isinstance(other, HubToken) and hmac.compare_digest(self._value, other._value)

    def __hash__(self) -> int:
        return hash(self._value)

    def __copy__(self) -> "HubToken":
        return self

    def __deepcopy__(self, memo) -> "HubToken":
        return self

    def __reduce__(self):
        raise TypeError(
            "refusing to serialize a Hub token (it would be written to disk): save HubConfig.to_dict(), "
            "which leaves the token out, and pass the token through HF_TOKEN or `hf auth login`"
        )


@dataclass(frozen=True)
class HubConfig:
    """Where and how the recipe publishes (one `hub:` section of an experiment YAML).

    Args:
        push: publish each stage's output when it finishes (the recipe reads it; `publish_folder`
            itself always uploads when called).
        namespace: user or organization owning the repos (`{namespace}` in the template).
        prefix: first part of every repo name (`{prefix}`).
        private: create new repos private (an existing repo keeps its visibility).
        token: Hub access token; None: the `HF_TOKEN` environment variable, then the token saved by
            `hf auth login`. Held in a masked `HubToken`; never saved by `to_dict()`.
        revision: branch to commit to; None: the repo's main branch. Created from main if missing.
        max_retries: retries of each Hub call after a transient error (HTTP 5xx/429, dropped
            connection); 0 disables them. huggingface_hub also retries the upload requests itself.
        retry_wait_seconds: wait before the first retry; doubled after each (capped at 60 s).
        repo_id_template: `str.format` fields {namespace}, {prefix}, {stage}, {variant}, {language};
            a part in square brackets is left out when a field in it is None.
        endpoint: Hub URL; None: `HF_ENDPOINT` or https://huggingface.co.
    """

    push: bool = False
    namespace: Optional[str] = None
    prefix: str = "mlpl"
    private: bool = True
    token: Union[HubToken, str, None] = None
    revision: Optional[str] = None
    max_retries: int = 3
    retry_wait_seconds: float = 2.0
    repo_id_template: str = DEFAULT_REPO_ID_TEMPLATE
    endpoint: Optional[str] = None

    def __post_init__(self):
        if isinstance(self.token, str):
            # MASKED: what a saved config holds instead of the token (training.config.mask_secrets).
            given = self.token.strip() and self.token != MASKED
            object.__setattr__(self, "token", HubToken(self.token) if given else None)
        elif self.token is not None and not isinstance(self.token, HubToken):
            raise TypeError(f"HubConfig.token must be a string or None, got {type(self.token).__name__}")
        if isinstance(self.max_retries, bool) or not isinstance(self.max_retries, int) or self.max_retries < 0:
            raise ValueError(f"HubConfig.max_retries={self.max_retries!r} must be an integer >= 0 (default 3)")
        if not float(self.retry_wait_seconds) >= 0:
            raise ValueError(f"HubConfig.retry_wait_seconds={self.retry_wait_seconds!r} must be >= 0 (default 2.0)")
        _check_repo_id_template(self.repo_id_template)
        for name in ("namespace", "prefix"):
            value = getattr(self, name)
            if value is not None and not _REPO_NAME_PART.fullmatch(str(value)):
                raise ValueError(
                    f"HubConfig.{name}={value!r} may only hold letters, digits, '-', '_' and '.' (it becomes part "
                    "of a Hub repo id)"
                )

    def to_dict(self) -> dict[str, Any]:
        """The settings to save beside a checkpoint: every field except the token."""
        return {item.name: getattr(self, item.name) for item in fields(self) if item.name != "token"}


def _check_repo_id_template(template: str) -> None:
    """A ValueError naming the problem when `template` cannot make repo ids."""
    plain = template.replace("[", "").replace("]", "")
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(plain) if name is not None}
    except ValueError as error:
        raise ValueError(f"HubConfig.repo_id_template={template!r} is not a valid format string: {error}") from None
    unknown = sorted(names - set(REPO_ID_FIELDS))
    if unknown:
        raise ValueError(
            f"HubConfig.repo_id_template={template!r} uses unknown fields {unknown}; "
            f"the fields are {list(REPO_ID_FIELDS)}"
        )
    if "stage" not in names:
        raise ValueError(
            f"HubConfig.repo_id_template={template!r} has no {{stage}} field, so all stages would share one repo"
        )
    if template.count("[") != template.count("]") or re.search(r"\[[^\]]*\[", template):
        raise ValueError(f"HubConfig.repo_id_template={template!r} has unbalanced or nested square brackets")


def repo_id_for(
    hub_config: HubConfig,
    stage: Union[int, str, RecipeStage],
    language: Optional[str] = None,
    variant: Optional[str] = None,
) -> str:
    """The repo id of one stage's output: `hub_config.repo_id_template` filled in and validated.

    `stage` is a recipe stage (number, slug or name; see `recipe_stage`), `language` the language of a
    per-language stage (required for stages 2 and 3), `variant` an optional distinction between runs
    of one stage (e.g. "large"). Raises ValueError naming the bad value and what to change.
    """
    stage = recipe_stage(stage)
    if stage.per_language and language is None:
        raise ValueError(f"stage {stage.number} ({stage.slug}) has one checkpoint per language: pass language=")
    values = {
        "namespace": hub_config.namespace,
        "prefix": hub_config.prefix,
        "stage": stage.name,
        "variant": variant,
        "language": language,
    }
    for name in ("variant", "language"):
        value = values[name]
        if value is not None and not _REPO_NAME_PART.fullmatch(str(value)):
            raise ValueError(
                f"{name}={value!r} cannot be part of a Hub repo id: use letters, digits, '-', '_' and '.' only"
            )
    template = hub_config.repo_id_template
    for name in ("language", "variant"):
        if values[name] is not None and "{" + name + "}" not in template:
            raise ValueError(
                f"{name}={values[name]!r} was given but HubConfig.repo_id_template={template!r} has no {{{name}}} "
                f"field, so the repos of different {name}s would collide; add [-{{{name}}}] to the template"
            )

    def fill(part: str) -> str:
        needed = [name for _, name, _, _ in string.Formatter().parse(part) if name]
        if any(values[name] is None for name in needed):
            return ""
        return part.format(**values)

    # Optional parts first ("[-{language}]"), then the rest, which must have all its fields.
    filled = re.sub(r"\[([^\]]*)\]", lambda match: fill(match.group(1)), template)
    missing = [name for _, name, _, _ in string.Formatter().parse(filled) if name and values[name] is None]
    if missing:
        hint = " (your user or organization name; --namespace of scripts/publish.py)" if "namespace" in missing else ""
        raise ValueError(
            f"HubConfig.repo_id_template={template!r} needs {missing}, which are not set; set HubConfig."
            f"{missing[0]}{hint} or put that part of the template in square brackets"
        )
    repo_id = filled.format(**values)
    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise ValueError(
            f"repo id {repo_id!r} (from HubConfig.repo_id_template={template!r}, prefix={hub_config.prefix!r}, "
            f"stage={stage.name!r}, variant={variant!r}, language={language!r}) is not a valid Hub repo id: {error}"
        ) from None
    return repo_id


# --- References in the cards --------------------------------------------------------------------


@dataclass(frozen=True)
class HubReference:
    """A checkpoint or data set on the Hub, as the lineage of a card names it."""

    repo_id: str
    revision: Optional[str] = None
    repo_type: RepoType = "model"

    def __post_init__(self):
        try:
            validate_repo_id(self.repo_id)
        except HFValidationError as error:
            raise ValueError(f"HubReference.repo_id={self.repo_id!r} is not a Hub repo id: {error}") from None
        if self.repo_type not in ("model", "dataset"):
            raise ValueError(f"HubReference.repo_type={self.repo_type!r} must be 'model' or 'dataset'")

    @property
    def url(self) -> str:
        base = f"{HUB_URL}/datasets/{self.repo_id}" if self.repo_type == "dataset" else f"{HUB_URL}/{self.repo_id}"
        return f"{base}/tree/{self.revision}" if self.revision else base

    def markdown(self) -> str:
        revision = f" (revision `{self.revision}`)" if self.revision else ""
        return f"[`{self.repo_id}`]({self.url}){revision}"


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


def _render(card_class, card_data, template: Path, variables: Mapping[str, Any]):
    """`card_class.from_template` after checking that every variable the template uses is given.

    Jinja2 renders a missing variable as an empty string; a card missing its lineage silently would
    be worse than an error.
    """
    import jinja2
    import jinja2.meta

    source = Path(template).read_text(encoding="utf-8")
    used = jinja2.meta.find_undeclared_variables(jinja2.Environment().parse(source))
    missing = sorted(used - set(variables) - set(card_data.to_dict()) - {"card_data"})
    if missing:
        raise ValueError(f"card template {template} uses {missing}, which the renderer does not provide")
    return card_class.from_template(card_data, template_path=str(template), **variables)


def _results_rows(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Per-language rates (fractions) from a `training.metrics.compute_asr_metrics` result."""
    if "per_language" not in results:
        raise ValueError(
            "results must be a training.metrics.compute_asr_metrics(...) result (with a 'per_language' table); "
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
    stage: Union[int, str, RecipeStage],
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
    template: Path = MODEL_CARD_TEMPLATE,
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
        results: a `training.metrics.compute_asr_metrics` result on `evaluation_set`.
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
        "stages": RECIPE_STAGES,
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


# What the columns of a pseudo-label shard hold (training.pseudo_label.PSEUDO_LABEL_FEATURES); the card's
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
    stage: Union[int, str, RecipeStage] = 4,
    rows_with_audio: Optional[int] = 0,
    drop_reasons: Optional[Mapping[str, int]] = None,
    template: Path = DATASET_CARD_TEMPLATE,
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
            base = _read_json(folder / "adapter_config.json").get("base_model_name_or_path")
            config_folder = Path(base) if base and Path(base).is_dir() else folder
        config = _read_json(config_folder / "config.json")
        languages = config.get("languages")
        if not languages:
            raise ValueError(f"{folder / 'config.json'} has no `languages`; pass languages= to write_model_card")
    card = render_model_card(languages=languages, **card_arguments)
    readme = folder / "README.md"
    write_text_atomically(readme, str(card))
    logger.info("wrote the model card %s", readme)
    return readme


def pseudo_label_shards(folder: Union[str, Path]) -> list[Path]:
    """The parquet shards of a pseudo-label folder, sorted, relative to it."""
    folder = Path(folder)
    return sorted(path.relative_to(folder) for path in folder.rglob("*.parquet") if not _is_hidden(path, folder))


def _is_hidden(path: Path, folder: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(folder).parts)


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


def _rows_with_audio_bytes(folder: Path, shards: Sequence[Path]) -> Optional[int]:
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


def _data_files_by_config(shards: Sequence[Path], languages: Sequence[str]) -> dict[str, list[str]]:
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
class _RunSummary:
    """What the `summary.json` of `training.pseudo_label` says beyond the shards."""

    models: dict[str, HubReference]
    dropped: dict[str, dict[str, int]]
    drop_reasons: Optional[dict[str, int]]


def _read_run_summary(folder: Path, languages: Sequence[str], read_models: bool = True) -> Optional[_RunSummary]:
    """The producing model and the drops of the run that wrote `folder` (None without summary.json).

    The summary counts drop reasons over all the run's languages, so they are given per language only
    when the run had one language (stage 4 runs once per language). `read_models=False`: the caller names
    the producing models itself (the summary's may be a local folder, e.g. the recipe's stage 3 model).
    """
    path = folder / "summary.json"
    if not path.is_file():
        return None
    summary = _read_json(path)
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
        return _RunSummary(models, {next(iter(per_language)): reasons}, None)
    dropped = {
        language: {REASON_NOT_PER_LANGUAGE: int(values["dropped"])}
        for language, values in per_language.items()
        if values.get("dropped")
    }
    return _RunSummary(models, dropped, reasons)


def write_dataset_card(
    folder: Union[str, Path],
    *,
    repo_id: str,
    source_data: Sequence[Lineage],
    source_license: str,
    models: Optional[Mapping[str, HubReference]] = None,
    dropped: Optional[Mapping[str, Mapping[str, int]]] = None,
    stage: Union[int, str, RecipeStage] = 4,
) -> Path:
    """Render the card of the pseudo-label set in `folder` into `folder/README.md`; returns its path.

    The kept counts, hours, schema and whether rows embed audio are read from the shards themselves
    (so the card cannot disagree with the data). `models` (language -> producing checkpoint) and
    `dropped` (language -> reason -> count) default to the `summary.json` that
    `training.pseudo_label.generate_pseudo_labels` writes beside the shards. A language whose every
    utterance was dropped is listed with 0 kept.
    """
    folder = Path(folder)
    schema, kept = summarize_pseudo_label_shards(folder)
    summary = _read_run_summary(folder, list(kept), read_models=models is None) if models is None or dropped is None else None
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
        data_files=_data_files_by_config(shards, list(kept)),
        source_data=source_data,
        source_license=source_license,
        stage=stage,
        rows_with_audio=_rows_with_audio_bytes(folder, shards),
        drop_reasons=drop_reasons,
    )
    readme = folder / "README.md"
    write_text_atomically(readme, str(card))
    logger.info("wrote the dataset card %s", readme)
    return readme


# --- Checking a folder before upload ------------------------------------------------------------


class HubFolderError(ValueError):
    """A folder is not ready to be published; the message lists everything missing."""


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise HubFolderError(f"{path} is missing") from None
    except json.JSONDecodeError as error:
        raise HubFolderError(f"{path} is not valid JSON: {error}") from None


def _auto_map_modules(auto_map: Mapping[str, Any]) -> set[str]:
    """Module names of an `auto_map` ("modeling_mlpl.MlplForCTC" -> "modeling_mlpl")."""
    modules = set()
    for value in auto_map.values():
        for reference in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(reference, str) and "." in reference:
                modules.add(reference.split("--")[-1].rsplit(".", 1)[0])
    return modules


def _model_folder_problems(folder: Path) -> list[str]:
    problems = []
    names = {path.name for path in folder.iterdir()}
    modules: set[str] = set()
    config_path = folder / "config.json"
    if "config.json" not in names:
        problems.append("config.json (save the model with save_pretrained)")
    else:
        try:
            config = _read_json(config_path)
        except HubFolderError as error:
            problems.append(str(error))
            config = {}
        auto_map = config.get("auto_map") or {}
        for auto_class in ("AutoConfig", "AutoModelForCTC"):
            if auto_class not in auto_map and config:
                problems.append(
                    f"config.json auto_map entry {auto_class} (import modeling_mlpl before save_pretrained: it calls "
                    "register_for_auto_class, which makes the folder loadable with trust_remote_code=True)"
                )
        modules |= _auto_map_modules(auto_map)
    if not ({"processor_config.json", "preprocessor_config.json"} & names):
        problems.append("processor_config.json or preprocessor_config.json (save the processor with save_pretrained)")
    for name in ("processor_config.json", "preprocessor_config.json", "tokenizer_config.json"):
        if name in names:
            try:
                settings = _read_json(folder / name)
            except HubFolderError as error:
                problems.append(str(error))
                continue
            modules |= _auto_map_modules(settings.get("auto_map") or {})
            modules |= _auto_map_modules((settings.get("feature_extractor") or {}).get("auto_map") or {})
    for name in ("vocab.json", "tokenizer_config.json"):
        if name not in names:
            problems.append(f"{name} (the character tokenizer; save the processor with save_pretrained)")
    problems.extend(_missing_remote_code(folder, modules))
    problems.extend(_missing_weights(folder, names))
    return problems


def _adapter_folder_problems(folder: Path) -> list[str]:
    """A PEFT adapter folder (docs/design.md §6, "Per-language adapters"): adapter_config.json naming a base model by
    Hub id, the adapter weights as safetensors, the processor files, and a card that says what it adapts."""
    problems = []
    names = {path.name for path in folder.iterdir()}
    try:
        config = _read_json(folder / "adapter_config.json")
    except HubFolderError as error:
        return [str(error)]
    if not config.get("peft_type"):
        problems.append("adapter_config.json peft_type (save the adapter with PeftModel.save_pretrained)")
    base = config.get("base_model_name_or_path")
    if not base:
        problems.append("adapter_config.json base_model_name_or_path (the base model's Hub id)")
    else:
        try:
            validate_repo_id(base)
            local = Path(base).is_dir()
        except HFValidationError:
            local = True
        if local:
            problems.append(
                f"adapter_config.json base_model_name_or_path as a Hub id, not the local path {base!r} "
                "(publish the base model, then training.adapters.set_adapter_base_model(folder, repo_id))"
            )
    if "adapter_model.safetensors" not in names:
        problems.append("adapter weights adapter_model.safetensors (PeftModel.save_pretrained writes them)")
    if not ({"processor_config.json", "preprocessor_config.json"} & names) or "vocab.json" not in names:
        problems.append("the processor files: processor_config.json / preprocessor_config.json and vocab.json (processor.save_pretrained)")
    if "README.md" in names:
        try:
            metadata = ModelCard((folder / "README.md").read_text(encoding="utf-8")).data.to_dict()
        except Exception:  # reported by hub_ready_folder_check
            metadata = {}
        if metadata and (metadata.get("library_name") != "peft" or not metadata.get("base_model")):
            problems.append("a README.md whose metadata has library_name: peft and base_model: (write_model_card(..., adapter_of=))")
    return problems


def _missing_remote_code(folder: Path, modules: set[str]) -> list[str]:
    """The .py files the auto_maps name, and the files they import relatively, that are absent."""
    missing, seen, pending = [], set(), sorted(modules)
    while pending:
        module = pending.pop()
        if module in seen:
            continue
        seen.add(module)
        path = folder / f"{module}.py"
        if not path.is_file():
            missing.append(f"{module}.py (remote code named by auto_map or imported by it)")
            continue
        for imported in re.findall(r"^\s*from\s+\.(\w+)\s+import", path.read_text(encoding="utf-8"), re.MULTILINE):
            pending.append(imported)
    return sorted(missing)


def _missing_weights(folder: Path, names: set[str]) -> list[str]:
    index_name = "model.safetensors.index.json"
    if index_name in names:
        try:
            index = _read_json(folder / index_name)
        except HubFolderError as error:
            return [str(error)]
        shards = sorted(set((index.get("weight_map") or {}).values()))
        if not shards:
            return [f"{index_name} lists no weight shard"]
        return [f"weight shard {shard} listed in {index_name}" for shard in shards if shard not in names]
    if not any(name.endswith(".safetensors") for name in names):
        return ["model weights as .safetensors (save_pretrained writes model.safetensors)"]
    return []


def _dataset_folder_problems(folder: Path) -> list[str]:
    import pyarrow.parquet

    shards = pseudo_label_shards(folder)
    if not shards:
        return ["parquet shards (*.parquet) of the pseudo-labels"]
    problems = []
    for shard in shards:
        try:
            pyarrow.parquet.read_schema(folder / shard)
        except Exception as error:  # pyarrow raises ArrowInvalid, OSError... for a corrupt file
            problems.append(f"a readable {shard} ({type(error).__name__}: {error})")
    return problems


def hub_ready_folder_check(folder: Union[str, Path], kind: RepoType) -> None:
    """Raise `HubFolderError` listing everything `folder` lacks to be published as `kind`.

    A model folder needs config.json with an auto_map (AutoConfig, AutoModelForCTC), the remote-code
    .py files it names, .safetensors weights, the processor and tokenizer files and README.md; an adapter
    folder (adapter_config.json) its base model's Hub id, adapter_model.safetensors, the processor files
    and a README.md with `library_name: peft` and `base_model:`; a
    pseudo-label folder ("dataset") needs its parquet shards (readable) and README.md. A README.md
    must have a parseable YAML header.
    """
    folder = Path(folder)
    if kind not in ("model", "dataset"):
        raise ValueError(f"kind={kind!r} must be 'model' (a checkpoint) or 'dataset' (a pseudo-label set)")
    if not folder.is_dir():
        raise HubFolderError(f"{folder} is not a folder; pass the folder written by save_pretrained / stage 4")
    if kind == "dataset":
        problems = _dataset_folder_problems(folder)
    else:
        problems = _adapter_folder_problems(folder) if (folder / "adapter_config.json").is_file() else _model_folder_problems(folder)
    readme = folder / "README.md"
    writer = "write_model_card" if kind == "model" else "write_dataset_card"
    if not readme.is_file():
        problems.append(f"README.md (the card; write it with training.hub.{writer})")
    else:
        card_class = ModelCard if kind == "model" else DatasetCard
        try:
            card_class(readme.read_text(encoding="utf-8"))
        except Exception as error:  # huggingface_hub raises ValueError for a malformed YAML header
            problems.append(f"a README.md with a valid YAML header ({error})")
    if problems:
        raise HubFolderError(
            f"{folder} is not ready to publish as a {kind} repo; missing:\n  - " + "\n  - ".join(problems)
        )


# --- Publishing ---------------------------------------------------------------------------------


class HubPublishError(RuntimeError):
    """Publishing failed; the message names the repo, the reason and what to do."""


def _resolve_token(hub_config: HubConfig) -> str:
    """HubConfig.token, else HF_TOKEN, else the `hf auth login` file; a HubPublishError if none."""
    if hub_config.token is not None:
        return hub_config.token.reveal()
    token = huggingface_hub.get_token()
    if not token:
        raise HubPublishError(
            "no Hugging Face token: set the HF_TOKEN environment variable or run `hf auth login` (a token with "
            "write access, https://huggingface.co/settings/tokens); HubConfig.token also works but keep it out "
            "of files"
        )
    return token


def _refuse_token_in_folder(folder: Path, token: str) -> None:
    """A HubPublishError if a text file of `folder` contains the token (it would be published)."""
    needle = token.encode()
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or path.suffix.lower() not in _TEXT_SUFFIXES:
            continue
        if path.stat().st_size > _TEXT_SCAN_LIMIT_BYTES:
            continue
        if needle in path.read_bytes():
            raise HubPublishError(
                f"{path} contains the Hub token; it would be published with the folder. Remove it (pass the token "
                "through HF_TOKEN or `hf auth login`, never in a file) and re-run"
            )


def _transport_errors() -> tuple[type[BaseException], ...]:
    """Connection-level exceptions of whichever HTTP client this huggingface_hub version uses
    (httpx2 in 2.x, httpx in 1.x, requests before)."""
    errors: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for module_name, names in (
        ("httpx2", ("TransportError",)),
        ("httpx", ("TransportError",)),
        ("requests", ("ConnectionError", "Timeout")),
    ):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        errors.extend(getattr(module, name) for name in names if hasattr(module, name))
    return tuple(errors)


def _status_code(error: BaseException) -> Optional[int]:
    response = getattr(error, "response", None)
    return getattr(response, "status_code", None)


def _is_transient(error: BaseException) -> bool:
    status = _status_code(error)
    if status is not None:
        return status in _TRANSIENT_STATUSES or status >= 500
    return isinstance(error, _transport_errors())


def _permanent_error_advice(status: Optional[int], repo_id: str, repo_type: str) -> Optional[str]:
    namespace = repo_id.split("/")[0] if "/" in repo_id else "your user namespace"
    if status == 401:
        return (
            "the Hub rejected the token (HTTP 401): it is invalid or expired. Create a token with write access at "
            "https://huggingface.co/settings/tokens, then set HF_TOKEN or run `hf auth login`"
        )
    if status == 403:
        return (
            f"the token may not write to {repo_type} repos of {namespace!r} (HTTP 403). Use a write token (a "
            f"fine-grained token needs write access to {namespace!r}), ask an admin of {namespace!r} for write "
            "access, or publish under your own namespace (HubConfig.namespace)"
        )
    if status == 404:
        return (
            f"the {repo_type} repo {repo_id!r} or its branch was not found (HTTP 404). Check the repo id and repo "
            "type; a private repo of another account also answers 404 to a token that cannot see it"
        )
    return None


def _describe_error(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}".splitlines()[0]


def _publish_error(
    error: Exception, action: str, repo_id: str, repo_type: str, attempts: int, rerun: str
) -> HubPublishError:
    """The HubPublishError for a failed Hub call: what failed, why, what to do, how to re-run."""
    where = f"{action} for {repo_type} repo {repo_id!r}"
    reason = _describe_error(error)
    advice = _permanent_error_advice(_status_code(error), repo_id, repo_type)
    if advice is not None:
        message = f"{where} failed: {advice}"
    elif _is_transient(error):
        message = f"{where} failed after {attempts} attempts ({reason}); the Hub or the network may be down"
    else:
        message = f"{where} failed ({reason})"
    return HubPublishError(f"{message}. Nothing local was changed; re-run: {rerun}")


def _call_with_retries(
    action: str, call: Callable[[], _Result], hub_config: HubConfig, repo_id: str, repo_type: str, rerun: str
) -> _Result:
    """`call()`, retried after transient errors with exponential backoff; any other error, or a
    transient one after `hub_config.max_retries` retries, becomes a HubPublishError."""
    attempts = hub_config.max_retries + 1
    wait = float(hub_config.retry_wait_seconds)
    attempt = 1
    while True:
        try:
            return call()
        except Exception as error:
            if not (_is_transient(error) and attempt < attempts):
                raise _publish_error(error, action, repo_id, repo_type, attempts, rerun) from error
            logger.warning(
                "%s for %s repo %r failed (attempt %d of %d: %s); retrying in %.1f s",
                action, repo_type, repo_id, attempt, attempts, _describe_error(error), wait,
            )
            time.sleep(wait)
            wait = min(2 * wait, _MAX_RETRY_WAIT_SECONDS)
            attempt += 1


def _rerun_command(folder: Path, repo_id: str, repo_type: str, hub_config: HubConfig) -> str:
    """The scripts/publish.py command line that repeats this upload (no token: it comes from the environment)."""
    arguments = ["python", "scripts/publish.py", "--folder", str(folder), "--kind", repo_type, "--repo-id", repo_id]
    if not hub_config.private:
        arguments.append("--public")
    for option, value in (("--revision", hub_config.revision), ("--endpoint", hub_config.endpoint)):
        if value:
            arguments += [option, value]
    return shlex.join(arguments)


def publish_folder(
    folder: Union[str, Path],
    repo_id: str,
    *,
    repo_type: RepoType = "model",
    hub_config: Optional[HubConfig] = None,
    commit_message: Optional[str] = None,
) -> str:
    """Upload `folder` to the Hub repo `repo_id` and return the commit URL.

    Checks the folder first (`hub_ready_folder_check`) and that no text file in it holds the token;
    creates the repo if needed (private per `hub_config.private`) and the branch
    `hub_config.revision`; uploads every file (`HfApi.upload_folder`; temporary `*.tmp` files are
    skipped). Transient errors are retried (`hub_config.max_retries`); a failure raises
    `HubPublishError` naming the repo and what to do, and leaves the folder as it was. Re-running is
    safe: unchanged files are not committed again.
    """
    hub_config = hub_config if hub_config is not None else HubConfig()
    folder = Path(folder)
    if repo_type not in ("model", "dataset"):
        raise ValueError(f"repo_type={repo_type!r} must be 'model' or 'dataset'")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise ValueError(f"repo_id={repo_id!r} is not a Hub repo id: {error}") from None
    if hub_constants.HF_HUB_OFFLINE:
        raise HubPublishError(
            f"HF_HUB_OFFLINE is set, so {folder} cannot be published to {repo_id!r}; unset it (and "
            "TRANSFORMERS_OFFLINE) and re-run"
        )
    hub_ready_folder_check(folder, repo_type)
    token = _resolve_token(hub_config)
    _refuse_token_in_folder(folder, token)

    rerun = _rerun_command(folder, repo_id, repo_type, hub_config)
    api = HfApi(endpoint=hub_config.endpoint, token=token, library_name="mlpl")
    files = [path for path in folder.rglob("*") if path.is_file()]
    logger.info(
        "publishing %s (%d files, %.1f MB) to %s repo %s%s",
        folder, len(files), sum(path.stat().st_size for path in files) / 1e6, repo_type, repo_id,
        f" (branch {hub_config.revision})" if hub_config.revision else "",
    )

    def retried(action: str, call: Callable[[], _Result]) -> _Result:
        return _call_with_retries(action, call, hub_config, repo_id, repo_type, rerun)

    retried(
        "creating the repo",
        lambda: api.create_repo(repo_id, repo_type=repo_type, private=hub_config.private, exist_ok=True),
    )
    if hub_config.revision and hub_config.revision != "main":
        retried(
            f"creating branch {hub_config.revision!r}",
            lambda: api.create_branch(repo_id, branch=hub_config.revision, repo_type=repo_type, exist_ok=True),
        )
    commit = retried(
        "uploading the folder",
        lambda: api.upload_folder(
            repo_id=repo_id,
            folder_path=folder,
            repo_type=repo_type,
            revision=hub_config.revision,
            commit_message=commit_message or f"Upload {folder.name} with mlpl",
            ignore_patterns=["*.tmp"],
        ),
    )
    logger.info("published %s: %s", repo_id, commit.commit_url)
    return commit.commit_url


__all__ = [
    "CARD_TAGS",
    "DEFAULT_REPO_ID_TEMPLATE",
    "PSEUDO_LABEL_COLUMN_DESCRIPTIONS",
    "REASON_NOT_PER_LANGUAGE",
    "RECIPE_STAGES",
    "PAPER_BIBTEX",
    "EvaluationSet",
    "HubConfig",
    "HubFolderError",
    "HubPublishError",
    "HubReference",
    "HubToken",
    "PseudoLabelLanguage",
    "RecipeStage",
    "hub_ready_folder_check",
    "pseudo_label_shards",
    "publish_folder",
    "recipe_stage",
    "render_dataset_card",
    "render_model_card",
    "repo_id_for",
    "summarize_pseudo_label_shards",
    "write_dataset_card",
    "write_model_card",
]
