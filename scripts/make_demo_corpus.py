#!/usr/bin/env python
"""Build the built-in demo corpus (`mlpl-make-demo-corpus`): training/cli/demo_corpus.py has the options and examples.

A thin wrapper (scripts/ is not a package); `--help` lists every option.
"""

import sys

from mlpl.cli.demo_corpus import main  # noqa: F401

if __name__ == "__main__":
    sys.exit(main())
