"""Word n-gram language models for beam-search decoding (docs/design.md §7), estimated without KenLM's binaries.

docs/design.md §7 decodes with a word 4-gram KenLM. KenLM's estimator (`lmplz`) is a C++ program that pip cannot
install, while its *query* side ships inside flashlight-text; so this module estimates the model itself
and writes it as an ARPA file, which flashlight-text's KenLM loads:

    model = estimate_kneser_ney(sentences, order=4)   # interpolated modified Kneser-Ney
    model.write_arpa("lm.arpa")
    model.log10_probability("cat", context=("the",))  # the probability KenLM will compute

The smoothing is the one `lmplz` implements (Chen & Goodman 1998, "An empirical study of smoothing
techniques for language modeling", Sec. 3.5 and eq. 26; Heafield et al. 2013, "Scalable modified
Kneser-Ney language model estimation"), rule for rule:

- Text: one sentence per line, words split on whitespace, nothing normalized (docs/design.md §3: the acoustic
  model's words keep case and punctuation, so the LM's must too). Each sentence is `<s> w1 .. wk </s>`.
- Adjusted counts: the highest order keeps raw counts; a lower-order n-gram counts the distinct words
  seen to its left (its continuation count), except n-grams starting with `<s>`, which nothing can
  precede, and keep raw counts.
- Discounts per order from the count-of-counts t1..t4 of the adjusted counts:
  Y = t1 / (t1 + 2 t2), D_k = k - (k + 1) Y t_{k+1} / t_k for k = 1, 2, 3 (3 = "3 or more").
  When a t_k is 0 or a D_k falls outside [0, k] (small or artificial text), lmplz stops unless run with
  `--discount_fallback`; we log a warning and use its fallback D = (0.5, 1.0, 1.5).
- u(w | c) = (a(c w) - D(a(c w))) / sum_x a(c x);  gamma(c) = sum_k D_k N_k(c .) / sum_x a(c x),
  N_k(c .) = the number of words following c with adjusted count k (3 = 3 or more).
- p(w | c) = u(w | c) + gamma(c) p(w | c'), c' = c without its first word; unigrams interpolate with
  the uniform distribution over the vocabulary (`</s>` and `<unk>` included, `<s>` excluded), so
  `<unk>` gets gamma(empty) / |V| (lmplz's default `--interpolate_unigrams`).

ARPA backoff weights are the gammas: for an unseen `c w`, p(w | c) = gamma(c) p(w | c'), which is
exactly the backoff rule KenLM applies.

Checked against lmplz itself (kenlm 0.3.0 built from its PyPI sdist): on the 5-sentence text of
tests/fixtures/lmplz every probability and backoff agrees to 1e-7 (the test keeps lmplz's file). On a
larger text the two differ by up to 2e-5 in log10 because lmplz's count-of-counts take the *raw* count
of the last n-gram of each lower order in its sort order (lm/builder/adjust_counts.cc, the loop after
the main one), which moves its t1 by one; we count every n-gram by its adjusted count. Pruning and vocabulary limits are not implemented (all n-grams
are kept); for corpora beyond a few million words, build the model with `lmplz` instead (same format).
Memory: Python dicts of tuples, roughly 200 bytes per distinct n-gram.
"""

from __future__ import annotations

import logging
import math
import os
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .files import atomic_writer

logger = logging.getLogger(__name__)

BOS, EOS, UNK = "<s>", "</s>", "<unk>"
SPECIAL_WORDS = (BOS, EOS, UNK)

# lmplz's --discount_fallback values (lm/builder/lmplz_main.cc: "0.5 1 1.5").
FALLBACK_DISCOUNTS = (0.5, 1.0, 1.5)
# log10 probability written for <s> (it is never predicted): the ARPA convention of SRILM and KenLM's readers.
ARPA_LOG10_ZERO = -99.0
DEFAULT_ORDER = 4  # docs/design.md §7: a word 4-gram


@dataclass(frozen=True)
class KneserNeyDiscounts:
    """Modified Kneser-Ney discounts of one order: D1, D2 and D3+ (for adjusted counts of 3 or more)."""

    one: float
    two: float
    three_plus: float
    fallback: bool = False  # True when the count-of-counts could not define them

    def __call__(self, count: int) -> float:
        """The discount subtracted from an adjusted count (0 for count 0)."""
        if count <= 0:
            return 0.0
        return (self.one, self.two, self.three_plus)[min(count, 3) - 1]

    @classmethod
    def from_count_of_counts(cls, count_of_counts: Sequence[int]) -> "KneserNeyDiscounts":
        """Chen & Goodman eq. 26 from `count_of_counts[k]` = number of n-grams with adjusted count k (k = 1..4).

        Falls back to lmplz's `--discount_fallback` values when t1, t2 or t3 is 0 or a discount is outside [0, k].
        """
        t = [0, *(int(count_of_counts[k]) for k in range(1, 5))]
        if all(t[k] > 0 for k in (1, 2, 3)):
            y = t[1] / (t[1] + 2.0 * t[2])
            values = [k - (k + 1) * y * t[k + 1] / t[k] for k in (1, 2, 3)]
            if all(0.0 <= value <= k for k, value in zip((1, 2, 3), values)):
                return cls(*values)
        return cls(*FALLBACK_DISCOUNTS, fallback=True)


class NgramLanguageModel:
    """A backoff word n-gram model as ARPA stores it: log10 p and log10 backoff per listed n-gram.

    Probabilities follow KenLM's query rule, so `log10_probability` is what KenLM returns for the
    written ARPA file: p(w | c) = P(c w) if `c w` is listed, else B(c) p(w | c') where B(c) = 1 when `c` is
    not listed (or not a context). Words outside the vocabulary are `<unk>`.

    Build it with `estimate_kneser_ney`; `ngrams[n - 1]` maps n-gram tuples to `(log10 p, log10 backoff)`.
    """

    def __init__(self, order: int, ngrams: list[dict[tuple[str, ...], tuple[float, float]]], discounts=None):
        if order < 1 or len(ngrams) != order:
            raise ValueError(f"order={order} needs {order} n-gram tables, got {len(ngrams)}")
        self.order = order
        self.ngrams = ngrams
        self.discounts = discounts or []

    @property
    def vocabulary(self) -> list[str]:
        """Every word the model can predict (`</s>` and `<unk>` included, `<s>` not), in ARPA order."""
        return [ngram[0] for ngram in self.ngrams[0] if ngram[0] != BOS]

    @property
    def words(self) -> list[str]:
        """The words of the training text (the vocabulary without `<s>`, `</s>`, `<unk>`): a lexicon."""
        return [word for word in self.vocabulary if word not in SPECIAL_WORDS]

    def counts(self) -> list[int]:
        """Number of listed n-grams per order (the ARPA header)."""
        return [len(table) for table in self.ngrams]

    def _known(self, word: str) -> str:
        return word if (word,) in self.ngrams[0] else UNK

    def log10_probability(self, word: str, context: Sequence[str] = ()) -> float:
        """log10 p(word | context), context = the preceding words, oldest first (`<s>` may start it)."""
        if word == BOS:
            raise ValueError("<s> is never predicted; start the context with it instead")
        context = tuple(self._known(w) if w != BOS else w for w in context)[-(self.order - 1) :] if self.order > 1 else ()
        word = self._known(word)
        backoff = 0.0
        for start in range(len(context) + 1):
            history = context[start:]
            entry = self.ngrams[len(history)].get(history + (word,))
            if entry is not None:
                return backoff + entry[0]
            history_entry = self.ngrams[len(history) - 1].get(history) if history else None
            if history_entry is not None:
                backoff += history_entry[1]
        raise AssertionError(f"{word!r} has no unigram")  # unreachable: _known maps it to a listed word

    def score_sentence(self, sentence: str | Sequence[str], bos: bool = True, eos: bool = True) -> float:
        """Total log10 probability of a sentence (`</s>` included with `eos`), as KenLM's `score(s, bos, eos)`."""
        words = sentence.split() if isinstance(sentence, str) else list(sentence)
        context: tuple[str, ...] = (BOS,) if bos else ()
        total = 0.0
        for word in words + ([EOS] if eos else []):
            total += self.log10_probability(word, context)
            context = (context + (word,))[-(self.order - 1) :] if self.order > 1 else ()
        return total

    def contexts(self) -> list[tuple[str, ...]]:
        """Every listed n-gram (below the highest order) that predicts something: `()` and the listed histories."""
        listed = [()]
        for table in self.ngrams[:-1]:
            listed.extend(ngram for ngram in table if ngram[-1] != EOS)
        return listed

    def write_arpa(self, path: str | os.PathLike) -> None:
        """Write the ARPA text format (`\\data\\`, `\\n-grams:` sections, `\\end\\`); KenLM and SRILM read it."""
        with atomic_writer(path) as output:
            output.write("\\data\\\n")
            for n, count in enumerate(self.counts(), start=1):
                output.write(f"ngram {n}={count}\n")
            for n, table in enumerate(self.ngrams, start=1):
                output.write(f"\n\\{n}-grams:\n")
                highest = n == self.order
                for ngram, (log10_p, log10_backoff) in table.items():
                    line = f"{log10_p:.7g}\t{' '.join(ngram)}"
                    output.write(line + ("\n" if highest else f"\t{log10_backoff:.7g}\n"))
            output.write("\n\\end\\\n")


def read_sentences(lines: Iterable[str]) -> Iterable[list[str]]:
    """Whitespace-split words of each non-empty line; the special words are refused with the line number."""
    for number, line in enumerate(lines, start=1):
        words = line.split()
        if not words:
            continue
        special = [word for word in words if word in SPECIAL_WORDS]
        if special:
            raise ValueError(
                f"line {number} contains {special[0]!r}, which the LM reserves (sentence start/end, unknown word): "
                f"{line.strip()[:80]!r}. Remove or replace it in the text."
            )
        yield words


def _count_ngrams(sentences: Iterable[Sequence[str]], order: int) -> tuple[list[Counter], int, int]:
    """Adjusted counts per order (index n - 1), the number of sentences and of words.

    Raw counts of the full order, and of the shorter n-grams starting with `<s>` (which keep raw counts);
    the other lower-order counts are filled in by `_continuation_counts`.
    """
    counts = [Counter() for _ in range(order)]
    num_sentences = num_words = 0
    for words in sentences:
        num_sentences += 1
        num_words += len(words)
        padded = (BOS, *words, EOS)
        for n in range(2, order + 1):  # <s>-initial n-grams shorter than the order (lmplz pads with <s>)
            if n < order and n <= len(padded):
                counts[n - 1][padded[:n]] += 1
        top = counts[order - 1]
        for start in range(len(padded) - order + 1):
            top[padded[start : start + order]] += 1
    return counts, num_sentences, num_words


def _continuation_counts(counts: list[Counter]) -> None:
    """Fill lower orders with adjusted counts: a(g) = number of distinct left neighbours of g (in place).

    Every n-gram seen after position 0 is the suffix of a seen (n + 1)-gram (its left extension), so the
    keys of order n + 1 enumerate exactly the distinct left neighbours; shorter n-grams that do not fit
    in the full order were counted by `_count_ngrams` as `<s>`-initial ones.
    """
    for n in range(len(counts) - 1, 0, -1):  # order n + 1 -> order n
        lower = counts[n - 1]
        for ngram in counts[n]:
            suffix = ngram[1:]
            if suffix[0] != BOS:  # <s>-initial n-grams keep their raw counts
                lower[suffix] += 1


def estimate_kneser_ney(
    sentences: Iterable[str | Sequence[str]], order: int = DEFAULT_ORDER
) -> NgramLanguageModel:
    """Interpolated modified Kneser-Ney n-gram model of `sentences` (lmplz's estimate; see the module doc).

    Args:
        sentences: strings (split on whitespace; empty ones skipped) or lists of words.
        order: n of the n-gram (docs/design.md §7: 4).

    Returns:
        An `NgramLanguageModel`; `.write_arpa(path)` writes it for KenLM.
    """
    if order < 1:
        raise ValueError(f"order must be >= 1, got {order}")
    token_lists = read_sentences(s if isinstance(s, str) else " ".join(s) for s in sentences)
    counts, num_sentences, num_words = _count_ngrams(token_lists, order)
    if num_sentences == 0:
        raise ValueError("no text to estimate an LM from: every sentence was empty")
    _continuation_counts(counts)
    counts[0].pop((BOS,), None)  # <s> is a context, never a predicted word

    # Discounts per order from the count-of-counts of adjusted counts (lmplz counts every n-gram, <s>-initial ones included).
    discounts = []
    for n, table in enumerate(counts, start=1):
        count_of_counts = Counter(min(count, 5) for count in table.values())
        discount = KneserNeyDiscounts.from_count_of_counts([count_of_counts.get(k, 0) for k in range(5)])
        if discount.fallback:
            logger.warning(
                "%d-gram count-of-counts %s cannot define Kneser-Ney discounts (small or artificial text); "
                "using lmplz's --discount_fallback D = %s",
                n, [count_of_counts.get(k, 0) for k in range(1, 5)], FALLBACK_DISCOUNTS,
            )
        discounts.append(discount)

    # Per context: sum of adjusted counts and the discounted mass (gamma's numerator).
    denominators: list[dict[tuple, float]] = []
    discounted: list[dict[tuple, float]] = []
    for n, table in enumerate(counts, start=1):
        totals: dict[tuple, float] = defaultdict(float)
        mass: dict[tuple, float] = defaultdict(float)
        for ngram, count in table.items():
            totals[ngram[:-1]] += count
            mass[ngram[:-1]] += discounts[n - 1](count)
        denominators.append(totals)
        discounted.append(mass)

    def gamma(n: int, context: tuple) -> float:
        """Interpolation weight of `context` for the order-n distribution (1 for an unseen context)."""
        total = denominators[n - 1].get(context)
        return discounted[n - 1][context] / total if total else 1.0

    # Interpolate order by order: p(w | c) = u(w | c) + gamma(c) p(w | c').
    vocabulary_size = len(counts[0]) + 1  # the words and </s>, plus <unk> (<s> excluded, as lmplz)
    probabilities: list[dict[tuple, float]] = []
    unigram_gamma = gamma(1, ())
    unigrams = {(UNK,): unigram_gamma / vocabulary_size}
    total = denominators[0][()]
    for ngram, count in counts[0].items():
        unigrams[ngram] = (count - discounts[0](count)) / total + unigram_gamma / vocabulary_size
    probabilities.append(unigrams)
    for n in range(2, order + 1):
        lower = probabilities[n - 2]
        table = {}
        for ngram, count in counts[n - 1].items():
            context = ngram[:-1]
            table[ngram] = (count - discounts[n - 1](count)) / denominators[n - 1][context] + gamma(n, context) * lower[ngram[1:]]
        probabilities.append(table)

    # ARPA: log10 p and, for n-grams that are contexts of the next order, log10 gamma as the backoff.
    ngrams: list[dict[tuple, tuple[float, float]]] = []
    for n, table in enumerate(probabilities, start=1):
        next_contexts = denominators[n] if n < order else {}
        if n == 1:  # <unk>, <s>, then the words as first seen (<s> has no probability, only a backoff)
            table = {(UNK,): table.pop((UNK,)), (BOS,): None, **table}
        entries = {}
        for ngram, probability in table.items():
            backoff = math.log10(gamma(n + 1, ngram)) if ngram in next_contexts else 0.0
            log10_p = ARPA_LOG10_ZERO if probability is None else min(0.0, math.log10(probability))
            entries[ngram] = (log10_p, backoff)
        ngrams.append(entries)
    logger.info(
        "estimated a %d-gram model from %d sentences, %d words: %s n-grams",
        order, num_sentences, num_words, [len(table) for table in ngrams],
    )
    return NgramLanguageModel(order, ngrams, discounts)


def read_text_files(paths: Iterable[str | os.PathLike]) -> Iterable[str]:
    """Lines of UTF-8 text files, one sentence per line."""
    for path in paths:
        with open(path, encoding="utf-8") as lines:
            yield from lines


def arpa_vocabulary(path: str | os.PathLike) -> list[str]:
    """The unigrams of an ARPA file (`<s>`, `</s>`, `<unk>` included), read without loading the model.

    A binary KenLM file has no readable word list: pass a lexicon or word list instead.
    """
    words = []
    with open(path, "rb") as raw:
        if raw.read(4096).find(b"\\data\\") < 0:
            raise ValueError(
                f"{path} is not an ARPA text file (no \\data\\ header; a binary KenLM model?). Its words cannot "
                "be read here: pass the ARPA file, or a lexicon / word list for the decoder."
            )
    with open(path, encoding="utf-8") as lines:
        section = None
        for line in lines:
            line = line.strip()
            if line.startswith("\\"):
                section = line
                if section == "\\2-grams:" or section == "\\end\\":
                    break
                continue
            if section == "\\1-grams:" and line:
                fields = line.split()
                words.append(fields[1])
    return words


__all__ = [
    "ARPA_LOG10_ZERO",
    "BOS",
    "DEFAULT_ORDER",
    "EOS",
    "FALLBACK_DISCOUNTS",
    "KneserNeyDiscounts",
    "NgramLanguageModel",
    "SPECIAL_WORDS",
    "UNK",
    "arpa_vocabulary",
    "estimate_kneser_ney",
    "read_sentences",
    "read_text_files",
]
