"""Chooses between the desktop window and the headless CLI for the ``bivy`` command."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """Open the window when called bare (or with --smoke-test), else run the CLI."""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in {"--smoke-test", "gui"}:
        from app.ui.main import run_gui

        return run_gui(smoke_test="--smoke-test" in args)
    from app.cli import main as cli_main

    return cli_main(args)
