"""Hub publishing: repo naming, model and dataset cards, folder checks, and uploads to a local stand-in Hub.

The stand-in (tests/hub_standin.py) is the one replaced boundary: it speaks the Hub's create /
preupload / commit API, checks the bearer token and payloads, stores what was committed and records
every request, so these tests assert what actually crossed the wire.
"""

import dataclasses
import importlib.util
import json
import logging
import pickle
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile
import torch
import yaml
from huggingface_hub import DatasetCard, ModelCard, metadata_load
from huggingface_hub import constants as hub_constants

from hub_standin import HubStandIn
from modeling_mlpl import MlplForCTC, MlplProcessor
from tiny_models import tiny_config
from mlpl.hub import (
    EvaluationSet,
    HubConfig,
    HubFolderError,
    HubPublishError,
    HubReference,
    hub_ready_folder_check,
    publish_folder,
    render_model_card,
    repo_id_for,
    write_dataset_card,
    write_model_card,
)
from mlpl.metrics import compute_asr_metrics


def load_publish_script():
    """scripts/publish.py as a module (scripts/ is not a package)."""
    path = Path(__file__).resolve().parent.parent / "scripts" / "publish.py"
    spec = importlib.util.spec_from_file_location("publish_script", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TOKEN = "hf_standInSecretToken0123456789"
MODEL_REPO = "mlpl-test/mlpl-stage3-slimipl-el"
DATASET_REPO = "mlpl-test/mlpl-stage4-pseudo-labels"
LINEAGE = dict(
    repo_id=MODEL_REPO,
    stage=3,
    language="el",
    initialized_from=HubReference("mlpl-test/mlpl-stage2-finetune-el", revision="4f1c2ab"),
    labeled_data=[
        HubReference("mlpl-test/common-voice-6.1-el", repo_type="dataset"),
        "Common Voice 6.1 (local release)",
    ],
    pseudo_label_data=[HubReference(DATASET_REPO, revision="77aa01c", repo_type="dataset")],
    hyperparameters={"optimizer": "adagrad", "learning_rate": 0.03, "slimipl": {"cache_size": 1000, "lambda": 10}},
    evaluation_set=EvaluationSet("common_voice", "Common Voice 6.1", split="test"),
)
# Real metrics (training/metrics.py) of a small decoding pass: el 2 of 14 characters wrong (accents
# missing), en 1 of 5, fi exact; LID right for el and en.
RESULTS = compute_asr_metrics(
    predictions=["καλημερα κοσμε", "hallo", "moi"],
    references=["καλημέρα κόσμε", "hello", "moi"],
    languages=["el", "en", "fi"],
    predicted_languages=["el", "en", "en"],
)


def folder_snapshot(folder):
    """Every file of `folder` with its bytes and modification time."""
    return {
        path.relative_to(folder).as_posix(): (path.read_bytes(), path.stat().st_mtime_ns)
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    """A tiny MlplForCTC + processor saved as the package saves them (remote code, auto_map), with its card."""
    folder = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    processor = MlplProcessor.from_transcripts(["some text", "καλημέρα κόσμε", "moi"])
    model = MlplForCTC(tiny_config(vocab_size=len(processor.tokenizer)))
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    write_model_card(folder, results=RESULTS, **LINEAGE)
    return folder


def write_pseudo_label_shards(folder):
    """Two languages of pseudo-labels in per-language folders, the schema the PL stage writes."""
    rows = {
        "el": [("el-0001", "el/0001.ogg", "καλημέρα", 1800.0), ("el-0002", "el/0002.ogg", "κόσμε", 1800.0)],
        "fi": [("fi-0001", "fi/0001.ogg", "hyvää päivää", 900.0)],
    }
    for language, items in rows.items():
        (folder / language).mkdir(parents=True)
        table = pa.table(
            {
                "id": [item[0] for item in items],
                "audio": [item[1] for item in items],
                "language": [language] * len(items),
                "pseudo_label": [item[2] for item in items],
                "duration": [item[3] for item in items],
                "confidence": [0.9] * len(items),
                "model_name": [f"mlpl-test/mlpl-stage3-slimipl-{language}"] * len(items),
                "model_revision": ["4f1c2ab"] * len(items),
            }
        )
        pq.write_table(table, folder / language / "train-00000-of-00001.parquet")


def producing_model(language):
    return HubReference(f"mlpl-test/mlpl-stage3-slimipl-{language}", "4f1c2ab")


def linked(reference):
    """How a card links a Hub reference: [`repo`](url/tree/revision)."""
    return f"[`{reference.repo_id}`](https://huggingface.co/{reference.repo_id}/tree/{reference.revision})"


@pytest.fixture
def dataset_folder(tmp_path):
    folder = tmp_path / "pseudo_labels"
    write_pseudo_label_shards(folder)
    write_dataset_card(
        folder,
        repo_id=DATASET_REPO,
        models={language: producing_model(language) for language in ("el", "fi")},
        dropped={"el": {"empty pseudo-label": 3, "longer than 630 characters": 1}},
        source_data=[HubReference("facebook/voxpopuli", repo_type="dataset"), "VoxPopuli unlabeled segments"],
        source_license="cc0-1.0",
    )
    return folder


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """The stand-in Hub; offline mode lifted for it, and no token from the environment or a login file."""
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.setattr(hub_constants, "HF_TOKEN_PATH", str(tmp_path / "no-login" / "token"))
    with HubStandIn(TOKEN) as stand_in:
        yield stand_in


def hub_config(hub, **overrides):
    return HubConfig(**{"token": TOKEN, "endpoint": hub.endpoint, "namespace": "mlpl-test",
                        "retry_wait_seconds": 0.01, **overrides})


# --- Configuration, token, repo names -------------------------------------------------------------


def test_token_is_masked_in_reprs_and_never_serialized():
    config = HubConfig(namespace="mlpl-test", token=TOKEN)
    for text in (repr(config), str(config), f"{config.token}", repr(dataclasses.asdict(config))):
        assert TOKEN not in text
    assert "***" in repr(config)
    assert "token" not in config.to_dict() and json.dumps(config.to_dict())
    with pytest.raises(TypeError, match="to_dict"):
        pickle.dumps(config)
    with pytest.raises(yaml.YAMLError):
        yaml.safe_dump(dataclasses.asdict(config))
    assert dataclasses.replace(config, private=False).token.reveal() == TOKEN
    assert HubConfig(token="   ").token is None


def test_repo_ids_follow_the_scheme():
    config = HubConfig(namespace="my-org")
    assert repo_id_for(config, 1) == "my-org/mlpl-stage1-supervised"
    assert repo_id_for(config, "slimipl", language="el") == "my-org/mlpl-stage3-slimipl-el"
    assert repo_id_for(config, "stage5-pl-training", variant="large") == "my-org/mlpl-stage5-pl-training-large"
    assert repo_id_for(config, 4, language="zh-CN") == "my-org/mlpl-stage4-pseudo-labels-zh-CN"
    custom = HubConfig(namespace="lab", prefix="cv61", repo_id_template="{namespace}/{prefix}_{stage}[_{language}]")
    assert repo_id_for(custom, 2, language="fi") == "lab/cv61_stage2-finetune_fi"


@pytest.mark.parametrize(
    "config, stage, language, message",
    [
        (HubConfig(), 1, None, r"needs \['namespace'\].*HubConfig.namespace"),
        (HubConfig(namespace="org"), 3, None, "per language: pass language="),
        (HubConfig(namespace="org"), 3, "zh CN", r"language='zh CN' cannot be part of a Hub repo id"),
        (HubConfig(namespace="org"), 7, None, r"stage=7 is not a stage of the recipe"),
        (HubConfig(namespace="org", repo_id_template="{namespace}/{prefix}-{stage}"), 1, "el",
         r"has no \{language\} field.*collide"),
        (HubConfig(namespace="org", prefix="mlpl-"), 1, None, r"repo id 'org/mlpl--stage1-supervised'.*not a valid"),
        (HubConfig(namespace="org", prefix="x" * 90), 1, None, "not a valid Hub repo id"),
    ],
)
def test_bad_repo_ids_are_refused_naming_the_value(config, stage, language, message):
    with pytest.raises(ValueError, match=message):
        repo_id_for(config, stage, language=language)


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(namespace="my org"), r"namespace='my org'"),
        (dict(repo_id_template="{namespace}/{prefix}-{stag}"), r"unknown fields \['stag'\]"),
        (dict(repo_id_template="{namespace}/{prefix}"), r"no \{stage\} field"),
        (dict(max_retries=-1), r"max_retries=-1"),
    ],
)
def test_bad_hub_config_is_refused_naming_the_value(settings, message):
    with pytest.raises(ValueError, match=message):
        HubConfig(**settings)


# --- Cards ----------------------------------------------------------------------------------------


def test_model_card_metadata_lineage_and_results(model_folder):
    metadata = metadata_load(model_folder / "README.md")
    assert metadata["language"] == ["en", "el", "fi"]  # the folder's config.languages
    assert metadata["license"] == "apache-2.0"
    assert metadata["library_name"] == "transformers"
    assert metadata["pipeline_tag"] == "automatic-speech-recognition"
    assert {"automatic-speech-recognition", "ctc", "pseudo-labeling", "mlpl"} <= set(metadata["tags"])
    assert metadata["base_model"] == "mlpl-test/mlpl-stage2-finetune-el"
    assert metadata["datasets"] == ["mlpl-test/common-voice-6.1-el", DATASET_REPO]

    card = ModelCard.load(model_folder / "README.md")
    results = {(result.dataset_config, result.metric_type): result for result in card.data.eval_results}
    for language, row in RESULTS["per_language"].items():
        for metric in ("cer", "wer"):
            result = results[(language, metric)]
            assert result.metric_value == pytest.approx(round(100 * row[metric], 2))
            assert result.task_type == "automatic-speech-recognition"
            assert (result.dataset_type, result.dataset_split) == ("common_voice", "test")
    assert [results[(language, "cer")].metric_value for language in ("el", "en", "fi")] == [14.29, 20.0, 0.0]

    text = card.text
    assert "Stage 3 of the mlpl recipe, **Per-language slimIPL** for `el`" in text
    assert linked(LINEAGE["initialized_from"]) in text
    assert "https://huggingface.co/datasets/mlpl-test/common-voice-6.1-el" in text
    assert "Common Voice 6.1 (local release)" in text
    assert f"https://huggingface.co/datasets/{DATASET_REPO}/tree/77aa01c" in text
    assert "| `slimipl.cache_size` | 1,000 |" in text and "| `learning_rate` | 0.03 |" in text
    assert "| el | 1 | 14.29 | 100.00 | 100.00 |" in text  # language, utterances, CER, WER, LID accuracy
    assert "| fi | 1 | 0.00 | 0.00 | 0.00 |" in text
    assert f"| **average** | | **{100 * RESULTS['cer']:.2f}** |" in text
    assert "trust_remote_code=True" in text and "detect_language" in text
    assert "Lugosch, Loren and Likhomanenko, Tatiana and Synnaeve, Gabriel and Collobert, Ronan" in text
    assert "{{" not in text and "{%" not in text


def test_model_card_usage_examples_run(model_folder, tmp_path, capsys):
    """The card's Python examples, pointed at the local folder and a real clip, run as written."""
    clip = tmp_path / "clip.wav"
    soundfile.write(clip, (0.1 * np.sin(np.linspace(0, 2000, 24000))).astype(np.float32), 16000)
    blocks = re.findall(r"```python\n(.*?)```", (model_folder / "README.md").read_text(), re.DOTALL)
    assert len(blocks) == 2
    for block in blocks:
        exec(block.replace(MODEL_REPO, str(model_folder)).replace("clip.wav", str(clip)), {})
    printed = capsys.readouterr().out
    assert "'language':" in printed and "'score':" in printed  # detect_language's output


def test_model_card_needs_the_facts_it_shows(tmp_path):
    template = tmp_path / "card.md"
    template.write_text("---\n{{ card_data }}\n---\n{{ repo_id }} trained by {{ trainer_name }}\n")
    with pytest.raises(ValueError, match=r"uses \['trainer_name'\], which the renderer does not provide"):
        render_model_card(**LINEAGE, languages=["el"], template=template)
    with pytest.raises(ValueError, match="without evaluation_set"):
        render_model_card(**{**LINEAGE, "evaluation_set": None}, languages=["el"], results=RESULTS)
    with pytest.raises(ValueError, match="per language: pass language="):
        render_model_card(**{**LINEAGE, "language": None}, languages=["el"])
    with pytest.raises(ValueError, match="produces a dataset"):
        render_model_card(**{**LINEAGE, "stage": 4}, languages=["el"])


def test_dataset_card_describes_the_shards_and_loads_with_datasets(dataset_folder):
    from datasets import load_dataset

    card = DatasetCard.load(dataset_folder / "README.md")
    assert card.data.language == ["el", "fi"] and card.data.license == "cc0-1.0"
    assert card.data.source_datasets == ["facebook/voxpopuli"]
    assert {"pseudo-labeling", "mlpl"} <= set(card.data.tags)
    text = card.text
    # counts and hours read from the shards; drops and producing models from the run
    assert "| el | 2 | 1.00 | 4 | empty pseudo-label: 3, longer than 630 characters: 1 |" in text
    assert "| fi | 1 | 0.25 | 0 | - |" in text
    assert linked(producing_model("el")) in text
    assert "| **total** | **3** | **1.25** | **4** |" in text
    for column, dtype in [("id", "string"), ("audio", "string"), ("pseudo_label", "string"), ("duration", "double"),
                          ("confidence", "double"), ("model_name", "string"), ("model_revision", "string")]:
        assert f"| `{column}` | `{dtype}` |" in text
    assert f'load_dataset("{DATASET_REPO}", "el", split="train")' in text

    # The card's configs are what `datasets` reads: all languages, or one.
    everything = load_dataset(str(dataset_folder), split="train")
    greek = load_dataset(str(dataset_folder), "el", split="train")
    assert sorted(everything["id"]) == ["el-0001", "el-0002", "fi-0001"]
    assert sorted(greek["pseudo_label"]) == ["καλημέρα", "κόσμε"]


def test_dataset_card_of_a_real_pseudo_labeling_run(tmp_path, hub):
    """Stage 4 as the recipe runs it (mlpl.pseudo_label on unlabeled VoxPopuli-layout audio), then
    its card from the shards and summary.json, then its upload: every number agrees with the run."""
    from datasets import load_dataset

    from mlpl.loaders import load_voxpopuli_folder
    from mlpl.pseudo_label import generate_pseudo_labels

    unlabeled = tmp_path / "voxpopuli"
    for language, count in (("el", 2), ("fi", 1)):
        (unlabeled / language).mkdir(parents=True)
        for index in range(count):
            tone = 0.1 * np.sin(2 * np.pi * (300 + 100 * index) * np.arange(16000 + 4000 * index) / 16000)
            soundfile.write(unlabeled / language / f"{language}-{index}.ogg", tone.astype(np.float32), 16000)
    torch.manual_seed(0)
    processor = MlplProcessor.from_transcripts(["some text"])
    model = MlplForCTC(tiny_config(vocab_size=len(processor.tokenizer)))
    with torch.no_grad():  # every frame says "s": one-character pseudo-labels, none empty
        model.ctc_head.bias[processor.tokenizer.convert_tokens_to_ids("s")] = 50.0
    output = tmp_path / "pseudo_labels"
    summary = generate_pseudo_labels(model, processor, load_voxpopuli_folder(unlabeled), output,
                                     model_name="mlpl-test/mlpl-stage3-slimipl-el", model_revision="4f1c2ab")

    write_dataset_card(output, repo_id=DATASET_REPO, source_data=["VoxPopuli unlabeled segments"],
                       source_license="cc0-1.0")
    card = DatasetCard.load(output / "README.md")
    assert card.data.language == ["el", "fi"]
    for language, values in summary["languages"].items():
        row = f"| {language} | {values['utterances']} | {values['hours']:.2f} | {values['dropped']} |"
        assert row in card.text
    assert linked(producing_model("el")) in card.text  # from summary.json's run
    assert "The set holds transcripts only" in card.text  # audio.bytes is null in every row
    assert "`audio` | `struct<bytes: binary, path: string>`" in card.text
    assert len(load_dataset(str(output), split="train")) == summary["kept"] == 3

    hub_ready_folder_check(output, "dataset")
    publish_folder(output, DATASET_REPO, repo_type="dataset", hub_config=hub_config(hub))
    stored = hub.repo("dataset", DATASET_REPO).branches["main"]
    assert stored == {path: content for path, (content, _) in folder_snapshot(output).items()}
    assert "summary.json" in stored and any(path.startswith("data/") for path in stored)


def test_dataset_card_lists_languages_whose_pseudo_labels_were_all_dropped(tmp_path):
    write_pseudo_label_shards(tmp_path)
    write_dataset_card(tmp_path, repo_id=DATASET_REPO, source_data=["VoxPopuli"], source_license="cc0-1.0",
                       models={code: producing_model(code) for code in ("el", "fi", "bg")},
                       dropped={"bg": {"empty pseudo-label": 5}})
    card = DatasetCard.load(tmp_path / "README.md")
    assert card.data.language == ["el", "fi"]  # nothing kept in bg
    assert "| bg | 0 | 0.00 | 5 | empty pseudo-label: 5 |" in card.text
    assert "- empty pseudo-label: 5" in card.text


def test_dataset_card_refuses_a_language_without_its_model(tmp_path):
    write_pseudo_label_shards(tmp_path)
    with pytest.raises(ValueError, match=r"languages \[.fi.\] with no producing model"):
        write_dataset_card(tmp_path, repo_id=DATASET_REPO, models={"el": HubReference("a/b")},
                           source_data=["VoxPopuli"], source_license="cc0-1.0")
    assert not (tmp_path / "README.md").exists()


def test_cards_are_replaced_atomically(model_folder, tmp_path, monkeypatch):
    folder = tmp_path / "model"
    shutil.copytree(model_folder, folder)
    (folder / "README.md").write_text("old card")

    def failing_replace(source, destination):
        raise OSError("disk full")

    monkeypatch.setattr("mlpl.files.os.replace", failing_replace)  # the one atomic writer
    with pytest.raises(OSError, match="disk full"):
        write_model_card(folder, **LINEAGE)
    assert (folder / "README.md").read_text() == "old card"  # the old card, whole
    assert [path.name for path in folder.iterdir() if path.name.startswith(".")] == []  # no temp file left
    monkeypatch.undo()
    write_model_card(folder, **{**LINEAGE, "stage": 2, "language": "fi"})
    assert "**Per-language fine-tune** for `fi`" in (folder / "README.md").read_text()


# --- Folder checks --------------------------------------------------------------------------------


def test_complete_folders_pass_the_check(model_folder, dataset_folder):
    hub_ready_folder_check(model_folder, "model")
    hub_ready_folder_check(dataset_folder, "dataset")


def test_model_folder_check_names_everything_missing(model_folder, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(model_folder, folder)
    for name in ("model.safetensors", "README.md", "configuration_mlpl.py", "vocab.json"):
        (folder / name).unlink()
    config = json.loads((folder / "config.json").read_text())
    del config["auto_map"]["AutoModelForCTC"]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(HubFolderError) as error:
        hub_ready_folder_check(folder, "model")
    message = str(error.value)
    for expected in (".safetensors", "README.md", "configuration_mlpl.py", "vocab.json",
                     "auto_map entry AutoModelForCTC", "register_for_auto_class"):
        assert expected in message


def test_dataset_folder_check_names_missing_shards_and_card(tmp_path):
    (tmp_path / "notes.txt").write_text("no shards yet")
    with pytest.raises(HubFolderError, match=r"(?s)parquet shards.*README\.md"):
        hub_ready_folder_check(tmp_path, "dataset")


# --- Publishing to the stand-in Hub ---------------------------------------------------------------


def test_publish_model_folder_sends_the_files_and_keeps_the_token_secret(model_folder, hub, caplog, tmp_path):
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="huggingface_hub")
    before = folder_snapshot(model_folder)
    hub.faults["commit"] = [500]  # the first commit hits a transient server error

    commit_url = publish_folder(model_folder, MODEL_REPO, hub_config=hub_config(hub),
                                commit_message="mlpl stage 3 (slimipl) el")

    repo = hub.repo("model", MODEL_REPO)
    assert repo.private is True
    stored = repo.branches["main"]
    assert {path: content for path, content in stored.items()} == {
        path: content for path, (content, _) in before.items()
    }  # every file, byte for byte, nothing else
    assert {"config.json", "model.safetensors", "modeling_mlpl.py", "README.md", "vocab.json"} <= set(stored)
    assert [status for status in (request.status for request in hub.requests_to("commit"))] == [500, 200]
    assert repo.commits == [("main", "mlpl stage 3 (slimipl) el", commit_url.rsplit("/", 1)[1])]
    assert commit_url == f"{hub.endpoint}/{MODEL_REPO}/commit/{repo.heads['main']}"
    create = json.loads(hub.requests_to("create")[0].body)
    assert create == {"name": "mlpl-stage3-slimipl-el", "organization": "mlpl-test", "visibility": "private",
                      "type": "model"}
    assert all(request.path.startswith(f"/api/models/{MODEL_REPO}/") for request in hub.requests
               if request.route in ("preupload", "commit"))
    assert hub.requests_to("unknown") == []

    # The token crossed only as the bearer token, and was written nowhere.
    for request in hub.requests:
        assert request.headers["authorization"] == f"Bearer {TOKEN}"
        assert TOKEN not in request.path and TOKEN.encode() not in request.body
        assert all(TOKEN not in value for name, value in request.headers.items() if name != "authorization")
    assert TOKEN.encode() not in b"".join(stored.values())
    written = [path for root in (tmp_path, model_folder) for path in root.rglob("*") if path.is_file()]
    assert written and all(TOKEN.encode() not in path.read_bytes() for path in written)
    messages = [record.getMessage() for record in caplog.records]
    assert any("preupload" in message for message in messages)  # the HTTP layer's DEBUG lines were captured
    assert any(commit_url in message for message in messages)
    assert all(TOKEN not in message for message in messages) and TOKEN not in caplog.text
    assert folder_snapshot(model_folder) == before


def test_republishing_is_idempotent(model_folder, hub):
    config = hub_config(hub)
    first = publish_folder(model_folder, MODEL_REPO, hub_config=config)
    second = publish_folder(model_folder, MODEL_REPO, hub_config=config)
    assert second == first  # nothing changed: no new commit, the URL of the existing one
    assert len(hub.repo("model", MODEL_REPO).commits) == 1
    assert [request.status for request in hub.requests_to("create")] == [200, 409]  # exist_ok


def test_publish_dataset_folder_to_a_branch(dataset_folder, hub):
    commit_url = publish_folder(dataset_folder, DATASET_REPO, repo_type="dataset",
                                hub_config=hub_config(hub, revision="round-1", private=False))
    repo = hub.repo("dataset", DATASET_REPO)
    assert repo.private is False
    assert sorted(repo.branches["round-1"]) == ["README.md", "el/train-00000-of-00001.parquet",
                                                "fi/train-00000-of-00001.parquet"]
    assert repo.branches["main"] == {}
    assert repo.branches["round-1"]["README.md"] == (dataset_folder / "README.md").read_bytes()
    assert commit_url.startswith(f"{hub.endpoint}/datasets/{DATASET_REPO}/commit/")
    assert [request.path for request in hub.requests_to("commit")] == [f"/api/datasets/{DATASET_REPO}/commit/round-1"]


def test_transient_failures_are_retried_and_then_reported(model_folder, hub, caplog):
    hub.faults["create"] = ["drop", 503]  # connection dropped, then service unavailable, then fine
    publish_folder(model_folder, MODEL_REPO, hub_config=hub_config(hub))
    assert [request.status for request in hub.requests_to("create")] == [0, 503, 200]
    assert sum("retrying" in record.getMessage() for record in caplog.records) == 2

    hub.faults["create"] = [502] * 3
    with pytest.raises(HubPublishError, match=r"(?s)creating the repo for model repo .*after 3 attempts.*re-run"):
        publish_folder(model_folder, MODEL_REPO, hub_config=hub_config(hub, max_retries=2))


@pytest.mark.parametrize(
    "token, namespace, message",
    [
        (TOKEN, "someone-else", r"may not write to model repos of 'someone-else' \(HTTP 403\).*write access"),
        ("hf_wrongToken", "mlpl-test", r"rejected the token \(HTTP 401\).*hf auth login"),
    ],
)
def test_permission_errors_fail_at_once_and_a_rerun_succeeds(model_folder, hub, token, namespace, message):
    hub.forbidden_namespaces.add("someone-else")
    repo_id = f"{namespace}/mlpl-stage3-slimipl-el"
    before = folder_snapshot(model_folder)
    started = time.monotonic()
    with pytest.raises(HubPublishError, match=message) as error:
        publish_folder(model_folder, repo_id, hub_config=hub_config(hub, token=token, max_retries=5,
                                                                      retry_wait_seconds=5.0))
    assert time.monotonic() - started < 4.5  # no retry: the first one would wait 5 s
    assert len(hub.requests_to("create")) == 1 and hub.requests_to("commit") == []
    assert repo_id in str(error.value) and f"--repo-id {repo_id}" in str(error.value)  # the re-run command
    assert folder_snapshot(model_folder) == before

    hub.forbidden_namespaces.clear()  # access granted: the same call now goes through
    publish_folder(model_folder, repo_id, hub_config=hub_config(hub))
    assert set(hub.repo("model", repo_id).branches["main"]) == set(before)


def test_nothing_is_sent_when_publishing_cannot_be_safe(model_folder, hub, tmp_path, monkeypatch):
    folder = tmp_path / "model"
    shutil.copytree(model_folder, folder)
    (folder / "training_args.json").write_text(json.dumps({"hub_token": TOKEN}))
    with pytest.raises(HubPublishError, match=r"training_args\.json contains the Hub token"):
        publish_folder(folder, MODEL_REPO, hub_config=hub_config(hub))
    with pytest.raises(HubPublishError, match="no Hugging Face token.*HF_TOKEN.*hf auth login"):
        publish_folder(model_folder, MODEL_REPO, hub_config=hub_config(hub, token=None))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(HubPublishError, match="HF_HUB_OFFLINE is set"):
        publish_folder(model_folder, MODEL_REPO, hub_config=hub_config(hub))
    assert hub.requests == []


def test_publish_script_reruns_an_upload_with_the_token_from_the_environment(model_folder, hub, monkeypatch, capsys):
    publish_script = load_publish_script()
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    common = ["--folder", str(model_folder), "--stage", "3", "--language", "el", "--namespace", "mlpl-test",
              "--endpoint", hub.endpoint]
    assert publish_script.main([*common, "--check-only"]) == 0
    assert f"ready to publish as model repo {MODEL_REPO}" in capsys.readouterr().out
    assert publish_script.main([*common, "--public"]) == 0
    commit_url = capsys.readouterr().out.strip()
    assert commit_url.startswith(f"{hub.endpoint}/{MODEL_REPO}/commit/")
    assert hub.repo("model", MODEL_REPO).private is False

    assert publish_script.main([*common[:2], "--stage", "4", "--kind", "model", "--namespace", "x"]) == 1
    assert "contradicts --stage 4" in capsys.readouterr().err
