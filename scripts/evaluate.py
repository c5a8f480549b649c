#!/usr/bin/env python
"""Evaluate a model, compare evaluations, score LID routing (`mlpl-evaluate`): training/cli/evaluate.py has the options and examples.

A thin wrapper (scripts/ is not a package); `--help` lists every option.
"""

import sys

from mlpl.cli.evaluate import main, parse_arguments  # noqa: F401

if __name__ == "__main__":
    sys.exit(main())
