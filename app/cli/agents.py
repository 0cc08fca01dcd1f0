"""``bivy agents``: the coding agents Bivy can run, and whether their credentials are set."""

from __future__ import annotations

import argparse
from typing import Any

from app.agents import AGENTS, DEFAULT_AGENT, credential_states
from app.cli.base import EXIT_OK, CliContext, Command, SubParsers, table

_SOURCES = {"env": "environment", "keychain": "keychain", "unknown": "keychain unreadable"}


def _add_agents_parser(sub: SubParsers) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(
        "agents", help="list the coding agents and whether their credentials are set"
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def _cmd_agents(args: argparse.Namespace, ctx: CliContext) -> int:
    rows: list[dict[str, Any]] = []
    for agent in AGENTS.values():
        states = credential_states(agent, ctx.secrets)
        rows.append(
            {
                "name": agent.name,
                "display_name": agent.display_name,
                "default": agent.name == DEFAULT_AGENT,
                "npm_package": agent.npm_package,
                "reports_activity": agent.reports_activity,
                "activity": agent.activity_mechanism
                if agent.reports_activity
                else "terminal activity only",
                "credentials": [
                    {
                        "env": s.credential.env,
                        "label": s.credential.label,
                        "set": s.is_set,
                        "source": s.source,
                    }
                    for s in states
                ],
                "credential_set": any(s.is_set for s in states),
                "login_hint": agent.login_hint,
            }
        )
    if args.json:
        ctx.emit_json(rows)
        return EXIT_OK
    table(
        [[_name(r), r["display_name"], r["activity"], _credentials(r)] for r in rows],
        ["AGENT", "NAME", "ACTIVITY", "CREDENTIALS"],
        ctx.out,
    )
    return EXIT_OK


def _name(row: dict[str, Any]) -> str:
    name: str = row["name"]
    return name + (" (default)" if row["default"] else "")


def _credentials(row: dict[str, Any]) -> str:
    found = [
        f"{c['env']} ({_SOURCES[c['source']]})"
        for c in row["credentials"]
        if c["source"] in _SOURCES
    ]
    if found:
        return ", ".join(found)
    names = " or ".join(c["env"] for c in row["credentials"])
    return f"not set ({names}; or log in from the terminal)"


COMMANDS: list[Command] = [
    Command("agents", _add_agents_parser, _cmd_agents),
]
