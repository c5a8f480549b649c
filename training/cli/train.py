"""Train an mlpl model: supervised CTC + LID, or slimIPL (training/trainer.py, docs/design.md §4-5).

    accelerate launch scripts/train.py --config my_run.yaml     # sections: training/config.py ExperimentConfig
    accelerate launch --multi_gpu --num_processes 8 scripts/train.py --config my.yaml optim.lr=0.01
    accelerate launch scripts/train.py --config my.yaml --resume        # continue from the newest step_N/
    accelerate launch scripts/train.py --config other.yaml --overwrite  # replace the run in train.output_dir

(`mlpl-train` is the same command.) A run folder holds one run: starting another config there (or this
one again without --resume) is refused with the keys that differ; a second run on the same folder at once
is refused by its lock.

Overrides are dotted `section.key=value` pairs (values parsed as YAML): `train.max_updates=2000`,
`data.max_batch_seconds=50`, `slimipl.enabled=true`, `model.overrides={hidden_size: 256}`.
Without --config: the paper's values, no data.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from . import process_state, setup_logging
from .arguments import CommandLine, option


@dataclass(kw_only=True)
class TrainOptions:
    resume: bool = option(False, help="continue from the newest checkpoint in train.output_dir")
    overwrite: bool = option(False, help="train.output_dir holds another run (or this one): delete it and start over")


def main(argv=None) -> None:
    from ..config import load_config
    from ..run_folder import RunFolderError
    from ..trainer import train

    parsed = CommandLine(__doc__, TrainOptions, config=load_config).parse(argv)
    (options,) = parsed.sections
    setup_logging()
    state = process_state()
    try:
        result = train(parsed.config, resume=options.resume, overwrite=options.overwrite)
    except RunFolderError as error:  # not a crash: the folder is someone else's; the message says what to do
        sys.exit(f"train.py: {error}")
    if state.is_main_process:
        print(f"done: {result.num_updates} updates; final model {result.final_model}; best dev CER {result.best_dev_cer:.4f}")


__all__ = ["TrainOptions", "main"]
