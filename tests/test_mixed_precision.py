"""bf16 (issue 11, target 4): autocast training steps, `train.mixed_precision: bf16` runs of the real trainer
(loss finite and falling, resumable), a bf16 model in the ASR pipeline, and `auto` (bf16 only where native)."""

import json
import math

import pytest
import torch

from mlpl import precision
from modeling_mlpl import MlplForCTC
from test_modeling import random_batch
from test_trainer import TINY_MODEL, records, run_train, write_config
from tiny_models import tiny_config


# blocked: RelativePositionAttention; short: the whole bias with plain matmuls (short CPU batches); eager: the same
# path that also returns the weights
@pytest.mark.parametrize("attention", ["blocked", "short", "eager"])
def test_bf16_autocast_training_step_is_finite_and_close_to_fp32(attention, request):
    if attention == "blocked":
        request.getfixturevalue("blocked_attention")
    torch.manual_seed(0)
    model = MlplForCTC(tiny_config(max_relative_positions=5)).train()
    model.config._attn_implementation = "eager" if attention == "eager" else "sdpa"
    features, mask = random_batch([40, 31], seed=4)
    labels = torch.tensor([[3, 4, 5], [6, 7, -100]])

    def loss_and_gradients(dtype):
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            loss = model(features, attention_mask=mask, labels=labels, language_ids=torch.tensor([0, 1])).loss
        loss.backward()
        return loss.detach().float(), {name: p.grad.clone() for name, p in model.named_parameters()}

    loss, gradients = loss_and_gradients(torch.bfloat16)
    reference_loss, reference = loss_and_gradients(torch.float32)
    assert math.isfinite(float(loss))
    torch.testing.assert_close(loss, reference_loss, rtol=0.02, atol=0.0)
    for name, gradient in gradients.items():
        assert gradient.dtype == torch.float32 and torch.isfinite(gradient).all(), name  # master weights stay fp32
    # the whole gradient points the same way (single scalar gradients are at the level of bf16 noise)
    flat, reference_flat = (torch.cat([g.flatten() for g in grads.values()]) for grads in (gradients, reference))
    assert torch.nn.functional.cosine_similarity(flat, reference_flat, dim=0) > 0.99


@pytest.mark.slow
def test_bf16_training_run_falls_resumes_and_its_model_runs_in_bf16_in_the_pipeline(tiny_demo_corpus, tmp_path):
    config = write_config(
        tmp_path / "bf16.yaml",
        tiny_demo_corpus,
        model={"overrides": TINY_MODEL, "dropout": 0.0, "layerdrop": 0.0},
        optim={"optimizer": "adamw", "lr": 0.003, "warmup_updates": 4, "halve_lr_at": None, "max_grad_norm": 5.0},
        spec_augment={"enabled": False},
        train={"max_updates": 24, "save_every": 12, "log_every": 4, "keep_last": 2, "mixed_precision": "bf16"},
    )
    output_dir = tmp_path / "run"
    run_train(config, output_dir, "train.max_updates=12")
    completed = run_train(config, output_dir, "--resume")  # the same run, continued to 24 updates
    assert "resumed from" in completed.stderr

    losses = [row["loss"] for row in records(output_dir) if "loss" in row]
    assert [row["update"] for row in records(output_dir) if "loss" in row] == [4, 8, 12, 16, 20, 24]
    assert all(math.isfinite(loss) for loss in losses)
    assert losses[-1] < 0.8 * losses[0], losses
    summary = json.loads((output_dir / "train_summary.json").read_text())
    assert summary["num_updates"] == 24 and summary["skipped_non_finite"] == 0
    assert summary["mixed_precision"] == "bf16"  # an explicit bf16 is obeyed, warned about where it is emulated
    assert ("no native bf16 kernels" in completed.stderr) == (not precision.native_bf16(torch.device("cpu")))

    from transformers import pipeline

    from mlpl.audio import load_audio

    recognizer = pipeline("automatic-speech-recognition", model=str(output_dir / "final"), dtype=torch.bfloat16)
    assert recognizer.model.dtype == torch.bfloat16
    clip = next((tiny_demo_corpus / "cv" / "fi" / "clips").glob("*.mp3"))
    assert isinstance(recognizer(load_audio(clip))["text"], str)


@pytest.mark.parametrize("native", [True, False])
def test_auto_mixed_precision_is_bf16_only_where_it_is_native(native, monkeypatch, caplog):
    monkeypatch.setattr(precision, "native_bf16", lambda device: native)
    cpu = torch.device("cpu")
    with caplog.at_level("INFO", logger="mlpl.precision"):
        assert precision.resolve_mixed_precision("auto", cpu) == ("bf16" if native else "no")
        assert precision.resolve_mixed_precision("bf16", cpu) == "bf16"  # obeyed either way
        assert precision.resolve_mixed_precision("no", cpu) == "no"
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    if native:
        assert warnings == []
    else:  # the explicit bf16 names the device and the fix
        assert len(warnings) == 1 and "cpu" in warnings[0] and "auto or no" in warnings[0]
    with pytest.raises(ValueError, match="mixed_precision='fp8'"):
        precision.resolve_mixed_precision("fp8", cpu)


def test_native_bf16_on_this_cpu_follows_onednn_and_auto_reaches_the_accelerator(tmp_path):
    """The CPU check is oneDNN's own (AVX-512 BW/VL/DQ, AMX or Arm bf16), and the trainer's Accelerator gets
    the resolved value."""
    from mlpl.config import ExperimentConfig, TrainConfig
    from mlpl.trainer import _accelerator

    native = precision.native_bf16(torch.device("cpu"))
    assert native == bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    if not torch.backends.cpu.get_cpu_capability().startswith("AVX512") and torch.backends.cpu.get_cpu_capability() != "DEFAULT":
        assert not native  # an AVX2 x86 CPU only emulates bf16
    config = ExperimentConfig(train=TrainConfig(output_dir=str(tmp_path / "run"), mixed_precision="auto", cpu=True))
    assert _accelerator(config).mixed_precision == ("bf16" if native else "no")


def test_a_second_run_in_the_same_process_may_change_its_precision(tmp_path):
    """accelerate keeps one AcceleratorState per process and refuses a second Accelerator of another precision;
    a second run in the same process (a notebook) gets its own (found on an AVX-512 CPU, where `auto` is bf16
    while an earlier run in the process used "no")."""
    from mlpl.config import ExperimentConfig, TrainConfig
    from mlpl.trainer import _accelerator

    precisions = []
    for name, mixed_precision in (("a", "no"), ("b", "bf16"), ("c", "no")):
        config = ExperimentConfig(train=TrainConfig(output_dir=str(tmp_path / name), mixed_precision=mixed_precision, cpu=True))
        precisions.append(_accelerator(config).mixed_precision)
    assert precisions == ["no", "bf16", "no"]
