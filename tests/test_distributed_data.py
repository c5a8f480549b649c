"""A real 2-process run under `accelerate launch` (gloo on CPU): across processes, no example twice
and none missing in an epoch, for the map-style sampler and for split streams.

The launch command: on CPU, `accelerate launch --cpu` starts a single process (its "simple"
launcher); two CPU processes need the torchrun launcher, which `--multi_gpu` selects, plus
`Accelerator(cpu=True)` in the script (or ACCELERATE_USE_CPU=true) so that accelerate picks
MULTI_CPU / gloo instead of looking for CUDA.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest


REPOSITORY = Path(__file__).resolve().parents[1]
WORKER = REPOSITORY / "tests" / "distributed_data_worker.py"
NUM_PROCESSES = 2
ALL_IDS = sorted(f"utt{i:04d}" for i in range(200))  # as in distributed_data_worker.py


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def per_process_ids(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("distributed_data")
    command = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--multi_gpu", "--num_processes", str(NUM_PROCESSES), "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
        str(WORKER), str(output_dir),
    ]  # fmt: skip
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true"}
    completed = subprocess.run(command, cwd=REPOSITORY, env=environment, capture_output=True, text=True, timeout=180)
    assert completed.returncode == 0, f"accelerate launch failed:\n{completed.stdout[-3000:]}\n{completed.stderr[-3000:]}"
    results = [json.loads((output_dir / f"rank{rank}.json").read_text()) for rank in range(NUM_PROCESSES)]
    assert all(result["num_processes"] == NUM_PROCESSES for result in results)
    return results


def assert_disjoint_and_complete(shares):
    flattened = [[i for batch in share for i in batch] for share in shares]
    assert all(share for share in flattened), "a process received nothing"
    combined = [i for share in flattened for i in share]
    assert len(combined) == len(set(combined)), "an example went to two processes (or twice to one)"
    assert sorted(combined) == ALL_IDS, "examples missing from the epoch"


@pytest.mark.slow
def test_map_style_sampler_shards_disjoint_complete_and_even(per_process_ids):
    shares = [result["map_style"] for result in per_process_ids]
    assert_disjoint_and_complete(shares)
    assert len({len(share) for share in shares}) == 1  # same number of steps: DDP collectives line up


@pytest.mark.slow
@pytest.mark.parametrize("case", ["stream", "stream_uneven_shards"])
def test_streams_split_by_node_are_disjoint_and_complete(per_process_ids, case):
    assert_disjoint_and_complete([result[case] for result in per_process_ids])
