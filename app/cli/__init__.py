"""The ``bivy`` command line: headless commands over the same services as the window.

One module per group of verbs (``catalog``, ``workspaces``, ``login``, ``remote``, ``backup``,
``render``, ``agents``, ``prebuild``, ``sessions``); ``base`` holds what they share. This package
hands on the names callers and tests use (``main``, ``build_parser``, ``COMMANDS``, ``Command``,
``CliContext``…).
"""

# Adding a command (other engineers: keep it additive):
#   1. in the module of its group, write ``_add_<cmd>_parser(sub)`` that calls
#      ``sub.add_parser("<cmd>", help=...)`` and adds its arguments, and
#      ``_cmd_<cmd>(args, ctx) -> int`` (plain or ``async def``);
#   2. add one ``Command("<cmd>", _add_<cmd>_parser, _cmd_<cmd>)`` row to that module's
#      ``COMMANDS`` (a new module: add its list to ``COMMANDS`` below).
# ``main`` parses, runs the handler (``asyncio.run`` for async ones), closes the services, and
# turns every ``BivyError`` into one line on stderr with a non-zero exit: handlers just raise.
# Data goes to stdout (``--json`` where offered); progress and warnings go to stderr.

from __future__ import annotations

import argparse
import asyncio
import inspect
import logging
import sys
from collections.abc import Sequence
from typing import TextIO

from app import __version__
from app.cli import (
    agents,
    backup,
    catalog,
    login,
    prebuild,
    remote,
    render,
    sessions,
    workspaces,
)
from app.cli.base import (
    EXIT_ERROR,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    CliContext,
    Command,
    Handler,
    SubParsers,
)
from app.errors import BivyError

__all__ = [
    "COMMANDS",
    "EXIT_ERROR",
    "EXIT_INTERNAL",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "CliContext",
    "Command",
    "Handler",
    "SubParsers",
    "build_parser",
    "main",
]

log = logging.getLogger("bivy.cli")

COMMANDS: list[Command] = [
    *catalog.COMMANDS,
    *workspaces.COMMANDS,
    *login.COMMANDS,
    *remote.COMMANDS,
    *backup.COMMANDS,
    *render.COMMANDS,
    *agents.COMMANDS,
    *prebuild.COMMANDS,
    *sessions.COMMANDS,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bivy",
        description="Disposable cloud workspaces for AI coding agents. "
        "Run without arguments to open the window.",
    )
    parser.add_argument("--version", action="version", version=f"bivy {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="log details (never secrets) to stderr"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub).set_defaults(handler=command.run)
    return parser


async def _run_async(handler: Handler, args: argparse.Namespace, ctx: CliContext) -> int:
    try:
        result = handler(args, ctx)
        if inspect.isawaitable(result):
            result = await result
        return int(result)
    finally:
        await ctx.aclose()


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None,
         err: TextIO | None = None) -> int:  # fmt: skip
    """Run one command; returns the exit status (never raises, never prints a traceback)."""
    out = out or sys.stdout
    err = err or sys.stderr
    parser = build_parser()
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:  # --help, --version, usage errors
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING,
        format="bivy: %(levelname)s %(name)s: %(message)s" if args.debug else "bivy: %(message)s",
        stream=err,
    )
    if not args.debug:
        logging.getLogger("httpx").setLevel(logging.WARNING)
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(err)
        return EXIT_USAGE
    ctx = CliContext(out=out, err=err)
    try:
        return asyncio.run(_run_async(handler, args, ctx))
    except BivyError as exc:
        print(f"bivy: {exc.one_line()}", file=err, flush=True)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("bivy: interrupted", file=err, flush=True)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_ERROR
    except Exception as exc:  # a bug: one line, details only with --debug
        if args.debug:
            log.exception("internal error")
        print(
            f"bivy: internal error ({type(exc).__name__}); run with --debug for details",
            file=err,
            flush=True,
        )
        return EXIT_INTERNAL
