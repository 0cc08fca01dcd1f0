"""What the cloud providers' image (snapshot) code shares: the GB-month price and the off check."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

from app.domain import Price, Server, ServerStatus
from app.errors import Conflict

__all__ = ["HOURS_PER_MONTH", "require_off", "snapshot_price"]

#: The month the providers' hourly storage prices are scaled by (365 × 24 / 12).
HOURS_PER_MONTH = Decimal(730)


def snapshot_price(
    size_gb: float | None,
    per_gb_month: Decimal | None,
    currency: str,
    *,
    includes_vat: bool = False,
) -> Price | None:
    """What keeping ``size_gb`` for a month costs at ``per_gb_month``; None when either is
    unknown (a snapshot still being written has no size yet)."""
    if size_gb is None or per_gb_month is None or not currency:
        return None
    monthly = Decimal(str(size_gb)) * per_gb_month
    return Price(
        currency=currency,
        hourly=(monthly / HOURS_PER_MONTH).quantize(Decimal("0.0000001"), ROUND_HALF_UP),
        monthly=monthly.quantize(Decimal("0.0001"), ROUND_HALF_UP),
        includes_vat=includes_vat,
    )


def require_off(server: Server, provider_name: str) -> None:
    """Refuse to snapshot a server that is not powered off: its disk would be caught mid-write
    (a prebuild is sealed, then powered off, then snapshotted)."""
    if server.status != ServerStatus.OFF:
        raise Conflict(
            f"{provider_name} server {server.name or server.id} is {server.status.value}, "
            "not off: Bivy snapshots only powered-off servers",
            hint="Power the server off (Bivy does so after sealing a prebuild) and try again",
            provider=server.provider,
            code="server_not_off",
        )
