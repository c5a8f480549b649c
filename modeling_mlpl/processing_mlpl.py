# Copyright 2026 The mlpl authors. Licensed under the Apache License, Version 2.0.
"""Characters as CTC tokens (docs/design.md §3) and the processor that pairs them with the feature extractor.

Tokens are Unicode code points of the unnormalized transcripts: case and punctuation kept, the
space written as the word delimiter "|", the CTC blank = the pad token `<pad>` = id 0.
`Wav2Vec2CTCTokenizer` already implements exactly this, with character and word offsets for
timestamps, so we reuse it rather than write a tokenizer.
"""

import json
import os
import tempfile
import unicodedata
from collections.abc import Iterable

from transformers import Wav2Vec2CTCTokenizer, Wav2Vec2Processor


PAD_TOKEN = "<pad>"  # also the CTC blank (config.pad_token_id = 0)
UNK_TOKEN = "<unk>"
WORD_DELIMITER = "|"
SPECIAL_TOKENS = (PAD_TOKEN, UNK_TOKEN, WORD_DELIMITER)


def build_vocabulary(transcripts: Iterable[str]) -> dict[str, int]:
    """Character vocabulary covering every code point seen in `transcripts`.

    Deterministic: `<pad>` (blank) = 0, `<unk>` = 1, `|` (word delimiter, stands for the space) = 2,
    then the characters sorted by code point. Whitespace other than the plain space is not a token
    (the tokenizer splits words on it). A literal "|" in a transcript would be read as a word
    boundary, so it is rejected with the offending transcript.
    """
    characters = set()
    for index, transcript in enumerate(transcripts):
        if transcript is None:
            continue
        if WORD_DELIMITER in transcript:
            raise ValueError(
                f"transcript {index} contains the word delimiter {WORD_DELIMITER!r}: {transcript[:80]!r}; "
                "it would be read as a space. Replace it (e.g. with '/') before building the vocabulary."
            )
        characters.update(char for char in transcript if not char.isspace())
    vocabulary = {token: index for index, token in enumerate(SPECIAL_TOKENS)}
    for char in sorted(characters):
        vocabulary[char] = len(vocabulary)
    return vocabulary


def build_language_characters(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Each language's character inventory: `{language: its characters}` over `(language, transcript)` pairs.

    The characters are those `build_vocabulary` makes tokens of (every non-whitespace code point, no special
    token), in code-point order. Saved as `MlplConfig.language_characters` at training time, they are what
    script-constrained decoding allows (docs/design.md §3.1).
    """
    transcripts: dict[str, list[str]] = {}
    for language, transcript in pairs:
        if transcript is not None:
            transcripts.setdefault(str(language), []).append(transcript)
    return {
        language: "".join(token for token in build_vocabulary(texts) if token not in SPECIAL_TOKENS)
        for language, texts in sorted(transcripts.items())
    }


def build_tokenizer(vocabulary: dict[str, int]) -> Wav2Vec2CTCTokenizer:
    """A `Wav2Vec2CTCTokenizer` over `vocabulary` (as `build_vocabulary` returns): no case folding,
    no bos/eos (they would be extra, never-emitted classes in the CTC head)."""
    missing = [token for token in SPECIAL_TOKENS if token not in vocabulary]
    if missing:
        raise ValueError(f"vocabulary lacks the special tokens {missing}; build it with build_vocabulary()")
    with tempfile.TemporaryDirectory() as folder:
        vocab_file = os.path.join(folder, "vocab.json")
        with open(vocab_file, "w", encoding="utf-8") as handle:
            json.dump(vocabulary, handle, ensure_ascii=False)
        return Wav2Vec2CTCTokenizer(
            vocab_file,
            pad_token=PAD_TOKEN,
            unk_token=UNK_TOKEN,
            word_delimiter_token=WORD_DELIMITER,
            bos_token=None,
            eos_token=None,
            do_lower_case=False,
        )


def unknown_characters(text: str, vocabulary: dict[str, int]) -> list[str]:
    """Characters of `text` the vocabulary cannot encode (they would silently become `<unk>`)."""
    return sorted({char for char in text if not char.isspace() and char not in vocabulary})


def describe_characters(characters: Iterable[str]) -> str:
    """`'é' (U+00E9 LATIN SMALL LETTER E WITH ACUTE)` for error messages."""
    return ", ".join(f"{char!r} (U+{ord(char):04X} {unicodedata.name(char, '?')})" for char in characters)


class MlplProcessor(Wav2Vec2Processor):
    r"""[`MlplFeatureExtractor`] + `Wav2Vec2CTCTokenizer`: `processor(audio=..., sampling_rate=16000)` gives
    model inputs, `processor(text=...)` label ids, `processor.batch_decode(ids)` text."""

    @classmethod
    def from_transcripts(cls, transcripts, feature_extractor=None):
        """A processor whose vocabulary covers `transcripts` (see `build_vocabulary`)."""
        from .feature_extraction_mlpl import MlplFeatureExtractor

        feature_extractor = feature_extractor if feature_extractor is not None else MlplFeatureExtractor()
        return cls(feature_extractor=feature_extractor, tokenizer=build_tokenizer(build_vocabulary(transcripts)))


__all__ = [
    "MlplProcessor",
    "build_vocabulary",
    "build_language_characters",
    "build_tokenizer",
    "unknown_characters",
    "describe_characters",
]
