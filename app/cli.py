"""The ``bivy`` command line: headless commands over the same services as the window."""

# Adding a command (other engineers: keep it additive):
#   1. write ``_add_<cmd>_parser(sub)`` that calls ``sub.add_parser("<cmd>", help=...)`` and adds
#      its arguments, and ``_cmd_<cmd>(args, ctx) -> int`` (plain or ``async def``);
#   2. add one ``Command("<cmd>", _add_<cmd>_parser, _cmd_<cmd>)`` row to ``COMMANDS``.
# ``main`` parses, runs the handler (``asyncio.run`` for async ones), closes the services, and
# turns every ``BivyError`` into one line on stderr with a non-zero exit: handlers just raise.
# Data goes to stdout (``--json`` where offered); progress and warnings go to stderr.

from __future__ import annotations

import argparse
import asyncio
import getpass
import inspect
import json
import logging
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, TextIO

from app import __version__
from app.domain import Size, Workspace, WorkspaceSpec, utcnow
from app.errors import BivyError, InvalidInput
from app.settings import SecretStore, Settings, load_settings, save_settings

log = logging.getLogger("bivy.cli")

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 70
EXIT_INTERRUPTED = 130

SubParsers = Any  # argparse's _SubParsersAction is private; this is what add_parser is called on


@dataclass
class CliContext:
    """What handlers share: settings, keychain and the workspace service, made on first use.

    Attributes:
        out: where data goes (stdout).
        err: where progress, warnings and errors go (stderr).
    """

    out: TextIO
    err: TextIO
    _settings: Settings | None = None
    _secrets: SecretStore | None = None
    _service: Any = None
    _closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings()
        return self._settings

    @property
    def secrets(self) -> SecretStore:
        if self._secrets is None:
            self._secrets = SecretStore()
        return self._secrets

    def save_settings(self) -> None:
        save_settings(self.settings)

    @property
    def service(self) -> Any:
        """The ``WorkspaceService`` (typed ``Any`` so this module imports services lazily)."""
        if self._service is None:
            from app.services.workspaces import WorkspaceService

            self._service = WorkspaceService(self.settings, self.secrets)
            self._closers.append(self._service.aclose)
        return self._service

    async def aclose(self) -> None:
        closers, self._closers = self._closers, []
        for close in closers:
            await close()

    def note(self, text: str) -> None:
        """One line on stderr."""
        print(text, file=self.err, flush=True)

    def emit_json(self, value: Any) -> None:
        json.dump(value, self.out, indent=2, default=_json_default)
        self.out.write("\n")


Handler = Callable[[argparse.Namespace, CliContext], "int | Awaitable[int]"]


@dataclass(frozen=True)
class Command:
    """One subcommand: how to declare its arguments and how to run it."""

    name: str
    add_parser: Callable[[SubParsers], argparse.ArgumentParser]
    run: Handler


def _json_default(value: object) -> object:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot encode {type(value).__name__}")


def _table(rows: Sequence[Sequence[str]], header: Sequence[str], out: TextIO) -> None:
    """Columns padded to their widest cell; numbers (cells starting with a digit) right-aligned."""
    widths = [len(h) for h in header]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    right = [bool(rows) and all(r[i][:1].isdigit() for r in rows) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        parts = [
            c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right, strict=True)
        ]
        return "  ".join(parts).rstrip()

    print(line(header), file=out)
    for row in rows:
        print(line(row), file=out)


def _gb(value: float) -> str:
    return f"{value:g} GB"


def _age(moment: datetime | None) -> str:
    if moment is None:
        return "-"
    seconds = max(0, int((utcnow() - moment).total_seconds()))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600}h"


# -- providers ----------------------------------------------------------------------------------


def _add_providers_parser(sub: SubParsers) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(
        "providers", help="list the cloud providers and their accounts"
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def _cmd_providers(args: argparse.Namespace, ctx: CliContext) -> int:
    from app.providers.registry import PROVIDERS
    from app.services.accounts import effective_accounts

    accounts = effective_accounts(ctx.settings)
    rows: list[dict[str, Any]] = []
    for kind, cls in PROVIDERS.items():
        mine = [a.id for a in accounts if a.provider == kind]
        rows.append(
            {
                "kind": kind,
                "name": cls.display_name,
                "accounts": mine,
                "default_region": cls.default_region,
                "default_size": cls.default_size,
            }
        )
    if args.json:
        ctx.emit_json(rows)
        return EXIT_OK
    _table(
        [
            [r["kind"], r["name"], ", ".join(r["accounts"]) or f"- (bivy login {r['kind']})"]
            for r in rows
        ],
        ["PROVIDER", "NAME", "ACCOUNTS"],
        ctx.out,
    )
    return EXIT_OK


# -- sizes --------------------------------------------------------------------------------------


def _add_sizes_parser(sub: SubParsers) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser("sizes", help="server types with live prices")
    parser.add_argument("provider", help="provider kind, e.g. hetzner")
    parser.add_argument("--region", help="only types available there (prices for it)")
    parser.add_argument("--account", help="account id (default: the provider's default)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


async def _cmd_sizes(args: argparse.Namespace, ctx: CliContext) -> int:
    service = ctx.service
    account = service.account(args.account, provider=args.provider)
    provider = await service.provider(account)
    region = args.region or (
        ctx.settings.defaults.region if ctx.settings.defaults.account in ("", account.id) else ""
    )
    region = region or type(provider).default_region
    sizes: list[Size] = await provider.sizes(args.region)
    rows = []
    for size in sorted(sizes, key=_size_sort_key(region)):
        price = size.price_in(region) if region else None
        if price is None and not args.region and size.prices:
            # Not offered in the default region: show its cheapest region instead.
            region_id, price = min(size.prices.items(), key=lambda kv: kv[1].hourly)
        else:
            region_id = region
        rows.append((size, region_id, price))
    if args.json:
        ctx.emit_json(
            [
                {
                    "name": s.name,
                    "description": s.description,
                    "cores": s.cores,
                    "memory_gb": s.memory_gb,
                    "disk_gb": s.disk_gb,
                    "cpu_type": s.cpu_type,
                    "architecture": s.architecture,
                    "deprecated": s.deprecated,
                    "region": r if p else None,
                    "currency": p.currency if p else None,
                    "price_hourly": p.hourly if p else None,
                    "price_monthly": p.monthly if p else None,
                    "includes_vat": p.includes_vat if p else None,
                    "prices": {
                        k: {"hourly": v.hourly, "monthly": v.monthly, "currency": v.currency}
                        for k, v in s.prices.items()
                    },
                }
                for s, r, p in rows
            ]
        )
        return EXIT_OK
    if not rows:
        ctx.note(f"No server types are available{' in ' + args.region if args.region else ''}.")
        return EXIT_OK
    currency = next((p.currency for _, _, p in rows if p), "")
    vat = next((p.includes_vat for _, _, p in rows if p), False)
    _table(
        [
            [
                s.name,
                str(s.cores),
                _gb(s.memory_gb),
                f"{s.disk_gb} GB",
                s.cpu_type + ("/arm" if s.architecture == "arm" else ""),
                r or "-",
                f"{p.hourly:.4f}" if p else "-",
                f"{p.monthly:.2f}" if p else "-",
            ]
            for s, r, p in rows
        ],
        ["NAME", "CORES", "MEMORY", "DISK", "CPU", "REGION",
         f"{currency}/HOUR", f"{currency}/MONTH"],
        ctx.out,
    )  # fmt: skip
    ctx.note(
        f"Prices in {currency}{', VAT included' if vat else ', without VAT'}; live from the API."
    )
    return EXIT_OK


def _size_sort_key(region: str) -> Callable[[Size], tuple[Decimal, str]]:
    def key(size: Size) -> tuple[Decimal, str]:
        price = size.price_in(region) or min(
            size.prices.values(), key=lambda p: p.hourly, default=None
        )
        return (price.hourly if price else Decimal("Infinity"), size.name)

    return key


# -- ls -----------------------------------------------------------------------------------------


def _add_ls_parser(sub: SubParsers) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser("ls", help="list workspaces")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def _workspace_json(ws: Workspace) -> dict[str, Any]:
    server = ws.server
    return {
        "name": ws.name,
        "account": ws.account,
        "provider": ws.provider,
        "status": server.status.value if server else None,
        "server_id": server.id if server else None,
        "region": server.region if server else None,
        "size": server.size if server else None,
        "ipv4": server.ipv4 if server else None,
        "created_at": server.created_at if server else None,
        "repo_url": ws.repo_url,
        "idle_minutes": ws.idle_minutes,
        "max_hours": ws.max_hours,
        "lifetime_deadline": ws.lifetime_deadline,
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
    if args.json:
        ctx.emit_json([_workspace_json(ws) for ws in listing.workspaces])
    elif listing.workspaces:
        _table(
            [
                [
                    ws.name,
                    ws.account,
                    ws.server.status.value if ws.server else "-",
                    (ws.server.region or "-") if ws.server else "-",
                    (ws.server.size or "-") if ws.server else "-",
                    (ws.server.ipv4 or "-") if ws.server else "-",
                    _age(ws.server.created_at if ws.server else None),
                    *_cost_cells(ws, utcnow()),
                    ws.repo_url or "-",
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
    return EXIT_ERROR if listing.errors else EXIT_OK


# -- create -------------------------------------------------------------------------------------


def _add_create_parser(sub: SubParsers) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(
        "create", help="create a workspace and wait until its server runs"
    )
    parser.add_argument("name", help="workspace name (lower-case letters, digits, '-')")
    parser.add_argument("--repo", required=True, help="git repository URL to clone")
    parser.add_argument("--provider", default="hetzner", help="provider kind (default hetzner)")
    parser.add_argument("--account", help="account id (default: the provider's default)")
    parser.add_argument("--size", help="server type (see `bivy sizes`)")
    parser.add_argument("--region", help="region/location")
    parser.add_argument("--branch", help="branch to check out")
    parser.add_argument("--idle-minutes", type=int, help="delete after this long idle")
    parser.add_argument("--max-hours", type=int, help="delete after this long, whatever happens")
    parser.add_argument("--json", action="store_true", help="print the workspace as JSON")
    return parser


def _spec_from_args(args: argparse.Namespace, settings: Settings) -> WorkspaceSpec:
    from pydantic import ValidationError

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


async def _cmd_create(args: argparse.Namespace, ctx: CliContext) -> int:
    spec = _spec_from_args(args, ctx.settings)
    last: list[str] = [""]

    def on_progress(progress: Any) -> None:
        if progress.detail != last[0]:
            last[0] = progress.detail
            ctx.note(f"[{round(progress.fraction * 100):3d}%] {progress.detail}")

    workspace: Workspace = await ctx.service.create(spec, on_progress=on_progress)
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


def _confirm(question: str) -> bool:
    try:
        answer = input(question)
    except EOFError:
        return False
    return answer.strip().lower() in {"y", "yes"}


async def _cmd_rm(args: argparse.Namespace, ctx: CliContext) -> int:
    if not args.yes:
        if not (sys.stdin.isatty() and sys.stdout.isatty()):
            raise InvalidInput(
                f"refusing to delete workspace {args.name!r} without confirmation",
                hint="Not running in a terminal: pass --yes to delete without asking",
            )
        question = f"Delete workspace {args.name!r} and its server? Unsaved work is lost. [y/N] "
        if not await asyncio.to_thread(_confirm, question):
            ctx.note("Not deleted.")
            return EXIT_ERROR
    ctx.note(f"Deleting workspace {args.name}…")
    await ctx.service.delete(args.name, wait=not args.no_wait)
    print(f"Workspace {args.name} deleted.", file=ctx.out)
    return EXIT_OK


# -- login --------------------------------------------------------------------------------------


def _add_login_parser(sub: SubParsers) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(
        "login", help="store a provider's API token in the keychain (after checking it)"
    )
    parser.add_argument("provider", help="provider kind, e.g. hetzner")
    parser.add_argument(
        "--token-stdin", action="store_true", help="read the token from stdin instead of asking"
    )
    parser.add_argument("--account", help="account id to store it under (default: the kind)")
    parser.add_argument("--label", default="", help="a name for the account")
    parser.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a non-secret account option (repeatable)",
    )
    return parser


def _read_secret(prompt: str, from_stdin: bool) -> str:
    if from_stdin or not sys.stdin.isatty():
        return sys.stdin.readline().strip()
    return getpass.getpass(prompt).strip()


async def _cmd_login(args: argparse.Namespace, ctx: CliContext) -> int:
    from app.services.accounts import add_account, provider_class

    cls = provider_class(args.provider)
    given: dict[str, str] = {}
    for item in args.option:
        key, sep, value = item.partition("=")
        if not sep:
            raise InvalidInput(f"--option {item!r} is not KEY=VALUE")
        given[key.strip()] = value.strip()
    secret_options = [o for o in cls.options if o.secret]
    if args.token_stdin and len(secret_options) != 1:
        raise InvalidInput(
            f"{cls.display_name} needs {len(secret_options)} secrets; --token-stdin reads one",
        )
    values: dict[str, str] = {}
    for option in cls.options:
        if option.key in given:
            if option.secret:
                raise InvalidInput(
                    f"{option.label} is secret: it is read without echo, not from --option"
                )
            values[option.key] = given[option.key]
        elif option.secret:
            if not args.token_stdin and sys.stdin.isatty():
                ctx.note(option.help or cls.token_guidance)
            values[option.key] = await asyncio.to_thread(
                _read_secret, f"{cls.display_name} {option.label}: ", args.token_stdin
            )
        elif sys.stdin.isatty():
            default = f" [{option.default}]" if option.default else ""
            answer = await asyncio.to_thread(input, f"{option.label}{default}: ")
            values[option.key] = answer.strip() or option.default
        else:
            values[option.key] = option.default
    ctx.note(f"Checking the {cls.display_name} credentials…")
    account = await add_account(
        ctx.settings,
        ctx.secrets,
        cls.kind,
        values,
        account_id=args.account,
        label=args.label,
    )
    ctx.save_settings()
    print(
        f"Logged in: account {account.id} ({cls.display_name}); the token is in the keychain.",
        file=ctx.out,
    )
    return EXIT_OK


# -- render-user-data (cloudinit engineer) -------------------------------------------------------


def _add_render_user_data_parser(sub: SubParsers) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(
        "render-user-data",
        help="print the cloud-init user data a workspace VM would get",
        description="Render the #cloud-config the create path sends, with placeholder secrets "
        "(so it is safe to print), for review or `cloud-init schema -c`.",
    )
    parser.add_argument("--provider", default="hetzner", help="provider kind (default: hetzner)")
    parser.add_argument("--repo", required=True, help="repository URL (https:// or SSH)")
    parser.add_argument("--name", required=True, help="workspace name")
    parser.add_argument("--branch", default=None, help="branch to check out")
    parser.add_argument("--idle-minutes", type=int, default=None, help="idle minutes (default 30)")
    parser.add_argument("--max-hours", type=int, default=None, help="hard lifetime in hours")
    parser.add_argument(
        "--placeholder-secrets",
        action="store_true",
        help="use placeholders for every secret (required: real secrets are never printed)",
    )
    parser.add_argument(
        "--as-sent",
        action="store_true",
        help="print what is sent (base64 of gzip when the plain YAML exceeds the provider limit)",
    )
    return parser


def _cmd_render_user_data(args: argparse.Namespace, ctx: CliContext) -> int:
    from pydantic import ValidationError

    from app.cloudinit import UserDataInputs, render_user_data
    from app.providers.registry import PROVIDERS

    if not args.placeholder_secrets:
        raise InvalidInput(
            "render-user-data prints only placeholder secrets",
            hint="Add --placeholder-secrets; the create path renders the real ones itself.",
        )
    provider_cls = PROVIDERS.get(args.provider)
    if provider_cls is None:
        raise InvalidInput(
            f"Unknown provider {args.provider!r}", hint=f"One of: {', '.join(PROVIDERS)}"
        )
    values: dict[str, Any] = {"name": args.name, "repo_url": args.repo, "provider": args.provider}
    if args.branch:
        values["branch"] = args.branch
    if args.idle_minutes is not None:
        values["idle_minutes"] = args.idle_minutes
    if args.max_hours is not None:
        values["max_hours"] = args.max_hours
    try:
        spec = WorkspaceSpec(**values)
    except ValidationError as exc:
        reasons = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise InvalidInput(f"Invalid workspace: {reasons}") from None
    rendered = render_user_data(UserDataInputs.placeholder(spec, provider_cls))
    text = rendered.user_data if args.as_sent else rendered.cloud_config
    ctx.out.write(text if text.endswith("\n") else text + "\n")
    ctx.note(
        f"{rendered.size} bytes as sent"
        + (" (gzip+base64)" if rendered.compressed else "")
        + f"; limit {provider_cls.capabilities.user_data_limit}"
    )
    return 0


# -- ssh (tunnel engineer) ------------------------------------------------------------------------


def _add_ssh_parser(sub: SubParsers) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(
        "ssh",
        help="open a shell on a workspace's VM (OpenSSH, pinned host key)",
        description="Log in to the workspace's VM as 'dev' with OpenSSH, or run COMMAND there. "
        "Also makes `ssh bivy-NAME` work from any terminal and from VS Code Remote-SSH.",
    )
    parser.add_argument("name", help="workspace name")
    parser.add_argument(
        "remote", nargs=argparse.REMAINDER, metavar="-- COMMAND", help="run this instead of a shell"
    )
    return parser


async def _cmd_ssh(args: argparse.Namespace, ctx: CliContext) -> int:
    import shutil
    import subprocess

    from app.errors import NotFound, SSHError
    from app.services.registry import Registry
    from app.services.sshconfig import SshConfigManager, SshHostEntry
    from app.settings import SecretKeys

    record = await Registry().aget(args.name)
    if record is None:
        raise NotFound(
            f"no workspace named {args.name!r} was created by this installation of Bivy",
            hint="`bivy ls` lists the workspaces",
        )
    if not record.ipv4 or not record.host_public_key:
        raise SSHError(
            f"workspace {args.name!r} has no address or pinned host key yet",
            hint="Wait until it is running (`bivy ls`), then try again",
        )
    private_key = await ctx.secrets.aget(SecretKeys.SSH_PRIVATE_KEY)
    if not private_key:
        raise SSHError("this installation has no SSH key in the keychain")
    ssh = shutil.which("ssh")
    if ssh is None:
        raise SSHError(
            "the OpenSSH client (ssh) is not installed",
            hint="Install it (Debian/Ubuntu: openssh-client; Windows: the OpenSSH Client feature)",
        )
    manager = SshConfigManager()
    entry = SshHostEntry(record.name, record.ipv4, record.host_public_key)
    await asyncio.to_thread(manager.add, entry, private_key)
    remote = list(args.remote)
    if remote[:1] == ["--"]:
        remote = remote[1:]
    argv = [ssh, *manager.ssh_command(record.name, remote)[1:]]
    # ssh owns the terminal; its exit status (255 = ssh itself failed) is ours.
    return await asyncio.to_thread(subprocess.call, argv)


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
                f"{_age(info.last_backup_at)} ago, {info.size_bytes / 1e6:.1f} MB",
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
        if not await asyncio.to_thread(_confirm, question):
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
        access = await asyncio.to_thread(_read_secret, "Access key id: ", args.keys_stdin)
        secret = await asyncio.to_thread(_read_secret, "Secret access key: ", args.keys_stdin)
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
    from app.errors import NotFound
    from app.services.registry import Registry
    from app.services.status import StatusService
    from app.services.tunnels import SSHTarget, TunnelService

    record = await Registry().aget(args.name)
    if record is None:
        raise NotFound(
            f"no workspace named {args.name!r} was created by this installation of Bivy",
            hint="`bivy ls` lists the workspaces",
        )
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


# -- the table and the entry point ----------------------------------------------------------------

COMMANDS: list[Command] = [
    Command("providers", _add_providers_parser, _cmd_providers),
    Command("sizes", _add_sizes_parser, _cmd_sizes),
    Command("ls", _add_ls_parser, _cmd_ls),
    Command("create", _add_create_parser, _cmd_create),
    Command("rm", _add_rm_parser, _cmd_rm),
    Command("login", _add_login_parser, _cmd_login),
    Command("ssh", _add_ssh_parser, _cmd_ssh),
    Command("backup", _add_backup_parser, _cmd_backup),
    Command("render-user-data", _add_render_user_data_parser, _cmd_render_user_data),
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
