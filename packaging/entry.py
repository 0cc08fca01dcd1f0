"""Frozen-bundle entry point: the same ``bivy`` command as the console script."""

import sys

from app.launcher import main

if __name__ == "__main__":
    sys.exit(main())
