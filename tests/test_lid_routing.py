"""Pseudo-labels for audio of unknown language, routed by LID (issue 15.4, docs/design.md §10), on the tiny demo
corpus's mixed folder (voxpopuli_mixed/und/: one clip of each of the 7 languages).

The router is a real tiny MlplForCTC whose LID output is set per clip (keyed by the clip's number of feature
frames), so its decisions are known; everything after it is the real path: the data layer's loader, the
router pass through mlpl.inference, and generate_pseudo_labels with per-language models saved to folders.
"""

import json
import sys
from pathlib import Path

import pytest
import soundfile
import torch

from modeling_mlpl import MlplForCTC, MlplProcessor
from tiny_models import tiny_config
from mlpl.loaders import common_voice_records, load_voxpopuli_folder, write_flashlight_list
from mlpl.demo_corpus import MIXED_FOLDER, MIXED_MANIFEST, read_mixed_manifest
from mlpl.pseudo_label import DROP_EMPTY, PseudoLabelConfig, iter_pseudo_labels, load_pseudo_label_set
from mlpl.report import routing_accuracy
from mlpl.routing import DROP_BELOW_THRESHOLD, DROP_NO_MODEL, read_routing, route_and_pseudo_label

LANGUAGES = ["en", "de", "es", "ru", "fi", "el", "bg"]
MODEL_LANGUAGES = ["bg", "el", "fi"]  # the demo's languages with unlabeled audio: stage-3 models
# true language -> (router's top-1, its probability): routed right, routed wrong (ru -> bg), below the
# threshold, and confident but without a model (en, es)
DECISIONS = {"el": ("el", 0.95), "fi": ("fi", 0.93), "bg": ("bg", 0.97), "ru": ("bg", 0.92), "de": ("el", 0.6),
             "en": ("en", 0.97), "es": ("es", 0.99)}  # fmt: skip
THRESHOLD = 0.9
FAST = dict(max_batch_seconds=60.0, prefetch_batches=0)


class SetLidRouter(MlplForCTC):
    """A tiny MlplForCTC whose LID output is set: `decisions[frames] = (language, probability)`."""

    decisions: dict = {}

    def forward(self, input_features, attention_mask=None, **kwargs):
        outputs = super().forward(input_features, attention_mask=attention_mask, **kwargs)
        codes = self.config.language_codes
        rows = []
        for frames in attention_mask.sum(-1).tolist():
            language, probability = self.decisions[frames]
            probabilities = torch.full((len(codes),), (1 - probability) / (len(codes) - 1))
            probabilities[codes.index(language)] = probability
            rows.append(probabilities.log())
        outputs.lid_logits = torch.stack(rows).to(outputs.lid_logits)
        return outputs


def load_script(name):
    """A script of scripts/ as a module, to run its main() in this process (no second interpreter start-up)."""
    import importlib.util

    specification = importlib.util.spec_from_file_location(f"script_{Path(name).stem}", Path(__file__).resolve().parents[1] / "scripts" / name)
    script = importlib.util.module_from_spec(specification)
    specification.loader.exec_module(script)
    return script


def tiny_model(cls, processor, blank_bias, seed):
    torch.manual_seed(seed)
    model = cls(tiny_config(vocab_size=len(processor.tokenizer), languages=LANGUAGES))
    with torch.no_grad():
        model.ctc_head.bias[model.config.pad_token_id] = blank_bias  # -5: a character every frame; +5: empty PLs
    return model.eval()


@pytest.fixture(scope="module")
def mixed(tiny_demo_corpus):
    return tiny_demo_corpus / MIXED_FOLDER


@pytest.fixture(scope="module")
def processor(tiny_demo_corpus):
    return MlplProcessor.from_transcripts([r["sentence"] for r in common_voice_records(tiny_demo_corpus / "cv", "train")])


@pytest.fixture(scope="module")
def language_models(processor, tmp_path_factory):
    """A stage-3-like model folder per language; fi's emits nothing (its PLs are dropped as empty)."""
    folders = {}
    for seed, language in enumerate(MODEL_LANGUAGES):
        folder = tmp_path_factory.mktemp(f"model_{language}")
        tiny_model(MlplForCTC, processor, 5.0 if language == "fi" else -5.0, seed).save_pretrained(folder)
        processor.save_pretrained(folder)
        folders[language] = folder
    return folders


@pytest.fixture(scope="module")
def router(mixed, processor):
    """The stand-in router, its decisions keyed by each clip's feature frames (the manifest gives the truth)."""
    truth = {row["id"]: row["language"] for row in read_mixed_manifest(mixed)}
    model = tiny_model(SetLidRouter, processor, -5.0, 10)
    decisions = {}
    for example in load_voxpopuli_folder(mixed):
        frames = processor.feature_extractor.num_frames(len(example["audio"]))
        decisions[frames] = DECISIONS[truth[example["id"]]]
    assert len(decisions) == len(truth) == 7, "clips of equal length: the stand-in cannot tell them apart"
    model.decisions = decisions
    return model


@pytest.fixture(scope="module")
def routed(mixed, router, processor, language_models, tmp_path_factory):
    source = load_voxpopuli_folder(mixed, keep_audio_reference=True)
    output = tmp_path_factory.mktemp("routed") / "und"
    summary = route_and_pseudo_label(router, processor, source, output, language_models, threshold=THRESHOLD,
                                     config=PseudoLabelConfig(**FAST))  # fmt: skip
    return output, summary


def test_the_mixed_folder_holds_every_language_and_its_manifest_the_truth(mixed):
    rows = read_mixed_manifest(mixed)
    clips = sorted((mixed / "und").glob("*/*.ogg"))
    assert sorted(row["language"] for row in rows) == sorted(LANGUAGES)
    assert sorted(mixed / row["path"] for row in rows) == clips
    assert all("_und_" in clip.name for clip in clips)  # the file names do not give the language away
    assert {example["language"] for example in load_voxpopuli_folder(mixed)} == {"und"}
    assert all(row["sentence"] and 10.0 <= row["duration"] <= 30.0 for row in rows)


def test_routing_sends_each_clip_to_the_model_of_its_predicted_language(routed, mixed, language_models):
    output, summary = routed
    truth = {row["id"]: row["language"] for row in read_mixed_manifest(mixed)}
    routing = {row["id"]: row for row in read_routing(output)}

    assert summary["utterances"] == 7
    assert summary["routed"] == {"bg": 2, "el": 1, "fi": 1}  # ru's clip went to bg: the router said so
    assert summary["dropped"] == {DROP_BELOW_THRESHOLD: 1, DROP_NO_MODEL: 2}
    assert summary["pseudo_label_dropped"] == {DROP_EMPTY: 1}  # fi's model emits nothing
    assert summary["kept"] == 3 and summary["languages"]["fi"]["kept"] == 0
    for identifier, row in routing.items():
        language, probability = DECISIONS[truth[identifier]]
        assert row["predicted_language"] == language and row["language_score"] == pytest.approx(probability, abs=1e-5)
    rows = list(iter_pseudo_labels([output / "pseudo_labels" / code for code in ("bg", "el")]))
    assert sorted(truth[row["id"]] for row in rows) == ["bg", "el", "ru"]
    for row in rows:
        expected, probability = DECISIONS[truth[row["id"]]]
        assert row["language"] == expected and row["source_language"] == "und"
        assert row["language_source"] == "lid" and row["language_score"] == pytest.approx(probability, abs=1e-5)
        assert row["model_name"] == str(language_models[expected])  # labeled by the routed language's model
        assert row["pseudo_label"]
    # the sets read back as training data (stage 5), in the routed language
    loaded = load_pseudo_label_set(output / "pseudo_labels" / "bg", languages=["bg"])
    assert len(loaded) == 2 and {example["language"] for example in loaded} == {"bg"}


def test_routing_accuracy_against_the_manifest(routed, mixed):
    output, _ = routed
    report = routing_accuracy(output, mixed)
    assert routing_accuracy(str(output), str(mixed / MIXED_MANIFEST)) == report  # the folder or the file, as paths or str
    assert report["clips"] == 7
    assert report["per_language"]["ru"]["routed_to"] == {"bg": 1}
    assert report["per_language"]["de"]["dropped"] == {DROP_BELOW_THRESHOLD: 1}
    assert report["routed"] == 4 and report["routed_correctly"] == 3
    assert report["accuracy_of_routed"] == pytest.approx(3 / 4)
    assert report["top1_accuracy"] == pytest.approx(5 / 7)  # every top-1 right but ru's and de's


def test_evaluate_script_scores_a_routing(routed, mixed, tmp_path, capsys):
    output, _ = routed
    script = load_script("evaluate.py")
    script.main(["--routing", str(output), str(mixed), "--output-dir", str(tmp_path)])
    table = (tmp_path / "routing.md").read_text()
    assert "| ru | 1 | 0 | 1 | 0 | 0 | 0 | 0 |" in table  # 1 clip, top-1 wrong, routed to bg
    assert json.loads((tmp_path / "routing.json").read_text())["routed_correctly"] == 3
    assert table.strip() in capsys.readouterr().out


def test_the_recipe_routes_unknown_language_audio_without_reading_the_manifest(tiny_demo_corpus, mixed, processor, language_models, tmp_path):
    """Stage 4 of the recipe with `pseudo_labels.router`: a real tiny stage-1 router (random LID, threshold 0:
    every clip goes to its top-1 where there is a model), the mixed folder and a `language: und` Flashlight list
    of `unlabeled` routed together, routed sets in stage 5's sources and the report, and the manifest never opened."""
    from mlpl.config import build_dataclass
    from mlpl.recipe import DONE, Recipe, RecipeConfig
    from mlpl.stages import STAGE_FOLDERS

    output = tmp_path / "out"
    stage1 = output / "stages" / STAGE_FOLDERS[1] / "best"
    tiny_model(MlplForCTC, processor, -5.0, 11).save_pretrained(stage1)
    processor.save_pretrained(stage1)
    (stage1.parent / DONE).write_text(json.dumps({"model": str(stage1)}))
    stage3 = {**{code: language_models["bg"] for code in LANGUAGES}, **language_models}  # a "stage-3 model" for every language but ru
    del stage3["ru"]
    for language, folder in stage3.items():
        (output / "stages" / STAGE_FOLDERS[3] / language).mkdir(parents=True)
        (output / "stages" / STAGE_FOLDERS[3] / language / DONE).write_text(json.dumps({"model": str(folder)}))
    # `unlabeled` also holds clips of unknown language: a Flashlight list with `language: und` (3 CV dev clips)
    records = common_voice_records(tiny_demo_corpus / "cv", "dev", ["el"])[:3]
    listing = tmp_path / "und.lst"
    write_flashlight_list([{**record, "duration": soundfile.info(record["audio"]).duration} for record in records], listing)
    config = build_dataclass(RecipeConfig, {
        "output_dir": str(output), "labeled": {"kind": "common_voice", "path": str(tiny_demo_corpus / "cv")},
        "unlabeled": {"kind": "flashlight", "path": str(listing), "language": "und", "labeled": False},
        "unlabeled_mixed": {"kind": "voxpopuli", "path": str(mixed)},
        "pseudo_labels": {**FAST, "router": "stage1", "routing_threshold": 0.0},
    })  # fmt: skip
    manifest = str((mixed / MIXED_MANIFEST).resolve())
    opened = []
    recording = [True]

    def hook(event, arguments):
        if recording[0] and event == "open" and isinstance(arguments[0], (str, bytes, Path)):
            opened.append(str(Path(arguments[0] if not isinstance(arguments[0], bytes) else arguments[0].decode()).resolve()))

    sys.addaudithook(hook)  # an audit hook cannot be removed: it records only while `recording`
    try:
        recipe = Recipe(config)
        recipe._route_unknown_languages(sorted(stage3))
        table = "\n".join(recipe._pseudo_label_table())
    finally:
        recording[0] = False
    assert opened, "the audit hook saw no file opened at all"
    assert manifest not in opened

    summary = recipe.results["pseudo_labels"]["und"]
    routing = read_routing(output / "stages" / STAGE_FOLDERS[4] / "und")
    assert summary["utterances"] == len(routing) == 7 + len(records)  # the mixed folder and the und clips of `unlabeled`
    assert {record["id"] for record in records} <= {row["id"] for row in routing}
    assert recipe.pl_languages == []  # und is no language of stages 2-3
    for row in routing:  # threshold 0: to the top-1's model, or dropped for want of one
        assert (row["routed_to"], row["reason"]) == ((row["predicted_language"], None) if row["predicted_language"] in stage3 else (None, DROP_NO_MODEL))
    assert sum(summary["routed"].values()) + sum(summary["dropped"].values()) == 7 + len(records)
    assert summary["routed"] and summary["kept"]
    kept = sorted(code for code, entry in summary["languages"].items() if entry["kept"])
    assert sorted(source.languages[0] for source in recipe._routed_pseudo_label_sources(sorted(stage3))) == kept
    assert all(source.kind == "pseudo_labels" for source in recipe._routed_pseudo_label_sources(sorted(stage3)))
    assert recipe._routed_pseudo_label_sources([]) == []  # only the languages stage 5 trains on
    assert "und (routed by LID)" in table and "routed to" in table


def test_command_line_routes_with_route_to(mixed, language_models, tmp_path):
    """scripts/pseudo_label.py --route-to: --model is the router (here el's model: a real LID, random), threshold 0,
    every language's clips to bg's model."""
    script = load_script("pseudo_label.py")
    output, listing = tmp_path / "und", tmp_path / "und.lst"
    script.main(["--model", str(language_models["el"]), "--data", str(mixed), "--output-dir", str(output),
                 "--route-to", *[f"{code}={language_models['bg']}" for code in LANGUAGES], "--routing-threshold", "0",
                 "--max-batch-seconds", "60", "--flashlight-list", str(listing)])  # fmt: skip
    routing = read_routing(output)
    assert len(routing) == 7
    assert all(row["routed_to"] == row["predicted_language"] for row in routing)  # threshold 0, a model for every language
    rows = list(iter_pseudo_labels(sorted((output / "pseudo_labels").iterdir())))
    summary = json.loads((output / "summary.json").read_text())
    assert rows and {row["id"] for row in rows} <= {row["id"] for row in routing}
    assert len(rows) + sum(summary["pseudo_label_dropped"].values()) == 7  # the rest too long for the 630-character filter
    assert len(listing.read_text().splitlines()) == len(rows)  # the routed sets as one Flashlight list
    with pytest.raises(SystemExit):
        script.parse_arguments(["--model", "m", "--data", str(mixed), "--output-dir", "o", "--route-to", "el"])
