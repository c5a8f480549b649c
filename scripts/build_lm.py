#!/usr/bin/env python
"""Build a word n-gram LM (interpolated modified Kneser-Ney, as KenLM's lmplz) and write it as ARPA.

    python scripts/build_lm.py --text corpus.txt more.txt --order 4 --output lm.arpa
    python scripts/build_lm.py --data data/demo --split train --languages en de --output lm/{language}.arpa
    python scripts/build_lm.py --data data/demo --split train --languages en --output lm/en.arpa

--text: UTF-8 files, one sentence per line. --data: the transcripts of a labeled data source
(training/sources.py: Common Voice folder, Flashlight list with --language, parquet folder, Hub id),
read without touching audio. With "{language}" in --output, one LM per language is written; otherwise
all the text goes into one LM.

Words are whitespace-separated and kept as they are (case and punctuation, docs/design.md §3), so that they match
what the acoustic model writes. The estimator is pure Python (training/ngram_lm.py): fine for the
transcripts of a corpus (millions of words); for web-scale text use KenLM's lmplz (same ARPA format).
"""

import argparse
from collections import defaultdict
from pathlib import Path

from training.ngram_lm import DEFAULT_ORDER, estimate_kneser_ney, read_text_files
from training.sources import source_transcripts
from training.cli import setup_logging


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    text = parser.add_mutually_exclusive_group(required=True)
    text.add_argument("--text", nargs="+", metavar="FILE", help="text files, one sentence per line")
    text.add_argument("--data", metavar="SOURCE", help="a labeled data source whose transcripts to use")
    parser.add_argument("--split", default="train", help="split of --data (the training transcripts by default)")
    parser.add_argument("--languages", nargs="+", help="--data: only these languages")
    parser.add_argument("--language", help="--data: language of a Flashlight list / of a Hub dataset without one")
    parser.add_argument("--hub-config", help="--data: configuration of a Hub dataset")
    parser.add_argument("--order", type=int, default=DEFAULT_ORDER, help="n of the n-gram (docs/design.md §7: 4)")
    parser.add_argument("--output", required=True, help="ARPA file to write; '{language}' in it: one LM per language")
    arguments = parser.parse_args(argv)
    setup_logging()

    per_language = "{language}" in arguments.output
    if arguments.text:
        if per_language:
            parser.error("'{language}' in --output needs --data (text files carry no language)")
        texts = {None: list(read_text_files(arguments.text))}
    else:
        texts = defaultdict(list)
        for language, sentence in source_transcripts(
            arguments.data, arguments.split, languages=arguments.languages, language=arguments.language,
            hub_config=arguments.hub_config,
        ):
            texts[language if per_language else None].append(sentence)
        if not texts:
            parser.error(f"{arguments.data} ({arguments.split}) has no transcripts for languages {arguments.languages}")

    for language, sentences in sorted(texts.items(), key=lambda item: str(item[0])):
        output = Path(arguments.output.format(language=language) if per_language else arguments.output)
        output.parent.mkdir(parents=True, exist_ok=True)
        model = estimate_kneser_ney(sentences, order=arguments.order)
        model.write_arpa(output)
        counts = ", ".join(f"{n}-grams {count}" for n, count in enumerate(model.counts(), start=1))
        print(f"{output}: {len(sentences)} sentences, {len(model.words)} words; {counts}")


if __name__ == "__main__":
    main()
