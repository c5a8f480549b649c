"""Build a word n-gram LM (interpolated modified Kneser-Ney, as KenLM's lmplz) and write it as ARPA.

    python scripts/build_lm.py --text corpus.txt more.txt --order 4 --output lm.arpa
    python scripts/build_lm.py --data data/demo --split train --languages en de --output lm/{language}.arpa
    python scripts/build_lm.py --data data/demo --split train --languages en --output lm/en.arpa

(`mlpl-build-lm` is the same command.) --text: UTF-8 files, one sentence per line. --data: the transcripts
of a labeled data source (training/sources.py: Common Voice folder, Flashlight list with --language,
parquet folder, Hub id), read without touching audio. With "{language}" in --output, one LM per language
is written; otherwise all the text goes into one LM.

Words are whitespace-separated and kept as they are (case and punctuation, docs/design.md §3), so that they match
what the acoustic model writes. The estimator is pure Python (training/ngram_lm.py): fine for the
transcripts of a corpus (millions of words); for web-scale text use KenLM's lmplz (same ARPA format).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from ..ngram_lm import DEFAULT_ORDER
from . import setup_logging
from .arguments import CommandLine, option


@dataclass(kw_only=True)
class BuildLmOptions:
    text: list[str] | None = option(None, metavar="FILE", help="text files, one sentence per line (or --data)")
    data: str | None = option(None, metavar="SOURCE", help="a labeled data source whose transcripts to use (or --text)")
    split: str = option("train", help="split of --data (the training transcripts by default)")
    languages: list[str] | None = option(None, help="--data: only these languages")
    language: str | None = option(None, help="--data: language of a Flashlight list / of a Hub dataset without one")
    hub_config: str | None = option(None, help="--data: configuration of a Hub dataset")
    order: int = option(DEFAULT_ORDER, help="n of the n-gram (docs/design.md §7: 4)")
    output: str = option(help="ARPA file to write; '{language}' in it: one LM per language")


def main(argv=None) -> None:
    from ..ngram_lm import estimate_kneser_ney, read_text_files
    from ..sources import source_transcripts

    command = CommandLine(__doc__, BuildLmOptions)
    (options,) = command.parse(argv).sections
    if (options.text is None) == (options.data is None):
        command.error("give one of --text and --data")
    setup_logging()

    per_language = "{language}" in options.output
    if options.text:
        if per_language:
            command.error("'{language}' in --output needs --data (text files carry no language)")
        texts = {None: list(read_text_files(options.text))}
    else:
        texts = defaultdict(list)
        for language, sentence in source_transcripts(
            options.data, options.split, languages=options.languages, language=options.language, hub_config=options.hub_config
        ):
            texts[language if per_language else None].append(sentence)
        if not texts:
            command.error(f"{options.data} ({options.split}) has no transcripts for languages {options.languages}")

    for language, sentences in sorted(texts.items(), key=lambda item: str(item[0])):
        output = Path(options.output.format(language=language) if per_language else options.output)
        output.parent.mkdir(parents=True, exist_ok=True)
        model = estimate_kneser_ney(sentences, order=options.order)
        model.write_arpa(output)
        counts = ", ".join(f"{n}-grams {count}" for n, count in enumerate(model.counts(), start=1))
        print(f"{output}: {len(sentences)} sentences, {len(model.words)} words; {counts}")


__all__ = ["BuildLmOptions", "main"]
