"""MlplCollator (training/collate.py): padded features, -100-padded labels, language ids, reports."""

import logging

import numpy as np
import pytest
import torch
from datasets import Dataset

from modeling_mlpl import MlplFeatureExtractor, build_tokenizer, build_vocabulary
from mlpl.batching import DurationBatchSampler
from mlpl.collate import MlplCollator


SAMPLING_RATE = 16000
TRANSCRIPTS = {"en": "Hello, world!", "el": "Καλημέρα κόσμε", "ru": "Привет мир"}
LANGUAGE_TO_ID = {"el": 0, "en": 1, "ru": 2}


def tone(seconds, frequency, seed):
    """A decaying tone with a little noise: deterministic, speech-like enough for log-mels."""
    time = np.arange(int(seconds * SAMPLING_RATE)) / SAMPLING_RATE
    noise = np.random.default_rng(seed).normal(0, 0.01, time.size)
    return (0.5 * np.sin(2 * np.pi * frequency * time) * np.exp(-time) + noise).astype(np.float32)


def example(index, language, seconds, sentence="default"):
    return {
        "id": f"{language}-{index}",
        "audio": tone(seconds, 200 + 50 * index, index),
        "sentence": TRANSCRIPTS[language] if sentence == "default" else sentence,
        "language": language,
        "duration": seconds,
    }


@pytest.fixture(scope="module")
def feature_extractor():
    return MlplFeatureExtractor()


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer(build_vocabulary(TRANSCRIPTS.values()))


@pytest.fixture
def collator(feature_extractor, tokenizer):
    return MlplCollator(feature_extractor, tokenizer, LANGUAGE_TO_ID)


def test_batch_shapes_dtypes_and_padding(collator, feature_extractor, tokenizer):
    examples = [example(0, "en", 1.0), example(1, "el", 2.5), example(2, "ru", 0.7)]
    batch = collator(examples)
    frames = [feature_extractor.num_frames(len(e["audio"])) for e in examples]
    assert batch["input_features"].shape == (3, max(frames), 80)
    assert batch["input_features"].dtype == torch.float32
    assert batch["attention_mask"].dtype == torch.long
    assert batch["attention_mask"].sum(dim=1).tolist() == frames
    for row, length in enumerate(frames):
        assert (batch["input_features"][row, length:] == 0).all()
    assert batch["language_ids"].tolist() == [1, 0, 2]
    assert batch["ids"] == ["en-0", "el-1", "ru-2"]
    assert batch["durations"].tolist() == pytest.approx([1.0, 2.5, 0.7])

    labels = batch["labels"]
    assert labels.dtype == torch.long
    for row, e in enumerate(examples):
        expected = tokenizer(e["sentence"]).input_ids
        assert labels[row, : len(expected)].tolist() == expected
        assert (labels[row, len(expected) :] == -100).all()
        assert tokenizer.decode(expected, group_tokens=False) == e["sentence"]
    assert labels.shape[1] == max(len(tokenizer(e["sentence"]).input_ids) for e in examples)


def test_features_equal_one_batched_feature_extractor_call(collator, feature_extractor):
    examples = [example(0, "en", 1.2), example(1, "el", 0.9)]
    reference = feature_extractor(
        [e["audio"] for e in examples],
        sampling_rate=SAMPLING_RATE,
        padding=True,
        return_attention_mask=True,
        return_tensors="pt",
    )
    batch = collator(examples)
    assert torch.equal(batch["input_features"], reference["input_features"])
    assert torch.equal(batch["attention_mask"], reference["attention_mask"])


def test_unlabeled_batch_has_no_labels(collator):
    batch = collator([example(0, "en", 1.0, sentence=None), example(1, "ru", 1.5, sentence=None)])
    assert "labels" not in batch
    assert batch["input_features"].shape[0] == 2


def test_mixed_labeled_and_unlabeled_is_an_error(collator):
    with pytest.raises(ValueError, match="mixes labeled and unlabeled.*en-1"):
        collator([example(0, "en", 1.0), example(1, "en", 1.0, sentence=None)])


def test_unknown_language_names_it_and_the_known_ones(collator):
    with pytest.raises(ValueError, match=r"'fr'.*\['el', 'en', 'ru'\]"):
        collator([example(0, "en", 1.0), {**example(1, "en", 1.0), "language": "fr", "id": "fr-1"}])


def test_unknown_characters_are_reported_with_the_example_id(collator, tokenizer, caplog):
    odd = example(0, "en", 1.0, sentence="Hello, wörld!")
    with caplog.at_level(logging.WARNING, logger="mlpl.collate"):
        batch = collator([odd, example(1, "en", 1.0, sentence="wörld ö")])
    assert "en-0" in caplog.text and "U+00F6" in caplog.text
    assert caplog.text.count("U+00F6") == 1  # each new character once, not per example
    assert collator.unknown_character_counts == {"ö": 3}
    assert collator.num_examples_with_unknown_characters == 2
    assert tokenizer.unk_token_id in batch["labels"][0].tolist()
    assert "ö" in collator.unknown_character_summary()


def test_unknown_characters_can_be_an_error(feature_extractor, tokenizer):
    strict = MlplCollator(feature_extractor, tokenizer, LANGUAGE_TO_ID, on_unknown_characters="error")
    with pytest.raises(ValueError, match="en-0.*'ö'"):
        strict([example(0, "en", 1.0, sentence="wörld")])


def test_collator_with_duration_sampler_in_a_dataloader(collator):
    rows = [example(i, language, 0.5 + 0.25 * i) for i, language in enumerate(["en", "el", "ru", "en", "el", "ru"])]
    dataset = Dataset.from_list([{**row, "audio": row["audio"].tolist()} for row in rows])
    sampler = DurationBatchSampler.from_dataset(dataset, max_batch_seconds=3.0, seed=0)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=collator)
    seen = []
    for batch in loader:
        assert batch["input_features"].shape[0] == len(batch["ids"]) == batch["labels"].shape[0]
        assert len(batch["ids"]) * batch["durations"].max() <= 3.0
        seen += batch["ids"]
    assert sorted(seen) == sorted(row["id"] for row in rows)
