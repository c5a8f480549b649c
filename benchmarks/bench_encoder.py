#!/usr/bin/env python
"""Encoder layers side by side: mlpl vs itself without the relative term vs PyTorch's and transformers' layers.

    python benchmarks/bench_encoder.py                                  # T = 100 500 1000 1500, fp32, 2 threads
    python benchmarks/bench_encoder.py --dtypes fp32 bf16 --compile     # bf16 autocast and torch.compile columns
    python benchmarks/bench_encoder.py --memory                          # peak memory, one fresh process per cell
    python benchmarks/bench_encoder.py --profile --lengths 1000 --variants mlpl mlpl-norel   # where the time goes
    python benchmarks/bench_encoder.py --device cuda --dtypes fp32 bf16 --lengths 500 1000 2000 3000

Every model is a stack of `--layers` base-size blocks (768 wide, 4 heads, 3072 MLP; `--dropout`, default 0) fed the same
`(B, T, 768)` batch with B * T ~ `--frames`:
- `mlpl`: MlplEncoderLayer with the Shaw relative term (table of `--max-relative-positions`, 920 = the paper, docs/design.md §2.3);
- `mlpl-norel`: the same layers with `max_relative_positions=0` (the target-1 reference);
- `torch`: nn.TransformerEncoder (post-LN, no bias, ReLU); `wav2vec2`: transformers' Wav2Vec2EncoderLayer.
Timing interleaves all variants in one loop (A, B, C, ... repeated), together with a 2048^2 matmul that gives
the machine's fp32 (or bf16) matmul peak under the same load; the table has medians, the time relative to
`mlpl-norel` (same dtype, eager), the relative term's necessary share `f` (one B*H*T^2*head_dim product per
layer) with the target 1.03 * (1 + f), `speedup` over the same variant in eager fp32 (the bf16 and compile
gains), and the fraction of the matmul peak reached on standard FLOPs.
`--memory` runs one forward+backward per (variant, T) in a fresh subprocess and reports its peak above the
state before the step (CPU: resident set; CUDA: max allocated).
"""

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

from modeling_mlpl import MlplConfig
from modeling_mlpl.modeling_mlpl import MlplEncoderLayer

VARIANTS = ("mlpl", "mlpl-norel", "torch", "wav2vec2")


class Stack(nn.Module):
    """Blocks applied in turn; each returns the hidden states or a tuple that starts with them."""

    def __init__(self, blocks):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    def forward(self, hidden_states):
        for block in self.blocks:
            output = block(hidden_states)
            hidden_states = output[0] if isinstance(output, tuple) else output
        return hidden_states


def build(variant, arguments):
    """A stack of `--layers` blocks: a module mapping `(B, T, H)` -> `(B, T, H)`."""
    hidden, heads, inner, layers = arguments.hidden, arguments.heads, arguments.intermediate, arguments.layers
    if variant.startswith("mlpl"):
        positions = arguments.max_relative_positions if variant == "mlpl" else 0
        config = MlplConfig(
            hidden_size=hidden, num_attention_heads=heads, intermediate_size=inner, num_hidden_layers=layers,
            max_relative_positions=positions, dropout=arguments.dropout, layerdrop=0.0, attn_implementation="sdpa",
        )
        blocks = [MlplEncoderLayer(config, index) for index in range(layers)]
        for block in blocks:
            if block.self_attn.relative_position_embeddings is not None:
                nn.init.uniform_(block.self_attn.relative_position_embeddings, -0.1, 0.1)
        return Stack(blocks)
    if variant == "torch":
        layer = nn.TransformerEncoderLayer(hidden, heads, inner, dropout=arguments.dropout, batch_first=True, bias=False)
        return nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
    if variant == "wav2vec2":
        from transformers import Wav2Vec2Config
        from transformers.models.wav2vec2.modeling_wav2vec2 import Wav2Vec2EncoderLayer

        config = Wav2Vec2Config(
            hidden_size=hidden, num_attention_heads=heads, intermediate_size=inner, hidden_dropout=0.0,
            attention_dropout=arguments.dropout, activation_dropout=arguments.dropout, attn_implementation="sdpa",
        )
        return Stack(Wav2Vec2EncoderLayer(config) for _ in range(layers))
    raise ValueError(variant)


def standard_flops(batch, length, arguments):
    """Forward FLOPs of the stack without the relative term: projections, MLP, q.k and p.v."""
    hidden, inner = arguments.hidden, arguments.intermediate
    per_layer = 2 * batch * length * (4 * hidden * hidden + 2 * hidden * inner) + 4 * batch * length * length * hidden
    return arguments.layers * per_layer


def relative_share(length, arguments):
    """f: the relative term's necessary product (B*H*T^2*head_dim multiply-adds) over the layer's FLOPs."""
    hidden, inner = arguments.hidden, arguments.intermediate
    relative = 2 * length * length * hidden
    standard = 2 * length * (4 * hidden * hidden + 2 * hidden * inner) + 4 * length * length * hidden
    return relative / standard


def synchronize(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def step(model, inputs, backward, autocast):
    with autocast:
        if backward:
            model(inputs).float().square().mean().backward()
        else:
            with torch.inference_mode():
                model(inputs)


def cell_key(variant, dtype, compiled):
    return f"{variant}{'-' + dtype if dtype != 'fp32' else ''}{'-compiled' if compiled else ''}"


def timing(arguments):
    device = arguments.device
    # every (variant, dtype, grad mode) is its own graph of the same code objects
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, 64)
    results = []
    dtypes = arguments.dtypes
    for length in arguments.lengths:
        batch = max(1, round(arguments.frames / length))
        generator = torch.Generator().manual_seed(length)
        inputs = torch.randn(batch, length, arguments.hidden, generator=generator).to(device)
        cells = {}
        for variant in arguments.variants:
            model = build(variant, arguments).to(device).train()
            for dtype in dtypes:
                for compiled in (False, True) if arguments.compile else (False,):
                    runnable = torch.compile(model, fullgraph=variant.startswith("mlpl")) if compiled else model
                    cells[cell_key(variant, dtype, compiled)] = (runnable, dtype, variant)
        peak_inputs = {
            dtype: torch.randn(2048, 2048, generator=generator).to(device, torch.bfloat16 if dtype == "bf16" else torch.float32)
            for dtype in dtypes
        }
        times = {(key, mode): [] for key in cells for mode in ("forward", "forward+backward")}
        peak_times = {dtype: [] for dtype in dtypes}
        for repeat in range(arguments.warmup + arguments.repeats):
            for dtype, matrix in peak_inputs.items():
                synchronize(device)
                start = time.perf_counter()
                matrix @ matrix
                synchronize(device)
                if repeat >= arguments.warmup:
                    peak_times[dtype].append(time.perf_counter() - start)
            for key, (runnable, dtype, _) in cells.items():
                autocast = torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=dtype == "bf16")
                for mode in ("forward", "forward+backward"):
                    synchronize(device)
                    start = time.perf_counter()
                    step(runnable, inputs, mode == "forward+backward", autocast)
                    synchronize(device)
                    if repeat >= arguments.warmup:
                        times[(key, mode)].append(time.perf_counter() - start)
                    runnable.zero_grad(set_to_none=True)
        peaks = {dtype: 2 * 2048**3 / statistics.median(values) / 1e9 for dtype, values in peak_times.items()}
        flops = standard_flops(batch, length, arguments)
        share = relative_share(length, arguments)
        for (key, mode), values in times.items():
            _, dtype, variant = cells[key]
            eager_fp32 = times.get((cell_key(variant, "fp32", False), mode))
            median = statistics.median(values)
            reference_times = times.get((cell_key("mlpl-norel", dtype, False), mode))
            reference = statistics.median(reference_times) if reference_times else None
            work = flops * (3 if mode == "forward+backward" else 1)
            results.append({
                "T": length, "batch": batch, "variant": key, "mode": mode,
                "median_s": round(median, 4), "min_s": round(min(values), 4),
                "vs_norel": round(median / reference, 3) if reference else None,
                "vs_norel_best": round(min(values) / min(reference_times), 3) if reference else None,  # least disturbed
                # bf16 and compile gains: time of the same variant in eager fp32 over this one
                "speedup": round(statistics.median(eager_fp32) / median, 2) if eager_fp32 else None,
                "target": round(1.03 * (1 + share), 3) if key == cell_key("mlpl", dtype, key.endswith("-compiled")) else None,
                "f": round(share, 3),
                "gflops": round(work / median / 1e9, 1),
                "fraction_of_peak": round(work / median / 1e9 / peaks[dtype], 2),
                "matmul_peak_gflops": round(peaks[dtype], 1),
            })
    return results


def measure_memory_cell(arguments):
    """In this (fresh) process: one forward+backward of one variant at one T; peak above the state before, MiB."""
    device = arguments.device
    length = arguments.lengths[0]
    batch = max(1, round(arguments.frames / length))
    model = build(arguments.variants[0], arguments).to(device).train()
    inputs = torch.randn(batch, length, arguments.hidden).to(device)
    autocast = torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=arguments.dtypes[0] == "bf16")
    step(model, inputs[:1, :8], True, autocast)  # libraries' lazy set-up, outside the measured peak
    model.zero_grad(set_to_none=True)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step(model, inputs, True, autocast)
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - before
    else:
        with open("/proc/self/statm") as statm:
            before = int(statm.read().split()[1]) * resource.getpagesize()
        step(model, inputs, True, autocast)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    return {"T": length, "batch": batch, "variant": arguments.variants[0], "dtype": arguments.dtypes[0],
            "peak_mib": round(peak / 2**20, 1), "peak_mib_per_1000_frames": round(peak / 2**20 / (batch * length) * 1000, 1)}


def memory(arguments):
    results = []
    for length in arguments.lengths:
        for variant in arguments.variants:
            for dtype in arguments.dtypes:
                command = [
                    sys.executable, __file__, "--memory-cell", "--lengths", str(length), "--variants", variant,
                    "--dtypes", dtype, "--device", arguments.device, "--frames", str(arguments.frames),
                    "--threads", str(arguments.threads), "--layers", str(arguments.layers),
                    "--hidden", str(arguments.hidden), "--heads", str(arguments.heads),
                    "--intermediate", str(arguments.intermediate),
                    "--max-relative-positions", str(arguments.max_relative_positions),
                    "--dropout", str(arguments.dropout),
                ]
                output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
                results.append(json.loads(output.strip().splitlines()[-1]))
    by_cell = {(row["T"], row["variant"], row["dtype"]): row for row in results}
    for row in results:
        reference = by_cell.get((row["T"], "mlpl-norel", row["dtype"]))
        row["vs_norel"] = round(row["peak_mib"] / reference["peak_mib"], 3) if reference else None
    return results


def profile(arguments):
    """One forward+backward per (T, variant) under torch.profiler after a warm-up; per cell the operators with
    the most self time, and how much of the step the matmuls take (where a variant's extra time goes)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    device = arguments.device
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])
    rows = []
    for length in arguments.lengths:
        batch = max(1, round(arguments.frames / length))
        inputs = torch.randn(batch, length, arguments.hidden, generator=torch.Generator().manual_seed(length)).to(device)
        for variant in arguments.variants:
            model = build(variant, arguments).to(device).train()
            autocast = torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=arguments.dtypes[0] == "bf16")
            for _ in range(1 + arguments.warmup):
                step(model, inputs, True, autocast)
                model.zero_grad(set_to_none=True)
            with torch_profile(activities=activities) as profiler:
                step(model, inputs, True, autocast)
                synchronize(device)
            events = [event for event in profiler.key_averages() if event.self_cpu_time_total > 0]
            total = sum(event.self_cpu_time_total for event in events)
            matmul = sum(event.self_cpu_time_total for event in events if event.key in MATMUL_OPS)
            top = sorted(events, key=lambda event: event.self_cpu_time_total, reverse=True)[: arguments.profile_top]
            print(f"\nT = {length}, {variant}: step {total / 1e3:.1f} ms (self time summed), matmuls {matmul / total:.0%}")
            for event in top:
                print(f"  {event.key:<48} {event.self_cpu_time_total / 1e3:8.1f} ms  {event.self_cpu_time_total / total:5.1%}  x{event.count}")
            rows.append({
                "T": length, "batch": batch, "variant": variant, "dtype": arguments.dtypes[0], "step_ms": round(total / 1e3, 1),
                "matmul_share": round(matmul / total, 3),
                "top": [{"op": event.key, "self_ms": round(event.self_cpu_time_total / 1e3, 2), "count": event.count} for event in top],
            })
    return rows


MATMUL_OPS = {"aten::mm", "aten::bmm", "aten::addmm", "aten::baddbmm", "aten::matmul", "aten::linear"}


def print_table(rows, columns):
    print(" | ".join(columns))
    print(" | ".join("---" for _ in columns))
    for row in rows:
        print(" | ".join("" if row.get(column) is None else str(row[column]) for column in columns))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[100, 500, 1000, 1500])
    parser.add_argument("--frames", type=int, default=2000, help="B * T per batch")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--dtypes", nargs="+", choices=["fp32", "bf16"], default=["fp32"])
    parser.add_argument("--compile", action="store_true", help="also time torch.compile'd stacks")
    parser.add_argument("--memory", action="store_true", help="peak memory of forward+backward, fresh processes")
    parser.add_argument("--memory-cell", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--profile", action="store_true", help="torch.profiler of one forward+backward per cell: where the time goes")
    parser.add_argument("--profile-top", type=int, default=12, help="operators listed per profiled cell")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--intermediate", type=int, default=3072)
    parser.add_argument("--max-relative-positions", type=int, default=920)
    parser.add_argument(
        "--dropout", type=float, default=0.0,
        help="attention and MLP dropout of every variant (training configs use 0.1-0.3); the stacks run in train mode",
    )
    parser.add_argument("--json", type=Path, default=None, help="write the rows here")
    arguments = parser.parse_args()
    torch.set_num_threads(arguments.threads)
    torch.manual_seed(0)
    if arguments.memory_cell:
        print(json.dumps(measure_memory_cell(arguments)))
        return
    machine = {"device": arguments.device, "threads": torch.get_num_threads(), "torch": torch.__version__}
    if arguments.profile:
        rows = profile(arguments)
    elif arguments.memory:
        rows = memory(arguments)
        print_table(rows, ["T", "batch", "variant", "dtype", "peak_mib", "peak_mib_per_1000_frames", "vs_norel"])
    else:
        rows = timing(arguments)
        print_table(rows, ["T", "batch", "variant", "mode", "median_s", "min_s", "vs_norel", "vs_norel_best", "target", "f", "speedup", "fraction_of_peak", "matmul_peak_gflops"])
    if arguments.json:
        arguments.json.write_text(json.dumps({"machine": machine, "arguments": vars(arguments) | {"json": str(arguments.json)}, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
