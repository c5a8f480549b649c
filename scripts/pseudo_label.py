#!/usr/bin/env python
"""Pseudo-label unlabeled audio (`mlpl-pseudo-label`): training/cli/pseudo_label.py has the options and examples.

A thin wrapper (scripts/ is not a package); `--help` lists every option.
"""

import sys

from mlpl.cli.pseudo_label import main, parse_arguments  # noqa: F401

if __name__ == "__main__":
    sys.exit(main())
