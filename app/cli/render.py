"""``bivy render-user-data``: the cloud-init user data a VM would get (placeholder secrets)."""

from __future__ import annotations

import argparse
from typing import Any

from app.cli.base import (
    CliContext,
    Command,
    SubParsers,
)
from app.domain import WorkspaceSpec
from app.errors import InvalidInput

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
    parser.add_argument(
        "--agent", default="claude", help="the coding agent (see `bivy agents`; default claude)"
    )
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
    from app.agents import get_agent

    values: dict[str, Any] = {
        "name": args.name,
        "repo_url": args.repo,
        "provider": args.provider,
        "agent": get_agent(args.agent).name,
    }
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
        + {
            "files": "",
            "inline": "; Bivy's tools inline as one archive",
            "split": f"; Bivy's tools ({len(rendered.toolkit or b'')} bytes) go over SSH",
        }[rendered.layout]
    )
    return 0


COMMANDS = [Command("render-user-data", _add_render_user_data_parser, _cmd_render_user_data)]
