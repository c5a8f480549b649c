# Copyright 2026 The mlpl authors. Licensed under the Apache License, Version 2.0.
"""CTC beam search with a word n-gram language model (docs/design.md §7), on Flashlight's own decoder.

    y* = argmax_y  log p(y | x) + alpha log10 p_LM(y) + beta |y|          (|y| = number of words)

`flashlight-text` (PyPI) is the decoder of the paper's code base with KenLM compiled in; this module maps
our vocabulary onto it (blank = `<pad>`, word boundary = "|") and adds what it lacks:

- Lexicon decoding (Flashlight's `LexiconDecoder`, all in C++): hypotheses are spelled from a lexicon,
  a trie of words whose LM unigram scores are smeared onto their prefixes (docs/design.md §7: smearing "max"), so
  every output word is a lexicon word (plus, with `unk_score > -inf`, `<unk>` for prefixes of lexicon
  words). The lexicon is a file, a list of words, or "lm" (the LM's own words).
- Lexicon-free decoding (Flashlight's `LexiconFreeDecoder`): any character sequence can be a word. Flashlight
  scores a lexicon-free LM token by token (a character LM); for a *word* LM we give it a small Python LM
  that collects the characters of the current word and asks KenLM when "|" closes it (the scheme of
  pyctcdecode). An out-of-vocabulary word is spelled out: p(<unk> | history) times a character unigram
  model of its letters (`WordLevelLM`). The Python callback runs once per hypothesis and candidate token,
  so this mode costs ~3 us x beam_size x beam_size_token per frame; use small beams (10-50), or a lexicon
  for big ones.

Conventions (those of Flashlight and wav2letter, so published weights carry over):
- `alpha` multiplies KenLM's **log10** probability (wav2letter's `lmweight`); in natural-log units the LM
  weight is alpha / ln(10). The acoustic term is the model's natural-log `log_softmax`.
- `beta` is added once per word (`wordscore`); OOV words get `unk_score` instead.
- The best *path* is kept when hypotheses merge (`log_add=False`, wav2letter's default for CTC), so with
  alpha = beta = 0 and no lexicon the result is exactly greedy decoding (tested).
- One frame where "|" is certain is appended to every utterance: our transcripts have no trailing "|",
  and without it the last word would never be closed (lexicon mode drops or mangles it). On the greedy
  path that frame only adds a trailing space, which decoding strips.

How the search runs and scores is one `BeamSettings` (LM weight, word score, beams, threshold, ...): the
decoder's keyword arguments, what `lm_decoding.json` records and what callers pass. The slimIPL recipe's
decoder (docs/design.md §7) is `SLIMIPL_BEAM_SETTINGS`; the defaults are smaller so that decoding a dev set
takes seconds, not hours.

Scale: decoding runs utterance by utterance on the calling thread; for the real vocabulary (8065
characters) keep `beam_size_token` small (it bounds the tokens tried per frame).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate.utils import tqdm

from modeling_mlpl import constrain_to_language

from .cli import progress_bars_off
from .inference import collapse_ctc_path, decode_token_ids
from .files import write_json_atomically
from .metrics import compute_asr_metrics
from .ngram_lm import BOS, EOS, UNK, arpa_vocabulary

logger = logging.getLogger(__name__)



@dataclasses.dataclass(frozen=True)
class BeamSettings:
    """Everything that defines a beam search besides the LM file, the lexicon and the model (docs/design.md §7).

    alpha: LM weight on log10 p_LM (wav2letter's `lmweight`).
    beta: score added per word (wav2letter's `wordscore`).
    beam_size: hypotheses kept per frame.
    beam_size_token: tokens tried per frame (the most likely ones); None = all.
    beam_threshold: hypotheses scoring more than this below the best are dropped.
    unk_score: score of an out-of-vocabulary word instead of `beta`. None: -inf with a lexicon (Flashlight's
        default: only lexicon words), `beta` without one (the LM term already makes OOV words expensive:
        p(<unk>) times the spelling's character-model probability).
    sil_score: score added per "|" token (Flashlight's `silscore`).
    smearing: "max" (docs/design.md §7), "logadd" or "none": how LM scores of words are spread over the lexicon trie.
    log_add: merge equal hypotheses by log-add instead of max (breaks beam = greedy at alpha = beta = 0).

    The defaults are ours: small enough for a CPU (speeds per beam size: benchmarks/bench_decoding.py).
    """

    alpha: float = 0.5
    beta: float = 1.0
    beam_size: int = 50
    beam_size_token: int | None = 20
    beam_threshold: float = 25.0
    unk_score: float | None = None
    sil_score: float = 0.0
    smearing: str = "max"
    log_add: bool = False

    def to_json(self) -> dict[str, Any]:
        """The settings as `lm_decoding.json` records them (an infinite unk_score as "-inf")."""
        values = dataclasses.asdict(self)
        values["unk_score"] = "-inf" if self.unk_score == -math.inf else self.unk_score
        return values

    @classmethod
    def from_json(cls, values: Mapping[str, Any]) -> "BeamSettings":
        """The settings of a `to_json` mapping (other keys, e.g. lm_path, ignored; missing ones: the defaults)."""
        known = {item.name for item in dataclasses.fields(cls)}
        settings = {name: value for name, value in values.items() if name in known}
        if settings.get("unk_score") == "-inf":
            settings["unk_score"] = -math.inf
        return cls(**settings)


# docs/design.md §7 (slimIPL recipe's decoding flags): beam 1000, token beam 100, threshold 100000, smearing max.
SLIMIPL_BEAM_SETTINGS = BeamSettings(beam_size=1000, beam_size_token=100, beam_threshold=100000.0, smearing="max")
DEFAULT_BEAM_SETTINGS = BeamSettings()
# Grid of the alpha / beta search (paper: "a small grid search on dev"); alpha is in log10 units.
DEFAULT_ALPHAS = (0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0)
DEFAULT_BETAS = (-1.0, 0.0, 1.0, 2.0, 3.0)
LM_DECODING_FILE = "lm_decoding.json"
ALL_LANGUAGES = "*"  # key of an LM used for every language

# Log-probability of every token but "|" in the appended end-of-utterance frame: far below any real path,
# finite so that log-add arithmetic stays defined.
_IMPOSSIBLE = -1e9


def _flashlight():
    """flashlight-text's decoder module, with an install hint if it is missing or built without KenLM."""
    try:
        from flashlight.lib.text import decoder
        from flashlight.lib.text.decoder.kenlm import KenLM  # noqa: F401 - fails if built without KenLM
    except ImportError as error:
        raise ImportError(
            f"LM decoding needs flashlight-text with KenLM ({error}); install it with `pip install 'flashlight-text>=0.0.7'` "
            "(its PyPI wheels include KenLM)."
        ) from error
    return decoder


# ---------------------------------------------------------------------------------------------
# Lexicons
# ---------------------------------------------------------------------------------------------


def read_lexicon(path: str | os.PathLike) -> list[tuple[str, list[str] | None]]:
    """Entries of a lexicon or word-list file: `(word, spelling tokens or None)` per non-empty line.

    Accepted lines: `word` (spelled from its characters) or Flashlight's `word<TAB>t o k e n s` (the
    tokens given; a trailing "|" is optional). A word may have several lines (several spellings).
    """
    entries = []
    with open(path, encoding="utf-8") as lines:
        for line in lines:
            fields = line.rstrip("\n").split("\t") if "\t" in line else line.split()
            if not fields or not fields[0].strip():
                continue
            word = fields[0].strip()
            spelling = fields[1].split() if len(fields) > 1 and fields[1].strip() else None
            entries.append((word, spelling))
    if not entries:
        raise ValueError(f"lexicon {path} has no words; give one word per line (optionally word<TAB>spelling)")
    return entries


def _lexicon_entries(lexicon, lm_path) -> list[tuple[str, list[str] | None]]:
    """The decoder's `lexicon` argument as (word, spelling or None) pairs."""
    if isinstance(lexicon, str) and lexicon == "lm":
        if lm_path is None:
            raise ValueError('lexicon="lm" takes the words of the LM, but no lm_path was given')
        return [(word, None) for word in arpa_vocabulary(lm_path) if word not in (BOS, EOS, UNK)]
    if isinstance(lexicon, (str, os.PathLike)):
        if not Path(lexicon).is_file():
            raise FileNotFoundError(f"lexicon file {lexicon} does not exist; pass a word list, a Flashlight lexicon or 'lm'")
        return read_lexicon(lexicon)
    return [(word, None) for word in lexicon]


# ---------------------------------------------------------------------------------------------
# A word LM for the lexicon-free decoder
# ---------------------------------------------------------------------------------------------


@functools.cache
def _word_level_lm_class():
    decoder = _flashlight()

    class WordLevelLM(decoder.LM):
        """Flashlight LM over our *character* tokens that scores *words*: `alpha log10 p(word | history) + beta`
        when "|" ends a word, `alpha log10 p(</s> | history)` (plus the open word, if any) at the end.

        An out-of-vocabulary word w is spelled out, as in open-vocabulary LMs: log10 p(w | history) =
        log10 p(<unk> | history) + sum_c log10 q(c), with q a character unigram model of the LM's words
        (add-one smoothed over the model's characters); and it gets `unk_score` instead of beta. Without the
        spelling term, p(<unk>) (the mass of *all* unseen words) makes one long misspelled blob cheaper than
        the two real words it swallowed. The OOV cost is charged as soon as the open word stops being a
        prefix of any LM word (then per further character), and settled when the word closes: the totals
        are as stated, the beam just learns early that a spelling leads nowhere, as the lexicon trie's
        smearing does.

        States form a trie over token paths (`LMState.child`), as Flashlight requires (it compares states
        by identity); a dict maps each state to (KenLM state, open word, OOV cost charged). A "|" with no
        open word (repeated or leading delimiters) returns the state unchanged.
        """

        def __init__(self, kenlm, vocabulary: "_OpenVocabulary", token_texts, sil_index, alpha, beta, unk_score):
            decoder.LM.__init__(self)
            self.kenlm = kenlm
            self.word_index = vocabulary.word_index
            self.unk_index = vocabulary.unk_index
            self.prefixes = vocabulary.prefixes
            self.character_log10 = vocabulary.character_log10
            self.unknown_character_log10 = vocabulary.unknown_character_log10
            self.unk_log10 = vocabulary.unk_log10
            self.token_texts = token_texts
            self.sil_index = sil_index
            self.alpha, self.beta, self.unk_score = alpha, beta, unk_score
            self.states: dict[Any, tuple[Any, str, bool]] = {}

        def _spelling_log10(self, text: str) -> float:
            return sum(self.character_log10.get(c, self.unknown_character_log10) for c in text)

        def _close_word(self, kenlm_state, word: str, charged: bool) -> tuple[Any, float]:
            """(next KenLM state, score) of closing `word`, less the OOV cost already charged."""
            index = self.word_index.get(word)
            if self.kenlm is None:
                return kenlm_state, self.beta if index is not None else self.unk_score
            next_state, log10_p = self.kenlm.score(kenlm_state, self.unk_index if index is None else index)
            if index is not None:
                return next_state, self.alpha * log10_p + self.beta
            if charged:  # the spelling, unk_score and a context-free p(<unk>) are paid: settle the context
                return next_state, self.alpha * (log10_p - self.unk_log10)
            return next_state, self.alpha * (log10_p + self._spelling_log10(word)) + self.unk_score

        def start(self, start_with_nothing):
            self.states.clear()  # a new utterance: the previous one's states are released by the decoder
            state = decoder.LMState()
            self.states[state] = (None if self.kenlm is None else self.kenlm.start(start_with_nothing), "", False)
            return state

        def score(self, state, token_index):
            # Called once per hypothesis and candidate token of every frame: the hot path.
            kenlm_state, word, charged = self.states[state]
            if token_index == self.sil_index:
                if not word:
                    return state, 0.0
                child = state.child(token_index)
                next_state, score = self._close_word(kenlm_state, word, charged)
                self.states[child] = (next_state, "", False)
                return child, score
            child = state.child(token_index)
            text = self.token_texts[token_index]
            word += text
            score = 0.0
            if charged:
                score = self.alpha * self._spelling_log10(text)
            elif self.kenlm is not None and word not in self.prefixes:
                score = self.alpha * (self.unk_log10 + self._spelling_log10(word)) + self.unk_score
                charged = True
            self.states[child] = (kenlm_state, word, charged)
            return child, score

        def finish(self, state):
            kenlm_state, word, charged = self.states[state]
            total = 0.0
            if word:
                kenlm_state, total = self._close_word(kenlm_state, word, charged)
            if self.kenlm is not None:
                total += self.alpha * self.kenlm.finish(kenlm_state)[1]
            return state, total

    return WordLevelLM


@dataclasses.dataclass
class _OpenVocabulary:
    """What the lexicon-free word LM needs besides KenLM, computed once per decoder (shared by `with_weights`):
    word -> dictionary index, every prefix of a word, a character unigram model (log10, add-one smoothed over
    the model's characters) and log10 p(<unk>) without context."""

    word_index: Mapping[str, int]
    unk_index: int
    prefixes: set[str]
    character_log10: dict[str, float]
    unknown_character_log10: float
    unk_log10: float

    @classmethod
    def build(cls, word_index: Mapping[str, int], unk_index: int, token_texts: Sequence[str], kenlm) -> "_OpenVocabulary":
        characters = Counter(character for word in word_index for character in word)
        alphabet = {text for text in token_texts if len(text) == 1 and not text.isspace()} | set(characters)
        total = sum(characters.values()) + len(alphabet)
        return cls(
            word_index=word_index,
            unk_index=unk_index,
            prefixes={word[:end] for word in word_index for end in range(1, len(word) + 1)},
            character_log10={character: math.log10((characters[character] + 1) / total) for character in alphabet},
            unknown_character_log10=math.log10(1 / total),
            unk_log10=kenlm.score(kenlm.start(True), unk_index)[1] if kenlm is not None else 0.0,
        )


# ---------------------------------------------------------------------------------------------
# The decoder
# ---------------------------------------------------------------------------------------------


class MlplBeamSearchDecoder:
    """Beam search over CTC outputs of `MlplForCTC`, optionally with a word n-gram LM and a lexicon.

    Args:
        tokenizer: the model's `Wav2Vec2CTCTokenizer` (blank = its pad token, word delimiter "|").
        lm_path: an ARPA file (e.g. from `scripts/build_lm.py`) or a KenLM binary (then give a lexicon);
            None decodes without an LM.
        lexicon: None (lexicon-free), a file (one word per line, or Flashlight's `word<TAB>spelling`),
            a sequence of words, or "lm" (every word of the ARPA file).
        alpha, beta, beam_size, beam_size_token, beam_threshold, unk_score, sil_score, smearing, log_add: the
            fields of `BeamSettings` (defaults and meaning there); `from_settings` takes one `BeamSettings`.
        config: the model's `MlplConfig`, for script-constrained decoding (`decode(..., language=)`,
            docs/design.md §3.1: its `language_characters`).
    """

    def __init__(
        self,
        tokenizer,
        lm_path: str | os.PathLike | None = None,
        lexicon: str | os.PathLike | Sequence[str] | None = None,
        *,
        alpha: float = BeamSettings.alpha,
        beta: float = BeamSettings.beta,
        beam_size: int = BeamSettings.beam_size,
        beam_size_token: int | None = BeamSettings.beam_size_token,
        beam_threshold: float = BeamSettings.beam_threshold,
        unk_score: float | None = BeamSettings.unk_score,
        sil_score: float = BeamSettings.sil_score,
        smearing: str = BeamSettings.smearing,
        log_add: bool = BeamSettings.log_add,
        config=None,
    ):
        decoder = _flashlight()
        if beam_size < 1:
            raise ValueError(f"beam_size must be >= 1, got {beam_size}")
        if beam_size_token is not None and beam_size_token < 1:
            raise ValueError(f"beam_size_token must be >= 1 or None (all tokens), got {beam_size_token}")
        if smearing.upper() not in decoder.SmearingMode.__members__:
            raise ValueError(f"smearing={smearing!r}; choose 'max', 'logadd' or 'none'")
        if lm_path is not None and not Path(lm_path).is_file():
            raise FileNotFoundError(f"LM file {lm_path} does not exist; build one with scripts/build_lm.py")

        vocabulary = tokenizer.get_vocab()
        self._vocabulary = vocabulary
        self.tokenizer = tokenizer
        self.vocab_size = len(vocabulary)
        self.blank_index = tokenizer.pad_token_id
        delimiter = getattr(tokenizer, "word_delimiter_token", None) or "|"
        if delimiter not in vocabulary:
            raise ValueError(f"the tokenizer has no word delimiter {delimiter!r}; build it with modeling_mlpl.build_tokenizer")
        self.sil_index = vocabulary[delimiter]
        self.token_texts = [""] * self.vocab_size
        for token, index in vocabulary.items():
            self.token_texts[index] = " " if token == delimiter else token

        self.lm_path = None if lm_path is None else os.fspath(lm_path)
        self.lexicon = lexicon
        self.alpha, self.beta = float(alpha), float(beta)
        self.beam_size = int(beam_size)
        self.beam_size_token = self.vocab_size if beam_size_token is None else min(int(beam_size_token), self.vocab_size)
        self.beam_threshold = float(beam_threshold)
        self.uses_lexicon = lexicon is not None
        # Lexicon-free, an OOV word gets beta by default, like any word (its LM probability is low already).
        self._unk_follows_beta = unk_score is None and not self.uses_lexicon
        self.unk_score = float(unk_score if unk_score is not None else (-math.inf if self.uses_lexicon else beta))
        self.sil_score = float(sil_score)
        self.smearing = smearing.lower()
        self.log_add = bool(log_add)
        self.config = config

        # Word dictionary (the LM's "usr" indices) and the LM, shared by `with_weights` copies.
        from flashlight.lib.text.dictionary import Dictionary

        self._word_dict = Dictionary()
        words = self._build_words()
        for word in words:
            self._word_dict.add_entry(word)
        if not self._word_dict.contains(UNK):
            self._word_dict.add_entry(UNK)
        self._unk_word = self._word_dict.get_index(UNK)
        self._word_dict.set_default_index(self._unk_word)
        self._word_index = {word: self._word_dict.get_index(word) for word in words if word != UNK}
        from flashlight.lib.text.decoder.kenlm import KenLM

        self._kenlm = KenLM(self.lm_path, self._word_dict) if self.lm_path is not None else None
        self._trie = self._build_trie() if self.uses_lexicon else None
        self._open_vocabulary = None  # built on first use by the lexicon-free word LM
        self._decoder = self._build_decoder()

    @classmethod
    def from_settings(cls, tokenizer, lm_path=None, lexicon=None, settings: BeamSettings = DEFAULT_BEAM_SETTINGS, *, config=None):
        """The decoder of one `BeamSettings`."""
        return cls(tokenizer, lm_path, lexicon, **dataclasses.asdict(settings), config=config)

    @property
    def beam_settings(self) -> BeamSettings:
        """This decoder's settings as used (unk_score resolved, beam_size_token capped at the vocabulary)."""
        return BeamSettings(
            alpha=self.alpha, beta=self.beta, beam_size=self.beam_size, beam_size_token=self.beam_size_token,
            beam_threshold=self.beam_threshold, unk_score=self.unk_score, sil_score=self.sil_score,
            smearing=self.smearing, log_add=self.log_add,
        )  # fmt: skip

    # ---- construction --------------------------------------------------------------------

    def _build_words(self) -> list[str]:
        """Words of the word dictionary: the lexicon's (lexicon mode) or the LM's (lexicon-free)."""
        if self.uses_lexicon:
            entries = _lexicon_entries(self.lexicon, self.lm_path)
            self._lexicon_entries = entries
            return list(dict.fromkeys(word for word, _ in entries))
        if self.lm_path is None:
            return []
        return [word for word in arpa_vocabulary(self.lm_path) if word not in (BOS, EOS)]

    def _spelling(self, word: str, spelling: list[str] | None) -> list[int] | None:
        """Token ids of a lexicon entry, ending in "|"; None when a token is not in the vocabulary."""
        tokens = list(word) if spelling is None else [token for token in spelling if token != "|"]
        if not tokens or any(token not in self._vocabulary for token in tokens):
            return None
        return [self._vocabulary[token] for token in tokens] + [self.sil_index]

    def _build_trie(self):
        decoder = _flashlight()
        trie = decoder.Trie(self.vocab_size, self.sil_index)
        start = self._kenlm.start(False) if self._kenlm is not None else None
        skipped = []
        inserted = 0
        for word, spelling in self._lexicon_entries:
            token_ids = self._spelling(word, spelling)
            if token_ids is None:
                skipped.append(word)
                continue
            index = self._word_dict.get_index(word)
            score = self._kenlm.score(start, index)[1] if self._kenlm is not None else 0.0
            trie.insert(token_ids, index, score)
            inserted += 1
        if not inserted:
            raise ValueError(
                f"no lexicon word can be spelled with the model's vocabulary (e.g. {skipped[:3]}); "
                "is the lexicon for this model's language and script?"
            )
        if skipped:
            logger.warning(
                "%d of %d lexicon words use characters outside the model's vocabulary and can never be output "
                "(e.g. %s)", len(skipped), len(self._lexicon_entries), skipped[:5],
            )
        trie.smear(decoder.SmearingMode.__members__[self.smearing.upper()])
        return trie

    def _build_decoder(self):
        decoder = _flashlight()
        criterion = decoder.CriterionType.CTC
        if self.uses_lexicon:
            options = decoder.LexiconDecoderOptions(
                beam_size=self.beam_size,
                beam_size_token=self.beam_size_token,
                beam_threshold=self.beam_threshold,
                lm_weight=self.alpha,
                word_score=self.beta,
                unk_score=self.unk_score,
                sil_score=self.sil_score,
                log_add=self.log_add,
                criterion_type=criterion,
            )
            self._lm = self._kenlm if self._kenlm is not None else decoder.ZeroLM()
            return decoder.LexiconDecoder(options, self._trie, self._lm, self.sil_index, self.blank_index, self._unk_word, [], False)
        if self._kenlm is None and self.beta == 0.0:
            self._lm = decoder.ZeroLM()  # pure C++: the fast path without an LM
        else:
            # alpha and beta live in the Python LM (it scores whole words), so Flashlight's lm_weight is 1.
            if self._open_vocabulary is None:
                self._open_vocabulary = _OpenVocabulary.build(self._word_index, self._unk_word, self.token_texts, self._kenlm)
            self._lm = _word_level_lm_class()(
                self._kenlm, self._open_vocabulary, self.token_texts, self.sil_index, self.alpha, self.beta, self.unk_score
            )
        options = decoder.LexiconFreeDecoderOptions(
            beam_size=self.beam_size,
            beam_size_token=self.beam_size_token,
            beam_threshold=self.beam_threshold,
            lm_weight=1.0,
            sil_score=self.sil_score,
            log_add=self.log_add,
            criterion_type=criterion,
        )
        return decoder.LexiconFreeDecoder(options, self._lm, self.sil_index, self.blank_index, [])

    def with_weights(self, alpha: float, beta: float, unk_score: float | None = None) -> "MlplBeamSearchDecoder":
        """A decoder with other LM weights that shares this one's loaded LM and lexicon trie (grid search)."""
        copy = object.__new__(type(self))
        copy.__dict__.update(self.__dict__)
        copy.alpha, copy.beta = float(alpha), float(beta)
        if unk_score is not None:
            copy.unk_score, copy._unk_follows_beta = float(unk_score), False
        elif self._unk_follows_beta:
            copy.unk_score = copy.beta
        copy._decoder = copy._build_decoder()
        return copy

    def settings(self) -> dict[str, Any]:
        """Everything that defines the decoding, JSON-ready (what `lm_decoding.json` records)."""
        lexicon = self.lexicon
        if lexicon is not None and not isinstance(lexicon, (str, os.PathLike)):
            lexicon = f"{len(self._lexicon_entries)} words given in Python"
        return {
            "lm_path": self.lm_path,
            "lexicon": None if lexicon is None else os.fspath(lexicon),
            **self.beam_settings.to_json(),
            "lm_units": "log10",
        }

    # ---- decoding --------------------------------------------------------------------------

    def emissions(self, logits: torch.Tensor | np.ndarray) -> np.ndarray:
        """`(T, V)` logits of one utterance -> `(T + 1, V)` float32 C-contiguous log-probabilities with the
        closing "|" frame appended (what Flashlight reads through a raw pointer)."""
        logits = torch.as_tensor(logits)
        if logits.ndim != 2 or logits.shape[-1] != self.vocab_size:
            raise ValueError(
                f"expected logits of shape (frames, {self.vocab_size}) for this tokenizer, got {tuple(logits.shape)}; "
                "is the tokenizer the model's?"
            )
        # A symbol masked by the script constraint (the float minimum) is impossible, yet finite under Flashlight's
        # score sums; real log-probabilities are far above _IMPOSSIBLE, so nothing else changes.
        log_probs = torch.log_softmax(logits.detach().float().cpu(), dim=-1).clamp(min=_IMPOSSIBLE)
        closing = torch.full((1, self.vocab_size), _IMPOSSIBLE)
        closing[0, self.sil_index] = 0.0
        return np.ascontiguousarray(torch.cat([log_probs, closing]).numpy(), dtype=np.float32)

    def decode_emissions(self, emissions: np.ndarray) -> str:
        """Best transcript of one utterance from `emissions(...)`'s output."""
        frames, size = emissions.shape
        if not emissions.flags["C_CONTIGUOUS"] or emissions.dtype != np.float32:
            raise ValueError("emissions must be a C-contiguous float32 array; build it with .emissions(logits)")
        results = self._decoder.decode(emissions.ctypes.data, frames, size)
        if not results:
            return ""
        best = results[0]
        if self.uses_lexicon:
            # The completed words (a word still being spelled when the audio ends is not one; the beam only
            # ends inside a word when no hypothesis could finish). OOV words (unk_score > -inf) read "<unk>".
            return " ".join(self._word_dict.get_entry(index) for index in best.words if index >= 0)
        # tokens: one per frame plus Flashlight's start and end markers (both "|"), which are dropped. The
        # text keeps "|" runs as spaces, exactly as greedy decoding does.
        path = best.tokens[1:-1]
        return decode_token_ids([collapse_ctc_path(path, self.blank_index)], self.tokenizer)[0]

    def decode(
        self,
        logits: torch.Tensor | np.ndarray,
        output_lengths: torch.Tensor | Sequence[int] | None = None,
        language=None,
        lid_logits: torch.Tensor | None = None,
    ) -> list[str]:
        """Transcripts of a batch: `logits` `(B, T, V)` (raw logits or log-probabilities), `output_lengths` `(B,)`
        valid frames per utterance (None: all T). Utterances are decoded one after the other. `language` (a
        code, "auto" with the batch's `lid_logits`, or one per utterance) restricts the hypotheses to that
        language's characters (`modeling_mlpl.constrain_to_language`; needs `config`)."""
        logits = torch.as_tensor(logits)
        if logits.ndim != 3:
            raise ValueError(f"expected batched logits (B, T, V), got shape {tuple(logits.shape)}")
        if language is not None:
            if self.config is None:
                raise ValueError("decode(language=...) needs the model's config: MlplBeamSearchDecoder(..., config=model.config)")
            logits = constrain_to_language(logits, self.config, self._vocabulary, language, lid_logits)
        lengths = [logits.shape[1]] * logits.shape[0] if output_lengths is None else [int(n) for n in output_lengths]
        return [self.decode_emissions(self.emissions(row[:length])) for row, length in zip(logits, lengths)]


# ---------------------------------------------------------------------------------------------
# Logits computed once, decoded many times (grid search)
# ---------------------------------------------------------------------------------------------


class LogProbCache:
    """Per-utterance CTC log-probabilities kept in memory so that a grid search runs the model once.

    The real vocabulary is large (8065 symbols; a dev set would need ~10 KB per frame), so beyond `top_k`
    tokens only the `top_k` most likely of each frame are stored, plus the always-needed blank and "|"
    columns; the other tokens share the frame's remaining probability mass equally when the frame is
    restored. Decoding is unchanged whenever `top_k >= beam_size_token` (the decoder only tries the
    `beam_size_token` best tokens of a frame), except for paths that repeat a token outside the kept ones.
    """

    def __init__(self, vocab_size: int, always_keep: Sequence[int] = (), top_k: int | None = 128):
        self.vocab_size = vocab_size
        self.always_keep = sorted(set(always_keep))
        self.top_k = top_k
        self._entries: list[tuple] = []

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def dense(self) -> bool:
        return self.top_k is None or self.top_k + len(self.always_keep) >= self.vocab_size

    def add(self, logits: torch.Tensor, output_lengths: torch.Tensor | Sequence[int]) -> None:
        """Store each utterance of a `(B, T, V)` batch (its valid frames only)."""
        log_probs = torch.log_softmax(logits.detach().float().cpu(), dim=-1)
        for row, length in zip(log_probs, [int(n) for n in output_lengths]):
            row = row[:length]
            if self.dense:
                self._entries.append((row.numpy().copy(),))
                continue
            values, indices = row.topk(self.top_k, dim=-1)
            kept = row[:, self.always_keep]
            self._entries.append(
                (values.numpy().copy(), indices.to(torch.int32).numpy(), kept.numpy().copy())
            )

    def __getitem__(self, index: int) -> np.ndarray:
        """`(T, V)` float32 log-probabilities of utterance `index` (restored from top-k if compressed)."""
        entry = self._entries[index]
        if len(entry) == 1:
            return entry[0]
        values, indices, kept = entry
        frames = values.shape[0]
        restored = np.empty((frames, self.vocab_size), dtype=np.float32)
        mask = np.zeros((frames, self.vocab_size), dtype=bool)
        np.put_along_axis(mask, indices.astype(np.int64), True, axis=1)
        mask[:, self.always_keep] = True
        restored[np.arange(frames)[:, None], indices] = values
        restored[:, self.always_keep] = kept
        known_mass = np.exp(np.where(mask, restored, -np.inf)).sum(-1)
        missing = np.maximum(self.vocab_size - mask.sum(-1), 1)
        fill = np.log(np.maximum(1.0 - known_mass, 1e-30) / missing).astype(np.float32)
        return np.where(mask, restored, fill[:, None]).astype(np.float32)


def _decode_all(decoder: MlplBeamSearchDecoder, log_probs: Sequence[np.ndarray] | LogProbCache) -> list[str]:
    return [decoder.decode_emissions(decoder.emissions(torch.from_numpy(log_probs[i]))) for i in range(len(log_probs))]


@dataclasses.dataclass
class GridSearchResult:
    """Outcome of `grid_search_lm_weights`: the chosen point, every point's scores, the chosen hypotheses."""

    alpha: float
    beta: float
    wer: float | None
    cer: float | None
    grid: list[dict[str, Any]]
    settings: dict[str, Any]
    hypotheses: list[str]
    num_utterances: int

    def to_json(self) -> dict[str, Any]:
        return {
            **self.settings,
            "alpha": self.alpha,
            "beta": self.beta,
            "dev_wer": self.wer,
            "dev_cer": self.cer,
            "selected_by": "lowest WER (unweighted over languages), ties by CER, then the first grid point",
            "num_utterances": self.num_utterances,
            "grid": self.grid,
        }


def grid_search_lm_weights(
    log_probs: LogProbCache | Sequence[np.ndarray],
    references: Sequence[str],
    tokenizer=None,
    *,
    decoder: MlplBeamSearchDecoder | None = None,
    lm_path: str | os.PathLike | None = None,
    lexicon=None,
    languages: Sequence[str] | None = None,
    alphas: Iterable[float] = DEFAULT_ALPHAS,
    betas: Iterable[float] = DEFAULT_BETAS,
    output_path: str | os.PathLike | None = None,
    key: str = ALL_LANGUAGES,
    progress: bool = True,
    settings: BeamSettings = DEFAULT_BEAM_SETTINGS,
    **setting_changes,
) -> GridSearchResult:
    """Pick the LM weight alpha and word score beta with the lowest dev WER (the paper's procedure).

    The model runs once (the caller fills `log_probs`, e.g. a `LogProbCache`); every (alpha, beta) point
    re-decodes those log-probabilities, sharing one loaded LM.

    Args:
        log_probs: per-utterance `(T, V)` log-probabilities (a `LogProbCache` or a list of arrays).
        references: the reference transcripts, parallel to `log_probs`.
        tokenizer: the model's tokenizer (not needed when `decoder` is given).
        decoder: a ready `MlplBeamSearchDecoder` to take the LM, lexicon and beam settings from; else one is
            built from `tokenizer`, `lm_path`, `lexicon` and `settings` (a `BeamSettings`, with
            `setting_changes`: BeamSettings fields as keywords, e.g. `beam_size=16`).
        languages: reference language per utterance (WER/CER are averaged over languages, as everywhere).
        alphas, betas: the grid.
        output_path: a `lm_decoding.json` to write (or update: the entry `key` is replaced, other keys kept).
        key: the language this LM is for, or "*" for all.

    Returns:
        A `GridSearchResult`; ties in WER go to the lower CER, then to the earlier grid point.
    """
    if len(log_probs) != len(references):
        raise ValueError(f"{len(log_probs)} utterances of log-probabilities but {len(references)} references")
    if not len(references):
        raise ValueError("grid search needs at least one dev utterance")
    if decoder is None:
        if tokenizer is None:
            raise ValueError("pass the model's tokenizer (or a ready decoder)")
        decoder = MlplBeamSearchDecoder.from_settings(tokenizer, lm_path, lexicon, dataclasses.replace(settings, **setting_changes))
    languages = list(languages) if languages is not None else ["all"] * len(references)
    points = [(float(alpha), float(beta)) for alpha in alphas for beta in betas]
    if not points:
        raise ValueError("the grid is empty: give at least one alpha and one beta")

    grid, best, best_key, best_hypotheses = [], None, None, None
    for alpha, beta in tqdm(points, desc=f"LM weight grid ({key})", unit="point", disable=progress_bars_off() or not progress):
        hypotheses = _decode_all(decoder.with_weights(alpha, beta), log_probs)
        metrics = compute_asr_metrics(hypotheses, list(references), languages)
        grid.append({"alpha": alpha, "beta": beta, "wer": metrics["wer"], "cer": metrics["cer"]})
        rank = (_or_inf(metrics["wer"]), _or_inf(metrics["cer"]))
        if best_key is None or rank < best_key:
            best, best_key, best_hypotheses = grid[-1], rank, hypotheses
    chosen = decoder.with_weights(best["alpha"], best["beta"])
    result = GridSearchResult(
        alpha=best["alpha"], beta=best["beta"], wer=best["wer"], cer=best["cer"], grid=grid,
        settings=chosen.settings(), hypotheses=best_hypotheses, num_utterances=len(references),
    )
    logger.info("LM weights for %s: alpha=%g beta=%g (dev WER %s, CER %s)", key, result.alpha, result.beta, result.wer, result.cer)
    if output_path is not None:
        save_lm_decoding(output_path, {key: result.to_json()})
    return result


def _or_inf(value: float | None) -> float:
    return math.inf if value is None else value


def save_lm_decoding(path: str | os.PathLike, decoders: Mapping[str, Mapping[str, Any]]) -> Path:
    """Write (or update) `lm_decoding.json`: `{"decoders": {language or "*": settings}}`; other entries are kept."""
    path = Path(path)
    if path.is_dir():
        path = path / LM_DECODING_FILE
    existing = load_lm_decoding(path) if path.is_file() else {}
    existing.update({key: dict(value) for key, value in decoders.items()})
    return write_json_atomically(path, {"lm_decoding_version": 1, "decoders": existing})


def load_lm_decoding(path: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """The decoders of a `lm_decoding.json` (a file or the folder holding it): `{language or "*": settings}`."""
    path = Path(path)
    if path.is_dir():
        path = path / LM_DECODING_FILE
    with open(path, encoding="utf-8") as source:
        content = json.load(source)
    if "decoders" not in content:
        raise ValueError(f"{path} has no 'decoders' entry; was it written by grid_search_lm_weights?")
    return content["decoders"]


def decoder_from_settings(tokenizer, settings: Mapping[str, Any], **overrides) -> MlplBeamSearchDecoder:
    """Rebuild the decoder an `lm_decoding.json` entry describes (`overrides` replace its values)."""
    values = {**settings, **overrides}
    return MlplBeamSearchDecoder.from_settings(tokenizer, values.get("lm_path"), values.get("lexicon"), BeamSettings.from_json(values))


__all__ = [
    "ALL_LANGUAGES",
    "DEFAULT_ALPHAS",
    "DEFAULT_BEAM_SETTINGS",
    "DEFAULT_BETAS",
    "LM_DECODING_FILE",
    "SLIMIPL_BEAM_SETTINGS",
    "BeamSettings",
    "GridSearchResult",
    "LogProbCache",
    "MlplBeamSearchDecoder",
    "decoder_from_settings",
    "grid_search_lm_weights",
    "load_lm_decoding",
    "read_lexicon",
    "save_lm_decoding",
]
