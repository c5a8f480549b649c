#!/usr/bin/env python
"""Run the mling_pl recipe (`mlpl-recipe`): training/cli/recipe.py has the options and examples.

A thin wrapper (scripts/ is not a package); `--help` lists every option.
"""

import sys

from mlpl.cli.recipe import main  # noqa: F401

if __name__ == "__main__":
    sys.exit(main())
