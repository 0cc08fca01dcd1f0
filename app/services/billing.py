"""Billing arithmetic: what a server costs under its provider's ``BillingRule``.

Pure functions over prices, creation times and powered-off intervals; no I/O. Every UTC
calendar month is billed on its own, capped at the monthly price when the rule says so.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

from app.domain import Price, Server, ServerStatus, utcnow
from app.providers.base import BillingRule

__all__ = [
    "MONEY_QUANTUM",
    "Period",
    "billed_amount",
    "default_rule_for",
    "hourly_rate_now",
    "month_bounds",
    "round_money",
    "running_cost",
    "storage_amount",
    "storage_rest_of_month",
]

#: Amounts are kept to a millionth of the currency unit; the UI rounds for display.
MONEY_QUANTUM = Decimal("0.000001")
_US_PER_HOUR = 3_600_000_000

Period = tuple[datetime, datetime]


def default_rule_for(kind: str) -> BillingRule:
    """The billing rule the provider of ``kind`` declares; the most expensive rule if unknown.

    An unknown kind (a provider removed since the ledger row was written) gets ``BillingRule()``:
    per started hour, billed when off, which over- rather than under-states the spend.
    """
    from app.providers.registry import PROVIDERS

    cls = PROVIDERS.get(kind)
    return cls.capabilities.billing if cls is not None else BillingRule()


def month_bounds(at: datetime) -> tuple[datetime, datetime]:
    """The UTC calendar month containing ``at``: [first instant, first instant of the next)."""
    if at.tzinfo is not UTC:
        at = at.astimezone(UTC)
    start = at.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    if start.month == 12:
        return start, start.replace(year=start.year + 1, month=1)
    return start, start.replace(month=start.month + 1)


def _micros(delta: timedelta) -> int:
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _overlap_us(periods: Iterable[Period], start: datetime, end: datetime) -> int:
    total = 0
    for p_start, p_end in periods:
        lo, hi = max(p_start, start), min(p_end, end)
        if hi > lo:
            total += _micros(hi - lo)
    return total


def _cumulative(
    hourly: Decimal, rule: BillingRule, created: datetime, at: datetime, off: Sequence[Period]
) -> Decimal:
    """What the server has been billed from ``created`` to ``at``, ignoring the monthly cap."""
    if at <= created:
        return Decimal(0)
    billed_us = _micros(at - created)
    if not rule.billed_when_off:
        billed_us -= _overlap_us(off, created, at)
    if billed_us <= 0:
        return Decimal(0)
    billed_us = max(billed_us, rule.minimum_seconds * 1_000_000)
    if rule.granularity == "hour":
        started_hours = -(-billed_us // _US_PER_HOUR)
        return hourly * started_hours
    return hourly * Decimal(billed_us) / Decimal(_US_PER_HOUR)


def _month_segment(
    price: Price,
    rule: BillingRule,
    created: datetime,
    until: datetime,
    month_start: datetime,
    off: Sequence[Period],
) -> Decimal:
    """The bill for the month starting at ``month_start``, for uptime up to ``until``."""
    month_end = month_bounds(month_start)[1]
    lo = max(created, month_start)
    hi = min(until, month_end)
    if hi <= lo:
        return Decimal(0)
    # A started hour that straddles midnight of the 1st is billed in the month it started in.
    amount = _cumulative(price.hourly, rule, created, hi, off) - _cumulative(
        price.hourly, rule, created, lo, off
    )
    if rule.monthly_cap and price.monthly > 0:
        amount = min(amount, price.monthly)
    return amount


def _months(start: datetime, end: datetime) -> Iterator[datetime]:
    month = month_bounds(start)[0]
    while month < end:
        yield month
        month = month_bounds(month)[1]


def round_money(amount: Decimal) -> Decimal:
    return amount.quantize(MONEY_QUANTUM, rounding=ROUND_HALF_UP)


def billed_amount(
    price: Price,
    rule: BillingRule,
    created: datetime,
    until: datetime,
    *,
    window: Period | None = None,
    off_periods: Sequence[Period] = (),
) -> Decimal:
    """The bill for a server that existed from ``created`` to ``until``.

    Every UTC calendar month is billed separately, capped at the monthly price when the rule
    says so. With ``window`` only the months starting inside [window start, window end) count
    (``month_bounds(now)`` gives month-to-date). ``off_periods`` are the intervals the server
    was seen powered off; they are free only if ``rule.billed_when_off`` is false.
    """
    total = Decimal(0)
    for month in _months(created, until):
        if window is not None and not (window[0] <= month < window[1]):
            continue
        total += _month_segment(price, rule, created, until, month, off_periods)
    return round_money(total)


def storage_amount(
    monthly: Decimal, created: datetime, until: datetime, *, window: Period | None = None
) -> Decimal:
    """The bill for storage priced per month (a snapshot: GB × the price per GB-month) that
    existed from ``created`` to ``until``.

    Each UTC calendar month is billed pro rata: ``monthly`` × the share of that month's
    seconds the storage existed in it (a 30-day month and a 31-day month both cost
    ``monthly`` when it existed all month). With ``window`` only the months starting inside
    [window start, window end) count, as for ``billed_amount``.
    """
    total = Decimal(0)
    for month in _months(created, until):
        if window is not None and not (window[0] <= month < window[1]):
            continue
        month_end = month_bounds(month)[1]
        lo, hi = max(created, month), min(until, month_end)
        if hi > lo:
            total += monthly * Decimal(_micros(hi - lo)) / Decimal(_micros(month_end - month))
    return round_money(total)


def storage_rest_of_month(monthly: Decimal, created: datetime, now: datetime) -> Decimal:
    """What storage that still exists at ``now`` adds until the UTC month ends."""
    month_start, month_end = month_bounds(now)
    window = (month_start, month_end)
    later = storage_amount(monthly, created, month_end, window=window)
    return max(Decimal(0), later - storage_amount(monthly, created, now, window=window))


def running_cost(server: Server, rule: BillingRule, now: datetime | None = None) -> Decimal | None:
    """What ``server`` has cost since it was created, or None when its price or age is unknown."""
    if server.price is None or server.created_at is None:
        return None
    return billed_amount(server.price, rule, server.created_at, now or utcnow())


def hourly_rate_now(
    price: Price,
    rule: BillingRule,
    created: datetime,
    now: datetime,
    status: ServerStatus = ServerStatus.RUNNING,
) -> Decimal:
    """What one more hour of this server adds to the bill now (0 once the monthly cap is hit)."""
    if status is ServerStatus.OFF and not rule.billed_when_off:
        return Decimal(0)
    if rule.monthly_cap and price.monthly > 0:
        month = month_bounds(now)[0]
        if _month_segment(price, rule, created, now, month, ()) >= price.monthly:
            return Decimal(0)
    return price.hourly
