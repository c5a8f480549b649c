"""Files a user or a checkpoint folder can hold are never unpickled with the full unpickler (issue 13.1).

A crafted pickle whose `__reduce__` would create a marker file is planted in every place the project loads
from: accelerate's state files in a checkpoint (optimizer.bin, random_states_0.pkl, the trainer state), a
model folder's pytorch_model.bin, and the M-CTC-T converter's input. Each test asserts that the marker is
never created, and that the refusal (or, for the random states, the warning) names the file. The trainer
state's end-to-end test through scripts/train.py --resume is in test_trainer.py.
"""

import logging
import os
import shutil
import sys
from pathlib import Path

import pytest
import torch

from tiny_models import tiny_config

FIXTURE = Path(__file__).parent / "fixtures" / "mctct_tiny"


class RunsCodeWhenUnpickled:
    """Unpickling this with `weights_only=False` would run `touch marker`."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def plant(path: Path, marker: Path) -> None:
    path.unlink(missing_ok=True)
    torch.save({"state": RunsCodeWhenUnpickled(marker)}, path)


@pytest.fixture
def checkpoint(tmp_path):
    """A genuine checkpoint as the trainer writes one: accelerate's save_state + a trainer state, and the
    Accelerator that wrote it (CPU, one process)."""
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    model, optimizer = accelerator.prepare(model, optimizer)
    model(torch.ones(2, 4)).sum().backward()
    optimizer.step()
    folder = tmp_path / "step_1"
    accelerator.save_state(str(folder))
    torch.save({"state": {"num_updates": 1}, "scheduler": {"last_epoch": 1}}, folder / "trainer_state_rank0.pt")
    return accelerator, folder


def test_a_genuine_checkpoint_loads(checkpoint, caplog):
    from mlpl.checkpoint import load_checkpoint

    accelerator, folder = checkpoint
    with caplog.at_level(logging.WARNING, logger="mlpl.trainer"):
        assert load_checkpoint(accelerator, folder)["state"] == {"num_updates": 1}
    assert not caplog.records


@pytest.mark.parametrize("name", ["optimizer.bin", "trainer_state_rank0.pt"])
def test_a_crafted_checkpoint_file_is_refused_by_name_and_never_runs(checkpoint, tmp_path, name):
    from mlpl.checkpoint import load_checkpoint

    accelerator, folder = checkpoint
    marker = tmp_path / "payload_ran"
    plant(folder / name, marker)
    with pytest.raises(ValueError, match="refusing to load") as refused:
        load_checkpoint(accelerator, folder)
    assert not marker.exists(), f"the planted {name} ran its payload"
    assert str(folder / name) in str(refused.value)


def test_crafted_random_states_never_run_and_are_reported_at_warning(checkpoint, tmp_path, caplog):
    """accelerate skips random states it cannot read with an INFO line (hidden by our logging): the resume
    silently stops being exact. It must be a WARNING naming the file."""
    from mlpl.checkpoint import load_checkpoint

    accelerator, folder = checkpoint
    marker = tmp_path / "payload_ran"
    plant(folder / "random_states_0.pkl", marker)
    with caplog.at_level(logging.WARNING):
        load_checkpoint(accelerator, folder)
    assert not marker.exists(), "the planted random_states_0.pkl ran its payload"
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any(str(folder / "random_states_0.pkl") in w and "no longer an exact continuation" in w for w in warnings), warnings


def test_a_crafted_pytorch_model_bin_in_a_model_folder_never_runs(tmp_path):
    from modeling_mlpl import MlplForCTC

    folder = tmp_path / "model"
    MlplForCTC(tiny_config()).save_pretrained(folder)
    (folder / "model.safetensors").unlink()
    marker = tmp_path / "payload_ran"
    plant(folder / "pytorch_model.bin", marker)
    with pytest.raises(Exception):
        MlplForCTC.from_pretrained(folder)
    assert not marker.exists(), "a model folder's pytorch_model.bin ran its payload"


def test_a_crafted_mctct_checkpoint_is_refused_by_name_and_never_runs(tmp_path):
    from modeling_mlpl.convert_mctct_to_mlpl import convert_mctct_checkpoint

    source = tmp_path / "mctct"
    shutil.copytree(FIXTURE, source)
    marker = tmp_path / "payload_ran"
    plant(source / "pytorch_model.bin", marker)
    with pytest.raises(ValueError, match="refusing to load") as refused:
        convert_mctct_checkpoint(source, tmp_path / "converted")
    assert not marker.exists(), "the converter's input ran its payload"
    assert str(source / "pytorch_model.bin") in str(refused.value)
