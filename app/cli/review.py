"""``bivy session diff`` and ``bivy session push``: review a session's work before merging it.

Two verbs of the ``bivy session`` group (the group itself, with ``new``/``ls``/``rm``, is in
``app/cli/sessions.py``, which adds these with :func:`add_review_verbs`). Both use
:class:`app.services.review.ReviewService` over the workspace's SSH connection (pinned host key).

- ``bivy session diff NAME SESSION [--json]``: the commits since the session's base and the diff
  stat (+/- per file), committed and uncommitted apart.
- ``bivy session push NAME SESSION [--commit-message M] [--json]``: a repository cloned by URL
  gets the session's branch pushed with the git token from the keychain (used once on the VM,
  never stored there); a repository from this computer gets it back as branch
  ``bivy/SESSION`` in the checkout (the checked-out branch and files are not touched).
  Uncommitted work is refused unless ``--commit-message`` says to commit it first. The token:
  ``$BIVY_GIT_TOKEN``, else the keychain's; with neither, a terminal asks for one (not stored).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any

from app.cli.base import EXIT_OK, CliContext, Command, SubParsers, read_secret

__all__ = ["SESSION_VERBS", "add_review_verbs", "diff_json", "push_json"]


def _add_diff_parser(sub: SubParsers) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(
        "diff",
        help="what a session changed against its base (git diff --stat), before you merge it",
        description="Show the commits of SESSION since its base and the files they change with "
        "+/- line counts, then the uncommitted changes in its worktree (untracked files "
        "included) apart. Runs on the workspace's VM over SSH; nothing there is changed.",
    )
    parser.add_argument("name", help="workspace name")
    parser.add_argument("session", help="session name (main: the repository folder itself)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    return parser


def _add_push_parser(sub: SubParsers) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(
        "push",
        help="get a session's branch out of the VM: push it, or bring it home to your checkout",
        description="A repository cloned by URL: push SESSION's branch (bivy/SESSION; main: "
        "its own branch) to that https URL with the git token from the keychain, used once on "
        "the VM and never stored there. A repository from a folder on this computer: fetch "
        "the branch into that checkout as bivy/SESSION (your checked-out branch, index and "
        "files are not touched). Uncommitted changes in the session are refused unless "
        "--commit-message commits them first (all of them, untracked files too).",
    )
    parser.add_argument("name", help="workspace name")
    parser.add_argument("session", help="session name")
    parser.add_argument(
        "--commit-message",
        "-m",
        metavar="M",
        help="commit the session's uncommitted changes with this message first",
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    return parser


def diff_json(diff: Any) -> dict[str, Any]:
    """A ``SessionDiff`` as JSON-ready data (totals included)."""
    data: dict[str, Any] = dataclasses.asdict(diff)
    for side in ("committed", "uncommitted"):
        stat = getattr(diff, side)
        data[side]["insertions"] = stat.insertions
        data[side]["deletions"] = stat.deletions
        for entry, change in zip(data[side]["files"], stat.files, strict=True):
            entry["binary"] = change.binary
    return data


def push_json(result: Any) -> dict[str, Any]:
    """A ``PushResult`` as JSON-ready data (with its sentence)."""
    data: dict[str, Any] = dataclasses.asdict(result)
    data["target"] = str(result.target)
    data["summary"] = result.summary()
    return data


async def _cmd_diff(args: argparse.Namespace, ctx: CliContext) -> int:
    from app.services.review import ReviewService

    service = ReviewService(ctx.secrets)
    try:
        diff = await service.diff(args.name, args.session)
    finally:
        await service.aclose()
    if args.json:
        ctx.emit_json(diff_json(diff))
    else:
        print(diff.text(), file=ctx.out, flush=True)
    return EXIT_OK


async def _cmd_push(args: argparse.Namespace, ctx: CliContext) -> int:
    from app.services.review import MissingGitToken, ReviewService

    shown: set[str] = set()

    def progress(detail: str, fraction: float | None) -> None:
        if detail not in shown:  # one line per step (the download reports many fractions)
            shown.add(detail)
            ctx.note(f"{detail}…")

    service = ReviewService(ctx.secrets)
    try:
        try:
            result = await service.push(
                args.name, args.session, commit_message=args.commit_message, progress=progress
            )
        except MissingGitToken:
            if not sys.stdin.isatty():
                raise
            # Asked for once, used for this push only (the window can keep it in the keychain).
            token = read_secret("Git token with write access (not stored): ", False)
            if not token:
                raise
            result = await service.push(
                args.name,
                args.session,
                commit_message=args.commit_message,
                progress=progress,
                token=token,
            )
    finally:
        await service.aclose()
    if args.json:
        ctx.emit_json(push_json(result))
    else:
        print(result.summary(), file=ctx.out, flush=True)
    return EXIT_OK


#: The verbs this module adds under ``bivy session``.
SESSION_VERBS = [
    Command("diff", _add_diff_parser, _cmd_diff),
    Command("push", _add_push_parser, _cmd_push),
]


def add_review_verbs(session_sub: SubParsers) -> None:
    """Add ``diff`` and ``push`` to the ``bivy session`` group's subparsers."""
    for command in SESSION_VERBS:
        command.add_parser(session_sub).set_defaults(handler=command.run)
