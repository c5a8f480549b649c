"""One epoch of ids per process, run by tests/test_distributed_data.py under `accelerate launch`.

Each process writes `<output_dir>/rank<r>.json`:
    {"map_style": [[ids of batch 1], ...], "stream": [[...], ...], "stream_uneven_shards": [[...], ...]}
for (1) `DurationBatchSampler` over an in-memory `datasets.Dataset`, driven by a DataLoader, with one
gradient-style all-reduce per step (it would hang if the processes had different step counts), and
(2) `DurationBucketingStream` over a sharded `datasets.IterableDataset` split with
`split_dataset_by_node` (4 shards: whole shards per process; 3 shards: 1 example in 2 per process).
"""

import json
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from datasets import Dataset

from mlpl.batching import DurationBatchSampler, DurationBucketingStream


NUM_EXAMPLES = 200
MAX_BATCH_SECONDS = 20.0
EPOCH = 1


def synthetic_dataset() -> Dataset:
    durations = np.random.default_rng(0).uniform(0.5, 12.0, NUM_EXAMPLES).round(3)
    return Dataset.from_dict({"id": [f"utt{i:04d}" for i in range(NUM_EXAMPLES)], "duration": durations.tolist()})


def map_style_epoch(accelerator: Accelerator, dataset: Dataset) -> list[list[str]]:
    sampler = DurationBatchSampler.from_dataset(
        dataset, MAX_BATCH_SECONDS, seed=1234, num_replicas=accelerator.num_processes, rank=accelerator.process_index
    )
    sampler.set_epoch(EPOCH)
    # Not passed through accelerator.prepare: the sampler already shards by rank.
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=sampler, collate_fn=lambda rows: [row["id"] for row in rows]
    )
    batches = []
    for ids in loader:
        # Stand-in for DDP's gradient all-reduce: every process must reach it the same number of times.
        torch.distributed.all_reduce(torch.tensor([len(ids)]))
        batches.append(ids)
    return batches


def stream_epoch(accelerator: Accelerator, dataset: Dataset, num_shards: int) -> list[list[str]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the 3-shard case warns by design
        stream = DurationBucketingStream(
            dataset.to_iterable_dataset(num_shards=num_shards),
            MAX_BATCH_SECONDS,
            buffer_size=32,
            seed=5,
            num_replicas=accelerator.num_processes,
            rank=accelerator.process_index,
        )
    stream.set_epoch(EPOCH)
    return [[example["id"] for example in batch] for batch in stream]


def main(output_dir: str) -> None:
    accelerator = Accelerator(cpu=True)
    dataset = synthetic_dataset()
    result = {
        "num_processes": accelerator.num_processes,
        "map_style": map_style_epoch(accelerator, dataset),
        "stream": stream_epoch(accelerator, dataset, num_shards=4),
        "stream_uneven_shards": stream_epoch(accelerator, dataset, num_shards=3),
    }
    path = Path(output_dir) / f"rank{accelerator.process_index}.json"
    path.write_text(json.dumps(result))
    accelerator.wait_for_everyone()
    accelerator.end_training()


if __name__ == "__main__":
    main(sys.argv[1])
