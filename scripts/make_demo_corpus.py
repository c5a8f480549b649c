#!/usr/bin/env python
"""Build the built-in demo corpus (synthetic multilingual speech; see training/demo_corpus.py).

    python scripts/make_demo_corpus.py --out data/demo            # default size, < 2 minutes on 2 cores
    python scripts/make_demo_corpus.py --out /tmp/tiny --size tiny

Needs the `demo` extra: pip install "mlpl[demo]" (espeakng-loader, wordfreq).
"""

import argparse
import json

from training.demo_corpus import SIZES, make_demo_corpus, read_manifest
from training.cli import setup_logging


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="corpus folder (built atomically; kept if already complete)")
    parser.add_argument("--size", default="default", choices=sorted(SIZES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2, help="processes rendering clips at once")
    parser.add_argument("--force", action="store_true", help="rebuild even if the same corpus exists")
    arguments = parser.parse_args()
    setup_logging()

    corpus = make_demo_corpus(
        arguments.out, arguments.size, arguments.seed, workers=arguments.workers, force=arguments.force
    )
    manifest = read_manifest(corpus)
    hours = {code: language["hours"] for code, language in manifest["languages"].items()}
    print(f"demo corpus in {corpus} (built in {manifest['build_seconds']} s)")
    print(json.dumps(hours, indent=1))


if __name__ == "__main__":
    main()
