"""Run the paper's ablations on top of a recipe (training/ablations.py): each arm against its reference.

    accelerate launch scripts/run_ablations.py --config training/configs/demo_recipe.yaml
    accelerate launch scripts/run_ablations.py --config my.yaml --ablations pseudo_labels,no_cropping

(`mlpl-ablations` is the same command.) Arms: pseudo_labels (a), oracle_labels (a', the topline: true
transcripts of the unlabeled audio from <unlabeled root>/answer_key.tsv; left out of the default selection
when there is none), pooled_slimipl (b), no_cropping and always_cropping (c), no_lid_loss (d),
script_constraint, language_temperature. Stages 1-3 of the recipe run first where they are not done (the same
output_dir: finished units are reused). With the recipe's `jobs: N` (the demo config: 2; or `jobs=N`), the arms and
their per-language units run side by side in N workers. Ends with <output_dir>/ablations.md and ablations.json.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import process_state, setup_logging
from .arguments import CommandLine, option


@dataclass(kw_only=True)
class AblationOptions:
    ablations: str | None = option(None, help="comma-separated arms (default: all)")


def main(argv=None) -> None:
    from ..ablations import Ablations, parse_ablations
    from ..recipe import Recipe, load_recipe_config

    parsed = CommandLine(__doc__, AblationOptions, config=load_recipe_config, config_required=True).parse(argv)
    (options,) = parsed.sections
    setup_logging()
    state = process_state()
    names = parse_ablations(options.ablations)
    # all arms (no --ablations): those whose data is missing are left out with a warning; named ones must run
    files = Ablations(Recipe(parsed.config), names, skip_unavailable=options.ablations is None).run()
    if state.is_main_process and files:
        print(files["ablations.md"].read_text(encoding="utf-8"))
        for name, path in files.items():
            print(f"{name}: {path}")


__all__ = ["AblationOptions", "main"]
