"""Run by tests/test_trainer.py under `accelerate launch --num_processes 2`: train, then save the parameters
each process holds after the last update, so the test can check that the ranks agree.

    python tests/trainer_worker.py CONFIG.yaml OUTPUT_DIR [key=value ...]
"""

import json
import sys
from pathlib import Path

import torch
from accelerate.state import PartialState

from mlpl.config import load_config
from mlpl.trainer import train


def main() -> None:
    config_path, output_dir, *overrides = sys.argv[1:]
    config = load_config(config_path, [f"train.output_dir={output_dir}", *overrides])
    result = train(config)
    rank = PartialState().process_index
    torch.save(result.model.state_dict(), Path(output_dir) / f"parameters_rank{rank}.pt")
    (Path(output_dir) / f"rank{rank}.json").write_text(
        json.dumps({"num_processes": PartialState().num_processes, "num_updates": result.num_updates})
    )


if __name__ == "__main__":
    main()
