"""Build the built-in demo corpus (synthetic multilingual speech; see training/demo_corpus.py).

    python scripts/make_demo_corpus.py --out data/demo            # default size, < 2 minutes on 2 cores
    python scripts/make_demo_corpus.py --out /tmp/tiny --size tiny
    python scripts/make_demo_corpus.py --out data/demo_hall --voxpopuli-domain plenary_hall   # docs/design.md §11

(`mlpl-make-demo-corpus` is the same command.) Needs the `demo` extra: pip install "mlpl[demo]"
(espeakng-loader, wordfreq).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from ..demo_corpus import SIZES, VOXPOPULI_DOMAINS
from . import setup_logging
from .arguments import CommandLine, option


@dataclass(kw_only=True)
class DemoCorpusOptions:
    out: str = option(help="corpus folder (built atomically; kept if already complete)")
    size: str = option("default", choices=sorted(SIZES))
    seed: int = option(0)
    workers: int = option(2, help="processes rendering clips at once")
    force: bool = option(False, help="rebuild even if the same corpus exists")
    voxpopuli_domain: str = option(
        "same", choices=list(VOXPOPULI_DOMAINS),
        help="plenary_hall: the VoxPopuli part through a reverberant hall, plus transcribed voxpopuli_asr/ dev/test sets",
    )


def main(argv=None) -> None:
    from ..demo_corpus import make_demo_corpus, read_manifest

    (options,) = CommandLine(__doc__, DemoCorpusOptions).parse(argv).sections
    setup_logging()
    corpus = make_demo_corpus(
        options.out, options.size, options.seed, workers=options.workers, force=options.force, voxpopuli_domain=options.voxpopuli_domain
    )
    manifest = read_manifest(corpus)
    hours = {code: language["hours"] for code, language in manifest["languages"].items()}
    print(f"demo corpus in {corpus} (built in {manifest['build_seconds']} s)")
    print(json.dumps(hours, indent=1))


__all__ = ["DemoCorpusOptions", "main"]
