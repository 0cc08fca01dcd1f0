"""What workspaces cost: running cost, hourly rate, month-to-date spend and the budget check.

``CostService`` records every refresh in the ledger (``app.services.ledger``) and prices it
with the billing arithmetic (``app.services.billing``); both modules' public names are
importable from here too. Prebuild images (snapshots, issue 14) are billed per GB-month, pro
rata over the time they existed: ``observe_images`` records a listing of them and
``record_image_deleted`` a deletion, and their storage is in the month-to-date total and the
budget check.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Protocol

from app.domain import (
    LABEL_MAX_HOURS,
    Price,
    ProviderImage,
    Server,
    ServerStatus,
    Size,
    Workspace,
    utcnow,
)
from app.providers.base import BillingRule
from app.services.billing import (
    billed_amount,
    default_rule_for,
    hourly_rate_now,
    month_bounds,
    round_money,
    running_cost,
    storage_amount,
    storage_rest_of_month,
)
from app.services.ledger import (
    ImageEntry,
    Ledger,
    LedgerEntry,
    LedgerError,
    SeenImage,
    SeenServer,
    ledger_path,
)

__all__ = [
    "BudgetStatus",
    "CostService",
    "CostSnapshot",
    "ImageEntry",
    "LedgerEntry",
    "LedgerError",
    "SeenImage",
    "WorkspaceCost",
    "billed_amount",
    "default_rule_for",
    "hourly_rate_now",
    "ledger_path",
    "month_bounds",
    "note_prebuilds",
    "running_cost",
    "seen_image",
    "seen_prebuild",
    "storage_amount",
]

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
RuleLookup = Callable[[str], BillingRule]


# --- results -----------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkspaceCost:
    """The cost of one live workspace.

    Attributes:
        account, name, server_id: which workspace (name is the workspace label or server name).
        currency: the account's currency (never converted).
        hourly: the size's hourly price; monthly: its monthly price (the cap, if the rule caps).
        so_far: what it has cost since it was created.
        rate_now: what the next hour adds (0 when off and free, or capped this month).
    """

    account: str
    name: str
    server_id: str
    currency: str
    hourly: Decimal
    monthly: Decimal
    so_far: Decimal
    rate_now: Decimal


@dataclass(frozen=True)
class BudgetStatus:
    """The monthly budget check, in the budget's currency only.

    Attributes:
        budget, currency: from settings (``monthly_budget``, ``budget_currency``).
        month_to_date: spent this UTC month in that currency, deleted workspaces included.
        projected: what the workspaces running now add until the month ends or each reaches
            its maximum lifetime, whichever is earlier.
        warning: a sentence for the user when month_to_date + projected exceeds the budget.
        other_currencies: currencies with spend this month that the check cannot include.
    """

    budget: Decimal
    currency: str
    month_to_date: Decimal
    projected: Decimal
    warning: str | None
    other_currencies: tuple[str, ...] = ()

    @property
    def exceeded(self) -> bool:
        return self.warning is not None


@dataclass(frozen=True)
class CostSnapshot:
    """Everything the UI shows about money after one refresh. Currencies are never summed.

    Attributes:
        at: when it was computed (UTC).
        workspaces: (account, workspace name) → its cost; workspaces without a price are absent.
        per_hour: currency → what every live workspace together adds per hour now.
        month_to_date: currency → spend this UTC month, deleted workspaces included.
        budget: the budget check, or None when no budget is set.
        unpriced: (account, name) of live workspaces whose price is unknown.
        storage_month_to_date: currency → the part of month_to_date that is prebuild storage.
        storage_per_month: currency → what the prebuilds that exist now cost per month.
    """

    at: datetime
    workspaces: Mapping[tuple[str, str], WorkspaceCost] = field(default_factory=dict)
    per_hour: Mapping[str, Decimal] = field(default_factory=dict)
    month_to_date: Mapping[str, Decimal] = field(default_factory=dict)
    budget: BudgetStatus | None = None
    unpriced: tuple[tuple[str, str], ...] = ()
    storage_month_to_date: Mapping[str, Decimal] = field(default_factory=dict)
    storage_per_month: Mapping[str, Decimal] = field(default_factory=dict)


class PrebuildLike(Protocol):
    """What ``seen_prebuild`` reads of a prebuild record (``PrebuildRecord``)."""

    @property
    def id(self) -> str: ...
    @property
    def account(self) -> str: ...
    @property
    def provider(self) -> str: ...
    @property
    def repo(self) -> str: ...
    @property
    def size_gb(self) -> float | None: ...
    @property
    def monthly_price(self) -> Price | None: ...
    @property
    def created_at(self) -> datetime | None: ...


def _gb(size: float | Decimal | None) -> Decimal | None:
    # Through str: Decimal(0.1) would carry the float's binary noise into the ledger.
    return None if size is None else Decimal(str(size))


def seen_image(account: str, image: ProviderImage, name: str = "") -> SeenImage:
    """A provider's image as the ledger records it (``name`` defaults to the image's)."""
    return SeenImage(
        account=account,
        provider=image.provider,
        image_id=image.id,
        name=name or image.name,
        size_gb=_gb(image.size_gb),
        price=image.monthly_price,
        created_at=image.created_at,
    )


def seen_prebuild(record: PrebuildLike) -> SeenImage:
    """A prebuild record (``PrebuildService.list``) as the ledger records it."""
    return SeenImage(
        account=record.account,
        provider=record.provider,
        image_id=record.id,
        name=record.repo,
        size_gb=_gb(record.size_gb),
        price=record.monthly_price,
        created_at=record.created_at,
    )


def _max_hours(server: Server, fallback: int | None) -> int | None:
    raw = server.labels.get(LABEL_MAX_HOURS)
    if raw is not None:
        try:
            value = int(raw)
        except ValueError:
            value = 0
        if value > 0:
            return value
    return fallback


# --- the service -------------------------------------------------------------------------


class CostService:
    """Running cost, hourly rate, month-to-date spend and the budget check, per currency.

    Feed it every refresh with ``observe(workspaces, listed_accounts=…)``; it records what it
    saw in the ledger (``data_dir()/ledger.sqlite3``) and returns a ``CostSnapshot``. Tell it
    when Bivy deletes a server with ``record_deleted``. All ledger I/O runs in a thread.

    Attributes:
        path: the ledger file.
        rule_for: provider kind → ``BillingRule`` (default: the provider's declared capability).
        clock: the current UTC time (tests inject one).
    """

    def __init__(
        self,
        path: Path | None = None,
        *,
        rule_for: RuleLookup = default_rule_for,
        clock: Clock = utcnow,
    ) -> None:
        self.path = path or ledger_path()
        self.rule_for = rule_for
        self.clock = clock
        self._ledger = Ledger(self.path)

    def __repr__(self) -> str:
        return f"CostService(path={str(self.path)!r})"

    async def observe(
        self,
        workspaces: Sequence[Workspace],
        *,
        listed_accounts: Collection[str],
        sizes: Mapping[str, Sequence[Size]] | None = None,
        budget: Decimal | None = None,
        budget_currency: str = "EUR",
    ) -> CostSnapshot:
        """Record one refresh and return the costs it implies.

        Args:
            workspaces: the workspaces listed (those without a server are ignored).
            listed_accounts: accounts whose listing succeeded completely; a ledger server of
                one of these accounts that is not in ``workspaces`` is finalised as deleted.
                An account whose listing failed must not be here.
            sizes: account → its sizes, used for the price when the server carries none.
            budget, budget_currency: ``settings.monthly_budget`` and ``budget_currency``.
        """
        now = self.clock()
        seen = [self._seen(ws, ws.server, sizes) for ws in workspaces if ws.server is not None]
        await asyncio.to_thread(self._ledger.record, seen, tuple(listed_accounts), now)
        return await self.snapshot(
            workspaces, sizes=sizes, budget=budget, budget_currency=budget_currency, now=now
        )

    async def record_deleted(
        self, account: str, provider: str, server_id: str, *, at: datetime | None = None
    ) -> bool:
        """Finalise a server Bivy deleted; returns False if the ledger did not know it as live."""
        return await asyncio.to_thread(
            self._ledger.mark_deleted, account, provider, server_id, at or self.clock()
        )

    async def observe_images(
        self, images: Sequence[SeenImage], *, listed_accounts: Collection[str]
    ) -> None:
        """Record one listing of prebuild images (``seen_prebuild``/``seen_image`` make the
        items). A ledger image of an account in ``listed_accounts`` that is not in ``images``
        is finalised as deleted now; an account whose image listing failed must not be there.
        Call it after a build too, with ``listed_accounts=()``, so the new image counts from
        its creation even if nobody lists it again."""
        await asyncio.to_thread(
            self._ledger.record_images, list(images), tuple(listed_accounts), self.clock()
        )

    async def record_image_deleted(
        self, account: str, provider: str, image_id: str, *, at: datetime | None = None
    ) -> bool:
        """Finalise a prebuild image Bivy deleted; False if the ledger did not know it as live.
        Its cost up to ``at`` stays in the month-to-date total."""
        return await asyncio.to_thread(
            self._ledger.mark_image_deleted, account, provider, image_id, at or self.clock()
        )

    async def image_entries(self, *, month_of: datetime | None = None) -> list[ImageEntry]:
        """Ledger images: all, or those that existed in the UTC month containing ``month_of``."""
        if month_of is None:
            return await asyncio.to_thread(self._ledger.image_entries, None)
        start, end = month_bounds(month_of)
        rows = await asyncio.to_thread(self._ledger.image_entries, start)
        return [e for e in rows if e.created_at < end]

    async def entries(self, *, month_of: datetime | None = None) -> list[LedgerEntry]:
        """Ledger rows: all, or those that existed during the UTC month containing ``month_of``."""
        if month_of is None:
            return await asyncio.to_thread(self._ledger.entries, None)
        start, end = month_bounds(month_of)
        rows = await asyncio.to_thread(self._ledger.entries, start)
        return [e for e in rows if e.created_at < end]

    async def month_to_date(self, now: datetime | None = None) -> dict[str, Decimal]:
        """Currency → spend in the UTC month containing ``now``, deleted workspaces included."""
        now = now or self.clock()
        images = await self.image_entries(month_of=now)
        return _month_to_date(await self.entries(month_of=now), now, images)

    async def budget_status(
        self, budget: Decimal | None, currency: str, now: datetime | None = None
    ) -> BudgetStatus | None:
        """The budget check for the servers in the ledger (None when no budget is set)."""
        now = now or self.clock()
        images = await self.image_entries(month_of=now)
        return _budget(await self.entries(month_of=now), budget, currency, now, images=images)

    async def snapshot(
        self,
        workspaces: Sequence[Workspace] = (),
        *,
        sizes: Mapping[str, Sequence[Size]] | None = None,
        budget: Decimal | None = None,
        budget_currency: str = "EUR",
        now: datetime | None = None,
    ) -> CostSnapshot:
        """Costs of ``workspaces`` plus the ledger's month-to-date, without recording anything."""
        now = now or self.clock()
        # The arithmetic over hundreds of rows runs in the thread too: the UI's loop must not stall.
        return await asyncio.to_thread(
            self._snapshot, list(workspaces), sizes, budget, budget_currency, now
        )

    def _snapshot(
        self,
        workspaces: Sequence[Workspace],
        sizes: Mapping[str, Sequence[Size]] | None,
        budget: Decimal | None,
        budget_currency: str,
        now: datetime,
    ) -> CostSnapshot:
        start, end = month_bounds(now)
        entries = [e for e in self._ledger.entries(start) if e.created_at < end]
        images = [e for e in self._ledger.image_entries(start) if e.created_at < end]
        costs: dict[tuple[str, str], WorkspaceCost] = {}
        per_hour: dict[str, Decimal] = {}
        unpriced: list[tuple[str, str]] = []
        # Indexed once: a linear search per workspace made hundreds of workspaces quadratic.
        by_key: dict[tuple[str, str, str], LedgerEntry] = {}
        for entry in entries:
            by_key.setdefault((entry.account, entry.provider, entry.server_id), entry)
        for ws in workspaces:
            if ws.server is None:
                continue
            item = self._seen(ws, ws.server, sizes)
            created = ws.server.created_at
            if item.price is None or created is None:
                unpriced.append((ws.account, ws.name))
                continue
            ledger = by_key.get((ws.account, ws.server.provider, ws.server.id))
            offs = ledger.off_periods if ledger is not None else ()
            so_far = billed_amount(item.price, item.rule, created, now, off_periods=offs)
            rate = hourly_rate_now(item.price, item.rule, created, now, ws.server.status)
            costs[(ws.account, ws.name)] = WorkspaceCost(
                account=ws.account,
                name=ws.name,
                server_id=ws.server.id,
                currency=item.price.currency,
                hourly=item.price.hourly,
                monthly=item.price.monthly,
                so_far=so_far,
                rate_now=rate,
            )
            if ws.server.status is not ServerStatus.DELETING:
                currency = item.price.currency
                per_hour[currency] = per_hour.get(currency, Decimal(0)) + rate
        storage = _month_to_date((), now, images)
        spent = _month_to_date(entries, now, images)
        per_month: dict[str, Decimal] = {}
        for image in images:
            if image.deleted_at is None and image.price is not None:
                currency = image.price.currency
                per_month[currency] = per_month.get(currency, Decimal(0)) + image.price.monthly
        return CostSnapshot(
            at=now,
            workspaces=costs,
            per_hour=per_hour,
            month_to_date=spent,
            budget=_budget(entries, budget, budget_currency, now, spent, images=images),
            unpriced=tuple(unpriced),
            storage_month_to_date=storage,
            storage_per_month=per_month,
        )

    def _seen(
        self, ws: Workspace, server: Server, sizes: Mapping[str, Sequence[Size]] | None
    ) -> SeenServer:
        price = server.price
        if price is None and sizes is not None:
            size = next((s for s in sizes.get(ws.account, ()) if s.name == server.size), None)
            price = size.price_in(server.region) if size is not None else None
        return SeenServer(
            account=ws.account,
            server=server,
            price=price,
            rule=self.rule_for(server.provider),
            max_hours=_max_hours(server, ws.max_hours),
        )


async def note_prebuilds(
    seen: Sequence[PrebuildLike] = (),
    *,
    deleted: Sequence[PrebuildLike] = (),
    service: CostService | None = None,
) -> None:
    """Tell the cost ledger (the one the window shows) about prebuilds the CLI built or listed
    (``seen``) and deleted, so their storage counts from creation to deletion, whoever made or
    deleted them. Best effort: the CLI's work is done, so a ledger that cannot be used is
    logged, never raised."""
    costs = service or CostService()
    try:
        if seen:
            await costs.observe_images([seen_prebuild(r) for r in seen], listed_accounts=())
        for record in deleted:
            await costs.record_image_deleted(record.account, record.provider, record.id)
    except LedgerError as exc:
        log.warning("the cost ledger was not updated: %s", exc.one_line())


def _month_to_date(
    entries: Iterable[LedgerEntry], now: datetime, images: Iterable[ImageEntry] = ()
) -> dict[str, Decimal]:
    """Currency → this UTC month's bill of the servers and the prebuild images' storage."""
    window = month_bounds(now)
    totals: dict[str, Decimal] = {}
    items: list[LedgerEntry | ImageEntry] = [*entries, *images]
    for entry in items:
        cost = entry.cost(now, window=window)
        if cost is None or entry.price is None:
            continue
        currency = entry.price.currency
        totals[currency] = totals.get(currency, Decimal(0)) + cost
    return totals


def _projection(entry: LedgerEntry, now: datetime) -> Decimal:
    """What a live server adds from ``now`` to the end of the month or of its lifetime."""
    if entry.price is None or entry.deleted_at is not None:
        return Decimal(0)
    if entry.status is ServerStatus.OFF and not entry.rule.billed_when_off:
        return Decimal(0)
    window = month_bounds(now)
    horizon = window[1]
    deadline = entry.lifetime_deadline
    if deadline is not None:
        horizon = min(horizon, deadline)
    if horizon <= now:
        return Decimal(0)
    later = billed_amount(
        entry.price,
        entry.rule,
        entry.created_at,
        horizon,
        window=window,
        off_periods=entry.off_periods,
    )
    sofar = billed_amount(
        entry.price,
        entry.rule,
        entry.created_at,
        now,
        window=window,
        off_periods=entry.off_periods,
    )
    return max(Decimal(0), later - sofar)


def _live(images: Iterable[ImageEntry], currency: str) -> bool:
    return any(
        e.deleted_at is None and e.price is not None and e.price.currency == currency
        for e in images
    )


def _budget(
    entries: Sequence[LedgerEntry],
    budget: Decimal | None,
    currency: str,
    now: datetime,
    spent: Mapping[str, Decimal] | None = None,
    *,
    images: Sequence[ImageEntry] = (),
) -> BudgetStatus | None:
    if budget is None:
        return None
    if spent is None:
        spent = _month_to_date(entries, now, images)
    projected = sum(
        (
            _projection(e, now)
            for e in entries
            if e.price is not None and e.price.currency == currency
        ),
        Decimal(0),
    )
    # The prebuilds that exist now go on costing their storage until the month ends.
    projected += sum(
        (
            storage_rest_of_month(e.price.monthly, e.created_at, now)
            for e in images
            if e.price is not None and e.price.currency == currency and e.deleted_at is None
        ),
        Decimal(0),
    )
    mtd = spent.get(currency, Decimal(0))
    others = tuple(sorted(c for c, v in spent.items() if c != currency and v > 0))
    warning = None
    if mtd > budget:
        warning = f"This month's spend, {mtd:.2f} {currency}, is over the budget of {budget:.2f}."
    elif mtd + projected > budget:
        warning = (
            f"The monthly budget of {budget:.2f} {currency} will be exceeded: "
            f"{mtd:.2f} spent so far and {projected:.2f} more if the running workspaces "
            "live to the end of the month or of their lifetime"
            + (" and the prebuilds are kept." if _live(images, currency) else ".")
        )
    if warning and others:
        warning += f" Spend in {', '.join(others)} is not included."
    return BudgetStatus(
        budget=budget,
        currency=currency,
        month_to_date=mtd,
        projected=round_money(projected),
        warning=warning,
        other_currencies=others,
    )
