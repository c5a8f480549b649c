# Copyright 2026 The mlpl authors. Licensed under the Apache License, Version 2.0.
"""From a list of examples of the shared schema (`id`, `audio`, `sentence`, `language`, `duration`)
to the model's batch: padded features, CTC labels, language ids.

Features are computed for the whole batch in ONE feature-extractor call (batched FFT). Transcripts are
tokenized as docs/design.md §3 says (characters, case and punctuation kept, "|" between words); a character the
vocabulary lacks would silently become `<unk>`, so the collator reports every such case with the
example id and the characters, and counts them.
"""

import logging
from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from modeling_mlpl import describe_characters, unknown_characters

from .inference import pad_labels


logger = logging.getLogger(__name__)

# Label positions ignored by the loss (the transformers convention; CTC reads lengths from labels >= 0).
LABEL_PADDING = -100


class MlplCollator:
    """Callable `collate_fn`: list of schema examples -> dict of batch tensors.

    Returns:
        `input_features` `(B, T, 80)` float32, zero on padded frames;
        `attention_mask` `(B, T)` long, 1 on valid frames;
        `labels` `(B, L)` long, token ids padded with -100 -- only when the examples are labeled;
        `language_ids` `(B,)` long, `language_to_id[example["language"]]`;
        `ids` list of B str; `sentences` the B raw transcripts (None when unlabeled); `durations` `(B,)`
        float32 seconds. Returns None for an empty list (a batch whose every clip failed to decode).
    `ids`, `sentences` and `durations` are bookkeeping: drop them before `model(**batch)`.

    Args:
        feature_extractor: an `MlplFeatureExtractor` (or any extractor with the same call signature).
        tokenizer: a case-preserving `Wav2Vec2CTCTokenizer` (see `modeling_mlpl.build_tokenizer`).
        language_to_id: language code -> LID class index (the model's `config.id2label` inverted).
        sampling_rate: rate of `example["audio"]` in Hz; the data layer resamples to 16 kHz.
        on_unknown_characters: "warn" (default: encode as `<unk>`, log each newly seen unknown character
            with the example id, count everything) or "error" (raise on the first such example).
    """

    def __init__(
        self,
        feature_extractor,
        tokenizer,
        language_to_id: Mapping[str, int],
        sampling_rate: int = 16000,
        on_unknown_characters: str = "warn",
    ):
        if on_unknown_characters not in ("warn", "error"):
            raise ValueError(f"on_unknown_characters must be 'warn' or 'error', got {on_unknown_characters!r}")
        if getattr(tokenizer, "do_lower_case", False):
            # Wav2Vec2CTCTokenizer's do_lower_case actually upper-cases; either way it changes the text,
            # which docs/design.md §3 rules out and which would make the unknown-character check below wrong.
            raise ValueError(
                "the tokenizer changes case (do_lower_case=True); docs/design.md §3 keeps case: build it with do_lower_case=False"
            )
        self.feature_extractor = feature_extractor
        self.tokenizer = tokenizer
        self.language_to_id = dict(language_to_id)
        self.sampling_rate = sampling_rate
        self.on_unknown_characters = on_unknown_characters
        self.vocabulary = tokenizer.get_vocab()
        # How often each unencodable character occurred, and in how many examples. Per process: a
        # DataLoader worker counts in its own copy.
        self.unknown_character_counts: Counter[str] = Counter()
        self.num_examples_with_unknown_characters = 0

    # ---- pieces ----------------------------------------------------------------------------

    def language_ids(self, examples: Sequence[Mapping]) -> torch.Tensor:
        """`(B,)` long LID targets; an unknown language is an error naming it and the known ones."""
        ids = []
        for example in examples:
            language = example["language"]
            if language not in self.language_to_id:
                raise ValueError(
                    f"example {example['id']!r} has language {language!r}, which the model does not know; "
                    f"known languages: {sorted(self.language_to_id)}. Add it to the config's languages "
                    "(a new LID class) or filter the data."
                )
            ids.append(self.language_to_id[language])
        return torch.tensor(ids, dtype=torch.long)

    def check_characters(self, example_id: str, sentence: str) -> None:
        """Report the characters of `sentence` that the tokenizer would encode as `<unk>`."""
        unknown = unknown_characters(sentence, self.vocabulary)
        if not unknown:
            return
        message = (
            f"transcript of {example_id!r} has characters outside the vocabulary, encoded as "
            f"{self.tokenizer.unk_token}: {describe_characters(unknown)}"
        )
        if self.on_unknown_characters == "error":
            raise ValueError(message + ". Rebuild the vocabulary over all transcripts or clean the text.")
        newly_seen = [char for char in unknown if char not in self.unknown_character_counts]
        self.num_examples_with_unknown_characters += 1
        self.unknown_character_counts.update(char for char in sentence if char in unknown)
        if newly_seen:
            logger.warning(
                "%s (%d example(s) with unknown characters so far)", message, self.num_examples_with_unknown_characters
            )

    def labels(self, examples: Sequence[Mapping]) -> torch.Tensor | None:
        """`(B, L)` long token ids padded with -100, or None when no example has a transcript."""
        sentences = [example["sentence"] for example in examples]
        if all(sentence is None for sentence in sentences):
            return None
        if any(sentence is None for sentence in sentences):
            unlabeled = [example["id"] for example in examples if example["sentence"] is None]
            raise ValueError(
                f"batch mixes labeled and unlabeled examples (unlabeled: {unlabeled[:5]}...); "
                "labeled and unlabeled data go through separate loaders (docs/design.md §5)"
            )
        for example in examples:
            self.check_characters(example["id"], example["sentence"])
        return pad_labels(self.tokenizer(sentences).input_ids, LABEL_PADDING)

    # ---- the batch -------------------------------------------------------------------------

    def __call__(self, examples: Sequence[Mapping]) -> dict | None:
        if not examples:
            # Every clip of the batch failed to decode (the data layer dropped, counted and logged them).
            return None
        # Cheap checks first, so that a bad language or transcript fails before the FFTs.
        language_ids = self.language_ids(examples)
        labels = self.labels(examples)
        waveforms = [np.asarray(example["audio"], dtype=np.float32) for example in examples]
        features = self.feature_extractor(
            waveforms,
            sampling_rate=self.sampling_rate,
            padding=True,
            return_attention_mask=True,
            return_tensors="pt",
        )
        batch = {
            "input_features": features["input_features"].to(torch.float32),
            "attention_mask": features["attention_mask"].to(torch.long),
            "language_ids": language_ids,
            "ids": [str(example["id"]) for example in examples],
            "sentences": [example["sentence"] for example in examples],
            "durations": torch.tensor([float(example["duration"]) for example in examples], dtype=torch.float32),
        }
        if labels is not None:
            batch["labels"] = labels
        return batch

    def unknown_character_summary(self) -> str:
        """One line for the end of a pass: which characters fell back to `<unk>`, how often."""
        if not self.unknown_character_counts:
            return "no characters outside the vocabulary"
        common = self.unknown_character_counts.most_common(10)
        listing = ", ".join(f"{describe_characters([char])} x{count}" for char, count in common)
        return f"{self.num_examples_with_unknown_characters} example(s) had characters encoded as <unk>: {listing}"


__all__ = ["MlplCollator", "LABEL_PADDING"]
