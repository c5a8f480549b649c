"""Seed replicates of the recipe's last stages, and each arm-vs-control effect across them (docs/design.md §6).

One recipe run's paired bootstrap resamples utterances: it says how sure that training run's comparison is,
not how much the comparison moves when training runs again with other random streams (data order, dropout,
SpecAugment). On the demo the final effect moved from -6 % to -13.5 % between runs of one config. So
`replicate_with_seeds` reruns stages `first_stage`..6 (arms and controls) once per seed, each into
`<output_dir>/seeds/seed_<K>/`, on the very same earlier stages: their folders are linked, not retrained, so
only the replicated stages' randomness varies. It then reads every run's comparisons, the base run's and the
replicates', and writes `<output_dir>/across_seeds.md` / `.json` (`mlpl.report.across_runs`: each effect's mean
over the runs with its Student-t interval). `scripts/run_recipe.py --seeds 1 2` is the command. The report covers
every finished replicate under `seeds/`, this invocation's and earlier ones' (`--seeds 1 2`, then `--seeds 3 4
--replicate-from 3`: five runs), each named with the stages it replicated.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from .files import write_json_atomically, write_text_atomically
from .stages import CONTROL_FOLDERS, STAGE_FOLDERS

logger = logging.getLogger("mlpl.recipe")

SEEDS_FOLDER = "seeds"


def base_seed(config) -> int:
    """The training seed of the base run's replicated stages (`common.train.seed`, default 0)."""
    return int(config.common.get("train", {}).get("seed", 0))


def replicate_config(config, seed: int, first_stage: int):
    """The base run's recipe config with `seed` in every replicated stage, writing into `seeds/seed_<seed>/`.

    `config` is the base Recipe's config after its set-up (data sources resolved, so the replicate reads the
    base run's demo corpus instead of building another)."""
    replicate = copy.deepcopy(config)
    replicate.output_dir = str(Path(config.output_dir) / SEEDS_FOLDER / f"seed_{seed}")
    replicate.demo_corpus = None
    replicate.common.setdefault("train", {})["seed"] = seed
    for stage in range(first_stage, max(STAGE_FOLDERS) + 1):
        section = getattr(replicate, f"stage{stage}", None)
        if section and "seed" in section.get("train", {}):  # a stage's own seed would win over common's
            section["train"]["seed"] = seed
    return replicate


def _unit_folders(stages):
    """(stage, folder name) of each stage's arm and control folders."""
    for stage in stages:
        for folder in (STAGE_FOLDERS.get(stage), CONTROL_FOLDERS.get(stage)):
            if folder:
                yield stage, folder


def link_earlier_stages(base_stages: Path, replicate_stages: Path, first_stage: int) -> list[Path]:
    """Symlink every finished folder of stages before `first_stage` (arms and controls) into the replicate.

    A replicate folder made earlier with a later `first_stage` holds links where this one must train (its
    DONE markers would be the base run's, and the stage would be skipped): refused, naming the folder."""
    replicate_stages.mkdir(parents=True, exist_ok=True)
    for stage, folder in _unit_folders(range(first_stage, max(STAGE_FOLDERS) + 1)):
        if (replicate_stages / folder).is_symlink():
            raise FileExistsError(
                f"{replicate_stages / folder} links to the base run's stage {stage}, but --replicate-from {first_stage} must "
                f"retrain it: that replicate was made with a later --replicate-from. Use other seeds, or delete {replicate_stages.parent}"
            )
    linked = []
    for _, folder in _unit_folders(range(1, first_stage)):
        source, target = base_stages / folder, replicate_stages / folder
        if not source.exists():
            continue
        if target.is_symlink() or target.exists():
            if target.resolve() != source.resolve():
                raise FileExistsError(f"{target} exists and is not a link to {source}; delete it to replicate from this run")
            continue
        os.symlink(source.resolve(), target, target_is_directory=True)
        linked.append(target)
    return linked


def finished_replicates(output_dir: str | os.PathLike) -> dict[int, Path]:
    """seed -> folder of every replicate under `<output_dir>/seeds/` whose last stage finished, arm and control, by seed
    (one stopped midway is left out until it is resumed)."""
    from .recipe import DONE

    last = max(STAGE_FOLDERS)
    found = {}
    for folder in (Path(output_dir) / SEEDS_FOLDER).glob("seed_*"):
        suffix = folder.name.removeprefix("seed_")
        if suffix.isdigit() and all((folder / "stages" / name / DONE).is_file() for _, name in _unit_folders([last])):
            found[int(suffix)] = folder
    return dict(sorted(found.items()))


def replicated_from(replicate: str | os.PathLike) -> int:
    """The first stage a replicate retrained: its earlier stage folders are links to the base run's."""
    stages = Path(replicate) / "stages"
    for stage in range(2, max(STAGE_FOLDERS) + 1):
        folder = stages / STAGE_FOLDERS[stage]
        if folder.exists() and not folder.is_symlink():
            return stage
    raise FileNotFoundError(f"{replicate} holds no retrained stage folder under stages/; it is not a finished seed replicate")


def replicate_with_seeds(recipe, seeds: Sequence[int], first_stage: int = 5, languages: Sequence[str] | None = None) -> dict[str, Path]:
    """Run stages `first_stage`..6 again for each seed on `recipe`'s earlier stages; write across_seeds.md/.json.

    `recipe` is the base run (a `mlpl.recipe.Recipe` whose stages before `first_stage` are finished)."""
    from .recipe import Recipe
    from .report import across_runs, across_runs_markdown, read_run_results

    config = recipe.config
    if not config.controls:
        raise ValueError("--seeds compares arms with their controls across runs; turn the controls on (`--controls` or `controls: true`)")
    if not 2 <= first_stage <= max(STAGE_FOLDERS):
        raise ValueError(f"--replicate-from {first_stage}: choose a stage in 2-{max(STAGE_FOLDERS)} (the earlier ones are reused)")
    base = base_seed(config)
    if base in seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds {list(seeds)}: give distinct seeds other than the base run's {base}")
    for stage in range(1, first_stage):
        folder = recipe.stages_dir / STAGE_FOLDERS[stage]
        if not folder.exists():
            raise FileNotFoundError(f"{folder} is missing: run stages 1-{first_stage - 1} before replicating stages {first_stage}-6")
    for seed in seeds:
        replicate = Recipe(replicate_config(config, seed, first_stage))
        if replicate.is_main():
            link_earlier_stages(recipe.stages_dir, replicate.stages_dir, first_stage)
        replicate._wait()
        logger.info("seed replicate %d: stages %d-6 in %s, stages 1-%d linked from %s", seed, first_stage, replicate.output_dir, first_stage - 1, recipe.stages_dir)
        replicate.run(list(range(first_stage, max(STAGE_FOLDERS) + 1)), list(languages) if languages else None)
    if not recipe.is_main():
        return {}
    replicates = finished_replicates(recipe.output_dir)
    runs = {f"seed {base}": recipe.output_dir, **{f"seed {seed}": folder for seed, folder in replicates.items()}}
    replicated = {f"seed {seed}": f"{replicated_from(folder)}-{max(STAGE_FOLDERS)}" for seed, folder in replicates.items()}
    aggregated = across_runs({name: read_run_results(folder) for name, folder in runs.items()})
    names = [f"{name} ({folder}; {f'stages {replicated[name]} replicated' if name in replicated else 'the base run'})" for name, folder in runs.items()]
    files = {
        "across_seeds.md": write_text_atomically(recipe.output_dir / "across_seeds.md", across_runs_markdown(aggregated, names) + "\n"),
        "across_seeds.json": write_json_atomically(
            recipe.output_dir / "across_seeds.json",
            {
                "runs": {name: str(folder) for name, folder in runs.items()},
                # one range when every replicate reran the same stages; else each replicate's, "3-6 / 5-6"
                "replicated_stages": " / ".join(sorted(set(replicated.values()))),
                "replicated_stages_by_run": replicated,
                "comparisons": aggregated,
            },
        ),
    }
    for path in files.values():
        logger.info("wrote %s", path)
    return files


__all__ = ["SEEDS_FOLDER", "base_seed", "finished_replicates", "link_earlier_stages", "replicate_config", "replicate_with_seeds", "replicated_from"]
