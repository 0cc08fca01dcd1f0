"""CostService: billing rules at their boundaries, the SQLite ledger, month-to-date, the budget."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import ClassVar

import pytest

from app.domain import (
    LABEL_MANAGED_BY,
    LABEL_MAX_HOURS,
    LABEL_WORKSPACE,
    Price,
    Server,
    ServerStatus,
    Size,
    Workspace,
)
from app.providers.base import BillingRule, Capabilities
from app.providers.registry import PROVIDERS
from app.services.billing import (
    billed_amount,
    default_rule_for,
    hourly_rate_now,
    month_bounds,
    running_cost,
)
from app.services.costs import CostService
from app.services.ledger import LedgerError, ledger_path

HOURLY = BillingRule(granularity="hour", billed_when_off=True, monthly_cap=True)
SECONDLY = BillingRule(
    granularity="second", billed_when_off=True, monthly_cap=True, minimum_seconds=60
)
T0 = datetime(2026, 11, 10, 8, 0, tzinfo=UTC)


def eur(hourly: str, monthly: str = "1000") -> Price:
    return Price(currency="EUR", hourly=Decimal(hourly), monthly=Decimal(monthly))


def ws(
    name: str,
    created: datetime,
    price: Price | None,
    *,
    account: str = "acct",
    provider: str = "hourly",
    status: ServerStatus = ServerStatus.RUNNING,
    server_id: str | None = None,
    max_hours: int | None = None,
    size: str = "cx23",
    region: str = "fsn1",
) -> Workspace:
    labels = {LABEL_MANAGED_BY: "bivy", LABEL_WORKSPACE: name}
    if max_hours is not None:
        labels[LABEL_MAX_HOURS] = str(max_hours)
    server = Server(
        provider=provider,
        id=server_id or f"id-{name}",
        name=f"bivy-{name}",
        status=status,
        created_at=created,
        labels=labels,
        price=price,
        size=size,
        region=region,
    )
    return Workspace(name=name, account=account, provider=provider, server=server)


@dataclass
class Clock:
    now: datetime

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kw: float) -> None:
        self.now += timedelta(**kw)


RULES = {
    "hourly": HOURLY,
    "secondly": SECONDLY,
    "freeoff": BillingRule(granularity="second", billed_when_off=False, monthly_cap=False),
}


def service(path: Path, clock: Clock) -> CostService:
    return CostService(path, rule_for=RULES.__getitem__, clock=clock)


# --- pure billing arithmetic -----------------------------------------------------------


def test_per_started_hour_bills_every_started_hour_at_the_boundaries() -> None:
    price = eur("0.0100")
    assert billed_amount(price, HOURLY, T0, T0) == Decimal(0)
    assert billed_amount(price, HOURLY, T0, T0 + timedelta(microseconds=1)) == Decimal("0.01")
    assert billed_amount(price, HOURLY, T0, T0 + timedelta(hours=1)) == Decimal("0.01")
    assert billed_amount(price, HOURLY, T0, T0 + timedelta(hours=1, seconds=1)) == Decimal("0.02")
    assert billed_amount(price, HOURLY, T0, T0 + timedelta(hours=5)) == Decimal("0.05")


def test_per_second_bills_the_fraction_with_a_minimum() -> None:
    price = eur("0.036")
    # 30 s is below the 60 s minimum: billed as 60 s.
    assert billed_amount(price, SECONDLY, T0, T0 + timedelta(seconds=30)) == Decimal("0.0006")
    assert billed_amount(price, SECONDLY, T0, T0 + timedelta(seconds=90)) == Decimal("0.0009")
    assert billed_amount(price, SECONDLY, T0, T0 + timedelta(minutes=30)) == Decimal("0.018")
    assert billed_amount(price, SECONDLY, T0, T0 + timedelta(hours=1, seconds=1)) == Decimal(
        "0.03601"
    )
    # The same hour and a second per started hour costs two hours.
    assert billed_amount(price, HOURLY, T0, T0 + timedelta(hours=1, seconds=1)) == Decimal("0.072")


def test_monthly_cap_limits_each_calendar_month() -> None:
    price = eur("0.01", monthly="5.00")
    start = datetime(2026, 1, 20, 0, 0, tzinfo=UTC)
    # 10 days in January: 240 h x 0.01 = 2.40, under the cap.
    assert billed_amount(price, HOURLY, start, start + timedelta(days=10)) == Decimal("2.40")
    # A whole month of hours (744 x 0.01 = 7.44) is capped at 5.00.
    jan = datetime(2026, 1, 1, tzinfo=UTC)
    assert billed_amount(price, HOURLY, jan, datetime(2026, 2, 1, tzinfo=UTC)) == Decimal("5.00")
    # 20 Jan → 10 Mar: January 12 days (2.88), February capped (5.00), March 9 days (2.16).
    until = datetime(2026, 3, 10, tzinfo=UTC)
    assert billed_amount(price, HOURLY, start, until) == Decimal("10.04")
    feb = month_bounds(datetime(2026, 2, 14, tzinfo=UTC))
    assert billed_amount(price, HOURLY, start, until, window=feb) == Decimal("5.00")
    no_cap = BillingRule(granularity="hour", monthly_cap=False)
    assert billed_amount(price, no_cap, start, until) == Decimal("11.76")


def test_a_started_hour_across_midnight_of_the_first_is_billed_in_the_month_it_started() -> None:
    price = eur("1")
    created = datetime(2026, 10, 31, 23, 30, tzinfo=UTC)
    until = datetime(2026, 11, 1, 0, 45, tzinfo=UTC)
    assert billed_amount(price, HOURLY, created, until) == Decimal(2)
    assert billed_amount(price, HOURLY, created, until, window=month_bounds(created)) == 1
    assert billed_amount(price, HOURLY, created, until, window=month_bounds(until)) == 1


def test_powered_off_is_billed_when_the_rule_says_so() -> None:
    price = eur("0.5")
    off = Server(
        provider="hourly",
        id="1",
        name="bivy-a",
        status=ServerStatus.OFF,
        created_at=T0,
        price=price,
    )
    assert running_cost(off, HOURLY, T0 + timedelta(hours=3)) == Decimal("1.5")
    assert hourly_rate_now(price, HOURLY, T0, T0 + timedelta(hours=3), ServerStatus.OFF) == (
        Decimal("0.5")
    )
    free_off = BillingRule(granularity="second", billed_when_off=False, monthly_cap=False)
    assert hourly_rate_now(price, free_off, T0, T0, ServerStatus.OFF) == 0
    periods = [(T0 + timedelta(hours=1), T0 + timedelta(hours=2))]
    assert billed_amount(
        price, free_off, T0, T0 + timedelta(hours=3), off_periods=periods
    ) == Decimal("1.0")
    assert billed_amount(price, HOURLY, T0, T0 + timedelta(hours=3), off_periods=periods) == (
        Decimal("1.5")
    )


def test_running_cost_is_unknown_without_price_or_creation_time() -> None:
    server = Server(provider="hourly", id="1", name="n", status=ServerStatus.RUNNING)
    assert running_cost(server, HOURLY, T0) is None


def test_hourly_rate_drops_to_zero_once_the_month_is_capped() -> None:
    price = eur("0.01", monthly="1.00")
    created = datetime(2026, 11, 1, tzinfo=UTC)
    assert hourly_rate_now(price, HOURLY, created, created + timedelta(hours=99)) == Decimal("0.01")
    assert hourly_rate_now(price, HOURLY, created, created + timedelta(hours=100)) == 0


def test_default_rule_comes_from_the_providers_declared_capabilities(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rule = BillingRule(granularity="second", billed_when_off=False, monthly_cap=False)

    class Declared:
        capabilities: ClassVar[Capabilities] = Capabilities(billing=rule)

    monkeypatch.setitem(PROVIDERS, "some-cloud", Declared)  # type: ignore[arg-type]
    assert default_rule_for("some-cloud") is rule
    # Unknown providers get the most expensive reading: started hours, billed when off.
    assert default_rule_for("gone-cloud") == BillingRule()


# --- the ledger and the service --------------------------------------------------------


async def test_ledger_lives_in_the_data_dir(tmp_path: Path) -> None:
    assert ledger_path() == tmp_path / "data" / "ledger.sqlite3"
    costs = CostService(rule_for=RULES.__getitem__, clock=Clock(T0))
    await costs.observe([ws("a", T0, eur("1"))], listed_accounts=["acct"])
    assert (tmp_path / "data" / "ledger.sqlite3").is_file()


async def test_observe_gives_running_cost_rate_and_month_to_date(tmp_path: Path) -> None:
    clock = Clock(T0 + timedelta(hours=2, minutes=10))
    costs = service(tmp_path / "l.db", clock)
    a = ws("a", T0, eur("0.25"))
    b = ws("b", T0 + timedelta(hours=2), eur("0.036"), provider="secondly")
    snap = await costs.observe([a, b], listed_accounts=["acct"])
    assert snap.workspaces[("acct", "a")].so_far == Decimal("0.75")
    assert snap.workspaces[("acct", "a")].hourly == Decimal("0.25")
    assert snap.workspaces[("acct", "b")].so_far == Decimal("0.006")
    assert snap.per_hour == {"EUR": Decimal("0.286")}
    assert snap.month_to_date == {"EUR": Decimal("0.756")}
    assert snap.budget is None


async def test_observe_is_idempotent(tmp_path: Path) -> None:
    clock = Clock(T0 + timedelta(minutes=30))
    costs = service(tmp_path / "l.db", clock)
    listing = [ws("a", T0, eur("1"))]
    first = await costs.observe(listing, listed_accounts=["acct"])
    second = await costs.observe(listing, listed_accounts=["acct"])
    assert first == second
    assert len(await costs.entries()) == 1


async def test_month_to_date_includes_deleted_workspaces_across_month_boundaries(
    tmp_path: Path,
) -> None:
    clock = Clock(datetime(2026, 10, 31, 23, 0, tzinfo=UTC))
    costs = service(tmp_path / "l.db", clock)
    a = ws("a", datetime(2026, 10, 31, 22, 0, tzinfo=UTC), eur("1"))
    b = ws("b", datetime(2026, 10, 31, 22, 30, tzinfo=UTC), eur("2"), server_id="b-1")
    await costs.observe([a, b], listed_accounts=["acct"])
    clock.now = datetime(2026, 11, 1, 2, 29, tzinfo=UTC)
    await costs.observe([a, b], listed_accounts=["acct"])
    # b is deleted by Bivy at 01:10; a vanishes from the list between 02:29 and 02:30.
    assert await costs.record_deleted(
        "acct", "hourly", "b-1", at=clock.now.replace(hour=1, minute=10)
    )
    clock.now = datetime(2026, 11, 1, 2, 30, tzinfo=UTC)
    snap = await costs.observe([], listed_accounts=["acct"])
    # a: 22:00-02:30 is five started hours, two in October and three in November.
    # b: 22:30-01:10 is three started hours at 2; 22:30 and 23:30 start in October.
    assert snap.month_to_date == {"EUR": Decimal(3 + 2)}
    assert snap.workspaces == {}
    assert snap.per_hour == {}
    october = await costs.month_to_date(datetime(2026, 10, 31, 23, 59, tzinfo=UTC))
    assert october == {"EUR": Decimal(2 + 4)}
    assert await costs.month_to_date(datetime(2026, 12, 1, tzinfo=UTC)) == {}
    entries = {e.name: e for e in await costs.entries()}
    assert entries["a"].deleted_by == "vanished"
    assert entries["a"].deleted_at == clock.now
    assert entries["b"].deleted_by == "bivy"
    # Deleting twice does not move the end.
    assert not await costs.record_deleted("acct", "hourly", "b-1", at=clock.now)


async def test_a_failed_account_listing_does_not_finalise_its_servers(tmp_path: Path) -> None:
    clock = Clock(T0)
    costs = service(tmp_path / "l.db", clock)
    await costs.observe(
        [ws("a", T0, eur("1")), ws("x", T0, eur("1"), account="other")],
        listed_accounts=["acct", "other"],
    )
    clock.advance(minutes=1)
    await costs.observe([ws("a", T0, eur("1"))], listed_accounts=["acct"])
    live = {e.name for e in await costs.entries() if e.deleted_at is None}
    assert live == {"a", "x"}


async def test_a_server_no_longer_listed_is_billed_to_its_lifetime_at_most(
    tmp_path: Path,
) -> None:
    clock = Clock(T0)
    costs = service(tmp_path / "l.db", clock)
    await costs.observe([ws("a", T0, eur("1"), max_hours=3)], listed_accounts=["acct"])
    clock.advance(hours=2)  # its account's listing fails from now on: still live, billed to now
    assert await costs.month_to_date() == {"EUR": Decimal(2)}
    clock.advance(days=1)  # it cannot have lived past its 3 h lifetime
    snap = await costs.observe([], listed_accounts=[], budget=Decimal(100))
    assert snap.month_to_date == {"EUR": Decimal(3)}
    assert snap.budget is not None and snap.budget.projected == 0
    (entry,) = await costs.entries()
    assert entry.deleted_at is None


async def test_a_server_gone_after_a_long_gap_is_billed_to_its_lifetime_at_most(
    tmp_path: Path,
) -> None:
    clock = Clock(T0)
    costs = service(tmp_path / "l.db", clock)
    await costs.observe([ws("a", T0, eur("1"), max_hours=3)], listed_accounts=["acct"])
    clock.advance(days=2)  # the app was closed; the VM deleted itself meanwhile
    await costs.observe([], listed_accounts=["acct"])
    (entry,) = await costs.entries()
    assert entry.deleted_at == T0 + timedelta(hours=3)
    assert await costs.month_to_date() == {"EUR": Decimal(3)}


async def test_a_server_seen_again_is_live_again(tmp_path: Path) -> None:
    clock = Clock(T0)
    costs = service(tmp_path / "l.db", clock)
    a = ws("a", T0, eur("1"))
    await costs.observe([a], listed_accounts=["acct"])
    clock.advance(minutes=1)
    await costs.observe([], listed_accounts=["acct"])
    clock.advance(minutes=1)
    await costs.observe([a], listed_accounts=["acct"])
    (entry,) = await costs.entries()
    assert entry.deleted_at is None and entry.deleted_by == ""


async def test_powered_off_time_is_free_only_when_the_rule_says_so(tmp_path: Path) -> None:
    clock = Clock(T0)
    costs = service(tmp_path / "l.db", clock)
    price = eur("3.6")
    await costs.observe([ws("f", T0, price, provider="freeoff")], listed_accounts=["acct"])
    await costs.observe([ws("h", T0, price, provider="hourly")], listed_accounts=["acct"])
    clock.advance(hours=1)
    both_off = [
        ws("f", T0, price, provider="freeoff", status=ServerStatus.OFF),
        ws("h", T0, price, provider="hourly", status=ServerStatus.OFF),
    ]
    await costs.observe(both_off, listed_accounts=["acct"])
    clock.advance(hours=1)
    snap = await costs.observe(both_off, listed_accounts=["acct"])
    # f: billed for the first hour only; h: the hour it was off is billed as well.
    assert snap.workspaces[("acct", "f")].so_far == Decimal("3.6")
    assert snap.workspaces[("acct", "f")].rate_now == 0
    assert snap.workspaces[("acct", "h")].so_far == Decimal("7.2")
    assert snap.workspaces[("acct", "h")].rate_now == Decimal("3.6")
    assert snap.per_hour == {"EUR": Decimal("3.6")}


async def test_price_falls_back_to_the_accounts_sizes(tmp_path: Path) -> None:
    clock = Clock(T0 + timedelta(minutes=5))
    costs = service(tmp_path / "l.db", clock)
    size = Size(name="cx23", cores=2, memory_gb=4, disk_gb=40, prices={"fsn1": eur("0.5")})
    snap = await costs.observe(
        [ws("a", T0, None), ws("b", T0, None, account="other")],
        listed_accounts=["acct", "other"],
        sizes={"acct": [size]},
    )
    assert snap.workspaces[("acct", "a")].so_far == Decimal("0.5")
    assert snap.unpriced == (("other", "b"),)
    assert snap.month_to_date == {"EUR": Decimal("0.5")}


async def test_currencies_are_kept_apart(tmp_path: Path) -> None:
    clock = Clock(T0 + timedelta(hours=1))
    costs = service(tmp_path / "l.db", clock)
    usd = Price(currency="USD", hourly=Decimal("0.04"), monthly=Decimal("24"))
    snap = await costs.observe(
        [ws("a", T0, eur("0.01")), ws("b", T0, usd, account="do")],
        listed_accounts=["acct", "do"],
        budget=Decimal("0.001"),
        budget_currency="EUR",
    )
    assert snap.per_hour == {"EUR": Decimal("0.01"), "USD": Decimal("0.04")}
    assert snap.month_to_date == {"EUR": Decimal("0.01"), "USD": Decimal("0.04")}
    assert snap.workspaces[("do", "b")].currency == "USD"
    assert snap.budget is not None
    assert snap.budget.month_to_date == Decimal("0.01")
    assert snap.budget.other_currencies == ("USD",)
    assert snap.budget.warning is not None and "USD" in snap.budget.warning


async def test_budget_warning_appears_and_disappears(tmp_path: Path) -> None:
    created = datetime(2026, 11, 10, 8, 0, tzinfo=UTC)
    clock = Clock(created + timedelta(minutes=30))
    costs = service(tmp_path / "l.db", clock)
    a = ws("a", created, eur("0.5"), max_hours=12)
    # Running to its 12 h lifetime it costs 6.00: within 10, over 5.
    snap = await costs.observe([a], listed_accounts=["acct"], budget=Decimal(10))
    assert snap.budget is not None and snap.budget.warning is None
    assert snap.budget.month_to_date == Decimal("0.5")
    assert snap.budget.projected == Decimal("5.5")
    snap = await costs.observe([a], listed_accounts=["acct"], budget=Decimal(5))
    assert snap.budget is not None and snap.budget.exceeded
    assert "5.00 EUR" in (snap.budget.warning or "")
    # Once it is deleted, only what it cost remains: the warning goes away.
    await costs.record_deleted("acct", "hourly", "id-a")
    snap = await costs.observe([], listed_accounts=["acct"], budget=Decimal(5))
    assert snap.budget is not None and snap.budget.warning is None
    assert snap.budget.projected == 0
    # No budget set: no check.
    assert await costs.budget_status(None, "EUR") is None


async def test_projection_stops_at_the_end_of_the_month(tmp_path: Path) -> None:
    clock = Clock(datetime(2026, 11, 30, 20, 0, tzinfo=UTC))
    costs = service(tmp_path / "l.db", clock)
    await costs.observe([ws("a", clock.now, eur("1"), max_hours=100)], listed_accounts=["acct"])
    status = await costs.budget_status(Decimal(3), "EUR")
    assert status is not None
    assert status.month_to_date == 0
    assert status.projected == Decimal(4)  # 20:00 → midnight, not 100 h
    assert status.exceeded


async def test_projection_respects_the_monthly_cap(tmp_path: Path) -> None:
    clock = Clock(datetime(2026, 11, 1, 0, 0, tzinfo=UTC))
    costs = service(tmp_path / "l.db", clock)
    a = ws("a", clock.now, eur("1", monthly="20"), max_hours=168)
    await costs.observe([a], listed_accounts=["acct"])
    status = await costs.budget_status(Decimal(100), "EUR")
    assert status is not None and status.projected == Decimal(20) and not status.exceeded


async def test_already_over_budget_says_so(tmp_path: Path) -> None:
    clock = Clock(T0 + timedelta(hours=10))
    costs = service(tmp_path / "l.db", clock)
    await costs.observe([ws("a", T0, eur("1"))], listed_accounts=["acct"])
    await costs.record_deleted("acct", "hourly", "id-a")
    status = await costs.budget_status(Decimal(5), "EUR")
    assert status is not None and status.warning is not None
    assert "over the budget" in status.warning


async def test_ledger_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    clock = Clock(T0)
    first = service(path, clock)
    await first.observe(
        [ws("a", T0, eur("1")), ws("b", T0, eur("2"), status=ServerStatus.OFF)],
        listed_accounts=["acct"],
    )
    clock.advance(minutes=90)
    await first.observe([ws("b", T0, eur("2"), status=ServerStatus.OFF)], listed_accounts=["acct"])
    before = await first.entries()
    mtd = await first.month_to_date()
    second = service(path, clock)
    assert await second.entries() == before
    # a vanished after 90 min (two started hours), b is still there, off (two hours at 2).
    assert await second.month_to_date() == mtd == {"EUR": Decimal(2 + 4)}


async def test_a_ledger_from_a_newer_bivy_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    costs = service(path, Clock(T0))
    await costs.month_to_date()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    conn.close()
    with pytest.raises(LedgerError, match="newer Bivy"):
        await service(path, Clock(T0)).month_to_date()


async def test_an_unusable_ledger_raises_a_bivy_error(tmp_path: Path) -> None:
    # (A file that is not a database is kept aside instead: test_costs_recovery.py.)
    path = tmp_path / "l.db"
    path.mkdir()  # a folder where the file should be: SQLite cannot open it
    with pytest.raises(LedgerError, match="cannot be used"):
        await service(path, Clock(T0)).month_to_date()
