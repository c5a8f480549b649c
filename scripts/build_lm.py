#!/usr/bin/env python
"""Build a word n-gram LM as ARPA (`mlpl-build-lm`): training/cli/build_lm.py has the options and examples.

A thin wrapper (scripts/ is not a package); `--help` lists every option.
"""

import sys

from mlpl.cli.build_lm import main  # noqa: F401

if __name__ == "__main__":
    sys.exit(main())
