#!/usr/bin/env python
"""Train an mlpl model: supervised CTC + LID, or slimIPL (training/trainer.py, docs/design.md §4-5).

    accelerate launch scripts/train.py --config training/configs/demo_supervised.yaml
    accelerate launch --multi_gpu --num_processes 8 scripts/train.py --config my.yaml optim.lr=0.01
    accelerate launch scripts/train.py --config my.yaml --resume        # continue from the newest step_N/
    accelerate launch scripts/train.py --config other.yaml --overwrite  # replace the run in train.output_dir

A run folder holds one run: starting another config there (or this one again without --resume) is
refused with the keys that differ; a second run on the same folder at once is refused by its lock.

Overrides are dotted `section.key=value` pairs (values parsed as YAML): `train.max_updates=2000`,
`data.max_batch_seconds=50`, `slimipl.enabled=true`, `model.overrides={hidden_size: 256}`.
"""

import argparse
import sys

from training.cli import process_state, setup_logging
from training.config import load_config
from training.run_folder import RunFolderError
from training.trainer import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="experiment YAML (default: the paper's values, no data)")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in train.output_dir")
    parser.add_argument(
        "--overwrite", action="store_true", help="train.output_dir holds another run (or this one): delete it and start over"
    )
    parser.add_argument("overrides", nargs="*", help="section.key=value overrides")
    arguments = parser.parse_intermixed_args()
    setup_logging()
    state = process_state()
    config = load_config(arguments.config, arguments.overrides)
    try:
        result = train(config, resume=arguments.resume, overwrite=arguments.overwrite)
    except RunFolderError as error:  # not a crash: the folder is someone else's; the message says what to do
        sys.exit(f"train.py: {error}")
    if state.is_main_process:
        print(f"done: {result.num_updates} updates; final model {result.final_model}; best dev CER {result.best_dev_cer:.4f}")


if __name__ == "__main__":
    main()
