"""Is a folder ready to publish? `hub_ready_folder_check` lists everything it lacks, before anything is sent.

A model folder must load from the Hub with `trust_remote_code=True` (docs/design.md §9): config.json with
its auto_map, the remote-code files, the weights, the processor and a card; an adapter folder its base
model's Hub id (docs/design.md §6, "Per-language adapters"); a pseudo-label folder readable shards.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Union

from huggingface_hub import DatasetCard, ModelCard
from huggingface_hub.utils import HFValidationError, validate_repo_id

from ..stages import RepoType


class HubFolderError(ValueError):
    """A folder is not ready to be published; the message lists everything missing."""


def read_json(path: Path) -> dict[str, Any]:
    """A JSON file of a folder to publish; a HubFolderError naming it when it is missing or malformed."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise HubFolderError(f"{path} is missing") from None
    except json.JSONDecodeError as error:
        raise HubFolderError(f"{path} is not valid JSON: {error}") from None


def _auto_map_modules(auto_map: Mapping[str, Any]) -> set[str]:
    """Module names of an `auto_map` ("modeling_mlpl.MlplForCTC" -> "modeling_mlpl")."""
    modules = set()
    for value in auto_map.values():
        for reference in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(reference, str) and "." in reference:
                modules.add(reference.split("--")[-1].rsplit(".", 1)[0])
    return modules


def _model_folder_problems(folder: Path) -> list[str]:
    problems = []
    names = {path.name for path in folder.iterdir()}
    modules: set[str] = set()
    config_path = folder / "config.json"
    if "config.json" not in names:
        problems.append("config.json (save the model with save_pretrained)")
    else:
        try:
            config = read_json(config_path)
        except HubFolderError as error:
            problems.append(str(error))
            config = {}
        auto_map = config.get("auto_map") or {}
        for auto_class in ("AutoConfig", "AutoModelForCTC"):
            if auto_class not in auto_map and config:
                problems.append(
                    f"config.json auto_map entry {auto_class} (import modeling_mlpl before save_pretrained: it calls "
                    "register_for_auto_class, which makes the folder loadable with trust_remote_code=True)"
                )
        modules |= _auto_map_modules(auto_map)
    if not ({"processor_config.json", "preprocessor_config.json"} & names):
        problems.append("processor_config.json or preprocessor_config.json (save the processor with save_pretrained)")
    for name in ("processor_config.json", "preprocessor_config.json", "tokenizer_config.json"):
        if name in names:
            try:
                settings = read_json(folder / name)
            except HubFolderError as error:
                problems.append(str(error))
                continue
            modules |= _auto_map_modules(settings.get("auto_map") or {})
            modules |= _auto_map_modules((settings.get("feature_extractor") or {}).get("auto_map") or {})
    for name in ("vocab.json", "tokenizer_config.json"):
        if name not in names:
            problems.append(f"{name} (the character tokenizer; save the processor with save_pretrained)")
    problems.extend(_missing_remote_code(folder, modules))
    problems.extend(_missing_weights(folder, names))
    return problems


def _adapter_folder_problems(folder: Path) -> list[str]:
    """A PEFT adapter folder (docs/design.md §6, "Per-language adapters"): adapter_config.json naming a base model by
    Hub id, the adapter weights as safetensors, the processor files, and a card that says what it adapts."""
    problems = []
    names = {path.name for path in folder.iterdir()}
    try:
        config = read_json(folder / "adapter_config.json")
    except HubFolderError as error:
        return [str(error)]
    if not config.get("peft_type"):
        problems.append("adapter_config.json peft_type (save the adapter with PeftModel.save_pretrained)")
    base = config.get("base_model_name_or_path")
    if not base:
        problems.append("adapter_config.json base_model_name_or_path (the base model's Hub id)")
    else:
        try:
            validate_repo_id(base)
            local = Path(base).is_dir()
        except HFValidationError:
            local = True
        if local:
            problems.append(
                f"adapter_config.json base_model_name_or_path as a Hub id, not the local path {base!r} "
                "(publish the base model, then mlpl.adapters.set_adapter_base_model(folder, repo_id))"
            )
    if "adapter_model.safetensors" not in names:
        problems.append("adapter weights adapter_model.safetensors (PeftModel.save_pretrained writes them)")
    if not ({"processor_config.json", "preprocessor_config.json"} & names) or "vocab.json" not in names:
        problems.append("the processor files: processor_config.json / preprocessor_config.json and vocab.json (processor.save_pretrained)")
    if "README.md" in names:
        try:
            metadata = ModelCard((folder / "README.md").read_text(encoding="utf-8")).data.to_dict()
        except Exception:  # reported by hub_ready_folder_check
            metadata = {}
        if metadata and (metadata.get("library_name") != "peft" or not metadata.get("base_model")):
            problems.append("a README.md whose metadata has library_name: peft and base_model: (write_model_card(..., adapter_of=))")
    return problems


def _missing_remote_code(folder: Path, modules: set[str]) -> list[str]:
    """The .py files the auto_maps name, and the files they import relatively, that are absent.

    The relative imports are followed by transformers' own walk (`get_relative_import_files`, what loading
    with trust_remote_code does); it stops at the first imported file that is missing, which is listed."""
    from transformers.dynamic_module_utils import get_relative_import_files

    needed = set()
    for module in modules:
        path = folder / f"{module}.py"
        needed.add(path)
        if path.is_file():
            try:
                needed.update(Path(name) for name in get_relative_import_files(path))
            except FileNotFoundError as error:  # an imported file is absent
                needed.add(Path(error.filename))
    return sorted(f"{path.name} (remote code named by auto_map or imported by it)" for path in needed if not path.is_file())


def _missing_weights(folder: Path, names: set[str]) -> list[str]:
    index_name = "model.safetensors.index.json"
    if index_name in names:
        try:
            index = read_json(folder / index_name)
        except HubFolderError as error:
            return [str(error)]
        shards = sorted(set((index.get("weight_map") or {}).values()))
        if not shards:
            return [f"{index_name} lists no weight shard"]
        return [f"weight shard {shard} listed in {index_name}" for shard in shards if shard not in names]
    if not any(name.endswith(".safetensors") for name in names):
        return ["model weights as .safetensors (save_pretrained writes model.safetensors)"]
    return []


def pseudo_label_shards(folder: Union[str, Path]) -> list[Path]:
    """The parquet shards of a pseudo-label folder, sorted, relative to it."""
    folder = Path(folder)
    return sorted(path.relative_to(folder) for path in folder.rglob("*.parquet") if not _is_hidden(path, folder))


def _is_hidden(path: Path, folder: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(folder).parts)


def _dataset_folder_problems(folder: Path) -> list[str]:
    import pyarrow.parquet

    shards = pseudo_label_shards(folder)
    if not shards:
        return ["parquet shards (*.parquet) of the pseudo-labels"]
    problems = []
    for shard in shards:
        try:
            pyarrow.parquet.read_schema(folder / shard)
        except Exception as error:  # pyarrow raises ArrowInvalid, OSError... for a corrupt file
            problems.append(f"a readable {shard} ({type(error).__name__}: {error})")
    return problems


def hub_ready_folder_check(folder: Union[str, Path], kind: RepoType) -> None:
    """Raise `HubFolderError` listing everything `folder` lacks to be published as `kind`.

    A model folder needs config.json with an auto_map (AutoConfig, AutoModelForCTC), the remote-code
    .py files it names, .safetensors weights, the processor and tokenizer files and README.md; an adapter
    folder (adapter_config.json) its base model's Hub id, adapter_model.safetensors, the processor files
    and a README.md with `library_name: peft` and `base_model:`; a
    pseudo-label folder ("dataset") needs its parquet shards (readable) and README.md. A README.md
    must have a parseable YAML header.
    """
    folder = Path(folder)
    if kind not in ("model", "dataset"):
        raise ValueError(f"kind={kind!r} must be 'model' (a checkpoint) or 'dataset' (a pseudo-label set)")
    if not folder.is_dir():
        raise HubFolderError(f"{folder} is not a folder; pass the folder written by save_pretrained / stage 4")
    if kind == "dataset":
        problems = _dataset_folder_problems(folder)
    else:
        problems = _adapter_folder_problems(folder) if (folder / "adapter_config.json").is_file() else _model_folder_problems(folder)
    readme = folder / "README.md"
    writer = "write_model_card" if kind == "model" else "write_dataset_card"
    if not readme.is_file():
        problems.append(f"README.md (the card; write it with mlpl.hub.{writer})")
    else:
        card_class = ModelCard if kind == "model" else DatasetCard
        try:
            card_class(readme.read_text(encoding="utf-8"))
        except Exception as error:  # huggingface_hub raises ValueError for a malformed YAML header
            problems.append(f"a README.md with a valid YAML header ({error})")
    if problems:
        raise HubFolderError(
            f"{folder} is not ready to publish as a {kind} repo; missing:\n  - " + "\n  - ".join(problems)
        )



__all__ = ["HubFolderError", "hub_ready_folder_check", "pseudo_label_shards", "read_json"]
