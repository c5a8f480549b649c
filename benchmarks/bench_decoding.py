#!/usr/bin/env python
"""Decoding speed (utterances per second, one core) of greedy CTC vs beam search, on the same logits (docs/design.md §7).

Decoders compared (training/decoding.py), for each beam size (token beam = min(beam, 100), as the slimIPL
settings pair beam 1000 with token beam 100):
  greedy             argmax + collapse (mlpl.inference)
  beam, no LM        Flashlight's lexicon-free beam search, no LM (C++ only)
  beam + LM, lexicon Flashlight's lexicon decoder with KenLM (C++ only; words from the LM)
  beam + LM, free    lexicon-free with the word LM (a Python LM callback per hypothesis x token)
alpha and beta are fixed (--alpha, --beta), not tuned: the WER column is a sanity check, not a result.
Each configuration decodes utterances until --seconds-per-config is spent (at least one), so slow ones
report a rate from fewer utterances; WER against the references shows what the time buys, next to greedy's
WER on the same utterances.

Logits, by default synthetic and reproducible: English demo sentences (wordfreq words, as the demo corpus)
spelled as CTC spikes (one frame per character, blanks between, 10 ms frames x 3 = 30 ms per output
frame), 15% of the characters acoustically confused with another letter, over a vocabulary padded to
--vocab-size symbols (8065 = the paper's head). The LM is a 4-gram of 3000 other sentences of the same
kind (training/ngram_lm.py). With --model and --data the logits come from a real model on a real set.

    python benchmarks/bench_decoding.py                                   # synthetic, vocabulary 8065
    python benchmarks/bench_decoding.py --beam-sizes 10 100 500 --utterances 50
    python benchmarks/bench_decoding.py --model outputs/demo/best --data data/demo --split dev \\
        --languages en --lm lm/en.arpa
"""

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from modeling_mlpl import build_tokenizer, build_vocabulary
from mlpl.decoding import MlplBeamSearchDecoder
from mlpl.inference import decode_token_ids, greedy_token_ids
from mlpl.metrics import compute_asr_metrics
from mlpl.ngram_lm import estimate_kneser_ney


def synthetic_setup(vocab_size: int, utterances: int, seed: int, lm_path: Path):
    """(tokenizer, list of (T, V) logits, references) of English demo-style sentences, and an LM written to lm_path."""
    from mlpl.demo_corpus import LANGUAGES, make_sentence, vocabulary

    rng = np.random.default_rng(seed)
    words = vocabulary(LANGUAGES[0])
    lm_text = [make_sentence(words, rng) for _ in range(3000)]
    references = [make_sentence(words, rng) for _ in range(utterances)]
    estimate_kneser_ney(lm_text, order=4).write_arpa(lm_path)

    vocab = build_vocabulary(lm_text + references)
    filler = 0x4E00  # CJK ideographs stand in for the other scripts of a multilingual head
    while len(vocab) < vocab_size:
        vocab.setdefault(chr(filler), len(vocab))
        filler += 1
    tokenizer = build_tokenizer(vocab)
    letters = [index for token, index in vocab.items() if token.isalpha() and token.isascii()]
    blank, delimiter = tokenizer.pad_token_id, vocab["|"]
    all_logits = []
    for text in references:
        frames = []
        for character in text:
            target = delimiter if character == " " else vocab[character]
            for symbol, confident in ((target, rng.uniform(0.6, 0.95)), (blank, rng.uniform(0.85, 0.99))):
                frame = rng.random(len(vocab))  # the rest of the mass, spread unevenly over every other symbol
                frame *= (1.0 - confident) / frame.sum()
                if symbol == target and rng.random() < 0.15:
                    rival = rng.choice(letters)  # the acoustics confuse this character with another letter
                    frame[rival], frame[symbol] = confident * 0.55, confident * 0.45
                else:
                    frame[symbol] = confident
                frames.append(np.log(frame).astype(np.float32))
        all_logits.append(torch.from_numpy(np.stack(frames)))
    return tokenizer, all_logits, references


def model_setup(arguments):
    """(tokenizer, logits per utterance, references) from a real model on a real labeled set."""
    from mlpl.batching import DurationBatchSampler
    from mlpl.collate import MlplCollator
    from mlpl.data import records_of
    from mlpl.inference import chunked_logits
    from mlpl.pseudo_label import load_model_for_pseudo_labeling
    from mlpl.sources import load_labeled_source

    model, processor, _, _ = load_model_for_pseudo_labeling(arguments.model)
    model.eval()
    dataset = load_labeled_source(arguments.data, arguments.split, languages=arguments.languages)
    if arguments.utterances < len(dataset):
        dataset = dataset.select(range(arguments.utterances))
    records = records_of(dataset).select_columns(["id", "sentence", "language", "duration"])[:]
    codes = model.config.language_codes
    collator = MlplCollator(processor.feature_extractor, processor.tokenizer, {c: (codes.index(c) if c in codes else -100) for c in set(records["language"])})
    sampler = DurationBatchSampler(records["duration"], 100.0, ids=records["id"])
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=collator)
    logits_of, row_of = {}, {identifier: row for row, identifier in enumerate(records["id"])}
    with torch.inference_mode():
        for batch in loader:
            logits, lengths, _ = chunked_logits(model, batch["input_features"], batch["attention_mask"])
            for position, identifier in enumerate(batch["ids"]):
                logits_of[row_of[identifier]] = logits[position, : lengths[position]].float()
    rows = sorted(logits_of)
    return processor.tokenizer, [logits_of[row] for row in rows], [records["sentence"][row] for row in rows]


def run(name, decode_one, logits, references, budget):
    """Decode utterances in order until `budget` seconds are spent; (utterances/s, frames/s, WER, count)."""
    hypotheses, start = [], time.perf_counter()
    for utterance in logits:
        hypotheses.append(decode_one(utterance))
        if time.perf_counter() - start > budget:
            break
    elapsed = time.perf_counter() - start
    count = len(hypotheses)
    frames = sum(len(utterance) for utterance in logits[:count])
    wer = compute_asr_metrics(hypotheses, references[:count], ["en"] * count)["wer"]
    return count / elapsed, frames / elapsed, wer, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vocab-size", type=int, default=8065, help="synthetic: CTC vocabulary (paper: 8065)")
    parser.add_argument("--utterances", type=int, default=30)
    parser.add_argument("--beam-sizes", type=int, nargs="+", default=[10, 100, 500])
    parser.add_argument("--seconds-per-config", type=float, default=20.0)
    parser.add_argument("--alpha", type=float, default=1.0)
    parser.add_argument("--beta", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", help="real logits: model folder or Hub id")
    parser.add_argument("--data", help="real logits: labeled data source")
    parser.add_argument("--split", default="dev")
    parser.add_argument("--languages", nargs="+")
    parser.add_argument("--lm", help="ARPA LM (required with --model)")
    arguments = parser.parse_args()
    torch.set_num_threads(1)  # one core for everything: Flashlight's decoder is single-threaded

    if arguments.model:
        if not (arguments.data and arguments.lm):
            parser.error("--model needs --data and --lm")
        tokenizer, logits, references = model_setup(arguments)
        lm_path = Path(arguments.lm)
    else:
        lm_path = Path(tempfile.mkdtemp()) / "bench_en.arpa"
        tokenizer, logits, references = synthetic_setup(arguments.vocab_size, arguments.utterances, arguments.seed, lm_path)
    frames = sum(len(utterance) for utterance in logits)
    print(f"{len(logits)} utterances, {frames} frames ({frames * 0.03 / len(logits):.1f} s of audio each on average), "
          f"vocabulary {len(tokenizer)}, LM {lm_path}")

    def greedy_one(utterance):
        return decode_token_ids(greedy_token_ids(utterance[None], torch.tensor([len(utterance)]), tokenizer.pad_token_id), tokenizer)[0]

    greedy_hypotheses = [greedy_one(utterance) for utterance in logits]

    def greedy_wer(count):  # greedy's WER on the utterances a configuration had time for
        return compute_asr_metrics(greedy_hypotheses[:count], references[:count], ["en"] * count)["wer"]

    rows = [("greedy", "-", "-") + run("greedy", greedy_one, logits, references, arguments.seconds_per_config)]
    for beam in arguments.beam_sizes:
        token_beam = min(beam, 100)
        configurations = [
            ("beam, no LM", MlplBeamSearchDecoder(tokenizer, alpha=0.0, beta=0.0, beam_size=beam, beam_size_token=token_beam, beam_threshold=100000.0)),
            ("beam + LM, lexicon", MlplBeamSearchDecoder(tokenizer, lm_path, "lm", alpha=arguments.alpha, beta=arguments.beta, beam_size=beam, beam_size_token=token_beam, beam_threshold=100000.0)),
            ("beam + LM, lexicon-free", MlplBeamSearchDecoder(tokenizer, lm_path, alpha=arguments.alpha, beta=arguments.beta, beam_size=beam, beam_size_token=token_beam, beam_threshold=100000.0)),
        ]
        for name, decoder in configurations:
            decode_one = lambda utterance, decoder=decoder: decoder.decode_emissions(decoder.emissions(utterance))  # noqa: E731
            rows.append((name, beam, token_beam) + run(name, decode_one, logits, references, arguments.seconds_per_config))

    print(f"\nthreshold 100000 (docs/design.md §7), alpha={arguments.alpha}, beta={arguments.beta}, one core\n")
    print("| decoder | beam | token beam | utterances/s | frames/s | WER % | greedy WER % (same utterances) | utterances timed |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, beam, token_beam, rate, frame_rate, wer, count in rows:
        print(f"| {name} | {beam} | {token_beam} | {rate:.2f} | {frame_rate:.0f} | {100 * wer:.1f} | {100 * greedy_wer(count):.1f} | {count} |")


if __name__ == "__main__":
    main()
