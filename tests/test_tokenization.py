"""Character vocabulary and the processor (docs/design.md §3)."""

import pytest
import torch

from modeling_mlpl import MlplProcessor, build_tokenizer, build_vocabulary, describe_characters, unknown_characters


TRANSCRIPTS = ["Hello, World! hi", "Καλημέρα κόσμε.", "Привет мир", "Hyvää  päivää\tkaikille"]


def test_vocabulary_covers_every_code_point_in_a_deterministic_order():
    vocabulary = build_vocabulary(TRANSCRIPTS)
    assert list(vocabulary)[:3] == ["<pad>", "<unk>", "|"]
    assert list(vocabulary.values()) == list(range(len(vocabulary)))
    characters = {char for text in TRANSCRIPTS for char in text if not char.isspace()}
    assert set(vocabulary) - {"<pad>", "<unk>", "|"} == characters
    assert list(vocabulary)[3:] == sorted(characters)
    assert build_vocabulary(reversed(TRANSCRIPTS)) == vocabulary
    assert "H" in vocabulary and "h" in vocabulary and "," in vocabulary  # case and punctuation kept


def test_word_delimiter_in_a_transcript_is_rejected():
    with pytest.raises(ValueError, match=r"transcript 1 .*'a\|b'"):
        build_vocabulary(["fine", "a|b"])


def test_tokenizer_round_trips_text_and_reports_unknown_characters():
    vocabulary = build_vocabulary(TRANSCRIPTS)
    tokenizer = build_tokenizer(vocabulary)
    assert len(tokenizer) == len(vocabulary)  # no bos/eos added behind our back
    ids = tokenizer("Hello, World!").input_ids
    assert tokenizer.decode(ids, group_tokens=False) == "Hello, World!"
    assert tokenizer.pad_token_id == 0
    assert unknown_characters("Hello Ω ß", vocabulary) == ["ß", "Ω"]
    assert "U+00DF LATIN SMALL LETTER SHARP S" in describe_characters(["ß"])


def test_processor_round_trip_and_labels(tmp_path):
    processor = MlplProcessor.from_transcripts(TRANSCRIPTS)
    processor.save_pretrained(tmp_path)
    reloaded = MlplProcessor.from_pretrained(tmp_path)
    assert reloaded.tokenizer.get_vocab() == processor.tokenizer.get_vocab()
    labels = reloaded(text=["Привет мир"]).input_ids[0]
    assert reloaded.tokenizer.decode(labels, group_tokens=False) == "Привет мир"
    inputs = reloaded(audio=[torch.zeros(3200).numpy() + 0.01], sampling_rate=16000, return_tensors="pt")
    assert inputs["input_features"].shape == (1, 18, 80)
