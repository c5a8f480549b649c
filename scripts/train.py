#!/usr/bin/env python
"""Train an mlpl model (`mlpl-train`): training/cli/train.py has the options and examples.

A thin wrapper (scripts/ is not a package); `--help` lists every option.
"""

import sys

from mlpl.cli.train import main  # noqa: F401

if __name__ == "__main__":
    sys.exit(main())
