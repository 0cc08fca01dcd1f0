"""``bivy prebuild``: make a prebuilt image of a repository's workspace (issue 14), list the
prebuilds with their size and monthly cost, delete one.

    bivy prebuild NAME                  prebuild the repository of workspace NAME
    bivy prebuild --repo URL|PATH ...   prebuild a repository
    bivy prebuild ls [--json]
    bivy prebuild rm ID [-y]

A new workspace of the same repository (and branch, agent, account, region) then starts from the
newest prebuild unless ``bivy create --no-prebuild``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.cli.base import EXIT_ERROR, EXIT_OK, CliContext, Command, SubParsers, age, confirm, table
from app.errors import InvalidInput

if TYPE_CHECKING:
    from app.services.prebuilds import PrebuildRecord, PrebuildService

ACTIONS = ("ls", "rm")


def _add_prebuild_parser(sub: SubParsers) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(
        "prebuild",
        help="prebuild a repository's workspace image (or: prebuild ls, prebuild rm ID)",
        description="Boot a builder VM that installs the tools, clones the repository, builds "
        "its devcontainer and installs the agent (no secrets on board), snapshot it as an "
        "image at the provider and delete the builder. New workspaces of that repository start "
        "from the image. `bivy prebuild ls` lists prebuilds with size and monthly cost; `bivy "
        "prebuild rm ID` deletes one.",
    )
    parser.add_argument(
        "target",
        nargs="?",
        metavar="NAME|ls|rm",
        help="a workspace whose repository to prebuild, or `ls`, or `rm`",
    )
    parser.add_argument("id", nargs="?", help="with rm: the prebuild's image id")
    parser.add_argument("--repo", metavar="URL|PATH", help="the repository (URL or checkout)")
    parser.add_argument("--provider", help="provider kind (default: the workspace's, or hetzner)")
    parser.add_argument("--account", help="account id")
    parser.add_argument("--region", help="region/location")
    parser.add_argument("--size", help="server type of the builder")
    parser.add_argument("--branch", help="branch to build (default: the repository's default)")
    parser.add_argument("--agent", help="the coding agent to install (default claude)")
    parser.add_argument(
        "--include-uncommitted",
        action="store_true",
        help="with a local checkout: build its uncommitted changes too",
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("-y", "--yes", action="store_true", help="rm: do not ask")
    return parser


def _service(ctx: CliContext) -> PrebuildService:
    from app.services.prebuilds import PrebuildService

    return PrebuildService(ctx.service)


async def _note_costs(
    seen: list[PrebuildRecord] | None = None, *, deleted: list[PrebuildRecord] | None = None
) -> None:
    """Snapshot storage in the window's cost ledger (app/services/costs.py, best effort)."""
    from app.services.costs import note_prebuilds

    await note_prebuilds(seen or [], deleted=deleted or [])


def record_json(record: PrebuildRecord) -> dict[str, Any]:
    price = record.monthly_price
    return {
        "id": record.id,
        "account": record.account,
        "provider": record.provider,
        "region": record.region,
        "repo": record.repo,
        "branch": record.branch,
        "agent": record.agent,
        "repo_key": record.repo_key,
        "config_hash": record.config_hash,
        "commit": record.commit,
        "size_gb": record.size_gb,
        "monthly_price": str(price.monthly) if price is not None else None,
        "currency": price.currency if price is not None else None,
        "created_at": record.created_at,
        "stale": record.stale,
        "status": record.status.value,
        "recorded": not record.unrecorded,
        "build_timings": record.build_timings,
        "build_steps": record.build_steps,
    }


async def _cmd_prebuild(args: argparse.Namespace, ctx: CliContext) -> int:
    if args.target == "ls" and not args.repo:
        return await _ls(args, ctx)
    if args.target == "rm" and not args.repo:
        return await _rm(args, ctx)
    return await _build(args, ctx)


async def _build(args: argparse.Namespace, ctx: CliContext) -> int:
    from app.agents import DEFAULT_AGENT, get_agent
    from app.services.registry import Registry

    if args.id:
        raise InvalidInput(f"unexpected argument {args.id!r}")
    repo, branch, provider, account = args.repo, args.branch, args.provider, args.account
    region, size = args.region, args.size
    if args.target:
        record = await Registry().aget(args.target)
        if record is None:
            raise InvalidInput(
                f"no workspace named {args.target!r} was created by this installation",
                hint="Name the repository instead: `bivy prebuild --repo URL`",
            )
        repo = repo or record.repo_url
        branch = branch if branch is not None else record.branch
        provider = provider or record.provider
        account = account or record.account
        region = region or record.region or None
        size = size or record.size or None
    if not repo:
        raise InvalidInput("give a workspace NAME or --repo URL|PATH")
    repo = await _local_path(repo)
    agent = get_agent(args.agent or DEFAULT_AGENT).name
    last = [""]

    def on_progress(progress: Any) -> None:
        if progress.detail != last[0]:
            last[0] = progress.detail
            ctx.note(f"[{round(progress.fraction * 100):3d}%] {progress.detail}")

    result = await _service(ctx).build(
        repo,
        account=account,
        provider=provider or (None if account else "hetzner"),
        region=region,
        size=size,
        branch=branch,
        agent=agent,
        include_uncommitted=args.include_uncommitted,
        progress=on_progress,
    )
    await _note_costs([result])
    if args.json:
        ctx.emit_json(record_json(result))
    else:
        size_text = f", {result.size_gb:g} GB" if result.size_gb else ""
        print(f"Prebuild {result.id} of {result.repo} is ready{size_text}.", file=ctx.out)
    return EXIT_OK


async def _local_path(repo: str) -> str:
    from app.services.repo_bundle import inspect_local_repo, looks_like_url

    if looks_like_url(repo):
        return repo
    try:
        checked = await asyncio.to_thread(inspect_local_repo, Path.cwd() / repo)
    except InvalidInput as exc:
        raise InvalidInput(f"--repo: {exc.message}", hint=exc.hint) from None
    return str(checked.path)


async def _ls(args: argparse.Namespace, ctx: CliContext) -> int:
    service = _service(ctx)
    records = await service.list(refresh=True)
    await _note_costs(records)
    for account_id, error in sorted(service.errors.items()):
        ctx.note(f"bivy: account {account_id}: {error.one_line()}")
    if args.json:
        ctx.emit_json([record_json(r) for r in records])
    elif records:
        rows = []
        for r in records:
            price = r.monthly_price
            rows.append(
                [
                    r.id,
                    r.account,
                    r.region or "-",
                    f"{r.size_gb:g}" if r.size_gb is not None else "-",
                    f"{price.monthly:.2f} {price.currency}" if price is not None else "-",
                    age(r.created_at),
                    "stale" if r.stale else r.status.value,
                    r.agent,
                    (r.repo or "(unrecorded)") + (f" @{r.branch}" if r.branch else ""),
                ]
            )
        header = ["ID", "ACCOUNT", "REGION", "SIZE_GB", "PER_MONTH", "AGE", "STATE", "AGENT",
                  "REPOSITORY"]  # fmt: skip
        table(rows, header, ctx.out)
    elif not service.errors:
        ctx.note("No prebuilds. Make one with `bivy prebuild --repo URL` or `bivy prebuild NAME`.")
    return EXIT_ERROR if service.errors else EXIT_OK


async def _rm(args: argparse.Namespace, ctx: CliContext) -> int:
    if not args.id:
        raise InvalidInput("give the prebuild's id: `bivy prebuild rm ID` (see `bivy prebuild ls`)")
    if not args.yes:
        if not (sys.stdin.isatty() and sys.stdout.isatty()):
            raise InvalidInput(
                f"refusing to delete prebuild {args.id!r} without confirmation",
                hint="Not running in a terminal: pass --yes to delete without asking",
            )
        if not await asyncio.to_thread(confirm, f"Delete prebuild {args.id!r}? [y/N] "):
            ctx.note("Not deleted.")
            return EXIT_ERROR
    record = await _service(ctx).delete(args.id, account=args.account)
    await _note_costs(deleted=[record])
    print(f"Prebuild {record.id} deleted.", file=ctx.out)
    return EXIT_OK


COMMANDS = [Command("prebuild", _add_prebuild_parser, _cmd_prebuild)]
