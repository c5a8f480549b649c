#!/usr/bin/env python
"""Training throughput (seconds of audio per second of wall time) and peak memory of one optimizer update.

    python benchmarks/bench_training.py --model demo --batch-seconds 30 --steps 20
    python benchmarks/bench_training.py --model base --batch-seconds 20 --steps 3       # the paper's 275M stack
    python benchmarks/bench_training.py --model base --batch-seconds 200 --device cuda --dtype bf16

A batch is `batch-seconds` of audio cut into utterances of `utterance-seconds` (features drawn at random:
the cost of the encoder does not depend on the values), trained with CTC + LID, Adagrad, gradient clipping,
as the trainer does. Reports the median step time after `warmup` steps and the process's peak memory
(CPU: max resident set size; CUDA: max allocated).
"""

import argparse
import json
import resource
import statistics
import time

import torch

from modeling_mlpl import MlplConfig, MlplForCTC

MODELS = {
    # the demo recipe's model (training/configs/demo_recipe.yaml)
    "demo": dict(hidden_size=192, num_hidden_layers=4, num_attention_heads=4, intermediate_size=768, max_relative_positions=128, pre_layer_norm=True),
    "base": {},  # docs/design.md §2: 36 x 768, 275M parameters with 8065 symbols and 60 languages
    "large": dict(hidden_size=1536, intermediate_size=6144),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(MODELS), default="demo")
    parser.add_argument("--batch-seconds", type=float, default=30.0)
    parser.add_argument("--utterance-seconds", type=float, default=5.0)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    arguments = parser.parse_args()

    vocab, languages = (8065, [f"l{i}" for i in range(60)]) if arguments.model != "demo" else (179, [f"l{i}" for i in range(7)])
    config = MlplConfig(vocab_size=vocab, languages=languages, dropout=0.1, layerdrop=0.0, **MODELS[arguments.model])
    model = MlplForCTC(config).to(arguments.device).train()
    if arguments.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    optimizer = torch.optim.Adagrad(model.parameters(), lr=0.03, eps=1e-8)
    batch_size = max(1, int(arguments.batch_seconds // arguments.utterance_seconds))
    frames = int(arguments.utterance_seconds * 100)  # 10 ms feature frames
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(batch_size, frames, 80, generator=generator).to(arguments.device)
    mask = torch.ones(batch_size, frames, dtype=torch.long, device=arguments.device)
    labels = torch.randint(3, vocab, (batch_size, int(arguments.utterance_seconds * 15)), generator=generator).to(arguments.device)
    language_ids = torch.randint(0, len(languages), (batch_size,), generator=generator).to(arguments.device)
    autocast = torch.autocast(arguments.device.split(":")[0], dtype=torch.bfloat16, enabled=arguments.dtype == "bf16")

    times = []
    for step in range(arguments.warmup + arguments.steps):
        if arguments.device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        with autocast:
            loss = model(features, attention_mask=mask, labels=labels, language_ids=language_ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if arguments.device.startswith("cuda"):
            torch.cuda.synchronize()  # CPU-GPU sync point: time the whole update
        if step >= arguments.warmup:
            times.append(time.perf_counter() - start)
        print(f"step {step}: {time.perf_counter() - start:.3f} s, loss {loss.item():.2f}", flush=True)

    audio_seconds = batch_size * arguments.utterance_seconds
    step_seconds = statistics.median(times)
    peak = (
        torch.cuda.max_memory_allocated() / 2**30
        if arguments.device.startswith("cuda")
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    )
    result = {
        "model": arguments.model,
        "parameters": model.num_parameters(),
        "device": arguments.device,
        "threads": torch.get_num_threads(),
        "dtype": arguments.dtype,
        "batch": f"{batch_size} x {arguments.utterance_seconds} s",
        "median_step_seconds": round(step_seconds, 4),
        "audio_seconds_per_second": round(audio_seconds / step_seconds, 1),
        "peak_memory_gib": round(peak, 2),
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
