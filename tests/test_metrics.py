"""Evaluation metrics (issue 7): corpus-level CER/WER per language, their average, LID."""

import os
import runpy
import sys
from pathlib import Path

# evaluate reads these when it is imported; a local metric file needs no network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_EVALUATE_OFFLINE", "1")

import evaluate  # noqa: E402
import pytest  # noqa: E402

from mlpl.metrics import (  # noqa: E402
    ErrorCounts,
    compute_asr_metrics,
    compute_lid_metrics,
    count_edits,
    flatten_metrics,
    lid_confusion_matrix,
    normalize_transcript,
    per_language_error_rates,
)

METRIC_PATH = Path(__file__).resolve().parents[1] / "training" / "evaluate_metric" / "mlpl_asr.py"


def test_corpus_level_rate_is_not_the_mean_of_utterance_rates():
    # A short utterance entirely wrong and a long one entirely right.
    references = ["hi", "good morning everyone"]  # 2 + 21 characters, 1 + 3 words
    predictions = ["", "good morning everyone"]
    row = per_language_error_rates(predictions, references, ["en", "en"])["en"]
    assert (row["char_errors"], row["char_count"], row["cer"]) == (2, 23, pytest.approx(2 / 23))
    assert (row["word_errors"], row["word_count"], row["wer"]) == (1, 4, pytest.approx(1 / 4))
    # The mean of per-utterance rates, (1.0 + 0.0) / 2, would be 0.5 for both.
    per_utterance = [compute_asr_metrics([p], [r], ["en"]) for p, r in zip(predictions, references)]
    assert [m["cer"] for m in per_utterance] == [1.0, 0.0]
    assert [m["wer"] for m in per_utterance] == [1.0, 0.0]
    result = compute_asr_metrics(predictions, references, ["en", "en"])
    assert result["cer"] == pytest.approx(2 / 23) and result["wer"] == pytest.approx(0.25)


def test_per_language_table_and_unweighted_average_across_languages():
    # en: 3 utterances of 10 characters, 1 substitution each -> 3/30; fr: "ab" -> "aX" -> 1/2.
    predictions = ["abcdefghiX", "aX", "Xbcdefghij", "abcdeXghij"]
    references = ["abcdefghij", "ab", "abcdefghij", "abcdefghij"]
    languages = ["en", "fr", "en", "en"]  # interleaved on purpose
    result = compute_asr_metrics(predictions, references, languages)
    assert result["languages"] == ["en", "fr"]
    en, fr = result["per_language"]["en"], result["per_language"]["fr"]
    assert (en["num_utterances"], en["char_errors"], en["char_count"], en["cer"]) == (3, 3, 30, pytest.approx(0.1))
    assert (fr["num_utterances"], fr["char_errors"], fr["char_count"], fr["cer"]) == (1, 1, 2, 0.5)
    assert en["wer"] == 1.0 and fr["wer"] == 1.0  # every one-word utterance has a wrong word
    # Unweighted: (0.1 + 0.5) / 2 = 0.3; pooling all characters would give 4/32 = 0.125.
    assert result["cer"] == pytest.approx(0.3)
    assert flatten_metrics(result) == {
        "cer": pytest.approx(0.3),
        "wer": 1.0,
        "cer/en": pytest.approx(0.1),
        "wer/en": 1.0,
        "cer/fr": 0.5,
        "wer/fr": 1.0,
    }


def test_case_and_punctuation_count_in_the_raw_score_normalized_is_reported_beside_it():
    predictions, references, languages = ["hello world"], ["Hello, world!"], ["en"]
    raw = compute_asr_metrics(predictions, references, languages)
    # H->h substituted, "," and "!" deleted: 3 of 13 characters; both words differ.
    assert raw["cer"] == pytest.approx(3 / 13) and raw["wer"] == 1.0
    assert not any(key.endswith("_normalized") for key in raw)
    both = compute_asr_metrics(predictions, references, languages, normalized=True)
    assert both["cer"] == raw["cer"] and both["wer"] == raw["wer"]  # beside, never instead
    assert both["cer_normalized"] == 0.0 and both["wer_normalized"] == 0.0
    row = both["per_language"]["en"]
    assert row["char_count"] == 13 and row["char_count_normalized"] == 11 and row["cer_normalized"] == 0.0


def test_normalize_transcript():
    assert normalize_transcript("  ¿Qué   TAL?\tBien. ") == "qué tal bien"
    assert normalize_transcript("e\u0301") == "\u00e9"  # NFC: decomposed accent == composed
    assert normalize_transcript("Don't «stop» — 5 $") == "dont stop 5 $"  # symbols are not punctuation
    assert normalize_transcript("...") == ""


def test_empty_references_and_hypotheses():
    assert count_edits([""], ["abc"], "character") == ErrorCounts(deletions=3)
    assert count_edits(["ab c"], [""], "character") == ErrorCounts(insertions=4)
    assert count_edits(["ab c"], [""], "word") == ErrorCounts(insertions=2)
    assert count_edits([""], [""], "word") == ErrorCounts() and ErrorCounts().rate is None
    assert count_edits([], [], "character") == ErrorCounts()
    # An empty reference inside a language adds insertions to that language's total.
    predictions, references = ["ab", "abcd", "xyz", "", "a\t b"], ["", "abcd", "", "", "a b"]
    result = compute_asr_metrics(predictions, references, ["en", "en", "zz", "zz", "ws"])
    assert result["per_language"]["en"]["cer"] == 0.5  # 2 insertions / 4 reference characters
    # A language with only empty references: rate undefined (None), counts kept, not averaged.
    zz = result["per_language"]["zz"]
    assert (zz["cer"], zz["char_errors"], zz["char_count"]) == (None, 3, 0)
    assert (zz["wer"], zz["word_errors"], zz["word_count"]) == (None, 1, 0)
    # Raw characters include whitespace exactly as given; words split on any whitespace.
    ws = result["per_language"]["ws"]
    assert (ws["char_errors"], ws["word_errors"]) == (1, 0)  # the tab is one inserted character
    assert result["cer"] == pytest.approx((0.5 + 1 / 3) / 2)  # zz left out
    assert compute_asr_metrics([""], [""], ["en"])["cer"] is None
    assert compute_asr_metrics([], [], [])["per_language"] == {}


def test_bad_inputs_name_the_problem():
    with pytest.raises(ValueError, match=r"'predictions': 2, 'references': 1"):
        compute_asr_metrics(["a", "b"], ["a"], ["en", "en"])
    with pytest.raises(TypeError, match=r"predictions\[1\] is None"):
        compute_asr_metrics(["a", None], ["a", "b"], ["en", "en"])
    with pytest.raises(ValueError, match="unit must be"):
        count_edits(["a"], ["a"], "phoneme")


def test_lid_accuracy_and_confusion_matrix_in_the_given_label_order():
    languages = ["en", "en", "fr", "fr", "de"]
    predicted = ["en", "fr", "fr", "fr", "en"]
    labels = ["fr", "en", "de", "es"]
    # rows: reference language, columns: predicted, both in the order of `labels`
    assert lid_confusion_matrix(predicted, languages, labels) == [
        [2, 0, 0, 0],
        [1, 1, 0, 0],
        [0, 1, 0, 0],
        [0, 0, 0, 0],
    ]
    lid = compute_lid_metrics(predicted, languages, labels)
    assert lid["lid_accuracy"] == pytest.approx(3 / 5)
    assert lid["lid_accuracy_per_language"] == {"fr": 1.0, "en": 0.5, "de": 0.0, "es": None}
    assert lid["lid_labels"] == labels
    assert compute_lid_metrics(predicted, languages)["lid_labels"] == ["de", "en", "fr"]
    with pytest.raises(ValueError, match=r"predicted language 'it' is not in labels"):
        lid_confusion_matrix(["it"], ["en"], ["en", "fr"])
    combined = compute_asr_metrics(languages, languages, languages, predicted_languages=predicted, lid_labels=labels)
    assert combined["cer"] == 0.0 and combined["lid_confusion_matrix"] == lid["lid_confusion_matrix"]


# ---------------------------------------------------------------- the evaluate module


@pytest.fixture(scope="module")
def metric_inputs():
    return {
        "predictions": ["hello word", "bonjour", "", "hola mundo"],
        "references": ["Hello world.", "Bonjour !", "abc", "hola mundo"],
        "languages": ["en", "fr", "fr", "es"],
    }


def test_evaluate_load_from_the_local_file_offline_matches_the_function(metric_inputs):
    metric = evaluate.load(str(METRIC_PATH), keep_in_memory=True)
    assert set(metric.features) == {"predictions", "references", "languages"}
    expected = compute_asr_metrics(**metric_inputs, normalized=True)
    assert metric.compute(**metric_inputs, normalized=True) == expected
    # add_batch accumulates like any evaluate metric
    for start in (0, 2):
        metric.add_batch(**{key: values[start : start + 2] for key, values in metric_inputs.items()})
    assert metric.compute() == compute_asr_metrics(**metric_inputs)


def test_evaluate_module_with_lid_config(metric_inputs):
    metric = evaluate.load(str(METRIC_PATH), "with_lid", keep_in_memory=True)
    predicted_languages = ["en", "es", "fr", "es"]
    result = metric.compute(**metric_inputs, predicted_languages=predicted_languages, lid_labels=["es", "en", "fr"])
    assert result == compute_asr_metrics(
        **metric_inputs, predicted_languages=predicted_languages, lid_labels=["es", "en", "fr"]
    )
    assert result["lid_accuracy"] == 0.75 and result["lid_confusion_matrix"][2] == [1, 0, 1]
    with pytest.raises(ValueError, match="has no config 'lid'"):
        evaluate.load(str(METRIC_PATH), "lid", keep_in_memory=True)


def test_evaluate_module_without_the_project_installed_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "mlpl.metrics", None)  # makes the import fail
    with pytest.raises(ImportError, match=r"pip install -e"):
        runpy.run_path(str(METRIC_PATH))
