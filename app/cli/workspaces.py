"""``bivy ls``, ``bivy create`` and ``bivy rm``: the workspaces across every account."""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from app.cli.base import (
    EXIT_ERROR,
    EXIT_OK,
    CliContext,
    Command,
    SubParsers,
    age,
    confirm,
    table,
)
from app.domain import Workspace, WorkspaceSpec, utcnow
from app.errors import InvalidInput
from app.settings import Settings

# -- ls -----------------------------------------------------------------------------------------


def _add_ls_parser(sub: SubParsers) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser("ls", help="list workspaces")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def _workspace_json(ws: Workspace, unreachable: str = "") -> dict[str, Any]:
    server = ws.server
    report = ws.status
    return {
        "name": ws.name,
        "account": ws.account,
        "provider": ws.provider,
        "status": server.status.value if server else None,
        # the VM's bootstrap phase, read over SSH (None when it could not be read)
        "phase": report.phase.value if report else None,
        "detail": report.detail if report else unreachable,
        "error": report.error if report else None,
        "host": server.ipv4 if server else None,
        "ssh_port": server.ssh_port if server else None,
        "server_id": server.id if server else None,
        "region": server.region if server else None,
        "size": server.size if server else None,
        "ipv4": server.ipv4 if server else None,
        "created_at": server.created_at if server else None,
        "repo_url": ws.repo_url,
        "idle_minutes": ws.idle_minutes,
        "max_hours": ws.max_hours,
        "lifetime_deadline": ws.lifetime_deadline,
        # False: Bivy's labels but no record here (no pinned host key): delete is all it allows
        "recorded": not ws.unrecorded,
    }


def _cost_cells(ws: Workspace, now: datetime) -> tuple[str, str]:
    """Price per hour and cost so far (the provider's billing rule), "-" when unknown."""
    from app.services.costs import default_rule_for, running_cost

    price = ws.server.price if ws.server else None
    if ws.server is None or price is None:
        return "-", "-"
    cost = running_cost(ws.server, default_rule_for(ws.server.provider), now)
    so_far = f"{cost:.2f} {price.currency}" if cost is not None else "-"
    return f"{price.hourly:.4f} {price.currency}", so_far


async def _read_phases(
    ctx: CliContext, workspaces: list[Workspace], limit: float = 15.0
) -> dict[str, str]:
    """Fill ``ws.status`` from each running VM's status.json, concurrently (pinned host keys).

    Returns workspace name → why its status could not be read.
    """
    from app.domain import ServerStatus
    from app.errors import BivyError
    from app.services.prebuilds import mark_stale_from_status
    from app.services.registry import Registry
    from app.services.status import StatusService
    from app.services.tunnels import SSHTarget, TunnelService

    records = {r.name: r for r in await Registry().aall()}
    tunnels = TunnelService(ctx.secrets, connect_timeout=limit / 2)
    status = StatusService(tunnels)
    why: dict[str, str] = {}

    async def read(ws: Workspace) -> None:
        record = records.get(ws.name)
        if record is None or record.account != ws.account:
            why[ws.name] = "not created by this installation of Bivy"
            return
        try:
            tunnel = await asyncio.wait_for(tunnels.open(SSHTarget.from_record(record)), limit)
            ws.status = (await status.read(tunnel)).status
            # A VM from a prebuild that had to rebuild its devcontainer: that prebuild is stale.
            await mark_stale_from_status(record, ws.status)
        except (BivyError, TimeoutError) as exc:
            why[ws.name] = exc.one_line() if isinstance(exc, BivyError) else "no answer"

    running = [w for w in workspaces if w.server and w.server.status == ServerStatus.RUNNING]
    try:
        await asyncio.gather(*(read(ws) for ws in running))
    finally:
        await tunnels.close_all()
    return why


async def _cmd_ls(args: argparse.Namespace, ctx: CliContext) -> int:
    service = ctx.service
    if not service.accounts():
        if args.json:
            ctx.emit_json([])
        ctx.note(
            "No accounts are configured: run `bivy login hetzner` (or set BIVY_HETZNER_TOKEN)."
        )
        return EXIT_OK
    listing = await service.list_workspaces()
    for account_id, error in sorted(listing.errors.items()):
        ctx.note(f"bivy: account {account_id}: {error.one_line()}")
    if not listing.workspaces and all(a.provider == "local" for a in service.accounts()):
        ctx.note(
            "No cloud account is configured: run `bivy login hetzner` (or set "
            "BIVY_HETZNER_TOKEN), or create a VM on this computer with `--provider local`."
        )
    if args.json:
        unreachable = await _read_phases(ctx, listing.workspaces)
        ctx.emit_json(
            [_workspace_json(ws, unreachable.get(ws.name, "")) for ws in listing.workspaces]
        )
    elif listing.workspaces:
        table(
            [
                [
                    ws.name,
                    ws.account,
                    ws.server.status.value if ws.server else "-",
                    (ws.server.region or "-") if ws.server else "-",
                    (ws.server.size or "-") if ws.server else "-",
                    (ws.server.ipv4 or "-") if ws.server else "-",
                    age(ws.server.created_at if ws.server else None),
                    *_cost_cells(ws, utcnow()),
                    "(unrecorded: delete only)" if ws.unrecorded else ws.repo_url or "-",
                ]
                for ws in listing.workspaces
            ],
            [
                *("NAME", "ACCOUNT", "STATUS", "REGION", "SIZE", "IPV4", "AGE"),
                *("PRICE/H", "COST", "REPOSITORY"),
            ],
            ctx.out,
        )
    elif not listing.errors:
        ctx.note("No workspaces. Create one with `bivy create NAME --repo URL`.")
    for ws in listing.workspaces:
        if ws.unrecorded:
            server = ws.server.id if ws.server else "?"
            ctx.note(
                f"bivy: {ws.name} (server {server} in account {ws.account}) carries Bivy's "
                "labels but this installation has no record of it, so it cannot be opened; "
                f"delete it with `bivy rm {ws.name}`"
            )
    return EXIT_ERROR if listing.errors else EXIT_OK


# -- create -------------------------------------------------------------------------------------


def _add_create_parser(sub: SubParsers) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(
        "create", help="create a workspace and wait until its server runs"
    )
    parser.add_argument("name", help="workspace name (lower-case letters, digits, '-')")
    parser.add_argument(
        "--repo",
        required=True,
        metavar="URL|PATH",
        help="git repository URL to clone, or the folder of a git checkout on this computer "
        "(sent to the VM as a git bundle with its local branches, tags and unpushed commits)",
    )
    parser.add_argument(
        "--include-uncommitted",
        action="store_true",
        help="with a local checkout: also send its uncommitted changes and untracked files "
        "(they stay uncommitted on the VM)",
    )
    parser.add_argument("--provider", default="hetzner", help="provider kind (default hetzner)")
    parser.add_argument(
        "--agent", default="claude", help="the coding agent (see `bivy agents`; default claude)"
    )
    parser.add_argument("--account", help="account id (default: the provider's default)")
    parser.add_argument("--size", help="server type (see `bivy sizes`)")
    parser.add_argument("--region", help="region/location")
    parser.add_argument("--branch", help="branch to check out")
    parser.add_argument("--idle-minutes", type=int, help="delete after this long idle")
    parser.add_argument("--max-hours", type=int, help="delete after this long, whatever happens")
    parser.add_argument("--json", action="store_true", help="print the workspace as JSON")
    parser.add_argument(
        "--no-prebuild",
        action="store_true",
        help="start from the plain base image even when a prebuild of the repository matches",
    )
    return parser


def _spec_from_args(args: argparse.Namespace, settings: Settings) -> WorkspaceSpec:
    from pydantic import ValidationError

    from app.agents import DEFAULT_AGENT, get_agent

    values: dict[str, Any] = {
        "name": args.name,
        "repo_url": args.repo,
        "provider": args.provider,
        "account": args.account or "",
        "region": args.region,
        "size": args.size,
        "branch": args.branch,
        "idle_minutes": (
            args.idle_minutes if args.idle_minutes is not None else settings.defaults.idle_minutes
        ),
        "max_hours": args.max_hours if args.max_hours is not None else settings.defaults.max_hours,
        "agent_credential": settings.defaults.agent_credential,
        "include_uncommitted": args.include_uncommitted,
        "agent": get_agent(getattr(args, "agent", None) or DEFAULT_AGENT).name,
    }
    try:
        return WorkspaceSpec.model_validate(values)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "input"
        flag = {"name": "NAME", "repo_url": "--repo", "idle_minutes": "--idle-minutes",
                "max_hours": "--max-hours"}.get(where, f"--{where.replace('_', '-')}")  # fmt: skip
        message = str(first["msg"]).removeprefix("Value error, ")
        raise InvalidInput(f"{flag}: {message}") from None


async def _local_repo(args: argparse.Namespace, ctx: CliContext) -> None:
    """``--repo PATH``: check the checkout, make the path absolute, say what stays behind."""
    from app.services.repo_bundle import inspect_local_repo, looks_like_url

    if looks_like_url(args.repo):
        return
    try:
        repo = await asyncio.to_thread(inspect_local_repo, Path.cwd() / args.repo)
    except InvalidInput as exc:
        raise InvalidInput(f"--repo: {exc.message}", hint=exc.hint) from None
    args.repo = str(repo.path)
    if repo.dirty and not args.include_uncommitted:
        ctx.note(
            f"{repo.path} has uncommitted changes; only commits are sent "
            "(add --include-uncommitted to send them too)"
        )


async def _cmd_create(args: argparse.Namespace, ctx: CliContext) -> int:
    await _local_repo(args, ctx)
    spec = _spec_from_args(args, ctx.settings)
    last: list[Any] = ["", 0.0]

    def on_progress(progress: Any) -> None:
        # A new step, or a long upload moving on (about every fifth of it), gets a line.
        moved = progress.step == "repository" and progress.fraction - last[1] >= 0.04
        if progress.detail != last[0] or moved:
            last[:] = [progress.detail, progress.fraction]
            ctx.note(f"[{round(progress.fraction * 100):3d}%] {progress.detail}")

    workspace: Workspace = await ctx.service.create(
        spec, on_progress=on_progress, use_prebuild=not args.no_prebuild
    )
    if args.json:
        ctx.emit_json(_workspace_json(workspace))
    else:
        server = workspace.server
        where = f" at {server.ipv4}" if server and server.ipv4 else ""
        print(f"Workspace {workspace.name} is running{where}.", file=ctx.out)
    return EXIT_OK


# -- rm -----------------------------------------------------------------------------------------


def _add_rm_parser(sub: SubParsers) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser("rm", help="delete a workspace and its server")
    parser.add_argument("name", help="workspace name")
    parser.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    parser.add_argument(
        "--no-wait", action="store_true", help="return once the provider accepted the deletion"
    )
    return parser


async def _cmd_rm(args: argparse.Namespace, ctx: CliContext) -> int:
    if not args.yes:
        if not (sys.stdin.isatty() and sys.stdout.isatty()):
            raise InvalidInput(
                f"refusing to delete workspace {args.name!r} without confirmation",
                hint="Not running in a terminal: pass --yes to delete without asking",
            )
        question = f"Delete workspace {args.name!r} and its server? Unsaved work is lost. [y/N] "
        if not await asyncio.to_thread(confirm, question):
            ctx.note("Not deleted.")
            return EXIT_ERROR
    ctx.note(f"Deleting workspace {args.name}…")
    await ctx.service.delete(args.name, wait=not args.no_wait)
    print(f"Workspace {args.name} deleted.", file=ctx.out)
    return EXIT_OK


COMMANDS = [
    Command("ls", _add_ls_parser, _cmd_ls),
    Command("create", _add_create_parser, _cmd_create),
    Command("rm", _add_rm_parser, _cmd_rm),
]
