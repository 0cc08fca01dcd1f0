"""``bivy backup``: the agent history's backups (check, setup, now, info, rm)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from app.cli.base import (
    EXIT_ERROR,
    EXIT_OK,
    CliContext,
    Command,
    SubParsers,
    age,
    confirm,
    read_secret,
)
from app.errors import InvalidInput

# -- backup (persistence engineer, issue 6) -------------------------------------------------------


def _add_backup_parser(sub: SubParsers) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(
        "backup",
        help="check the backup storage, back up a workspace now, show or delete its backups",
        description="Backups of the agent's history (restic, encrypted, one password per "
        "workspace) in the S3-compatible storage of Settings → Backups. Keys come from the "
        "keychain, or BIVY_BACKUP_ACCESS_KEY_ID / BIVY_BACKUP_SECRET_ACCESS_KEY.",
    )
    actions = parser.add_subparsers(dest="backup_command", metavar="ACTION", required=True)
    actions.add_parser("check", help="prove the storage settings and keys work (list/write/delete)")
    setup = actions.add_parser(
        "setup",
        help="configure the storage (checked before anything is saved)",
        description="Store the backup settings and keys after a successful check. Keys are read "
        "without echo, or two lines (access key id, secret key) from stdin with --keys-stdin; "
        "without new keys the stored ones are used.",
    )
    setup.add_argument(
        "--preset",
        choices=["r2", "hetzner", "scaleway", "aws", "custom"],
        default="custom",
        help="storage provider (custom: give --endpoint)",
    )
    setup.add_argument("--region", default="", help="region (preset default when empty)")
    setup.add_argument("--account", default="", help="Cloudflare account id (R2)")
    setup.add_argument("--endpoint", default="", help="S3 endpoint URL (custom preset)")
    setup.add_argument("--bucket", required=True, help="an existing bucket")
    setup.add_argument("--prefix", default="bivy", help="key prefix (default: bivy)")
    setup.add_argument("--interval", type=int, default=15, help="minutes between backups")
    setup.add_argument(
        "--no-uncommitted", action="store_true", help="do not back up uncommitted work"
    )
    setup.add_argument("--keys-stdin", action="store_true", help="read the keys from stdin")
    now = actions.add_parser("now", help="run the workspace VM's backup now and wait for it")
    now.add_argument("name", help="workspace name")
    now.add_argument(
        "--force", action="store_true", help="back up even though the restore at start failed"
    )
    info = actions.add_parser("info", help="what the storage holds for a workspace")
    info.add_argument("name", help="workspace name")
    info.add_argument("--json", action="store_true", help="machine-readable output")
    rm = actions.add_parser("rm", help="delete a workspace AND all of its backups")
    rm.add_argument("name", help="workspace name")
    rm.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    return parser


async def _cmd_backup(args: argparse.Namespace, ctx: CliContext) -> int:
    from app.services.backup import BackupService

    backups = BackupService(ctx.settings, ctx.secrets)
    if args.backup_command == "check":
        result = await backups.check()
        print(result.message, file=ctx.out)
        return EXIT_OK
    if args.backup_command == "setup":
        return await _backup_setup(args, ctx, backups)
    if args.backup_command == "info":
        info = await backups.repository_info(args.name)
        if args.json:
            ctx.emit_json({"repository": backups.repository_url(args.name), **vars(info)})
        elif not info.exists:
            print(f"No backup of workspace {args.name} in the storage.", file=ctx.out)
        else:
            print(
                f"Workspace {args.name}: {info.snapshots} snapshots, last backup "
                f"{age(info.last_backup_at)} ago, {info.size_bytes / 1e6:.1f} MB",
                file=ctx.out,
            )
        return EXIT_OK
    if args.backup_command == "now":
        return await _backup_now(args, ctx, backups)
    if not args.yes:
        if not (sys.stdin.isatty() and sys.stdout.isatty()):
            raise InvalidInput(
                f"refusing to delete workspace {args.name!r} and its backups without confirmation",
                hint="Not running in a terminal: pass --yes to delete without asking",
            )
        question = (
            f"Delete workspace {args.name!r}, its server AND every backup of its agent history? "
            "This cannot be undone. [y/N] "
        )
        if not await asyncio.to_thread(confirm, question):
            ctx.note("Not deleted.")
            return EXIT_ERROR
    ctx.note(f"Deleting workspace {args.name} and its backups…")
    report = await backups.delete_workspace_and_backups(args.name, ctx.service)
    server = "its server and " if report.vm_deleted else ""
    print(
        f"Deleted {server}{report.objects_deleted} backup objects of workspace {args.name}.",
        file=ctx.out,
    )
    return EXIT_OK


async def _backup_setup(args: argparse.Namespace, ctx: CliContext, backups: Any) -> int:
    from app.services.backup import PRESETS, S3Credentials, check_storage
    from app.settings import BackupSettings

    preset = next(p for p in PRESETS if p.id == args.preset)
    region = args.region or preset.default_region
    endpoint = args.endpoint.strip() or preset.endpoint_for(region, args.account.strip())
    if not endpoint:
        raise InvalidInput("give the storage endpoint with --endpoint (or choose a --preset)")
    config = BackupSettings(
        enabled=True,
        endpoint=endpoint,
        bucket=args.bucket.strip(),
        region=region,
        prefix=args.prefix.strip().strip("/"),
        interval_minutes=args.interval,
        include_uncommitted=not args.no_uncommitted,
    )
    access = secret = ""
    if args.keys_stdin or sys.stdin.isatty():
        access = await asyncio.to_thread(read_secret, "Access key id: ", args.keys_stdin)
        secret = await asyncio.to_thread(read_secret, "Secret access key: ", args.keys_stdin)
    if access or secret:
        credentials = S3Credentials(access, secret)
    else:
        credentials = await backups.credentials()
    ctx.note(f"Checking {config.endpoint}/{config.bucket}…")
    result = await check_storage(config, credentials)
    if access or secret:
        await backups.save_credentials(access, secret)
    ctx.settings.backup = config
    ctx.save_settings()
    print(f"{result.message}. Backups are on for new workspaces.", file=ctx.out)
    return EXIT_OK


async def _backup_now(args: argparse.Namespace, ctx: CliContext, backups: Any) -> int:
    from app.services.registry import Registry
    from app.services.status import StatusService
    from app.services.tunnels import SSHTarget, TunnelService

    record = await Registry().arequire(args.name)
    tunnels = TunnelService(ctx.secrets)
    try:
        tunnel = await tunnels.open(SSHTarget.from_record(record))
        ctx.note(f"Backing up workspace {args.name}…")
        await backups.backup_now(tunnel, force=args.force)
        snapshot = await StatusService(tunnels).read(tunnel)
    finally:
        await tunnels.close_all()
    when = snapshot.status.last_backup_at if snapshot.status else None
    print(
        f"Workspace {args.name} backed up"
        + (f" at {when.isoformat(timespec='seconds')}." if when else "."),
        file=ctx.out,
    )
    return EXIT_OK


COMMANDS = [Command("backup", _add_backup_parser, _cmd_backup)]
