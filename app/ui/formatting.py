"""How the window writes durations, money and times: short, unambiguous, locale-free."""

from __future__ import annotations

import html
import re
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

_SYMBOLS = {"EUR": "€", "USD": "$", "GBP": "£"}


def money(amount: Decimal | None, currency: str = "EUR", *, places: int = 2) -> str:
    """``€0.42``; more places for tiny hourly prices so they do not all read ``€0.01``."""
    if amount is None:
        return "–"
    quantum = Decimal(1).scaleb(-places)
    text = f"{amount.quantize(quantum, rounding=ROUND_HALF_UP):,}"
    symbol = _SYMBOLS.get(currency.upper())
    return f"{symbol}{text}" if symbol else f"{text} {currency}"


def hourly(amount: Decimal | None, currency: str = "EUR") -> str:
    """An hourly price with four places (Hetzner prices are fractions of a cent)."""
    return money(amount, currency, places=4) if amount is not None else "–"


def duration(delta: timedelta | None) -> str:
    """``2 h 05 min``, ``14 min``, ``45 s``; negative durations read ``overdue``."""
    if delta is None:
        return "–"
    seconds = int(delta.total_seconds())
    if seconds < 0:
        return "overdue"
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours:02d} h"
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min"
    return f"{secs} s"


def until(deadline: datetime | None, now: datetime) -> str:
    """Time left before ``deadline``."""
    return duration(deadline - now) if deadline is not None else "–"


def since(start: datetime | None, now: datetime) -> str:
    """Time elapsed since ``start``."""
    return duration(now - start) if start is not None else "–"


def local_time(moment: datetime | None) -> str:
    """A UTC timestamp in the user's local time, to the minute."""
    if moment is None:
        return "never"
    return moment.astimezone().strftime("%Y-%m-%d %H:%M")


_CODE = re.compile(r"`([^`]+)`")


def code_html(text: str) -> str:
    """``text`` escaped for a rich-text label, with its `backticked` spans as <code>."""
    return _CODE.sub(lambda m: f"<code>{m.group(1)}</code>", html.escape(text, quote=False))


def code_plain(text: str) -> str:
    """``text`` for a plain-text label: `backticked` spans in quotes, not backticks."""
    return _CODE.sub(lambda m: f"“{m.group(1)}”", text)
