#!/usr/bin/env python
"""Run the mling_pl recipe (training/recipe.py, docs/design.md §6): stages 1-6, each safe to re-run.

    accelerate launch scripts/run_recipe.py --config training/configs/demo_recipe.yaml
    accelerate launch scripts/run_recipe.py --config my.yaml --stages 2-4 --languages el,fi
    accelerate launch scripts/run_recipe.py --config my.yaml --controls     # + labeled-only controls, CIs
    python scripts/run_recipe.py --config my.yaml stage1.train.max_updates=500    # overrides

Finished units are skipped (DONE.json); a unit killed halfway resumes from its newest checkpoint.
Ends with results.md / results.json (per-language CER after each stage), cer_by_stage.png,
dev_cer_curves.png and final_model/ under the config's output_dir.
"""

import argparse

from training.cli import process_state, setup_logging
from training.recipe import Recipe, load_recipe_config, parse_stages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="recipe YAML (see training/configs/)")
    parser.add_argument("--stages", help="stages to run, e.g. 1-6 (default), 2,3 or 5")
    parser.add_argument("--languages", help="restrict stages 2-4 to these languages, e.g. el,fi")
    parser.add_argument("--controls", action="store_true", help="also train the labeled-only control of every unit that uses unlabeled audio (same as controls=true)")
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides of the recipe YAML")
    arguments = parser.parse_intermixed_args()
    setup_logging()
    state = process_state()
    config = load_recipe_config(arguments.config, arguments.overrides + (["controls=true"] if arguments.controls else []))
    languages = arguments.languages.split(",") if arguments.languages else None
    files = Recipe(config).run(parse_stages(arguments.stages), languages)
    if state.is_main_process:
        report = files.get("results.md")
        if report is not None:
            print(report.read_text(encoding="utf-8"))
        for name, path in files.items():
            print(f"{name}: {path}")


if __name__ == "__main__":
    main()
