"""``bivy session``: several agent sessions in one workspace (issue 15), each on its own git
worktree and branch, in its own terminal, with its own agent state.

    bivy session new NAME [SESSION] --agent A [--branch B] [--base REF] [--prompt TEXT]
    bivy session ls NAME [--json]
    bivy session rm NAME SESSION [-y] [--force]

``diff`` and ``push`` (review before merge) are added to the group by app/cli/review.py.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
from pathlib import Path
from typing import Any

from app.agents import AGENTS, DEFAULT_AGENT
from app.cli.base import EXIT_ERROR, EXIT_OK, CliContext, Command, SubParsers, confirm, table
from app.errors import InvalidInput

__all__ = ["COMMANDS"]


def _add_session_parser(sub: SubParsers) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(
        "session",
        help="run several agents side by side in a workspace, each on its own branch",
        description="A workspace holds several agent sessions: `main` (the repository folder, "
        "the workspace's first agent) and any you start, each on its own git worktree and "
        "branch (bivy/SESSION unless you name one), in its own terminal (the window's tab, or "
        "the web terminal's ?arg=SESSION). The workspace is idle only when every session is.",
    )
    verbs = parser.add_subparsers(dest="session_command", metavar="VERB", required=True)
    new = verbs.add_parser(
        "new",
        help="start a session: a new worktree and branch with an agent in its own terminal",
        description="Start SESSION in workspace NAME: a git worktree on a new branch (bivy/"
        "SESSION, or --branch) from main's HEAD (or --base), and the agent in its own "
        "terminal, given PROMPT as its first prompt when there is one. An agent other than "
        "the workspace's gets its credentials from this computer (its environment variable, "
        "else the keychain: see `bivy agents`).",
    )
    new.add_argument("name", help="workspace name")
    new.add_argument(
        "session",
        nargs="?",
        help="session name (1-30 of a-z, 0-9, -; default: the agent's name, then AGENT-2…)",
    )
    new.add_argument(
        "--agent",
        default=DEFAULT_AGENT,
        choices=sorted(AGENTS),
        help=f"the coding agent (default {DEFAULT_AGENT})",
    )
    new.add_argument("--branch", metavar="B", help="branch name (default bivy/SESSION)")
    new.add_argument("--base", metavar="REF", help="start from this commit or branch")
    prompt = new.add_mutually_exclusive_group()
    prompt.add_argument("--prompt", metavar="TEXT", help="the agent's first prompt")
    prompt.add_argument(
        "--prompt-file", metavar="F", type=Path, help="read the first prompt from F (- : stdin)"
    )
    new.add_argument("--json", action="store_true", help="print the new session as JSON")
    ls = verbs.add_parser("ls", help="list a workspace's sessions with their agents' states")
    ls.add_argument("name", help="workspace name")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    rm = verbs.add_parser(
        "rm",
        help="remove a session (its terminal, worktree, state, and its bivy/ branch)",
        description="Remove SESSION of workspace NAME. The VM refuses when the session has "
        "uncommitted changes or commits that are not pushed, unless --force.",
    )
    rm.add_argument("name", help="workspace name")
    rm.add_argument("session", help="session name")
    rm.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    rm.add_argument(
        "--force", action="store_true", help="remove even with uncommitted or unpushed work"
    )
    _add_review_verbs(verbs)
    return parser


def _add_review_verbs(verbs: SubParsers) -> None:
    """``diff`` and ``push`` from app/cli/review.py (H7), when this build has them."""
    try:
        review = importlib.import_module("app.cli.review")
    except ImportError:
        return
    review.add_review_verbs(verbs)


def _service(ctx: CliContext) -> Any:
    from app.services.sessions import SessionService

    return SessionService(ctx.settings, ctx.secrets)


def _rows(reports: list[Any]) -> list[dict[str, Any]]:
    return [r.model_dump(mode="json") for r in reports]


def _state(report: Any) -> str:
    state: str = "failed" if report.failed else report.state.value
    return state


async def _cmd_session(args: argparse.Namespace, ctx: CliContext) -> int:
    verb = args.session_command  # diff and push have their own handler (app/cli/review.py)
    service = _service(ctx)
    try:
        if verb == "ls":
            reports = await service.ls(args.name)
            if args.json:
                ctx.emit_json(_rows(reports))
                return EXIT_OK
            table(
                [[r.name, r.agent, _state(r), r.branch, r.worktree] for r in reports],
                ["SESSION", "AGENT", "STATE", "BRANCH", "WORKTREE"],
                ctx.out,
            )
            return EXIT_OK
        if verb == "new":
            prompt = args.prompt
            if args.prompt_file is not None:
                prompt = await asyncio.to_thread(_read_prompt, args.prompt_file)
            ctx.note(f"Starting a {args.agent} session in {args.name}…")
            report = await service.new(
                args.name,
                args.session,
                agent=args.agent,
                branch=args.branch,
                base=args.base,
                prompt=prompt,
            )
            if args.json:
                ctx.emit_json(report.model_dump(mode="json"))
            else:
                print(
                    f"Session {report.name}: {report.agent} on {report.branch} in "
                    f"{report.worktree}",
                    file=ctx.out,
                )
            return EXIT_OK
        if not args.yes:
            if not (sys.stdin.isatty() and sys.stdout.isatty()):
                raise InvalidInput(
                    f"refusing to remove session {args.session!r} without confirmation",
                    hint="Not running in a terminal: pass --yes to remove without asking",
                )
            question = (
                f"Remove session {args.session!r} of workspace {args.name!r} (its terminal, "
                "worktree and agent state)? [y/N] "
            )
            if not await asyncio.to_thread(confirm, question):
                ctx.note("Not removed.")
                return EXIT_ERROR
        await service.rm(args.name, args.session, force=args.force)
        print(f"Removed session {args.session} of workspace {args.name}.", file=ctx.out)
        return EXIT_OK
    finally:
        await service.aclose()


def _read_prompt(path: Path) -> str:
    if str(path) == "-":
        return sys.stdin.read()
    return path.read_text(encoding="utf-8")


COMMANDS: list[Command] = [
    Command("session", _add_session_parser, _cmd_session),
]
