"""CTC beam search with a word n-gram LM (docs/design.md §7): greedy at alpha = beta = 0, the LM fixes what the acoustics
leave ambiguous, lexicon decoding stays in the lexicon, cached log-probabilities, the alpha/beta grid search."""

import json
import math

import numpy as np
import pytest
import torch

from decoding_fixtures import LANGUAGES, partly_trained_model
from modeling_mlpl import MlplProcessor
from mlpl.loaders import common_voice_records, load_common_voice_folder
from mlpl.decoding import (
    LM_DECODING_FILE,
    LogProbCache,
    MlplBeamSearchDecoder,
    decoder_from_settings,
    grid_search_lm_weights,
    load_lm_decoding,
)
from mlpl.inference import chunked_logits, decode_token_ids, greedy_token_ids
from mlpl.metrics import compute_asr_metrics
from mlpl.ngram_lm import estimate_kneser_ney


@pytest.fixture(scope="module")
def trained(tiny_demo_corpus):
    return partly_trained_model(tiny_demo_corpus)


@pytest.fixture(scope="module")
def real_outputs(trained, tiny_demo_corpus):
    """Logits of the partly trained model on its 4 training clips and on the 4 English/German dev clips."""
    model, processor, _, train_batch = trained
    dev = load_common_voice_folder(tiny_demo_corpus / "cv", "dev", languages=list(LANGUAGES))
    from mlpl.collate import MlplCollator

    collator = MlplCollator(processor.feature_extractor, processor.tokenizer, {code: i for i, code in enumerate(LANGUAGES)})
    outputs = []
    for batch in (train_batch, collator([dev[i] for i in range(len(dev))])):
        with torch.no_grad():
            logits, lengths, _ = chunked_logits(model, batch["input_features"], batch["attention_mask"])
        outputs.append((logits, lengths))
    return outputs


@pytest.fixture(scope="module")
def demo_lm(tiny_demo_corpus, tmp_path_factory):
    """A 4-gram LM of the English and German training transcripts (it knows the 4 clips' sentences)."""
    sentences = [r["sentence"] for r in common_voice_records(tiny_demo_corpus / "cv", "train", list(LANGUAGES))]
    path = tmp_path_factory.mktemp("lm") / "en_de.arpa"
    estimate_kneser_ney(sentences, order=4).write_arpa(path)
    return path


def greedy_texts(logits, lengths, tokenizer):
    return decode_token_ids(greedy_token_ids(logits, lengths, tokenizer.pad_token_id), tokenizer)


def test_beam_search_without_lm_weight_is_greedy_decoding_on_real_outputs(trained, real_outputs, demo_lm):
    _, processor, examples, _ = trained
    tokenizer = processor.tokenizer
    no_lm = MlplBeamSearchDecoder(tokenizer, alpha=0.0, beta=0.0, beam_size=8, beam_size_token=8)
    lm_at_zero = MlplBeamSearchDecoder(tokenizer, demo_lm, alpha=0.0, beta=0.0, beam_size=8, beam_size_token=8)
    for logits, lengths in real_outputs:
        greedy = greedy_texts(logits, lengths, tokenizer)
        assert sum(len(text) for text in greedy) > 40  # the model writes text, not blanks
        assert no_lm.decode(logits, lengths) == greedy
        assert lm_at_zero.decode(logits, lengths) == greedy
    # Same with numpy input and without lengths (every frame valid).
    logits, lengths = real_outputs[0]
    assert no_lm.decode(logits[:1, : lengths[0]].numpy()) == greedy_texts(logits[:1], lengths[:1], tokenizer)


def ambiguous_logits(tokenizer, texts, confusions):
    """`(B, T, V)` log-probabilities spelling `texts` (each character a confident frame then a blank), where
    a character in `confusions` is written with the confusable letter slightly MORE likely than itself."""
    vocabulary = tokenizer.get_vocab()
    blank, delimiter = tokenizer.pad_token_id, vocabulary["|"]
    rows = []
    for text in texts:
        frames = [np.full(len(vocabulary), 0.01 / len(vocabulary))]
        frames[0][blank] = 0.99
        for character in text:
            frame = np.full(len(vocabulary), 0.02 / len(vocabulary))
            target = delimiter if character == " " else vocabulary[character]
            if character in confusions:
                frame[vocabulary[confusions[character]]], frame[target] = 0.52, 0.46
            else:
                frame[target] = 0.98
            frames += [frame, frames[0]]
        rows.append(np.log(np.stack(frames)))
    longest = max(len(row) for row in rows)
    padded = np.stack([np.concatenate([row, np.repeat(rows[0][:1], longest - len(row), axis=0)]) for row in rows])
    return torch.tensor(padded, dtype=torch.float32), torch.tensor([len(row) for row in rows])


@pytest.fixture(scope="module")
def cat_world(tmp_path_factory):
    """A tokenizer knowing c and k, and an LM where cats sit and nobody has heard of a 'kat'."""
    tokenizer = MlplProcessor.from_transcripts(["the cat sat on the mat", "a kit"]).tokenizer
    sentences = ["the cat sat", "the cat sat on the mat", "a cat sat on a mat", "the mat", "the cat", "a kit"]
    path = tmp_path_factory.mktemp("cat_lm") / "cat.arpa"
    estimate_kneser_ney(sentences, order=3).write_arpa(path)
    return tokenizer, path


def test_a_language_model_that_knows_the_word_fixes_an_ambiguous_acoustic_output(cat_world):
    tokenizer, lm = cat_world
    logits, lengths = ambiguous_logits(tokenizer, ["the cat sat"], confusions={"c": "k"})
    assert greedy_texts(logits, lengths, tokenizer) == ["the kat sat"]  # the acoustics alone misspell it
    for lexicon in (None, "lm"):
        decoder = MlplBeamSearchDecoder(tokenizer, lm, lexicon, alpha=1.0, beta=0.0, beam_size=16)
        assert decoder.decode(logits, lengths) == ["the cat sat"], lexicon
    # Without LM weight the acoustics win again.
    assert MlplBeamSearchDecoder(tokenizer, lm, alpha=0.0, beta=0.0).decode(logits, lengths) == ["the kat sat"]
    # Word boundaries heard as a letter: greedy writes one unknown blob, the LM splits it into known words
    # (an OOV word pays p(<unk>) AND its spelling, so it cannot undercut the words it swallowed).
    logits, lengths = ambiguous_logits(tokenizer, ["the cat sat"], confusions={" ": "o"})
    assert greedy_texts(logits, lengths, tokenizer) == ["theocatosat"]
    decoder = MlplBeamSearchDecoder(tokenizer, lm, alpha=1.0, beta=0.0, beam_size=16)
    assert decoder.decode(logits, lengths) == ["the cat sat"]


def test_lexicon_decoding_only_outputs_lexicon_words(trained, real_outputs, demo_lm):
    _, processor, _, _ = trained
    tokenizer = processor.tokenizer
    lexicon = ["Structure", "and", "a", "road", "the", "in", "über", "so", "Ein", "modell"]
    torch.manual_seed(0)
    random_logits = torch.randn(3, 60, len(tokenizer)) * 3
    with_lm = MlplBeamSearchDecoder(tokenizer, demo_lm, lexicon, alpha=0.5, beta=1.0, beam_size=16)
    without_lm = MlplBeamSearchDecoder(tokenizer, None, lexicon, alpha=0.0, beta=1.0, beam_size=16)
    words_seen = set()
    for logits, lengths in real_outputs + [(random_logits, torch.tensor([60, 45, 10]))]:
        for decoder in (with_lm, without_lm):
            for text in decoder.decode(logits, lengths):
                words_seen.update(text.split())
                assert set(text.split()) <= set(lexicon), text
    assert len(words_seen) >= 3  # it did output words, from the lexicon
    language_model_words = MlplBeamSearchDecoder(tokenizer, demo_lm, "lm", alpha=0.5, beta=1.0, beam_size=8)
    known = set(estimate_kneser_ney(["x"], order=1).vocabulary) | set(language_model_words._word_index)
    for logits, lengths in real_outputs:
        for text in language_model_words.decode(logits, lengths):
            assert set(text.split()) <= known


def test_an_lm_lowers_the_word_error_rate_of_a_partly_trained_model(trained, real_outputs, demo_lm):
    _, processor, examples, _ = trained
    tokenizer = processor.tokenizer
    logits, lengths = real_outputs[0]
    references = [example["sentence"] for example in examples]
    languages = [example["language"] for example in examples]
    greedy = compute_asr_metrics(greedy_texts(logits, lengths, tokenizer), references, languages)
    assert greedy["wer"] > 0.1, "precondition: the model still misspells words"
    for lexicon in ("lm", None):
        decoder = MlplBeamSearchDecoder(tokenizer, demo_lm, lexicon, alpha=1.0, beta=1.0, beam_size=32)
        with_lm = compute_asr_metrics(decoder.decode(logits, lengths), references, languages)
        assert with_lm["wer"] < greedy["wer"], (lexicon, with_lm["wer"], greedy["wer"])


def test_cached_log_probabilities_decode_like_the_logits(trained, real_outputs):
    _, processor, _, _ = trained
    tokenizer = processor.tokenizer
    decoder = MlplBeamSearchDecoder(tokenizer, alpha=0.0, beta=0.0, beam_size=8, beam_size_token=6)
    cache = LogProbCache(len(tokenizer), (decoder.blank_index, decoder.sil_index), top_k=6)
    dense = LogProbCache(len(tokenizer), top_k=None)
    for logits, lengths in real_outputs:
        cache.add(logits, lengths)
        dense.add(logits, lengths)
    assert len(cache) == len(dense) == sum(len(lengths) for _, lengths in real_outputs)
    direct = [text for logits, lengths in real_outputs for text in decoder.decode(logits, lengths)]
    for index in range(len(cache)):
        restored, exact = cache[index], dense[index]
        assert restored.shape == exact.shape and restored.dtype == np.float32
        np.testing.assert_allclose(np.exp(restored).sum(-1), 1.0, atol=1e-4)  # still a distribution per frame
        top = np.argsort(-exact, axis=-1)[:, :6]
        np.testing.assert_allclose(np.take_along_axis(restored, top, -1), np.take_along_axis(exact, top, -1), atol=1e-6)
        assert decoder.decode_emissions(decoder.emissions(torch.from_numpy(restored))) == direct[index]


def test_grid_search_picks_the_lowest_wer_and_writes_lm_decoding_json(cat_world, tmp_path):
    tokenizer, lm = cat_world
    references = ["the cat sat", "the cat sat on the mat", "a kit"]
    logits, lengths = ambiguous_logits(tokenizer, references, confusions={"c": "k"})
    cache = LogProbCache(len(tokenizer))
    cache.add(logits, lengths)
    result = grid_search_lm_weights(
        cache, references, tokenizer, lm_path=lm, alphas=[0.0, 1.0], betas=[0.0, 0.5], output_path=tmp_path,
        beam_size=16, progress=False,
    )
    by_point = {(point["alpha"], point["beta"]): point for point in result.grid}
    assert set(by_point) == {(0.0, 0.0), (0.0, 0.5), (1.0, 0.0), (1.0, 0.5)}
    assert by_point[(0.0, 0.0)]["wer"] > 0 and by_point[(1.0, 0.0)]["wer"] == 0.0
    # Both alpha = 1 points are perfect: the tie goes to the lower CER, then to the first point.
    assert (result.alpha, result.beta, result.wer) == (1.0, 0.0, 0.0)
    assert result.hypotheses == references

    saved = json.loads((tmp_path / LM_DECODING_FILE).read_text())
    entry = saved["decoders"]["*"]
    assert entry["alpha"] == 1.0 and entry["beta"] == 0.0 and entry["lm_path"] == str(lm)
    assert entry["beam_size"] == 16 and entry["lm_units"] == "log10" and len(entry["grid"]) == 4
    rebuilt = decoder_from_settings(tokenizer, load_lm_decoding(tmp_path)["*"])
    assert rebuilt.decode(logits, lengths) == references


def test_decoder_argument_errors_say_what_to_do(cat_world):
    tokenizer, lm = cat_world
    decoder = MlplBeamSearchDecoder(tokenizer, alpha=0.0, beta=0.0)
    with pytest.raises(ValueError, match=r"shape \(frames, \d+\)"):
        decoder.decode(torch.zeros(1, 5, len(tokenizer) + 1))
    with pytest.raises(FileNotFoundError, match="build one with scripts/build_lm.py"):
        MlplBeamSearchDecoder(tokenizer, "missing.arpa")
    with pytest.raises(ValueError, match='lexicon="lm"'):
        MlplBeamSearchDecoder(tokenizer, None, "lm")
    with pytest.raises(ValueError, match="smearing"):
        MlplBeamSearchDecoder(tokenizer, lm, smearing="median")
    settings = MlplBeamSearchDecoder(tokenizer, lm, "lm", alpha=1.0, beta=2.0).settings()
    assert settings["unk_score"] == "-inf" and settings["lexicon"] == "lm" and math.isclose(settings["beta"], 2.0)
