"""Which mixed precision a run uses: `train.mixed_precision: auto` picks bf16 only where it is fast.

bf16 autocast is only a speed-up where the hardware has bf16 matrix kernels (docs/design.md §4, mixed precision). On a CPU
without them, oneDNN emulates bf16 and autocast becomes a slowdown: on a 2-core AMD EPYC (Zen 1, AVX2)
one update of the demo model took 3.86 s in bf16 against 0.38 s in fp32, 10x slower; on a 2-core CPU with
AVX-512 it was 2.4-2.8x faster than fp32 (`benchmarks/bench_training.py --dtype bf16`). So:

- "auto": bf16 on a CUDA device that supports it and on a CPU whose oneDNN has bf16 kernels (AVX-512
  BW/VL/DQ, AMX, Arm bf16), otherwise "no" (fp16 is never chosen: CTC's sums overflow it without a scaler);
- an explicit "bf16" is obeyed, with a warning on hardware that only emulates it.
"""

from __future__ import annotations

import logging

import torch

from .config import MIXED_PRECISION_CHOICES as CHOICES

logger = logging.getLogger("mlpl.precision")


def native_bf16(device: torch.device) -> bool:
    """Whether `device` runs bf16 matrix products natively (fast), not by emulation."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        try:  # oneDNN's own test: AVX-512 BW/VL/DQ (bf16 by conversion, still fast), AMX or Arm bf16
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):  # a build without the private op: the capability name
            return torch.backends.cpu.get_cpu_capability().startswith("AVX512")
    return False


def _describe(device: torch.device) -> str:
    return f"CPU capability {torch.backends.cpu.get_cpu_capability()}" if device.type == "cpu" else str(device)


def resolve_mixed_precision(requested: str, device: torch.device) -> str:
    """The `mixed_precision` to give accelerate for `train.mixed_precision: requested` on `device`."""
    if requested not in CHOICES:
        raise ValueError(f"train.mixed_precision={requested!r}: expected one of {', '.join(CHOICES)}")
    if requested == "auto":
        chosen = "bf16" if native_bf16(device) else "no"
        logger.info("train.mixed_precision=auto: %s on %s (%s)", chosen, device.type, _describe(device))
        return chosen
    if requested == "bf16" and not native_bf16(device):
        logger.warning(
            "train.mixed_precision=bf16 on %s (%s), which has no native bf16 kernels: autocast emulates bf16 and "
            "is usually several times slower than fp32 here (10x on an AVX2 CPU). Set train.mixed_precision to "
            "auto or no", device.type, _describe(device),
        )
    return requested


__all__ = ["CHOICES", "native_bf16", "resolve_mixed_precision"]
