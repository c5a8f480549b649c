#!/usr/bin/env python
"""Publish a folder to the Hugging Face Hub (`mlpl-publish`): training/cli/publish.py has the options and examples.

A thin wrapper (scripts/ is not a package); `--help` lists every option.
"""

import sys

from mlpl.cli.publish import main  # noqa: F401

if __name__ == "__main__":
    sys.exit(main())
