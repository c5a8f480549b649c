"""Per-language LoRA adapters on a frozen base model, through peft (docs/design.md §6, "Per-language adapters").

Stages 2-3 of the recipe make one model per low-resource language; with `adapters: {enabled: true}` each
language gets a LoRA adapter on the frozen stage-1 model instead of a full copy (MMS's approach): a folder
of `adapter_config.json` + `adapter_model.safetensors` (+ the processor files), whose
`base_model_name_or_path` names the base model.

    model = load_initial_model(init_from, config.adapters)   # the trainer: full model, + new / continued adapter
    model = MlplForCTC.from_pretrained(adapter_folder)        # transformers: base (from the adapter config) + adapter
    model = load_language_adapters(base_folder, {"el": el_folder, "fi": fi_folder}); set_active_adapter(model, "fi")

Training wraps the model in a `peft.PeftModel` (saving writes the adapter folder); inference goes through
transformers' PEFT integration (`load_adapter`, `set_adapter`), so the model stays an `MlplForCTC` that the
ASR pipeline, evaluation and pseudo-labeling take as they are.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path

import torch

logger = logging.getLogger("mlpl.adapters")

ADAPTER_CONFIG_FILE = "adapter_config.json"
ADAPTER_WEIGHTS_FILE = "adapter_model.safetensors"


def is_adapter_folder(path: str | os.PathLike | None) -> bool:
    """True for a local PEFT adapter folder (it has adapter_config.json)."""
    return path is not None and (Path(path) / ADAPTER_CONFIG_FILE).is_file()


def read_adapter_config(folder: str | os.PathLike) -> dict:
    path = Path(folder) / ADAPTER_CONFIG_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{path} is missing: {folder} is not a PEFT adapter folder") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}); save the adapter again with save_pretrained") from None


def adapter_base_model(folder: str | os.PathLike, base_model: str | os.PathLike | None = None) -> str:
    """The base model of an adapter: `base_model` if given, else the folder's `base_model_name_or_path`.

    A name that looks like a local path (absolute, or ./ ../) must exist; anything else may be a Hub id.
    """
    name = str(base_model) if base_model else read_adapter_config(folder).get("base_model_name_or_path")
    if not name:
        raise ValueError(
            f"{Path(folder) / ADAPTER_CONFIG_FILE} names no base_model_name_or_path; pass the base model "
            "(adapters.base_model, or base_model=)"
        )
    if (os.path.isabs(name) or name.startswith(".")) and not Path(name).is_dir():
        where = "adapters.base_model" if base_model else f"{Path(folder) / ADAPTER_CONFIG_FILE} base_model_name_or_path"
        raise ValueError(f"{where} = {name!r} is not a folder; pass the base model's folder or Hub id (adapters.base_model)")
    return name


def lora_config(settings, inference_mode: bool = False):
    """The `peft.LoraConfig` of an `AdapterConfig` (mlpl.config)."""
    from peft import LoraConfig

    return LoraConfig(
        r=settings.rank,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(settings.target_modules),
        modules_to_save=list(settings.modules_to_save) or None,
        bias="none",
        inference_mode=inference_mode,
    )


def _check_module_names(model: torch.nn.Module, names, what: str) -> None:
    """Every name must be the last part of some module's name (peft matches modules_to_save that way, and would
    silently train nothing for a typo)."""
    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules() if name}
    unknown = sorted(set(names) - present)
    if unknown:
        raise ValueError(f"adapters.{what}: no module named {unknown} in {type(model).__name__}; it has {sorted(present)}")


def add_training_adapter(model, settings, base_name_or_path: str | os.PathLike):
    """`model` (an MlplForCTC) frozen, with a new trainable LoRA adapter: a `peft.PeftModel`.

    `base_name_or_path` is what the saved adapter_config.json names as its base (made absolute if local).
    """
    from peft import get_peft_model

    _check_module_names(model, settings.target_modules, "target_modules")
    _check_module_names(model, settings.modules_to_save, "modules_to_save")
    base = Path(base_name_or_path)
    model.name_or_path = str(base.resolve()) if base.exists() else str(base_name_or_path)  # peft writes it to the adapter config
    return get_peft_model(model, lora_config(settings))


def continue_adapter(folder: str | os.PathLike, base_model: str | os.PathLike | None = None):
    """An adapter folder loaded trainable onto its (frozen) base model: a `peft.PeftModel`."""
    from modeling_mlpl import MlplForCTC
    from peft import PeftModel

    base_name = adapter_base_model(folder, base_model)
    base = MlplForCTC.from_pretrained(base_name)
    base.name_or_path = str(Path(base_name).resolve()) if Path(base_name).is_dir() else base_name
    return PeftModel.from_pretrained(base, str(folder), is_trainable=True)


def load_initial_model(init_from: str | os.PathLike, settings):
    """The model a training run starts from (`model.init_from`, `adapters` settings):

    - a model folder: the model, or with `adapters.enabled` the frozen model + a new adapter (PeftModel);
    - an adapter folder (needs `adapters.enabled`): its base + that adapter, trainable (PeftModel).
    """
    from modeling_mlpl import MlplForCTC

    if is_adapter_folder(init_from):
        if not settings.enabled:
            raise ValueError(
                f"model.init_from={init_from} is a PEFT adapter folder; set adapters.enabled: true to train that "
                "adapter on, or start from a full model folder"
            )
        model = continue_adapter(init_from, settings.base_model)
        saved = model.peft_config["default"]
        if (saved.r, saved.lora_alpha) != (settings.rank, settings.alpha):
            logger.warning(
                "continuing the adapter %s with its own rank %d / alpha %g (adapters.rank=%d, alpha=%g are for new adapters)",
                init_from, saved.r, saved.lora_alpha, settings.rank, settings.alpha,
            )  # fmt: skip
    else:
        model = MlplForCTC.from_pretrained(init_from)
        if settings.enabled:
            model = add_training_adapter(model, settings, init_from)
    if settings.enabled:
        counts = parameter_counts(model)
        logger.info(
            "adapter: %d of %d parameters train (%.2f %%; LoRA r=%d on %s, whole: %s)", counts["trainable"], counts["total"],
            100 * counts["trainable"] / counts["total"], model.peft_config["default"].r,
            sorted(model.peft_config["default"].target_modules), sorted(model.peft_config["default"].modules_to_save or []),
        )  # fmt: skip
    return model


def parameter_counts(model: torch.nn.Module) -> dict[str, int]:
    """{"trainable": parameters with requires_grad, "total": all (a LoRA model: base + adapter; a module in
    modules_to_save counts twice, as its frozen original and its trained copy)}."""
    parameters = list(model.parameters())
    return {"trainable": sum(p.numel() for p in parameters if p.requires_grad), "total": sum(p.numel() for p in parameters)}


def set_active_adapter(model, adapter_name: str) -> None:
    """`model.set_adapter(adapter_name)`, transformers' PEFT integration, which also switches the modules_to_save
    copies (after a second `load_adapter`, LoRA layers use the new adapter but the heads still the old one).

    transformers gates `set_adapter` on a newer peft than it needs for this; where that gate refuses the installed
    peft, the same switch is made through peft's own layer API (what transformers' method does after the check).
    """
    from transformers.integrations.peft import MIN_PEFT_VERSION
    from transformers.utils.import_utils import is_peft_greater_or_equal

    loaded = list(getattr(model, "peft_config", {}) or {})
    if adapter_name not in loaded:  # checked here for every peft version: our message names the fix
        raise ValueError(f"adapter {adapter_name!r} is not loaded; loaded adapters: {loaded} (model.load_adapter(folder, adapter_name=...))")
    if is_peft_greater_or_equal(MIN_PEFT_VERSION):
        model.set_adapter(adapter_name)
        return
    from peft.tuners.tuners_utils import BaseTunerLayer
    from peft.utils import ModulesToSaveWrapper

    for module in model.modules():
        if isinstance(module, (BaseTunerLayer, ModulesToSaveWrapper)):
            module.set_adapter(adapter_name)


def load_language_adapters(base_model, adapters: Mapping[str, str | os.PathLike], active: str | None = None, dtype: torch.dtype | None = None):
    """One base model with several adapters loaded by name (e.g. one per language), `active` (default: the first)
    switched on; switch with `set_active_adapter(model, name)`. `base_model`: an MlplForCTC or its folder / Hub id.

    Returns the MlplForCTC, in eval mode.
    """
    from modeling_mlpl import MlplForCTC

    if not adapters:
        raise ValueError("no adapters given; pass {name: adapter folder}")
    model = base_model
    if not isinstance(model, torch.nn.Module):
        model = MlplForCTC.from_pretrained(base_model, dtype=dtype) if dtype is not None else MlplForCTC.from_pretrained(base_model)
    for name, folder in adapters.items():
        model.load_adapter(str(folder), adapter_name=name)
    set_active_adapter(model, active or next(iter(adapters)))
    return model.eval()


def set_adapter_base_model(folder: str | os.PathLike, base_model: str) -> None:
    """Rewrite the adapter folder's `base_model_name_or_path` (e.g. to the base model's Hub id before publishing)."""
    from .files import write_json_atomically

    values = read_adapter_config(folder)
    values["base_model_name_or_path"] = base_model
    write_json_atomically(Path(folder) / ADAPTER_CONFIG_FILE, values)


def run_identity(values: dict) -> dict:
    """A config dict (ExperimentConfig or RecipeConfig, as `config_to_dict` gives it) without its `adapters`
    section when adapters are off, and without the later options (slimIPL's LM and oracle, `optim.decay_from`,
    `spec_augment.batches`) when they are unset: a run folder made
    before those existed is still the same run (mlpl.run_folder compares every key)."""
    adapters = values.get("adapters")
    if adapters is not None and not (adapters or {}).get("enabled", False):
        values = {key: value for key, value in values.items() if key != "adapters"}
    from .config import OPTIM_KEYS_ADDED_LATER, SLIMIPL_KEYS_ADDED_LATER, SPEC_AUGMENT_KEYS_ADDED_LATER
    from .run_folder import without_keys_added_later

    return without_keys_added_later(
        values, {"slimipl": SLIMIPL_KEYS_ADDED_LATER, "optim": OPTIM_KEYS_ADDED_LATER, "spec_augment": SPEC_AUGMENT_KEYS_ADDED_LATER}
    )


def folder_bytes(folder: str | os.PathLike) -> int:
    """Bytes of the files in `folder` (its subfolders included)."""
    return sum(path.stat().st_size for path in Path(folder).rglob("*") if path.is_file())


__all__ = [
    "ADAPTER_CONFIG_FILE",
    "ADAPTER_WEIGHTS_FILE",
    "adapter_base_model",
    "add_training_adapter",
    "continue_adapter",
    "folder_bytes",
    "is_adapter_folder",
    "load_initial_model",
    "load_language_adapters",
    "lora_config",
    "parameter_counts",
    "read_adapter_config",
    "run_identity",
    "set_active_adapter",
    "set_adapter_base_model",
]
