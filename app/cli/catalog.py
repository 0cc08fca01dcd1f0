"""``bivy providers`` and ``bivy sizes``: what can be created, with live prices."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from app.cli.base import (
    EXIT_OK,
    CliContext,
    Command,
    SubParsers,
    gb,
    table,
)
from app.domain import Size

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
    table(
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
    table(
        [
            [
                s.name,
                str(s.cores),
                gb(s.memory_gb),
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


COMMANDS = [
    Command("providers", _add_providers_parser, _cmd_providers),
    Command("sizes", _add_sizes_parser, _cmd_sizes),
]
