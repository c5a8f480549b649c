#!/usr/bin/env python
"""MlplFeatureExtractor vs transformers' Whisper feature extractor (torch path) on the same batch.

    python benchmarks/bench_features.py                       # 16 x 10 s, 1 and 2 threads
    python benchmarks/bench_features.py --numpy-peers         # also the numpy Kaldi fbank extractors
    python benchmarks/bench_features.py --device cuda

The batch is `--batch` utterances of `--seconds` s (noise: the cost does not depend on the values), given to
each extractor as a list of float32 arrays, features returned as torch tensors. Whisper pads to the longest
utterance (`padding="longest"`, not its fixed 30 s) so both do the same amount of audio. The calls are
interleaved (mlpl, whisper, mlpl, ...); the table gives seconds of audio per second (median and best), the
ratio of median to best time (steadiness: target <= 1.3) and the median time relative to Whisper's.
"""

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from modeling_mlpl import MlplFeatureExtractor


def extractors(arguments):
    from transformers import WhisperFeatureExtractor

    whisper = WhisperFeatureExtractor()
    device = arguments.device
    calls = {
        "mlpl": lambda batch: MLPL(batch, sampling_rate=16000, return_tensors="pt", device=device),
        "whisper-torch": lambda batch: whisper(
            batch, sampling_rate=16000, padding="longest", return_tensors="pt", device=device, return_attention_mask=True
        ),
    }
    if arguments.numpy_peers:
        from transformers import SeamlessM4TFeatureExtractor, Speech2TextFeatureExtractor

        seamless, speech2text = SeamlessM4TFeatureExtractor(), Speech2TextFeatureExtractor()
        calls["seamless-m4t-numpy"] = lambda batch: seamless(batch, sampling_rate=16000, padding=True, return_tensors="pt")
        calls["speech2text-numpy"] = lambda batch: speech2text(batch, sampling_rate=16000, padding=True, return_tensors="pt")
    return calls


MLPL = MlplFeatureExtractor()


def measure(arguments, threads):
    torch.set_num_threads(threads)
    generator = np.random.default_rng(0)
    batch = [(0.1 * generator.standard_normal(int(arguments.seconds * 16000))).astype(np.float32) for _ in range(arguments.batch)]
    audio_seconds = arguments.batch * arguments.seconds
    calls = extractors(arguments)
    times = {name: [] for name in calls}
    for repeat in range(arguments.warmup + arguments.repeats):
        for name, call in calls.items():
            if arguments.device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
            call(batch)
            if arguments.device.startswith("cuda"):
                torch.cuda.synchronize()
            if repeat >= arguments.warmup:
                times[name].append(time.perf_counter() - start)
    whisper = statistics.median(times["whisper-torch"])
    return [
        {
            "threads": threads,
            "extractor": name,
            "median_audio_s_per_s": round(audio_seconds / statistics.median(values)),
            "best_audio_s_per_s": round(audio_seconds / min(values)),
            "median_over_best": round(statistics.median(values) / min(values), 2),
            "time_vs_whisper": round(statistics.median(values) / whisper, 2),
        }
        for name, values in times.items()
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--numpy-peers", action="store_true")
    parser.add_argument("--json", type=Path, default=None)
    arguments = parser.parse_args()
    rows = [row for threads in arguments.threads for row in measure(arguments, threads)]
    columns = list(rows[0])
    print(" | ".join(columns))
    print(" | ".join("---" for _ in columns))
    for row in rows:
        print(" | ".join(str(row[column]) for column in columns))
    if arguments.json:
        arguments.json.write_text(json.dumps({"arguments": vars(arguments) | {"json": str(arguments.json)}, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
