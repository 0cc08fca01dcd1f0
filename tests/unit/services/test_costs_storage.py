"""Prebuild storage in the ledger: GB × price per GB-month, pro rata over the time each image
existed in the month, kept after a deletion, in the month-to-date total and the budget."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from app.domain import (
    LABEL_MANAGED_BY,
    LABEL_WORKSPACE,
    ImageStatus,
    Price,
    ProviderImage,
    Server,
    ServerStatus,
    Workspace,
)
from app.providers.base import BillingRule
from app.services.billing import month_bounds, storage_amount, storage_rest_of_month
from app.services.costs import CostService, SeenImage, seen_image, seen_prebuild

NOV = datetime(2026, 11, 1, tzinfo=UTC)  # a 30-day month: 2 592 000 s
DEC = datetime(2026, 12, 1, tzinfo=UTC)  # a 31-day month
RULE = BillingRule(granularity="hour", billed_when_off=True, monthly_cap=True)


def monthly(value: str, currency: str = "EUR") -> Price:
    return Price(currency=currency, hourly=Decimal(0), monthly=Decimal(value))


def image(
    image_id: str,
    created: datetime | None,
    *,
    size: str | None = "30",
    per_month: str | None = "0.36",
    account: str = "acct",
    provider: str = "hetzner",
) -> SeenImage:
    return SeenImage(
        account=account,
        provider=provider,
        image_id=image_id,
        name=f"https://example.com/{image_id}.git",
        size_gb=Decimal(size) if size is not None else None,
        price=monthly(per_month) if per_month is not None else None,
        created_at=created,
    )


@dataclass
class Clock:
    now: datetime

    def __call__(self) -> datetime:
        return self.now


def service(path: Path, clock: Clock) -> CostService:
    return CostService(path, rule_for=lambda kind: RULE, clock=clock)


# --- the arithmetic ------------------------------------------------------------------------


def test_a_whole_month_costs_the_monthly_price_whatever_the_month_length() -> None:
    nov, dec = month_bounds(NOV), month_bounds(DEC)
    # 10 GB at 0.0119 per GB-month.
    price = Decimal("10") * Decimal("0.0119")
    oct1 = datetime(2026, 10, 1, tzinfo=UTC)
    assert storage_amount(price, oct1, DEC, window=nov) == Decimal("0.119")
    assert storage_amount(price, oct1, datetime(2027, 1, 1, tzinfo=UTC), window=dec) == Decimal(
        "0.119"
    )


def test_pro_rata_by_the_seconds_of_each_calendar_month() -> None:
    price = Decimal("0.119")
    # Created mid-November: 15 of 30 days.
    assert storage_amount(price, datetime(2026, 11, 16, tzinfo=UTC), DEC) == Decimal("0.0595")
    # December has 31 days: 15.5 of them is half.
    assert storage_amount(price, DEC, datetime(2026, 12, 16, 12, tzinfo=UTC)) == Decimal("0.0595")
    # 10 of 30 days: a third, kept to a millionth (half up).
    assert storage_amount(price, NOV, datetime(2026, 11, 11, tzinfo=UTC)) == Decimal("0.039667")
    # One hour of a 30-day month: 0.36 / 720.
    assert storage_amount(Decimal("0.36"), NOV, NOV + timedelta(hours=1)) == Decimal("0.0005")
    assert storage_amount(price, NOV, NOV) == Decimal(0)


def test_across_a_month_boundary_each_month_is_billed_on_its_own() -> None:
    price = Decimal("0.119")
    created = datetime(2026, 10, 16, 12, tzinfo=UTC)  # 15.5 of October's 31 days
    until = datetime(2026, 11, 16, tzinfo=UTC)  # 15 of November's 30 days
    assert storage_amount(price, created, until) == Decimal("0.119")
    assert storage_amount(price, created, until, window=month_bounds(NOV)) == Decimal("0.0595")
    assert storage_amount(price, created, until, window=month_bounds(created)) == Decimal("0.0595")


def test_what_an_image_adds_until_the_month_ends() -> None:
    now = datetime(2026, 11, 21, tzinfo=UTC)
    assert storage_rest_of_month(Decimal("0.36"), NOV, now) == Decimal("0.12")
    # Created after now (clock skew) it adds its whole share from creation only.
    assert storage_rest_of_month(Decimal("0.36"), datetime(2026, 11, 26, tzinfo=UTC), now) == (
        Decimal("0.06")
    )


# --- the ledger and the month-to-date total --------------------------------------------------


async def test_month_to_date_counts_live_deleted_and_new_prebuilds(tmp_path: Path) -> None:
    clock = Clock(datetime(2026, 11, 11, tzinfo=UTC))
    costs = service(tmp_path / "ledger.sqlite3", clock)
    # Built in October, kept: all of November so far.
    kept = image("kept", datetime(2026, 10, 3, tzinfo=UTC))
    # Built on the 1st, deleted on the 11th by Bivy.
    gone = image("gone", NOV)
    await costs.observe_images([kept, gone], listed_accounts=["acct"])
    assert await costs.record_image_deleted("acct", "hetzner", "gone")
    assert not await costs.record_image_deleted("acct", "hetzner", "gone")  # already final
    # Built mid-month (the 16th), after the deletion.
    clock.now = datetime(2026, 11, 16, tzinfo=UTC)
    new = image("new", clock.now)
    await costs.observe_images([kept, new], listed_accounts=["acct"])

    clock.now = datetime(2026, 11, 21, tzinfo=UTC)
    # kept: 20/30 × 0.36 = 0.24; gone: 10/30 × 0.36 = 0.12; new: 5/30 × 0.36 = 0.06.
    assert await costs.month_to_date() == {"EUR": Decimal("0.42")}
    # A new process (another window, the CLI) reads the same figures from the file.
    again = service(tmp_path / "ledger.sqlite3", clock)
    assert await again.month_to_date() == {"EUR": Decimal("0.42")}
    entries = {e.image_id: e for e in await again.image_entries(month_of=clock.now)}
    assert entries["gone"].deleted_by == "bivy"
    assert entries["gone"].deleted_at == datetime(2026, 11, 11, tzinfo=UTC)
    assert entries["new"].deleted_at is None
    assert entries["kept"].size_gb == Decimal("30")

    # In December the deleted one is gone from the month; the live ones cost whole days.
    clock.now = datetime(2026, 12, 1, 12, tzinfo=UTC)
    # Half a day of 31, each image on its own: 0.36 × 0.5 / 31 = 0.0058064… → 0.005806, twice.
    assert await again.month_to_date() == {"EUR": Decimal("0.011612")}
    assert {e.image_id for e in await again.image_entries(month_of=clock.now)} == {"kept", "new"}
    # November's figure is still there when asked for.
    # kept 29.5/30 × 0.36 = 0.354, gone 0.12, new 14.5/30 × 0.36 = 0.174.
    assert await again.month_to_date(datetime(2026, 11, 30, 12, tzinfo=UTC)) == {
        "EUR": Decimal("0.648")
    }


async def test_storage_adds_to_the_servers_and_is_shown_apart(tmp_path: Path) -> None:
    clock = Clock(datetime(2026, 11, 21, tzinfo=UTC))
    costs = service(tmp_path / "ledger.sqlite3", clock)
    server = Server(
        provider="hetzner",
        id="42",
        name="bivy-w",
        status=ServerStatus.RUNNING,
        created_at=datetime(2026, 11, 20, 22, tzinfo=UTC),
        labels={LABEL_MANAGED_BY: "bivy", LABEL_WORKSPACE: "w"},
        price=Price(currency="EUR", hourly=Decimal("0.01"), monthly=Decimal("6")),
    )
    ws = Workspace(name="w", account="acct", provider="hetzner", server=server)
    await costs.observe_images(
        [image("kept", datetime(2026, 10, 3, tzinfo=UTC))], listed_accounts=()
    )
    snap = await costs.observe(
        [ws], listed_accounts=["acct"], budget=Decimal("0.3"), budget_currency="EUR"
    )
    # Server: 2 started hours = 0.02; storage 20/30 × 0.36 = 0.24.
    assert snap.month_to_date == {"EUR": Decimal("0.26")}
    assert snap.storage_month_to_date == {"EUR": Decimal("0.24")}
    assert snap.storage_per_month == {"EUR": Decimal("0.36")}
    assert snap.budget is not None
    # Projected: the server until its maximum lifetime (12 h from 22:00: 10 more hours, 0.10)
    # plus the image's last 10 days of the month (0.12).
    assert snap.budget.projected == Decimal("0.22")
    assert snap.budget.warning is not None and "prebuilds are kept" in snap.budget.warning


async def test_an_image_missing_from_a_complete_listing_is_finalised_then(tmp_path: Path) -> None:
    clock = Clock(datetime(2026, 11, 6, tzinfo=UTC))
    costs = service(tmp_path / "ledger.sqlite3", clock)
    await costs.observe_images([image("a", NOV), image("b", NOV)], listed_accounts=["acct"])
    clock.now = datetime(2026, 11, 11, tzinfo=UTC)
    # Another account's listing failed (not in listed): its images are left alone.
    other = image("c", NOV, account="other")
    await costs.observe_images([other], listed_accounts=())
    await costs.observe_images([image("a", NOV)], listed_accounts=["acct"])
    entries = {e.image_id: e for e in await costs.image_entries()}
    assert entries["b"].deleted_by == "vanished"
    assert entries["b"].deleted_at == datetime(2026, 11, 11, tzinfo=UTC)
    assert entries["c"].deleted_at is None
    clock.now = datetime(2026, 11, 16, tzinfo=UTC)
    # a: 15 days, b: 10, c: 15 → 0.36 × 40/30 = 0.48.
    assert await costs.month_to_date() == {"EUR": Decimal("0.48")}
    # An older listing that finishes late does not bring b back nor move a's last sighting.
    costs._ledger.record_images([image("b", NOV)], (), datetime(2026, 11, 10, tzinfo=UTC))
    assert {e.image_id: e.deleted_at for e in await costs.image_entries()}["b"] is not None
    # Listed again later (the provider's list lagged): it is live again, billed throughout.
    clock.now = datetime(2026, 11, 21, tzinfo=UTC)
    await costs.observe_images([image("a", NOV), image("b", NOV)], listed_accounts=["acct"])
    assert await costs.month_to_date() == {"EUR": Decimal("0.72")}  # 20 days each


async def test_a_listing_that_raced_bivys_delete_does_not_bring_it_back(tmp_path: Path) -> None:
    clock = Clock(datetime(2026, 11, 6, tzinfo=UTC))
    costs = service(tmp_path / "ledger.sqlite3", clock)
    await costs.observe_images([image("a", NOV)], listed_accounts=["acct"])
    listed_before_the_delete = [image("a", NOV)]
    clock.now = datetime(2026, 11, 11, tzinfo=UTC)
    assert await costs.record_image_deleted("acct", "hetzner", "a")
    clock.now = datetime(2026, 11, 11, 0, 0, 5, tzinfo=UTC)
    await costs.observe_images(listed_before_the_delete, listed_accounts=["acct"])
    (entry,) = await costs.image_entries()
    assert (entry.deleted_by, entry.deleted_at) == ("bivy", datetime(2026, 11, 11, tzinfo=UTC))
    clock.now = datetime(2026, 11, 21, tzinfo=UTC)
    assert await costs.month_to_date() == {"EUR": Decimal("0.12")}


async def test_a_price_learnt_later_bills_from_creation_and_sizes_are_kept(tmp_path: Path) -> None:
    clock = Clock(datetime(2026, 11, 2, tzinfo=UTC))
    costs = service(tmp_path / "ledger.sqlite3", clock)
    # Still being created: no size, no price yet. Not billed while unknown…
    await costs.observe_images([image("a", NOV, size=None, per_month=None)], listed_accounts=())
    assert await costs.month_to_date() == {}
    # …then the listing reports it: billed from its creation on.
    clock.now = datetime(2026, 11, 4, tzinfo=UTC)
    await costs.observe_images([image("a", NOV)], listed_accounts=())
    assert await costs.month_to_date() == {"EUR": Decimal("0.036")}  # 3/30 × 0.36
    # A listing without the price again keeps the known one.
    await costs.observe_images([image("a", NOV, size=None, per_month=None)], listed_accounts=())
    (entry,) = await costs.image_entries()
    assert entry.size_gb == Decimal("30") and entry.price == monthly("0.36")


async def test_currencies_are_never_summed(tmp_path: Path) -> None:
    clock = Clock(datetime(2026, 11, 16, tzinfo=UTC))
    costs = service(tmp_path / "ledger.sqlite3", clock)
    usd = SeenImage("do", "digitalocean", "7", "repo", Decimal("20"), monthly("1.2", "USD"), NOV)
    await costs.observe_images([image("a", NOV), usd], listed_accounts=())
    assert await costs.month_to_date() == {"EUR": Decimal("0.18"), "USD": Decimal("0.6")}


def test_provider_images_and_prebuild_records_become_ledger_items() -> None:
    img = ProviderImage(
        provider="hetzner",
        id="123",
        name="bivy-prebuild-x",
        status=ImageStatus.AVAILABLE,
        size_gb=2.1,
        created_at=NOV,
        monthly_price=monthly("0.02499"),
    )
    item = seen_image("acct", img)
    assert item.size_gb == Decimal("2.1")  # not 2.100000000000000088817841970012523…
    assert (item.image_id, item.name, item.price) == ("123", "bivy-prebuild-x", monthly("0.02499"))

    @dataclass
    class Record:
        id: str = "9"
        account: str = "acct"
        provider: str = "local"
        repo: str = "https://example.com/r.git"
        size_gb: float | None = 3.5
        monthly_price: Price | None = None
        created_at: datetime | None = NOV

    item = seen_prebuild(Record())
    assert (item.image_id, item.name, item.size_gb, item.price) == (
        "9",
        "https://example.com/r.git",
        Decimal("3.5"),
        None,
    )


async def test_a_ledger_from_before_prebuilds_gains_the_images_table(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    clock = Clock(datetime(2026, 11, 16, tzinfo=UTC))
    await service(path, clock).month_to_date()
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TABLE images")
    costs = service(path, clock)
    await costs.observe_images([image("a", NOV)], listed_accounts=())
    assert await costs.month_to_date() == {"EUR": Decimal("0.18")}


async def test_the_cli_notes_built_listed_and_deleted_prebuilds_best_effort(
    tmp_path: Path,
) -> None:
    from app.services.costs import note_prebuilds
    from app.services.prebuild_registry import PrebuildRecord

    clock = Clock(datetime(2026, 11, 11, tzinfo=UTC))
    costs = service(tmp_path / "ledger.sqlite3", clock)
    record = PrebuildRecord(
        id="77", account="acct", provider="hetzner", repo="https://example.com/r.git",
        size_gb=30, monthly_price=monthly("0.36"), created_at=NOV,
    )  # fmt: skip
    await note_prebuilds([record], service=costs)
    clock.now = datetime(2026, 11, 16, tzinfo=UTC)
    await note_prebuilds(deleted=[record], service=costs)
    (entry,) = await costs.image_entries()
    assert (entry.name, entry.deleted_by, entry.deleted_at) == (record.repo, "bivy", clock.now)
    clock.now = datetime(2026, 11, 30, tzinfo=UTC)
    assert await costs.month_to_date() == {"EUR": Decimal("0.18")}  # 15 of 30 days
    # A ledger that cannot be used does not fail the CLI's finished work.
    (tmp_path / "dir-not-db").mkdir()
    broken = service(tmp_path / "dir-not-db", clock)
    await note_prebuilds([record], deleted=[record], service=broken)
