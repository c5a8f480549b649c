"""The Kneser-Ney estimator and its ARPA files (docs/design.md §7): normalized distributions, KenLM reads the file and
computes our probabilities, and the output equals lmplz's on a small text."""

from pathlib import Path

import pytest
from decoding_fixtures import load_script

from mlpl.ngram_lm import (
    ARPA_LOG10_ZERO,
    FALLBACK_DISCOUNTS,
    KneserNeyDiscounts,
    arpa_vocabulary,
    estimate_kneser_ney,
)

FIXTURES = Path(__file__).parent / "fixtures" / "lmplz"

SENTENCES = [
    "the cat sat on the mat",
    "the dog sat on the log",
    "the cat ate the fish",
    "a dog ate a bone",
    "the cat sat",
    "The cat, the dog and the bird sat on the mat.",
    "a bird ate the fish on the log",
    "the dog ate",
    "the cat sat on the mat",
]


@pytest.fixture(scope="module")
def model():
    return estimate_kneser_ney(SENTENCES, order=4)


def test_every_distribution_sums_to_one(model):
    vocabulary = model.vocabulary
    assert "</s>" in vocabulary and "<unk>" in vocabulary and "<s>" not in vocabulary
    contexts = model.contexts()
    assert ("<s>",) in contexts and ("the", "cat") in contexts and len(contexts) > 40
    # Plus contexts the text never had: the model backs off all the way.
    for context in contexts + [("zebra",), ("on", "a", "zebra"), ("<s>", "purple", "cat")]:
        total = sum(10 ** model.log10_probability(word, context) for word in vocabulary)
        assert total == pytest.approx(1.0, abs=1e-6), context


def test_kenlm_reads_the_arpa_file_and_agrees_with_the_model(model, tmp_path):
    from flashlight.lib.text.decoder.kenlm import KenLM
    from flashlight.lib.text.dictionary import Dictionary

    path = tmp_path / "lm.arpa"
    model.write_arpa(path)
    assert arpa_vocabulary(path)[:2] == ["<unk>", "<s>"]
    dictionary = Dictionary()
    for word in model.vocabulary + ["zebra"]:
        if word != "</s>":
            dictionary.add_entry(word)
    dictionary.set_default_index(dictionary.get_index("<unk>"))
    kenlm = KenLM(str(path), dictionary)

    sentences = ["the cat sat on the mat", "a dog ate the fish on the mat", "the zebra sat on a bone", "cat"]
    for sentence in sentences:
        state, total = kenlm.start(False), 0.0
        for word in sentence.split():
            state, score = kenlm.score(state, dictionary.get_index(word))
            total += score
        total += kenlm.finish(state)[1]
        assert total == pytest.approx(model.score_sentence(sentence), abs=1e-4), sentence
    # A word the LM never saw costs <unk>'s probability, not nothing.
    assert model.score_sentence("the zebra") < model.score_sentence("the cat")


def test_output_equals_lmplz_on_a_small_text():
    """tests/fixtures/lmplz/toy_order3.arpa is KenLM's own estimate of toy.txt:
    `lmplz -o 3 --discount_fallback < toy.txt` (kenlm 0.3.0, built from the PyPI sdist). Its 2-grams take the
    fallback discounts (their count-of-counts has no 3), the 1- and 3-grams Chen & Goodman's eq. 26."""
    expected = _read_arpa(FIXTURES / "toy_order3.arpa")
    model = estimate_kneser_ney((FIXTURES / "toy.txt").read_text(encoding="utf-8").splitlines(), order=3)
    assert [d.fallback for d in model.discounts] == [False, True, False]
    for n, table in expected.items():
        mine = model.ngrams[n - 1]
        assert set(mine) == set(table), n
        for ngram, (log10_p, log10_backoff) in table.items():
            if ngram == ("<s>",):  # never predicted: lmplz writes 0, we write the ARPA convention -99
                assert mine[ngram][0] == ARPA_LOG10_ZERO
            else:
                assert mine[ngram][0] == pytest.approx(log10_p, abs=1e-6), ngram
            assert mine[ngram][1] == pytest.approx(log10_backoff, abs=1e-6), ngram


def test_discounts_follow_chen_and_goodman_and_fall_back_like_lmplz():
    # t1..t4 = 10, 5, 3, 2: Y = 10 / 20 = 0.5; D1 = 1 - 2 Y 5/10; D2 = 2 - 3 Y 3/5; D3+ = 3 - 4 Y 2/3.
    discounts = KneserNeyDiscounts.from_count_of_counts([0, 10, 5, 3, 2])
    assert (discounts.one, discounts.two, discounts.three_plus) == pytest.approx((0.5, 1.1, 3 - 4 / 3))
    assert [discounts(count) for count in (0, 1, 2, 3, 7)] == pytest.approx([0.0, 0.5, 1.1, 3 - 4 / 3, 3 - 4 / 3])
    fallback = KneserNeyDiscounts.from_count_of_counts([0, 10, 0, 3, 2])
    assert fallback.fallback and (fallback.one, fallback.two, fallback.three_plus) == FALLBACK_DISCOUNTS


def test_unigram_model_and_refused_text(tmp_path):
    unigram = estimate_kneser_ney(SENTENCES, order=1)
    assert sum(10 ** unigram.log10_probability(word) for word in unigram.vocabulary) == pytest.approx(1.0)
    assert unigram.log10_probability("the") > unigram.log10_probability("bone") > unigram.log10_probability("zebra")
    assert unigram.log10_probability("zebra", context=("the",)) == unigram.log10_probability("<unk>")
    with pytest.raises(ValueError, match=r"line 2 contains '</s>'"):
        estimate_kneser_ney(["fine line", "a </s> here"])
    with pytest.raises(ValueError, match="every sentence was empty"):
        estimate_kneser_ney(["", "   "])
    binary = tmp_path / "lm.bin"
    binary.write_bytes(b"mmap lm http://kheafield.com/code format version 5\0\0\0")
    with pytest.raises(ValueError, match="not an ARPA text file"):
        arpa_vocabulary(binary)


def test_build_lm_script_writes_one_loadable_model_per_language(tiny_demo_corpus, tmp_path):
    main = load_script("build_lm").main
    main(["--data", str(tiny_demo_corpus), "--languages", "en", "de", "--output", str(tmp_path / "{language}.arpa")])
    for language in ("en", "de"):
        words = arpa_vocabulary(tmp_path / f"{language}.arpa")
        assert {"<s>", "</s>", "<unk>"} <= set(words) and len(words) > 20
    english, german = (set(arpa_vocabulary(tmp_path / f"{code}.arpa")) for code in ("en", "de"))
    assert not (english - {"<s>", "</s>", "<unk>"}) <= german  # each from its own language's transcripts

    text = tmp_path / "corpus.txt"
    text.write_text("\n".join(SENTENCES) + "\n", encoding="utf-8")
    main(["--text", str(text), "--order", "3", "--output", str(tmp_path / "text.arpa")])
    written, estimated = _read_arpa(tmp_path / "text.arpa"), estimate_kneser_ney(SENTENCES, order=3)
    assert sorted(written) == [1, 2, 3]
    for n, table in written.items():
        for ngram, (log10_p, log10_backoff) in table.items():
            assert (log10_p, log10_backoff) == pytest.approx(estimated.ngrams[n - 1][ngram], abs=1e-6)


def _read_arpa(path):
    tables, order = {}, None
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.startswith("\\") and line.endswith("-grams:"):
            order = int(line[1 : line.index("-")])
            tables[order] = {}
        elif line.startswith("\\end"):
            break
        elif order and line.strip():
            fields = line.split("\t")
            tables[order][tuple(fields[1].split())] = (float(fields[0]), float(fields[2]) if len(fields) > 2 else 0.0)
    return tables
