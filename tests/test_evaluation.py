"""scripts/evaluate.py and `evaluate_model`: the files an evaluation leaves (per-language metrics, report,
predictions, plots), the alpha/beta grid search saved next to the model and reused, data sources."""

import json

import pytest

from decoding_fixtures import LANGUAGES, load_script, partly_trained_model
from mlpl.loaders import common_voice_records
from mlpl.evaluation import evaluate_model
from mlpl.metrics import compute_asr_metrics
from mlpl.config import COMMON_VOICE, FLASHLIGHT_LIST, HUB
from mlpl.sources import load_labeled_source, resolve_source

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def saved_model(tiny_demo_corpus, tmp_path_factory):
    """The partly trained English/German model saved as a model folder, and per-language LMs of the train split."""
    model, processor, _, _ = partly_trained_model(tiny_demo_corpus)
    folder = tmp_path_factory.mktemp("model")
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    lm_folder = tmp_path_factory.mktemp("lm")
    load_script("build_lm").main(
        ["--data", str(tiny_demo_corpus), "--languages", *LANGUAGES, "--output", str(lm_folder / "{language}.arpa")]
    )
    return folder, lm_folder / "{language}.arpa"


def test_evaluate_script_writes_every_file_with_per_language_keys(saved_model, tiny_demo_corpus, tmp_path):
    model_folder, lm_template = saved_model
    evaluate = load_script("evaluate").main
    output = tmp_path / "dev"
    evaluate([
        "--model", str(model_folder), "--data", str(tiny_demo_corpus), "--split", "dev", "--languages", *LANGUAGES,
        "--lm", str(lm_template), "--grid-search", "--alphas", "0", "1", "--betas", "0", "1",
        "--beam-size", "16", "--output-dir", str(output), "--max-batch-seconds", "12",
    ])
    files = {path.name for path in output.iterdir()}
    assert {"metrics.json", "report.md", "predictions.jsonl", "cer_per_language.png", "lid_confusion.png"} <= files

    dev = common_voice_records(tiny_demo_corpus / "cv", "dev", list(LANGUAGES))
    metrics = json.loads((output / "metrics.json").read_text())
    greedy = metrics["greedy"]
    assert metrics["num_utterances"] == len(dev) and metrics["split"] == "dev"
    assert set(greedy["per_language"]) == set(LANGUAGES) == set(metrics["hours_per_language"])
    for row in greedy["per_language"].values():
        assert {"cer", "wer", "cer_normalized", "wer_normalized", "char_errors", "char_count", "num_utterances"} <= set(row)
    assert greedy["cer"] == pytest.approx(sum(r["cer"] for r in greedy["per_language"].values()) / 2)  # unweighted
    assert greedy["lid_labels"] == list(LANGUAGES) and sum(map(sum, greedy["lid_confusion_matrix"])) == len(dev)
    assert 0.0 <= greedy["lid_accuracy"] <= 1.0
    lm = metrics["lm"]
    assert set(lm["per_language"]) == set(LANGUAGES) == set(lm["decoders"])
    for decoder in lm["decoders"].values():
        assert len(decoder["grid"]) == 4 and decoder["alpha"] in (0.0, 1.0) and decoder["beam_size"] == 16

    predictions = [json.loads(line) for line in (output / "predictions.jsonl").read_text().splitlines()]
    assert sorted(p["id"] for p in predictions) == sorted(r["id"] for r in dev)
    for prediction in predictions:
        assert {"id", "language", "reference", "hypothesis", "predicted_language", "hypothesis_lm"} <= set(prediction)
        assert prediction["predicted_language"] in LANGUAGES
    # The metrics are those of the predictions file.
    rescored = compute_asr_metrics(
        [p["hypothesis"] for p in predictions], [p["reference"] for p in predictions], [p["language"] for p in predictions]
    )
    assert rescored["cer"] == pytest.approx(greedy["cer"]) and rescored["wer"] == pytest.approx(greedy["wer"])

    report = (output / "report.md").read_text()
    for language in LANGUAGES:
        assert f"| {language} | 2 |" in report
    assert "**average**" in report and "CER + LM" in report
    for plot in ("cer_per_language.png", "lid_confusion.png"):
        assert (output / plot).read_bytes()[:8] == PNG_MAGIC and (output / plot).stat().st_size > 5000

    # The grid search's choice lives next to the model; a test run with the LM and no --alpha uses it.
    chosen = json.loads((model_folder / "lm_decoding.json").read_text())["decoders"]
    assert set(chosen) == set(LANGUAGES)
    evaluate([
        "--model", str(model_folder), "--data", str(tiny_demo_corpus), "--split", "test", "--languages", "en",
        "--lm", f"en={str(lm_template).format(language='en')}", "--output-dir", str(tmp_path / "test"), "--no-plots",
    ])
    test_metrics = json.loads((tmp_path / "test" / "metrics.json").read_text())
    assert set(test_metrics["greedy"]["per_language"]) == {"en"}
    used = test_metrics["lm"]["decoders"]["en"]
    assert (used["alpha"], used["beta"], used["beam_size"]) == (chosen["en"]["alpha"], chosen["en"]["beta"], 16)
    assert not (tmp_path / "test" / "cer_per_language.png").exists()


def test_evaluate_model_in_python_restores_the_mode_and_needs_no_files(tiny_demo_corpus):
    model, processor, _, _ = partly_trained_model(tiny_demo_corpus)
    dataset = load_labeled_source(tiny_demo_corpus, "dev", languages=["de"])
    model.train()
    try:
        result = evaluate_model(model, processor, dataset, progress=False)
        assert model.training
    finally:
        model.eval()
    assert result.files == {} and len(result.predictions) == len(dataset)
    assert set(result.metrics["greedy"]["per_language"]) == {"de"} and "lm" not in result.metrics
    # Cropping into 1-second chunks changes the transcripts, not what is scored.
    cropped = evaluate_model(model, processor, dataset, chunk_seconds=1.0, progress=False)
    assert [p["id"] for p in cropped.predictions] == [p["id"] for p in result.predictions]


def test_sources_are_recognised_and_unlabeled_audio_is_refused(tiny_demo_corpus, tmp_path):
    assert resolve_source(tiny_demo_corpus) == (COMMON_VOICE, tiny_demo_corpus / "cv")
    assert resolve_source(tiny_demo_corpus / "cv" / "fi") == (COMMON_VOICE, tiny_demo_corpus / "cv" / "fi")
    assert resolve_source("facebook/voxpopuli") == (HUB, "facebook/voxpopuli")
    with pytest.raises(ValueError, match="unlabeled audio, with no transcripts"):
        load_labeled_source(tiny_demo_corpus / "voxpopuli")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_source(tmp_path / "missing" / "folder")

    dev = common_voice_records(tiny_demo_corpus / "cv", "dev", ["fi"])
    listing = tmp_path / "fi.lst"
    listing.write_text("".join(f"{r['id']} {r['audio']} 1000 {r['sentence']}\n" for r in dev), encoding="utf-8")
    assert resolve_source(listing)[0] == FLASHLIGHT_LIST
    with pytest.raises(ValueError, match="--language"):
        load_labeled_source(listing)
    dataset = load_labeled_source(listing, language="fi")
    assert len(dataset) == len(dev) and dataset[0]["sentence"] == dev[0]["sentence"]
    with pytest.raises(ValueError, match="no utterance in languages"):
        load_labeled_source(listing, language="fi", languages=["el"])
