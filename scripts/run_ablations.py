#!/usr/bin/env python
"""Run the paper's ablations (`mlpl-ablations`): training/cli/ablations.py has the options and examples.

A thin wrapper (scripts/ is not a package); `--help` lists every option.
"""

import sys

from mlpl.cli.ablations import main  # noqa: F401

if __name__ == "__main__":
    sys.exit(main())
