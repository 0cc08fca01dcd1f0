"""``bivy login``: check a provider's credentials and keep them in the keychain."""

from __future__ import annotations

import argparse
import asyncio
import sys

from app.cli.base import (
    EXIT_OK,
    CliContext,
    Command,
    SubParsers,
    read_secret,
)
from app.errors import InvalidInput

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
                read_secret, f"{cls.display_name} {option.label}: ", args.token_stdin
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


COMMANDS = [Command("login", _add_login_parser, _cmd_login)]
