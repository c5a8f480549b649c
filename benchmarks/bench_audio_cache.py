#!/usr/bin/env python
"""What the decoded-audio cache (`data.audio_cache_gb`, mlpl.audio_cache) saves on the trainer's data path.

Reads a Common Voice folder's training split as the trainer does (map-style set with durations, duration
batches of `--batch-seconds`, each batch fetched with `dataset[indices]`, which decodes its clips) for
`--epochs` epochs, once with the cache off and once on, alternated `--repeats` times in one process (A, B,
A, B). Prints the median seconds of the first epoch and of each later epoch, per side, and the ratio;
the model is left out, so the difference is the decoding the cache saves. One core, as the trainer's
main-process loader uses (`data.num_workers: 0`).

    python benchmarks/bench_audio_cache.py [--corpus /tmp/mlpl_demo_default --size default] [--epochs 3]

Writes the table as JSON to `--json` when given.
"""

import argparse
import json
import os
import statistics
import tempfile
import time

from mlpl.audio_cache import process_audio_cache, set_audio_cache_budget
from mlpl.batching import DurationBatchSampler
from mlpl.config import SourceConfig
from mlpl.data import example_durations
from mlpl.demo_corpus import make_demo_corpus
from mlpl.trainer_data import load_map_style


def epoch_seconds(dataset, sampler: DurationBatchSampler, epochs: int) -> list[float]:
    """Wall seconds of each epoch of fetching every batch (`dataset[indices]`: decode, as the DataLoader does)."""
    times = []
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        start = time.perf_counter()
        for indices in sampler:
            dataset[indices]
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default=os.path.join(tempfile.gettempdir(), "mlpl_demo_default"))
    parser.add_argument("--size", default="default", help="demo corpus size to build there if missing")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch-seconds", type=float, default=30.0)
    parser.add_argument("--cache-gb", type=float, default=2.0)
    parser.add_argument("--json", default=None)
    arguments = parser.parse_args()
    try:  # one core: the trainer's loader decodes in the main process
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    except (AttributeError, OSError):
        pass

    corpus = make_demo_corpus(arguments.corpus, arguments.size)
    dataset = load_map_style([SourceConfig(kind="common_voice", path=str(corpus / "cv"), split="train")], "train")
    sampler = DurationBatchSampler.from_dataset(dataset, arguments.batch_seconds, seed=0, num_replicas=1, rank=0)
    results = {"off": [], "on": []}
    for _ in range(arguments.repeats):
        for side, budget in (("off", 0.0), ("on", arguments.cache_gb)):
            set_audio_cache_budget(0.0)  # empty
            set_audio_cache_budget(budget)
            results[side].append(epoch_seconds(dataset, sampler, arguments.epochs))
    stats = process_audio_cache().stats()
    table = {}
    for side, runs in results.items():
        first = statistics.median(run[0] for run in runs)
        later = statistics.median(seconds for run in runs for seconds in run[1:]) if arguments.epochs > 1 else float("nan")
        table[side] = {"first_epoch_s": round(first, 2), "later_epoch_s": round(later, 2), "total_s": round(statistics.median(sum(run) for run in runs), 2)}
    print(f"{len(dataset)} clips, {example_durations(dataset).sum() / 3600:.2f} h, batches of {arguments.batch_seconds:g} s, "
          f"{arguments.epochs} epochs, medians of {arguments.repeats} alternated runs, 1 core")  # fmt: skip
    print(f"{'cache':6s} {'first epoch':>12s} {'later epoch':>12s} {'all epochs':>11s}")
    for side, row in table.items():
        print(f"{side:6s} {row['first_epoch_s']:11.2f}s {row['later_epoch_s']:11.2f}s {row['total_s']:10.2f}s")
    ratio = table["off"]["later_epoch_s"] / table["on"]["later_epoch_s"]
    print(f"later epochs: {ratio:.1f}x faster with the cache; cache held {stats['held_gb']:.2f} GB for {stats['clips']} clips")
    if arguments.json:
        with open(arguments.json, "w") as file:
            json.dump({"table": table, "later_epoch_speedup": round(ratio, 2), "cache": stats, **vars(arguments)}, file, indent=1)


if __name__ == "__main__":
    main()
