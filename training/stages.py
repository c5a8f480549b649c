"""The recipe's stages, defined once (docs/design.md §6): what the recipe runs, the reports tabulate and the Hub names.

Each `Stage` holds its number and key ("1".."6"), its run folder under `<output_dir>/stages/`, its title
and description (the cards), whether it runs once per language, what it produces (a model or a
pseudo-label dataset: the Hub repo kind) and, for the units that train on unlabeled audio, its matched
labeled-only control (key "<n>c", its own folder beside the stage's, and the title of the comparison
of the two in results.md; docs/design.md §6, "Controls and the paired bootstrap").

`mlpl.recipe` runs them, `mlpl.report` orders its tables by them and `mlpl.hub` names repos
after them (`{prefix}-stage{n}-{slug}`). Folder names and keys are part of every run folder and of
results.json: changing one orphans existing runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional, Union

RepoType = Literal["model", "dataset"]


@dataclass(frozen=True)
class Stage:
    """One stage of the recipe: its number, its folder and name in repo ids, and what it produces."""

    number: int
    slug: str  # its name in repo ids: stage{number}-{slug}
    folder: str  # its run folder under <output_dir>/stages/ (per-language stages: one subfolder per language)
    title: str
    description: str
    per_language: bool  # one checkpoint per language (stages 2 and 3): its repo id names the language
    repo_type: RepoType  # "model" for checkpoints, "dataset" for the pseudo-label sets
    control_folder: Optional[str] = None  # the folder of its labeled-only control (`controls: true`)
    comparison: Optional[str] = None  # title of "the stage against its control" in results.md

    @property
    def key(self) -> str:
        """The stage in results.json and in the report's tables: "3"."""
        return str(self.number)

    @property
    def control_key(self) -> Optional[str]:
        """Its control in results.json: "3c" (None: the stage has no control)."""
        return f"{self.number}c" if self.control_folder else None

    @property
    def name(self) -> str:
        """The stage as it appears in repo ids: `stage3-slimipl`."""
        return f"stage{self.number}-{self.slug}"

    @property
    def produces_model(self) -> bool:
        """A training stage: its units have a model, an evaluation and a row in the CER tables."""
        return self.repo_type == "model"


STAGES = (
    Stage(
        1, "supervised", "1_multilingual", "Supervised multilingual model",
        "a joint CTC + language-ID model trained on the labeled data of all languages.",
        per_language=False, repo_type="model",
    ),
    Stage(
        2, "finetune", "2_finetune", "Per-language fine-tune",
        "the stage-1 model fine-tuned on one language's labeled data (10k updates), the starting point "
        "of that language's slimIPL.",
        per_language=True, repo_type="model",
    ),
    Stage(
        3, "slimipl", "3_slimipl", "Per-language slimIPL",
        "the stage-2 model trained with slimIPL on that language's labeled data and unlabeled audio "
        "(cache of pseudo-labeled batches, 10 s cropping warm-up).",
        per_language=True, repo_type="model",
        control_folder="3_slimipl_control", comparison="stage 3 slimIPL vs labeled-only control",
    ),
    Stage(
        4, "pseudo-labels", "4_pseudo_labels", "Pseudo-labels",
        "final pseudo-labels of every unlabeled utterance, each language labeled by its stage-3 model "
        "(greedy CTC, no LM); empty labels and labels longer than 630 characters are dropped.",
        per_language=False, repo_type="dataset",
    ),
    Stage(
        5, "pl-training", "5_pl_training", "Training on labeled data and all pseudo-labels",
        "a model trained on the labeled data plus all pseudo-labels, either continuing stage 1 at a "
        "lower learning rate or from scratch (lr 0.01, SpecAugment delayed).",
        per_language=False, repo_type="model",
        control_folder="5_pl_training_control", comparison="stage 5 labeled + PLs vs labeled-only control",
    ),
    Stage(
        6, "pl-finetune", "6_finetune", "Fine-tune on labeled data",
        "the stage-5 model fine-tuned on the labeled data only.",
        per_language=False, repo_type="model",
        control_folder="6_finetune_control", comparison="stage 6 (final) vs labeled-only control",
    ),
)  # fmt: skip

# Views of STAGES that the recipe and the reports look things up in.
STAGE_FOLDERS = {stage.number: stage.folder for stage in STAGES}
TABLE_STAGES = tuple(stage.number for stage in STAGES if stage.produces_model)  # the stages that produce models
# Matched labeled-only controls (`controls: true`) of the units that train on pseudo-labels: the same
# initialization, updates, schedule, regularization, batch size and seed, without unlabeled audio. Stage 6's
# control fine-tunes stage 5's control. Keyed "<stage>c" in results.json; folder beside the stage's own.
CONTROL_FOLDERS = {stage.number: stage.control_folder for stage in STAGES if stage.control_folder}
# (arm, control, title) pairs the report compares, on the languages with unlabeled audio
COMPARISONS = tuple((stage.key, stage.control_key, stage.comparison) for stage in STAGES if stage.control_folder)


def recipe_stage(stage: Union[int, str, Stage]) -> Stage:
    """The recipe stage named by its number (3, "3"), slug ("slimipl") or repo-id name ("stage3-slimipl")."""
    if isinstance(stage, Stage):
        return stage
    key = str(stage).strip().lower()
    for candidate in STAGES:
        if key in (candidate.key, candidate.slug, candidate.name, f"stage{candidate.number}"):
            return candidate
    choices = ", ".join(f"{candidate.number}/{candidate.slug}" for candidate in STAGES)
    raise ValueError(f"stage={stage!r} is not a stage of the recipe (docs/design.md §6); use one of {choices}")


def unit_folder_name(key: str) -> str:
    """The folder of a stage or control key of results.json ("3" -> 3_slimipl, "3c" -> 3_slimipl_control)."""
    stage = recipe_stage(key[:-1] if key.endswith("c") else key)
    return stage.control_folder if key.endswith("c") else stage.folder


__all__ = [
    "COMPARISONS",
    "CONTROL_FOLDERS",
    "RepoType",
    "STAGES",
    "STAGE_FOLDERS",
    "Stage",
    "TABLE_STAGES",
    "recipe_stage",
    "unit_folder_name",
]
