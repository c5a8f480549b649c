"""The paper's ablations on top of a recipe run, each arm against its reference with a paired bootstrap CI.

    accelerate launch scripts/run_ablations.py --config training/configs/demo_recipe.yaml
    accelerate launch scripts/run_ablations.py --config my.yaml --ablations no_cropping,always_cropping

Every arm is a re-runnable unit of the recipe (its own folder under `<output_dir>/ablations/`, `DONE.json`
last, resumable training) trained with the recipe's own stage settings and one change; stages 1-3 (and the
labeled-only controls, for arm (a)) are run first if they are not done. The arms, and the paper's
observation each one checks (Lugosch et al. 2022; docs/design.md, "Ablations"):

- `pseudo_labels` (a): stage 3 (slimIPL) against its labeled-only control (`controls: true`), per language.
- `oracle_labels` (a', the topline): stage 3 with the unlabeled audio's TRUE transcripts in place of its
  pseudo-labels (`slimipl.oracle_transcripts` = `<unlabeled root>/answer_key.tsv`, which the demo corpus
  writes), everything else as in stage 3, against the same control: the most pseudo-labels could give on this
  data and budget. (a) divided by (a') is the share of that gap the pseudo-labels close.
- `pooled_slimipl` (b): one slimIPL run from the stage-1 model on all languages' labeled data and all
  unlabeled audio pooled, as many updates as stages 2 + 3 give each language, against the per-language
  stage-3 models (paper Fig. 5 / Table 1: pooled pseudo-labels mix scripts for low-resource languages).
- `no_cropping`, `always_cropping` (c): stage 3 without the cropping warm-up, and cropping every
  pseudo-labeled batch, against the recipe's warm-up (Fig. 6: without it slimIPL can collapse to blanks).
- `no_lid_loss` (d): stage 1 with LID loss weight gamma = 0 against gamma as configured (Table 1, multi-task).
- `language_temperature`: stage 1 with `data.language_temperature: 5` (docs/design.md §4; issue 14's
  language balance) against stage 1 as configured (natural proportions); the arm is T = 1 when stage 1 is
  already balanced.
- `script_constraint`: the stage-1 model decoded with script-constrained decoding, each utterance restricted to
  its LID top-1's characters (`language_constraint="auto"`, docs/design.md §3.1), against unconstrained greedy
  decoding of the same model (no training; Fig. 5's mixed scripts, removed at decoding time).

Results: `<output_dir>/ablations.md` (one table per arm) and `ablations.json`.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from .config import ExperimentConfig, build_dataclass
from .files import write_json_atomically, write_text_atomically
from .recipe import DONE, Recipe, merge_sections

logger = logging.getLogger("mlpl.ablations")

ABLATIONS = {
    "pseudo_labels": "(a) stage 3 slimIPL vs its labeled-only control",
    "oracle_labels": "(a') stage 3 with the unlabeled audio's true transcripts in place of pseudo-labels (topline) vs the labeled-only control",
    "pooled_slimipl": "(b) pooled slimIPL from stage 1 on all unlabeled audio vs per-language stages 2-3",
    "no_cropping": "(c) slimIPL without the cropping warm-up vs with it",
    "always_cropping": "(c) slimIPL cropping every pseudo-labeled batch vs the warm-up",
    "no_lid_loss": "(d) stage 1 with LID loss weight 0 vs the configured weight",
    "script_constraint": "stage 1 decoded within its LID top-1's characters vs unconstrained",
    "language_temperature": "stage 1 with language temperature T = 5 vs natural proportions (T = 1)",
}
TEMPERATURE_ARM = 5.0  # the arm's T when stage 1 samples naturally (T = 1 otherwise: the arm is then the natural one)
FOLDER = "ablations"


def stage_settings(recipe: Recipe, stage: int) -> ExperimentConfig:
    """A stage's ExperimentConfig as the recipe builds it (common + stage values), data not filled in."""
    return build_dataclass(ExperimentConfig, merge_sections(recipe.config.common, getattr(recipe.config, f"stage{stage}")), f"stage {stage}")


def parse_ablations(text: str | None) -> list[str]:
    if not text:
        return list(ABLATIONS)
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = sorted(set(names) - set(ABLATIONS))
    if unknown:
        raise ValueError(f"--ablations: unknown {unknown}; choose among {sorted(ABLATIONS)}")
    return names


class Ablations:
    """Runs the arms of `names` on top of `recipe` and writes the report; `run()` is the entry point."""

    def __init__(self, recipe: Recipe, names: Sequence[str], skip_unavailable: bool = False):
        """`skip_unavailable`: leave out, with a warning, the arms whose data is missing (the oracle topline
        without an answer key), as the default "all arms" selection does; otherwise such an arm is an error."""
        self.recipe = recipe
        self.names = list(names)
        self.skip_unavailable = skip_unavailable
        self.folder = recipe.output_dir / FOLDER

    def _answer_key(self) -> Path:
        """The unlabeled audio's true transcripts, for the oracle topline; FileNotFoundError naming the fix."""
        from .demo_corpus import unlabeled_answer_key_path

        if self.recipe.config.unlabeled is None:
            raise FileNotFoundError("the oracle topline needs unlabeled audio (the recipe's `unlabeled:`)")
        return unlabeled_answer_key_path(self.recipe.config.unlabeled.path)

    def missing_data(self, name: str) -> str | None:
        """Why arm `name` cannot run on this recipe's data (an error message naming the fix), or None."""
        if name == "oracle_labels":
            try:
                self._answer_key()
            except FileNotFoundError as error:
                return str(error)
        return None

    def runnable_names(self) -> list[str]:
        """The selected arms that can run, checked before anything trains."""
        names = []
        for name in self.names:
            reason = self.missing_data(name)
            if reason is None:
                names.append(name)
            elif self.skip_unavailable:
                logger.warning("ablation %s left out: %s", name, reason)
            else:
                raise FileNotFoundError(f"ablation {name}: {reason}")
        return names

    # ---- arms: (reference evaluation folders, arm evaluation folders, languages, the arm's unit folders) -------
    def _per_language_slimipl(self, name: str, slimipl_changes: dict) -> tuple[list[Path], list[Path], list[str]]:
        recipe, references, arms, units = self.recipe, [], [], []
        for language in recipe.pl_languages:
            folder = self.folder / name / language
            labeled = replace(recipe.config.labeled, languages=[language])
            experiment = recipe.experiment(
                3, {"slimipl": {"enabled": True, **slimipl_changes}}, train=[replace(labeled, split="train")], dev=[replace(labeled, split="dev")],
                unlabeled=[replace(recipe.config.unlabeled, languages=[language])], init_from=recipe.model_of(2, language), folder=folder,
            )  # fmt: skip
            units.append(functools.partial(
                recipe.unit, folder, f"ablation {name} ({language})", lambda f, e=experiment, code=language: recipe.train_unit(3, f, e, [code], {}, card=False)
            ))  # fmt: skip
            references.append(recipe.evaluation_dir("3", language))
            arms.append(folder / "evaluation")
        recipe.side_by_side(units)  # the languages side by side with the recipe's `jobs`
        return references, arms, recipe.pl_languages, [a.parent for a in arms]

    def _stage3_controls(self) -> list[Path]:
        """The evaluation folders of stage 3's labeled-only controls, run first if the recipe had no controls."""
        recipe = self.recipe
        if not recipe.config.controls:
            recipe.config.controls = True
            # finished stage-3 units are skipped; their controls run (the languages side by side with `jobs`)
            recipe.side_by_side([functools.partial(recipe.stage3, [code]) for code in recipe.pl_languages])
        return [recipe.evaluation_dir("3c", code) for code in recipe.pl_languages]

    def pseudo_labels(self):
        recipe = self.recipe
        controls = self._stage3_controls()
        return controls, [recipe.evaluation_dir("3", code) for code in recipe.pl_languages], recipe.pl_languages, [c.parent for c in controls]

    def oracle_labels(self):
        controls = self._stage3_controls()
        _, arms, languages, units = self._per_language_slimipl("oracle_labels", {"oracle_transcripts": str(self._answer_key())})
        return controls, arms, languages, units

    def pooled_slimipl(self):
        recipe = self.recipe
        folder = self.folder / "pooled_slimipl"
        labeled = replace(recipe.config.labeled, languages=recipe.labeled_languages)
        updates = stage_settings(recipe, 2).train.max_updates + stage_settings(recipe, 3).train.max_updates
        experiment = recipe.experiment(
            3, {"slimipl": {"enabled": True}, "train": {"max_updates": updates}}, train=[replace(labeled, split="train")],
            dev=[replace(labeled, split="dev")], unlabeled=[replace(recipe.config.unlabeled, languages=recipe.pl_languages)],
            init_from=recipe.model_of(1), folder=folder,
        )  # fmt: skip
        recipe.unit(folder, "ablation pooled_slimipl", lambda f: recipe.train_unit(3, f, experiment, recipe.pl_languages, {}, card=False))
        return [recipe.evaluation_dir("3", code) for code in recipe.pl_languages], [folder / "evaluation"], recipe.pl_languages, [folder]

    def no_cropping(self):
        return self._per_language_slimipl("no_cropping", {"cropping_warmup_updates": 0})

    def always_cropping(self):
        updates = stage_settings(self.recipe, 3).train.max_updates
        return self._per_language_slimipl("always_cropping", {"cropping_warmup_updates": updates + 1})

    def _stage1_variant(self, name: str, changes: dict):
        """Stage 1 retrained with `changes` (ExperimentConfig values over the stage's own) against stage 1."""
        recipe = self.recipe
        folder = self.folder / name
        labeled = replace(recipe.config.labeled, languages=recipe.labeled_languages)
        experiment = recipe.experiment(1, changes, train=[replace(labeled, split="train")], dev=[replace(labeled, split="dev")], folder=folder)
        recipe.unit(folder, f"ablation {name}", lambda f: recipe.train_unit(1, f, experiment, recipe.labeled_languages, {}, card=False))
        return [recipe.evaluation_dir("1", None)], [folder / "evaluation"], recipe.labeled_languages, [folder]

    def no_lid_loss(self):
        return self._stage1_variant("no_lid_loss", {"model": {"lid_loss_weight": 0.0}})

    def language_temperature(self):
        configured = stage_settings(self.recipe, 1).data.language_temperature
        return self._stage1_variant("language_temperature", {"data": {"language_temperature": TEMPERATURE_ARM if configured == 1 else 1.0}})

    def script_constraint(self):
        recipe = self.recipe
        folder = self.folder / "script_constraint"
        model, languages = recipe.model_of(1), recipe.labeled_languages
        recipe.unit(folder, "ablation script_constraint", lambda f: {
            "model": str(model), "evaluation": recipe._evaluate(model, languages, f / "evaluation", language_constraint="auto"),
        })  # fmt: skip
        return [recipe.evaluation_dir("1", None)], [folder / "evaluation"], languages, [folder]

    # ---- the entry point --------------------------------------------------------------------------------------
    def run(self) -> dict[str, Path]:
        from .report import compare_predictions, comparison_to_dict, read_predictions

        recipe = self.recipe
        names = self.runnable_names()
        needed = [1] if set(names) <= {"no_lid_loss", "script_constraint", "language_temperature"} else [1, 2, 3]
        recipe.run(needed)  # finished stages are skipped
        files: dict[str, Path] = {}
        lock = threading.Lock()

        def arm(name: str) -> None:
            references, arms, languages, units = getattr(self, name)()
            seconds = sum((recipe.read_json(unit / DONE) or {}).get("seconds", 0.0) for unit in units)
            entry = {"title": ABLATIONS[name], "seconds": round(seconds, 1), "splits": {}}
            for split in recipe.evaluation_names:
                if not all((folder / split).is_dir() for folder in [*references, *arms]):
                    continue  # an extra evaluation set that holds none of the arm's languages
                reference = [row for folder in references for row in read_predictions(folder / split)]
                arm = [row for folder in arms for row in read_predictions(folder / split)]
                comparison = compare_predictions(reference, arm, languages=languages, num_resamples=recipe.config.bootstrap_resamples)
                entry["splits"][split] = comparison_to_dict(comparison)
            if recipe.is_main():
                with lock:  # after every arm: a long run keeps what it has
                    files.update(self.write_report({name: entry}))

        # The arms side by side with the recipe's `jobs` (each one's units too); the stage-3 controls that two arms
        # compare with run first, once.
        with recipe.units_side_by_side():
            if {"pseudo_labels", "oracle_labels"} & set(names):
                self._stage3_controls()
            recipe.side_by_side([functools.partial(arm, name) for name in names])
        return files

    def write_report(self, results: dict) -> dict[str, Path]:
        from .report import ordered_splits, stored_comparison_table

        previous = {}
        path_json = self.recipe.output_dir / "ablations.json"
        if path_json.is_file():
            previous = json.loads(path_json.read_text(encoding="utf-8"))
        results = {**previous, **results}
        lines = [
            "# mlpl ablations", "",
            "Each arm against its reference on the same utterances: greedy CER (%), difference = arm - reference in CER "
            f"points (negative: the arm is better), 95 % paired bootstrap interval ({self.recipe.config.bootstrap_resamples} resamples).", "",
        ]  # fmt: skip
        for name, entry in results.items():
            for split in ordered_splits(entry["splits"]):
                lines += [f"## {entry['title']} ({split})", "", *stored_comparison_table(entry["splits"][split], "reference", f"arm ({name})"), ""]
            lines += [f"Training and evaluation time of the arm's units: {entry['seconds']:.0f} s.", ""]
        write_json_atomically(path_json, results)
        report = write_text_atomically(self.recipe.output_dir / "ablations.md", "\n".join(lines))
        logger.info("wrote %s and %s", report, path_json)
        return {"ablations.md": report, "ablations.json": path_json}


__all__ = ["ABLATIONS", "Ablations", "parse_ablations", "stage_settings"]
