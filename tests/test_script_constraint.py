"""Script-constrained CTC decoding (docs/design.md §3.1): inventories from real transcripts, saved in the config;
greedy, beam search, the pseudo-label generator and the pipeline never emit a character outside the language's
inventory; configs saved before the inventory existed still load, and asking them for the constraint names the fix."""

import json

import pyarrow.parquet as pq
import pytest
import torch
from transformers import AutoConfig, pipeline

from modeling_mlpl import MlplForCTC, MlplProcessor, build_language_characters, constrain_to_language
from tiny_models import tiny_config
from mlpl.collate import MlplCollator
from mlpl.config import SourceConfig
from mlpl.loaders import load_common_voice_folder, load_voxpopuli_folder
from mlpl.decoding import MlplBeamSearchDecoder
from mlpl.inference import chunked_logits, transcribe_batch
from mlpl.pseudo_label import PseudoLabelConfig, generate_pseudo_labels
from mlpl.sources import source_transcripts
from mlpl.trainer_data import training_language_characters


LANGUAGES = ["bg", "de", "el", "en", "es", "fi", "ru"]


@pytest.fixture(scope="module")
def inventories(tiny_demo_corpus):
    return build_language_characters(source_transcripts(tiny_demo_corpus, "train"))


@pytest.fixture(scope="module")
def model_and_processor(tiny_demo_corpus, inventories):
    """A tiny random model over the demo corpus's vocabulary whose sharpened CTC head emits characters of
    every script (what an untrained or confused model does), with the corpus's inventories in its config."""
    transcripts = [sentence for _, sentence in source_transcripts(tiny_demo_corpus, "train")]
    processor = MlplProcessor.from_transcripts(transcripts)
    torch.manual_seed(0)
    model = MlplForCTC(tiny_config(vocab_size=len(processor.tokenizer), languages=LANGUAGES, language_characters=inventories)).eval()
    with torch.no_grad():
        model.ctc_head.weight.mul_(8.0)
        model.ctc_head.bias[model.config.pad_token_id] -= 2.0  # fewer blanks: longer outputs
    return model, processor


@pytest.fixture(scope="module")
def dev_set(tiny_demo_corpus):
    return load_common_voice_folder(tiny_demo_corpus / "cv", "dev")


@pytest.fixture(scope="module")
def dev_batch(dev_set, model_and_processor):
    _, processor = model_and_processor
    collator = MlplCollator(processor.feature_extractor, processor.tokenizer, {code: i for i, code in enumerate(LANGUAGES)})
    return collator([dev_set[i] for i in range(len(dev_set))])


def outside(text, inventory):
    return sorted({char for char in text if not char.isspace() and char not in inventory})


def test_inventories_come_from_the_labeled_transcripts_and_round_trip_through_config_json(
    tiny_demo_corpus, inventories, model_and_processor, tmp_path
):
    assert sorted(inventories) == LANGUAGES
    assert not any("a" <= char <= "z" for char in inventories["el"]) and "α" in inventories["el"]
    assert not any("\u0370" <= char <= "\u03ff" for char in inventories["en"])
    assert list(inventories["fi"]) == sorted(inventories["fi"])  # code-point order, as the vocabulary
    # The trainer's rule: labeled sources only (a PL set is left out), merged into the initial model's inventory.
    labeled = SourceConfig(kind="common_voice", path=str(tiny_demo_corpus / "cv"), split="train", languages=["el"])
    pseudo = SourceConfig(kind="pseudo_labels", path=str(tmp_path / "never-read"), languages=["el"])
    merged = training_language_characters([labeled, pseudo], {"el": "Ω", "xx": "q"})
    assert merged == {"el": "".join(sorted(set(inventories["el"]) | {"Ω"})), "xx": "q"}
    assert training_language_characters([pseudo]) is None

    model, processor = model_and_processor
    model.save_pretrained(tmp_path / "saved")
    assert json.loads((tmp_path / "saved" / "config.json").read_text())["language_characters"] == inventories
    assert AutoConfig.from_pretrained(tmp_path / "saved").language_characters == inventories
    with pytest.raises(ValueError, match="build_language_characters"):
        tiny_config(language_characters={"el": ["α"]})


def test_old_config_without_inventories_loads_and_the_constraint_names_the_fix(model_and_processor, dev_set, dev_batch, tmp_path):
    model, processor = model_and_processor
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    config_file = tmp_path / "config.json"
    saved = json.loads(config_file.read_text())
    for key in ("language_characters", "custom_pipelines"):  # what a folder saved before this change lacks
        del saved[key]
    config_file.write_text(json.dumps(saved))
    old = MlplForCTC.from_pretrained(tmp_path).eval()
    assert old.config.language_characters is None
    vocabulary = processor.tokenizer.get_vocab()
    with pytest.raises(ValueError, match="no language_characters.*build_language_characters"):
        transcribe_batch(old, dev_batch, processor.tokenizer, language="el")
    with pytest.raises(ValueError, match="no language_characters"):
        pipeline("automatic-speech-recognition", model=str(tmp_path))(dev_set[0]["audio"], language="auto")
    with pytest.raises(ValueError, match=r"'xx' has no character inventory.*'el'"):
        constrain_to_language(torch.zeros(1, 3, len(vocabulary)), model.config, vocabulary, "xx")
    # without the constraint nothing changed
    assert transcribe_batch(old, dev_batch, processor.tokenizer)["texts"] == transcribe_batch(model, dev_batch, processor.tokenizer)["texts"]


def test_greedy_and_beam_search_stay_inside_the_inventory(model_and_processor, dev_batch, inventories):
    model, processor = model_and_processor
    free = transcribe_batch(model, dev_batch, processor.tokenizer)
    assert any(outside(text, inventories["el"]) for text in free["texts"])  # unconstrained: other scripts appear
    greek = transcribe_batch(model, dev_batch, processor.tokenizer, language="el")
    assert all(text and not outside(text, inventories["el"]) for text in greek["texts"])

    auto = transcribe_batch(model, dev_batch, processor.tokenizer, language="auto")
    predicted = [LANGUAGES[i] for i in auto["language_ids"].tolist()]
    assert all(not outside(text, inventories[code]) for text, code in zip(auto["texts"], predicted))
    references = [LANGUAGES[i] for i in dev_batch["language_ids"].tolist()]
    own = transcribe_batch(model, dev_batch, processor.tokenizer, language=references)  # one language per utterance
    assert all(not outside(text, inventories[code]) for text, code in zip(own["texts"], references))
    assert own["texts"] != greek["texts"]

    # Beam search without an LM is greedy (docs/design.md §7), with the same constraint.
    decoder = MlplBeamSearchDecoder(processor.tokenizer, alpha=0.0, beta=0.0, beam_size=8, config=model.config)
    with torch.no_grad():
        logits, lengths, lid_logits = chunked_logits(model, dev_batch["input_features"], dev_batch["attention_mask"])
    assert decoder.decode(logits, lengths, language="el") == greek["texts"]
    assert decoder.decode(logits, lengths, language="auto", lid_logits=lid_logits) == auto["texts"]
    with pytest.raises(ValueError, match="config=model.config"):
        MlplBeamSearchDecoder(processor.tokenizer, alpha=0.0, beta=0.0).decode(logits, lengths, language="el")


def test_pseudo_labels_with_language_constraint_use_only_their_languages_characters(
    tiny_demo_corpus, model_and_processor, inventories, tmp_path
):
    model, processor = model_and_processor
    source = load_voxpopuli_folder(tiny_demo_corpus / "voxpopuli")
    free = generate_pseudo_labels(model, processor, source, tmp_path / "free")
    constrained = generate_pseudo_labels(model, processor, source, tmp_path / "constrained", PseudoLabelConfig(language_constraint=True))
    rows = {name: pq.read_table(tmp_path / name / "data").to_pylist() for name in ("free", "constrained")}
    assert free["utterances"] == constrained["utterances"] == len(source) == len(rows["constrained"])
    assert any(outside(row["pseudo_label"], inventories[row["language"]]) for row in rows["free"])
    assert all(not outside(row["pseudo_label"], inventories[row["language"]]) for row in rows["constrained"])


def test_pipeline_language_argument_constrains_its_output(model_and_processor, dev_set, inventories):
    model, processor = model_and_processor
    recognizer = pipeline(
        "automatic-speech-recognition", model=model, tokenizer=processor.tokenizer, feature_extractor=processor.feature_extractor
    )
    clips = [dev_set[i]["audio"] for i in range(4)]
    free = [result["text"] for result in recognizer(clips, batch_size=2)]
    assert any(outside(text, inventories["el"]) for text in free)
    greek = recognizer(clips, batch_size=2, language="el")
    assert all(result["text"] and not outside(result["text"], inventories["el"]) for result in greek)
    assert [result["language"] for result in greek] == [result["language"] for result in recognizer(clips)]  # still the LID's
    for result in recognizer(clips, language="auto"):
        assert not outside(result["text"], inventories[result["language"]])
    with pytest.raises(ValueError, match="'xx' has no character inventory"):
        recognizer(clips[0], language="xx")


def test_the_trainer_saves_each_languages_inventory_in_the_model_config(tiny_demo_corpus, inventories, tmp_path):
    from mlpl.config import ExperimentConfig, build_dataclass
    from mlpl.trainer import train

    # One update from scratch: the inventory is fixed when the model is built, from the labeled transcripts.
    config = build_dataclass(ExperimentConfig, {
        "data": {"train": [{"kind": "common_voice", "path": str(tiny_demo_corpus / "cv"), "split": "train", "languages": ["fi", "el"]}],
                 "max_batch_seconds": 12},
        "model": {"overrides": {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 4, "intermediate_size": 32,
                                "max_relative_positions": 16}},
        "optim": {"optimizer": "adamw", "lr": 0.001, "warmup_updates": 1, "halve_lr_at": None},
        "train": {"max_updates": 1, "eval_every": 1000, "save_every": 1000, "log_every": 1, "output_dir": str(tmp_path / "run"),
                  "log_with": []},
    })  # fmt: skip
    train(config)
    saved = json.loads((tmp_path / "run" / "final" / "config.json").read_text())
    assert saved["language_characters"] == {code: inventories[code] for code in ("el", "fi")}


def two_update_slimipl_run(corpus, init, output, lr, **slimipl):
    """Two updates of slimIPL from the model folder `init` (cache of 2 batches, no regularization); returns
    the cache saved in its checkpoint and the run summary's slimIPL counters."""
    from mlpl.checkpoint import load_trainer_state, newest_checkpoint
    from mlpl.config import ExperimentConfig, build_dataclass
    from mlpl.trainer import train

    config = build_dataclass(ExperimentConfig, {
        "data": {"train": [{"kind": "common_voice", "path": str(corpus / "cv"), "split": "train", "languages": LANGUAGES}],
                 "unlabeled": [{"kind": "voxpopuli", "path": str(corpus / "voxpopuli")}], "max_batch_seconds": 60},
        "model": {"init_from": str(init), "dropout": 0.0, "layerdrop": 0.0},
        "optim": {"optimizer": "adamw", "lr": lr, "warmup_updates": 1, "halve_lr_at": None},
        "spec_augment": {"enabled": False},
        "slimipl": {"enabled": True, "supervised_warmup_updates": 0, "unlabeled_ratio": 1, "cache_size": 2,
                    "cropping_warmup_updates": 0, "dropout": 0.0, "layerdrop": 0.0, **slimipl},
        "train": {"max_updates": 2, "eval_every": 1000, "save_every": 2, "log_every": 1, "output_dir": str(output), "log_with": []},
    })  # fmt: skip
    train(config)
    summary = json.loads((output / "train_summary.json").read_text())["slimipl"]
    return load_trainer_state(newest_checkpoint(output) / "trainer_state_rank0.pt")["cache"], summary


def test_slimipl_confidence_filter_keeps_only_confident_utterances_and_counts_the_rest(model_and_processor, tiny_demo_corpus, tmp_path):
    """`slimipl.min_confidence`: the cached batches (read back from the checkpoint) hold only utterances at least
    that confident, or their batch's most confident one; the summary counts what was dropped."""
    from mlpl.inference import sequence_confidence

    model, processor = model_and_processor
    model.save_pretrained(tmp_path / "init")
    processor.save_pretrained(tmp_path / "init")

    def run(name, min_confidence):
        return two_update_slimipl_run(tiny_demo_corpus, tmp_path / "init", tmp_path / name, 1e-9, min_confidence=min_confidence)

    whole, whole_summary = run("all", None)
    assert whole_summary["dropped_pseudo_labels"] == 0
    # the confidences of the cached utterances under the (practically unchanged, lr 1e-9) initial model
    model.eval()
    confidence = {}
    for batch in whole["batches"]:
        with torch.no_grad():
            logits = model(batch["input_features"], attention_mask=batch["attention_mask"]).logits
        lengths = model.get_output_lengths(batch["attention_mask"].sum(-1))
        confidence.update(zip(batch["ids"], sequence_confidence(logits, lengths)))
    threshold = sorted(confidence.values())[len(confidence) // 2]  # about half of them pass
    kept, summary = run("filtered", threshold)
    assert summary["pseudo_labeled_utterances"] == len(confidence)
    assert summary["dropped_pseudo_labels"] == len(confidence) - sum(len(batch["ids"]) for batch in kept["batches"]) > 0
    for batch, labels, original in zip(kept["batches"], kept["labels"], whole["batches"]):
        assert len(labels) == len(batch["ids"]) == len(batch["input_features"]) >= 1
        passing = [i for i in original["ids"] if confidence[i] >= threshold - 1e-4]
        best = max(original["ids"], key=confidence.__getitem__)
        assert set(batch["ids"]) <= set(passing) | {best} and (passing or batch["ids"] == [best])


def test_slimipl_pseudo_labels_with_language_constraint_stay_inside_the_inventory(model_and_processor, tiny_demo_corpus, inventories, tmp_path):
    """slimIPL's in-training PLs (`slimipl.language_constraint`), read back from the cache saved in the checkpoint."""
    model, processor = model_and_processor
    model.save_pretrained(tmp_path / "init")
    processor.save_pretrained(tmp_path / "init")
    decoded = {}
    for constrained in (False, True):
        cache, _ = two_update_slimipl_run(tiny_demo_corpus, tmp_path / "init", tmp_path / f"run-{constrained}", 1e-7, language_constraint=constrained)
        assert len(cache["labels"]) == 2  # the cache filled
        decoded[constrained] = [
            (LANGUAGES[int(code)], processor.tokenizer.decode([i for i in row.tolist() if i >= 0], group_tokens=False))
            for batch, labels in zip(cache["batches"], cache["labels"])
            for code, row in zip(batch["language_ids"], labels)
        ]
    assert any(outside(text, inventories[code]) for code, text in decoded[False])
    assert all(text and not outside(text, inventories[code]) for code, text in decoded[True])
