"""Run the mling_pl recipe (training/recipe.py, docs/design.md §6): stages 1-6, each safe to re-run.

    accelerate launch scripts/run_recipe.py --config training/configs/demo_recipe.yaml
    accelerate launch scripts/run_recipe.py --config my.yaml --stages 2-4 --languages el,fi
    accelerate launch scripts/run_recipe.py --config my.yaml --controls     # + labeled-only controls, CIs
    python scripts/run_recipe.py --config training/configs/demo_recipe.yaml --seeds 1 2   # + stages 5-6 with 2 more seeds
    python scripts/run_recipe.py --config my.yaml stage1.train.max_updates=500    # overrides
    python scripts/run_recipe.py --config my.yaml --jobs 2   # a CPU machine: independent units side by side

(`mlpl-recipe` is the same command.) Finished units are skipped (DONE.json); a unit killed halfway resumes
from its newest checkpoint. Ends with results.md / results.json (per-language CER after each stage),
cer_by_stage.png, dev_cer_curves.png and final_model/ under the config's output_dir.
With --seeds, stages --replicate-from..6 then run again per seed on the base run's earlier stages (linked, not
retrained) and across_seeds.md / across_seeds.json give each arm-vs-control effect's mean over the runs (the base
run and every finished replicate under seeds/, earlier invocations' too) with a 95 % Student-t interval across
them (training/replicates.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from . import process_state, setup_logging
from .arguments import CommandLine, option


@dataclass(kw_only=True)
class RecipeOptions:
    stages: str | None = option(None, help="stages to run, e.g. 1-6 (default), 2,3 or 5")
    languages: str | None = option(None, help="restrict stages 2-4 to these languages, e.g. el,fi")
    controls: bool = option(False, help="also train the labeled-only control of every unit that uses unlabeled audio (same as controls=true)")
    seeds: list[int] | None = option(None, metavar="SEED",
                                     help="then rerun stages --replicate-from..6 (arms and controls) once per seed on the same earlier stages, "
                                          "into <output_dir>/seeds/seed_K/, and write across_seeds.md/.json: each effect over the runs")
    replicate_from: int = option(5, help="first stage the seed replicates rerun (the earlier ones are linked from the base run)")
    jobs: int | None = option(None, help="run independent units (each language's stages 2-3, an arm and its control) side by side in this many "
                                         "worker processes, cores / jobs threads each (same as jobs=N; for CPU machines)")


def main(argv=None) -> None:
    from ..recipe import Recipe, load_recipe_config, parse_stages

    command = CommandLine(__doc__, RecipeOptions, config=load_recipe_config, config_required=True)
    parsed = command.parse(argv)
    (options,) = parsed.sections
    setup_logging()
    state = process_state()
    config = parsed.config
    if options.controls:
        config.controls = True
    if options.jobs is not None:
        config.jobs = options.jobs
    languages = options.languages.split(",") if options.languages else None
    recipe = Recipe(config)
    files = recipe.run(parse_stages(options.stages), languages)
    if options.seeds:
        from ..replicates import replicate_with_seeds

        files = {**files, **replicate_with_seeds(recipe, [int(seed) for seed in options.seeds], int(options.replicate_from), languages)}
    if state.is_main_process:
        for name in ("results.md", "across_seeds.md"):
            if files.get(name) is not None:
                print(files[name].read_text(encoding="utf-8"))
        for name, path in files.items():
            print(f"{name}: {path}")


__all__ = ["RecipeOptions", "main"]
