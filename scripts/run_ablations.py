#!/usr/bin/env python
"""Run the paper's ablations on top of a recipe (training/ablations.py): each arm against its reference.

    accelerate launch scripts/run_ablations.py --config training/configs/demo_recipe.yaml
    accelerate launch scripts/run_ablations.py --config my.yaml --ablations pseudo_labels,no_cropping

Arms: pseudo_labels (a), pooled_slimipl (b), no_cropping and always_cropping (c), no_lid_loss (d).
Stages 1-3 of the recipe run first where they are not done (the same output_dir: finished units are
reused). Ends with <output_dir>/ablations.md and ablations.json.
"""

import argparse

from training.ablations import Ablations, parse_ablations
from training.cli import process_state, setup_logging
from training.recipe import Recipe, load_recipe_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="recipe YAML (see training/configs/)")
    parser.add_argument("--ablations", help="comma-separated arms (default: all)")
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides of the recipe YAML")
    arguments = parser.parse_intermixed_args()
    setup_logging()
    state = process_state()
    names = parse_ablations(arguments.ablations)
    files = Ablations(Recipe(load_recipe_config(arguments.config, arguments.overrides)), names).run()
    if state.is_main_process and files:
        print(files["ablations.md"].read_text(encoding="utf-8"))
        for name, path in files.items():
            print(f"{name}: {path}")


if __name__ == "__main__":
    main()
