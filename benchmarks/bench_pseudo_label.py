#!/usr/bin/env python
"""Pseudo-label generation in-process vs the pure forward on the same batches (audio seconds per second).

    python benchmarks/bench_pseudo_label.py --corpus /path/to/demo_corpus --max-audio-seconds 600
    python benchmarks/bench_pseudo_label.py --num-workers 2          # DataLoader workers instead of the thread
    python benchmarks/bench_pseudo_label.py --device cuda --model base

`--corpus` is a demo corpus (`scripts/make_demo_corpus.py`; built into a temporary folder when missing);
its VoxPopuli clips (10-30 s, unlabeled) are the source, cut to `--max-audio-seconds`. The model is the demo
recipe's encoder (`demo`: 4 x 192, pre-LN, P = 128), the first rounds' smaller one (`tiny`: 2 x 128) or the
paper's base, randomly initialized (the cost does not depend on the weights). Per repeat, interleaved:
- `forward`: the batches `generate_pseudo_labels` makes (same sampler, collator and crops), decoded and
  featurized beforehand, through `transcribe_batch` alone;
- `generate_pseudo_labels`: the whole in-process call on the same source, as it runs by default (`default`:
  decoding and features in the prefetching thread where a core is free for it, else in turn), with the
  thread forced (`thread`), in turn with the forward (`in-turn`, `prefetch_batches=0`), or in
  `--num-workers` DataLoader workers; timed in its loop (`in_loop`, the summary's elapsed time) and as a
  whole call (`call`, with its fixed costs: hashing the source, folders, summary).
The target is the default's `in_loop` >= 90 % of `forward`. Where the forward's threads take every core,
no overlap is possible: the bound is then forward / (forward + decoding + features).
"""

import argparse
import contextlib
import dataclasses
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from modeling_mlpl import MlplConfig, MlplForCTC, MlplProcessor
from mlpl import pseudo_label
from mlpl.pseudo_label import batches as batches_module
from mlpl.pseudo_label.batches import MapStyleBatches, Processes
from mlpl.loaders import common_voice_records, load_voxpopuli_folder
from mlpl.demo_corpus import make_demo_corpus
from mlpl.inference import transcribe_batch
from mlpl.slimipl import pseudo_labeling_mode

MODELS = {
    "demo": dict(hidden_size=192, num_hidden_layers=4, num_attention_heads=4, intermediate_size=768, max_relative_positions=128, pre_layer_norm=True),
    "tiny": dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=4, intermediate_size=512, max_relative_positions=128),
    "base": {},
}


@contextlib.contextmanager
def force_thread(force: bool):
    """Make `Prefetched.of` start its thread whatever the cores (the "thread" variant)."""
    original = batches_module.thread_has_a_free_core
    if force:
        batches_module.thread_has_a_free_core = lambda device: True
    try:
        yield
    finally:
        batches_module.thread_has_a_free_core = original


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=Path(tempfile.gettempdir()) / "mlpl_demo_default")
    parser.add_argument("--max-audio-seconds", type=float, default=600.0)
    parser.add_argument("--max-batch-seconds", type=float, default=100.0)
    parser.add_argument("--model", choices=sorted(MODELS), default="demo")
    parser.add_argument("--num-workers", type=int, default=0, help="also time N DataLoader workers")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--json", type=Path, default=None)
    arguments = parser.parse_args()
    torch.set_num_threads(arguments.threads)

    corpus = make_demo_corpus(arguments.corpus, size="default")
    processor = MlplProcessor.from_transcripts([r["sentence"] for r in common_voice_records(corpus / "cv", "train")])
    languages = sorted(path.name for path in (corpus / "voxpopuli").iterdir() if path.is_dir())
    torch.manual_seed(0)
    config = MlplConfig(vocab_size=len(processor.tokenizer), languages=languages, **MODELS[arguments.model])
    dtype = torch.bfloat16 if arguments.dtype == "bf16" else torch.float32
    model = MlplForCTC(config).to(arguments.device, dtype).eval()

    source = load_voxpopuli_folder(corpus / "voxpopuli", keep_audio_reference=True)
    durations, keep = 0.0, []
    for index, duration in enumerate(source["duration"]):
        if durations + duration > arguments.max_audio_seconds:
            break
        durations, keep = durations + duration, keep + [index]
    source = source.select(keep)
    pl_config = pseudo_label.PseudoLabelConfig(max_batch_seconds=arguments.max_batch_seconds, overwrite=True)
    variants = {  # how decoding and features run beside the forward
        "default": pl_config,  # the thread where a core is free for it, else in turn
        "thread": pl_config,  # the thread even where the forward's threads take every core
        "in-turn": dataclasses.replace(pl_config, prefetch_batches=0),
    }
    if arguments.num_workers:
        variants[f"{arguments.num_workers}-workers"] = dataclasses.replace(pl_config, num_workers=arguments.num_workers)

    # The same batches, decoded and featurized once, for the pure forward.
    collator = pseudo_label.PseudoLabelCollator(
        processor.feature_extractor, processor.tokenizer, {code: i for i, code in enumerate(config.language_codes)}
    )
    processes = Processes.of(None, model)
    prepared = [batch for batch, _ in MapStyleBatches(source, pl_config, processes, collator)]
    audio_seconds = sum(float(sum(batch["durations"])) for batch in prepared)

    def forward():
        start = time.perf_counter()
        with pseudo_labeling_mode(model), torch.inference_mode():
            for batch in prepared:
                inputs = {
                    "input_features": batch["input_features"].to(arguments.device, dtype),
                    "attention_mask": batch["attention_mask"].to(arguments.device),
                }
                transcribe_batch(model, inputs, processor.tokenizer, pl_config.chunk_frames, pl_config.max_chunks_per_forward)
        if arguments.device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - start

    def read():  # decoding, features and collation alone: what the forward must hide
        start = time.perf_counter()
        for _ in MapStyleBatches(source, pl_config, processes, collator):
            pass
        return time.perf_counter() - start

    times = {"forward": [], "read": []} | {f"{name} {part}": [] for name in variants for part in ("in_loop", "call")}
    with tempfile.TemporaryDirectory() as folder:
        for repeat in range(arguments.repeats + 1):  # the first round warms up
            for name, variant in variants.items():
                start = time.perf_counter()
                with force_thread(name == "thread"):
                    summary = pseudo_label.generate_pseudo_labels(model, processor, source, Path(folder) / "pl", variant)
                call = time.perf_counter() - start
                forward_seconds = forward()
                if repeat:
                    times[f"{name} call"].append(call)
                    times[f"{name} in_loop"].append(summary["elapsed_seconds"])
                    times["forward"].append(forward_seconds)
            if repeat:
                times["read"].append(read())
    medians = {name: statistics.median(values) for name, values in times.items()}
    rows = [
        {
            "path": name,
            "median_s": round(seconds, 2),
            "audio_s_per_s": round(audio_seconds / seconds, 1),
            "vs_forward": round(medians["forward"] / seconds, 3),
        }
        for name, seconds in medians.items()
    ]
    print(f"{len(prepared)} batches, {audio_seconds:.0f} s of audio, model {arguments.model}, {arguments.device} "
          f"{arguments.dtype}, {torch.get_num_threads()} threads")  # fmt: skip
    bound = medians["forward"] / (medians["forward"] + medians["read"])
    print(f"in turn at best: forward / (forward + read) = {bound:.3f}; with a free core for the thread: 1.0")
    print("path | median_s | audio_s_per_s | vs_forward (throughput)")
    print("--- | --- | --- | ---")
    for row in rows:
        print(" | ".join(str(value) for value in row.values()))
    if arguments.json:
        arguments.json.write_text(json.dumps({"arguments": vars(arguments) | {"json": str(arguments.json), "corpus": str(arguments.corpus)}, "rows": rows, "in_turn_bound": round(bound, 3)}, indent=1))


if __name__ == "__main__":
    main()
