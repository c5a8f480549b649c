"""Per-language LoRA adapters (issue 15.3, docs/design.md §6 "Per-language adapters"): the recipe with
`adapters: {enabled: true}` on the tiny demo corpus trains an adapter per language in stages 2-3 on the
frozen stage-1 model, saves PEFT adapter folders, and stage 4 pseudo-labels with base + adapter; the
adapter round-trips through load_adapter, the ASR pipeline and a Hub-style folder with the same logits."""

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
import yaml
from huggingface_hub import constants as hub_constants
from huggingface_hub import metadata_load
from safetensors.torch import load_file

from hub_standin import HubStandIn
from modeling_mlpl import MlplForCTC, MlplProcessor
from mlpl.adapters import (
    ADAPTER_CONFIG_FILE,
    ADAPTER_WEIGHTS_FILE,
    add_training_adapter,
    folder_bytes,
    load_initial_model,
    load_language_adapters,
    read_adapter_config,
    set_active_adapter,
    set_adapter_base_model,
)
from mlpl.audio import load_audio
from mlpl.config import AdapterConfig, ExperimentConfig, build_dataclass, load_config
from mlpl.hub import HubConfig, HubFolderError, hub_ready_folder_check, publish_folder
from mlpl.recipe import DONE, Recipe, RecipeConfig
from mlpl.stages import STAGE_FOLDERS

TOKEN = "hf_standInSecretToken0123456789"
BASE_REPO = "demo-org/mlpl-test-stage1-supervised"
ADAPTER_REPO = "demo-org/mlpl-test-stage3-slimipl-el"
MICRO = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 4, "intermediate_size": 64, "max_relative_positions": 64}


@pytest.fixture(scope="module")
def recipe(tiny_demo_corpus, tmp_path_factory):
    """Stages 1-4 for el with adapters on: stage 2 trains 4 updates (checkpoints at 2 and 4), stage 3 3 of slimIPL."""
    output = tmp_path_factory.mktemp("adapters") / "out"
    values = {
        "output_dir": str(output),
        "labeled": {"kind": "common_voice", "path": str(tiny_demo_corpus / "cv")},
        "unlabeled": {"kind": "voxpopuli", "path": str(tiny_demo_corpus / "voxpopuli")},
        "languages": ["en", "el", "fi"],
        "adapters": {"enabled": True, "rank": 4, "alpha": 8},
        "common": {
            "data": {"max_batch_seconds": 40},
            "model": {"overrides": MICRO, "dropout": 0.0, "layerdrop": 0.0},
            "optim": {"optimizer": "adamw", "lr": 0.01, "warmup_updates": 1, "halve_lr_at": None, "max_grad_norm": 5.0},
            "train": {"max_updates": 3, "eval_every": 3, "save_every": 3, "log_every": 1, "keep_last": 0},
        },
        "stage2": {"train": {"max_updates": 4, "eval_every": 2, "save_every": 2}},
        "stage3": {"slimipl": {"supervised_warmup_updates": 0, "unlabeled_ratio": 1, "cache_size": 1, "cropping_warmup_updates": 1, "crop_seconds": 5.0}},
        "pseudo_labels": {"max_batch_seconds": 100},
        "evaluation_splits": ["dev"],
        "hub": {"namespace": "demo-org", "prefix": "mlpl-test"},
    }
    Recipe(build_dataclass(RecipeConfig, values)).run([1, 2, 3, 4], ["el"])
    stages = output / "stages"
    return {
        "stages": stages,
        "base": stages / STAGE_FOLDERS[1] / "best",
        "stage2": stages / STAGE_FOLDERS[2] / "el",
        "stage3": stages / STAGE_FOLDERS[3] / "el",
        "corpus": tiny_demo_corpus,
    }


def features(recipe, count=2):
    """Real clips of the corpus (el dev), featurized by the base model's processor."""
    processor = MlplProcessor.from_pretrained(recipe["base"])
    clips = sorted((recipe["corpus"] / "cv" / "el" / "clips").glob("*.mp3"))[:count]
    audio = [load_audio(clip) for clip in clips]
    return processor(audio=audio, sampling_rate=16000, return_tensors="pt"), audio


def logits_of(model, inputs):
    with torch.no_grad():
        return model.eval()(**inputs).logits


def base_key(name: str) -> str:
    """The base model's name of a parameter of a PEFT-wrapped model (or a checkpoint of one)."""
    return name.removeprefix("base_model.model.").replace(".base_layer.", ".").replace(".original_module.", ".")


def test_stages_2_and_3_save_adapter_folders_on_the_stage_1_model(recipe):
    base = recipe["base"].resolve()
    for unit in ("stage2", "stage3"):
        best = recipe[unit] / "best"
        assert (best / ADAPTER_CONFIG_FILE).is_file() and (best / ADAPTER_WEIGHTS_FILE).is_file()
        assert not (best / "config.json").exists() and not (best / "model.safetensors").exists()
        config = read_adapter_config(best)
        assert config["peft_type"] == "LORA" and (config["r"], config["lora_alpha"]) == (4, 8)
        assert config["base_model_name_or_path"] == str(base)
        assert set(config["target_modules"]) == {"q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"} and config["modules_to_save"] == ["ctc_head"]
        saved = load_file(best / ADAPTER_WEIGHTS_FILE)
        assert saved and all(".lora_A." in key or ".lora_B." in key or ".ctc_head." in key for key in saved)
        assert (best / ADAPTER_WEIGHTS_FILE).stat().st_size < (base / "model.safetensors").stat().st_size / 2 and folder_bytes(best) < folder_bytes(base)
        card = metadata_load(best / "README.md")
        assert card["library_name"] == "peft" and card["base_model"] == BASE_REPO
        assert card["language"] == ["el", "en", "fi"]  # the base model's languages
        summary = json.loads((recipe[unit] / "train_summary.json").read_text())
        assert 0 < summary["parameters"]["trainable"] < summary["parameters"]["total"] / 4
    # a run without adapters records no adapters keys: run folders from before adapters existed stay the same run
    assert not any(key.startswith("adapters") for key in json.loads((recipe["base"].parent / "run.json").read_text())["config"])
    assert json.loads((recipe["stage2"] / "run.json").read_text())["config"]["adapters.enabled"] is True
    # stage 3 continued stage 2's adapter on the stage-1 model; its card names both
    stage3 = yaml.safe_load((recipe["stage3"] / "config.yaml").read_text())
    assert stage3["model"]["init_from"] == str(recipe["stage2"] / "best") and stage3["adapters"]["base_model"] == str(recipe["base"])
    assert "demo-org/mlpl-test-stage2-finetune-el" in (recipe["stage3"] / "best" / "README.md").read_text()


def test_only_the_adapter_and_the_ctc_head_change_in_training(recipe):
    """The stage-2 checkpoint (the whole wrapped model as training held it) against the stage-1 weights."""
    base = load_file(recipe["base"] / "model.safetensors")
    trained = load_file(recipe["stage2"] / "checkpoints" / "step_4" / "model.safetensors")
    frozen = {base_key(name): value for name, value in trained.items() if ".lora_" not in name and ".modules_to_save." not in name}
    assert frozen.keys() == base.keys()  # every base weight is there once, under its wrapped name
    assert all(torch.equal(frozen[name], base[name]) for name in base)  # ... and unchanged (the LID head too)
    lora_b = [value for name, value in trained.items() if ".lora_B." in name]
    assert lora_b and any(value.abs().sum() > 0 for value in lora_b)  # peft starts B at zero: it trained
    head = trained["base_model.model.ctc_head.modules_to_save.default.weight"]
    assert not torch.equal(head, base["ctc_head.weight"])
    assert not any("lid_head.modules_to_save" in name for name in trained)


def test_an_adapter_round_trips_through_load_adapter_the_pipeline_and_a_hub_folder(recipe, tmp_path, monkeypatch, capsys):
    from transformers import pipeline

    inputs, audio = features(recipe)
    final = recipe["stage2"] / "final"  # saved after update 4, the same state as checkpoints/step_4
    # The trained model as the trainer held it: base + a new adapter, with the checkpoint's weights.
    settings = AdapterConfig(enabled=True, rank=4, alpha=8)
    held = add_training_adapter(MlplForCTC.from_pretrained(recipe["base"]), settings, recipe["base"])
    held.load_state_dict(load_file(recipe["stage2"] / "checkpoints" / "step_4" / "model.safetensors"))
    expected = logits_of(held, inputs)
    base_logits = logits_of(MlplForCTC.from_pretrained(recipe["base"]), inputs)
    assert not torch.allclose(expected, base_logits, atol=1e-3)  # the adapter changes the output

    model = MlplForCTC.from_pretrained(recipe["base"])
    model.load_adapter(str(final), adapter_name="el")
    assert torch.allclose(logits_of(model, inputs), expected, atol=1e-5)
    direct = MlplForCTC.from_pretrained(final)  # transformers reads adapter_config.json: base + adapter
    assert type(direct) is MlplForCTC and torch.allclose(logits_of(direct, inputs), expected, atol=1e-5)

    processor = MlplProcessor.from_pretrained(final)
    asr = pipeline("automatic-speech-recognition", model=model, feature_extractor=processor.feature_extractor, tokenizer=processor.tokenizer)
    greedy = processor.batch_decode(expected.argmax(-1))
    assert [asr({"raw": clip, "sampling_rate": 16000})["text"] for clip in audio] == greedy

    # A Hub folder: refused while it names its base by a local path, then published to the stand-in Hub.
    folder = tmp_path / "adapter"
    shutil.copytree(recipe["stage3"] / "best", folder)
    with pytest.raises(HubFolderError, match="base_model_name_or_path as a Hub id, not the local path"):
        hub_ready_folder_check(folder, "model")
    set_adapter_base_model(folder, BASE_REPO)
    hub_ready_folder_check(folder, "model")
    (tmp_path / "broken").mkdir()
    for name in ("adapter_config.json", "README.md"):
        shutil.copy(folder / name, tmp_path / "broken" / name)
    with pytest.raises(HubFolderError, match=r"(?s)adapter_model\.safetensors.*processor files"):
        hub_ready_folder_check(tmp_path / "broken", "model")
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub_constants, "HF_TOKEN_PATH", str(tmp_path / "no-login" / "token"))
    with HubStandIn(TOKEN) as hub:
        publish_folder(folder, ADAPTER_REPO, hub_config=HubConfig(token=TOKEN, endpoint=hub.endpoint, namespace="demo-org", retry_wait_seconds=0.01))
        stored = hub.repo("model", ADAPTER_REPO).branches["main"]
    downloaded = tmp_path / "downloaded"
    for path, content in stored.items():
        (downloaded / path).parent.mkdir(parents=True, exist_ok=True)
        (downloaded / path).write_bytes(content)
    assert json.loads((downloaded / ADAPTER_CONFIG_FILE).read_text())["base_model_name_or_path"] == BASE_REPO
    stage3 = MlplForCTC.from_pretrained(recipe["base"])
    stage3.load_adapter(str(recipe["stage3"] / "best"), adapter_name="el")
    published = MlplForCTC.from_pretrained(recipe["base"])
    published.load_adapter(str(downloaded), adapter_name="el")
    assert torch.allclose(logits_of(published, inputs), logits_of(stage3, inputs), atol=1e-5)
    # The card's example, pointed at the local base folder and the downloaded adapter, runs as written.
    clip = tmp_path / "clip.wav"
    soundfile.write(clip, audio[0], 16000)
    blocks = re.findall(r"```python\n(.*?)```", (downloaded / "README.md").read_text(), re.DOTALL)
    assert len(blocks) == 1 and "load_adapter" in blocks[0]
    exec(blocks[0].replace(BASE_REPO, str(recipe["base"])).replace(ADAPTER_REPO, str(downloaded)).replace("clip.wav", str(clip)), {})
    assert capsys.readouterr().out.strip() == processor.batch_decode(logits_of(stage3, features(recipe, 1)[0]).argmax(-1))[0]


def test_one_base_model_switches_between_named_adapters(recipe):
    inputs, _ = features(recipe)
    folders = {"finetune": recipe["stage2"] / "best", "slimipl": recipe["stage3"] / "best"}
    alone = {name: logits_of(MlplForCTC.from_pretrained(folder), inputs) for name, folder in folders.items()}
    model = load_language_adapters(recipe["base"], folders)
    assert sorted(model.peft_config) == ["finetune", "slimipl"]
    for name in ("slimipl", "finetune", "slimipl"):
        set_active_adapter(model, name)
        assert torch.allclose(logits_of(model, inputs), alone[name], atol=1e-5), name
    with pytest.raises(ValueError, match="adapter 'el' is not loaded"):
        set_active_adapter(model, "el")


def test_stage_4_pseudo_labels_with_base_plus_adapter(recipe):
    from mlpl.pseudo_label import model_revision

    unit = recipe["stages"] / STAGE_FOLDERS[4] / "el"
    done = json.loads((unit / DONE).read_text())
    adapter = recipe["stage3"] / "best"
    assert done["model"] == str(adapter)
    run = json.loads((unit / "pseudo_labels" / "summary.json").read_text())["run"]  # what labeled the audio
    assert run["model_name"] == str(adapter)
    assert run["model_revision"] == model_revision(adapter) and run["model_revision"].startswith("sha256:")  # the adapter's weights


def test_the_evaluation_script_takes_an_adapter_folder(recipe, tmp_path):
    """scripts/evaluate.py --model <adapter folder>: base + adapter, the same predictions as the recipe's evaluation."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("evaluate_script", Path(__file__).resolve().parents[1] / "scripts" / "evaluate.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    adapter = recipe["stage3"] / "best"
    script.main(["--model", str(adapter), "--data", str(recipe["corpus"]), "--split", "dev", "--languages", "el", "--output-dir", str(tmp_path), "--no-plots"])

    def predictions(folder):
        return sorted((row["id"], row["hypothesis"], row["predicted_language"]) for row in map(json.loads, (folder / "predictions.jsonl").read_text().splitlines()))

    assert predictions(tmp_path) == predictions(recipe["stage3"] / "evaluation" / "dev") and predictions(tmp_path)


def test_an_adapter_run_resumes_exactly(recipe, tmp_path):
    """Stage 2 again from its saved config: 2 updates, then resumed to 4, gives stage 2's adapter bit for bit."""
    from mlpl.trainer import train

    config = load_config(recipe["stage2"] / "config.yaml", [f"train.output_dir={tmp_path / 'run'}", "train.max_updates=2"])
    train(config)
    config.train.max_updates = 4
    train(config, resume=True)
    resumed = load_file(tmp_path / "run" / "final" / ADAPTER_WEIGHTS_FILE)
    straight = load_file(recipe["stage2"] / "final" / ADAPTER_WEIGHTS_FILE)
    assert resumed.keys() == straight.keys() and all(torch.equal(resumed[key], straight[key]) for key in straight)


def test_adapter_settings_are_checked_with_the_fix_named(recipe, tmp_path):
    with pytest.raises(ValueError, match=r"adapters.rank=0 is out of range"):
        AdapterConfig(rank=0)
    with pytest.raises(ValueError, match="target_modules is empty"):
        AdapterConfig(target_modules=[])
    with pytest.raises(ValueError, match=r"modules_to_save: no module named \['ctc_haed'\]"):
        load_initial_model(recipe["base"], AdapterConfig(enabled=True, modules_to_save=["ctc_haed"]))
    with pytest.raises(ValueError, match="is a PEFT adapter folder; set adapters.enabled: true"):
        load_initial_model(recipe["stage2"] / "best", AdapterConfig())
    from mlpl.trainer import train

    config = build_dataclass(ExperimentConfig, {
        "data": {"train": [{"kind": "common_voice", "path": str(recipe["corpus"] / "cv"), "languages": ["el"]}]},
        "adapters": {"enabled": True}, "train": {"output_dir": str(tmp_path / "run")},
    })  # fmt: skip
    with pytest.raises(ValueError, match="adapters.enabled needs model.init_from"):
        train(config)
    moved = tmp_path / "moved"
    shutil.copytree(recipe["stage2"] / "best", moved)
    set_adapter_base_model(moved, str(tmp_path / "gone"))
    with pytest.raises(ValueError, match="is not a folder; pass the base model's folder or Hub id"):
        load_initial_model(moved, AdapterConfig(enabled=True))
