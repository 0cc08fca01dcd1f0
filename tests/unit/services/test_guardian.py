"""Guardian: overdue, expiring and unaccounted Bivy servers, and bounded-concurrency deletion."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from app.domain import (
    LABEL_MANAGED_BY,
    LABEL_MAX_HOURS,
    LABEL_WORKSPACE,
    Server,
    ServerStatus,
    Workspace,
)
from app.errors import NotFound, ProviderUnavailable
from app.services.guardian import (
    Guardian,
    GuardianPolicy,
    GuardianTarget,
    decide,
)
from app.services.registry import WorkspaceRecord

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
POLICY = GuardianPolicy(warning_window=timedelta(minutes=10), grace=timedelta(minutes=2))


def ws(
    name: str,
    age: timedelta,
    *,
    label_hours: int | None = None,
    account: str = "acct",
    server_id: str | None = None,
    status: ServerStatus = ServerStatus.RUNNING,
    bivy: bool = True,
) -> Workspace:
    labels = {LABEL_WORKSPACE: name}
    if bivy:
        labels[LABEL_MANAGED_BY] = "bivy"
    if label_hours is not None:
        labels[LABEL_MAX_HOURS] = str(label_hours)
    server = Server(
        provider="hetzner",
        id=server_id or f"id-{name}",
        name=f"bivy-{name}",
        status=status,
        created_at=NOW - age,
        labels=labels,
    )
    return Workspace(name=name, account=account, provider="hetzner", server=server)


def rec(name: str, max_hours: int = 12, *, server_id: str | None = None) -> WorkspaceRecord:
    return WorkspaceRecord(
        name=name,
        account="acct",
        provider="hetzner",
        server_id=f"id-{name}" if server_id is None else server_id,
        max_hours=max_hours,
    )


def names(targets: tuple[GuardianTarget, ...]) -> list[str]:
    return sorted(t.name for t in targets)


def test_young_accounted_server_needs_nothing() -> None:
    decision = decide([ws("a", timedelta(hours=1), label_hours=12)], [rec("a")], NOW, POLICY)
    assert decision.overdue == decision.expiring == decision.unaccounted == ()


def test_overdue_expiring_and_grace() -> None:
    workspaces = [
        ws("fresh", timedelta(hours=11, minutes=49), label_hours=12),  # 11 min left
        ws("soon", timedelta(hours=11, minutes=50), label_hours=12),  # 10 min left
        ws("past", timedelta(hours=12, minutes=1), label_hours=12),  # in the grace
        ws("over", timedelta(hours=12, minutes=2), label_hours=12),  # grace over
    ]
    records = [rec(w.name) for w in workspaces]
    decision = decide(workspaces, records, NOW, POLICY)
    assert names(decision.expiring) == ["past", "soon"]
    assert names(decision.overdue) == ["over"]
    assert decision.unaccounted == ()
    over = decision.overdue[0]
    assert over.deadline == NOW - timedelta(minutes=2)
    assert decision.remaining(over) == timedelta(minutes=-2)
    assert over.accounted


def test_label_wins_over_the_registry_and_the_registry_fills_in() -> None:
    labelled = ws("l", timedelta(hours=3), label_hours=2)
    unlabelled = ws("u", timedelta(hours=3))
    decision = decide([labelled, unlabelled], [rec("l", 12), rec("u", 2)], NOW, POLICY)
    assert names(decision.overdue) == ["l", "u"]
    decision = decide([unlabelled], [rec("u", 12)], NOW, POLICY)
    assert decision.overdue == ()


def test_unaccounted_are_shown_not_deleted_unless_overdue() -> None:
    stranger = ws("stranger", timedelta(hours=1), label_hours=12)
    old_stranger = ws("old", timedelta(hours=13), label_hours=12)
    unknown_life = ws("nolabel", timedelta(days=30))
    decision = decide([stranger, old_stranger, unknown_life], [], NOW, POLICY)
    assert names(decision.unaccounted) == ["nolabel", "old", "stranger"]
    assert names(decision.overdue) == ["old"]
    nolabel = next(t for t in decision.unaccounted if t.name == "nolabel")
    assert nolabel.deadline is None and "lifetime is unknown" in nolabel.reason
    assert not nolabel.accounted


def test_a_record_for_another_server_id_does_not_account_for_it() -> None:
    other = ws("a", timedelta(hours=1), label_hours=12, server_id="999")
    decision = decide([other], [rec("a", server_id="111")], NOW, POLICY)
    assert names(decision.unaccounted) == ["a"]
    # A record written before the create call answered has no id: the name matches.
    decision = decide([other], [rec("a", server_id="")], NOW, POLICY)
    assert decision.unaccounted == ()
    # Another account's record does not count.
    decision = decide(
        [ws("a", timedelta(hours=1), label_hours=12, account="b")], [rec("a")], NOW, POLICY
    )
    assert names(decision.unaccounted) == ["a"]


def test_deleting_non_bivy_and_serverless_entries_are_ignored() -> None:
    workspaces = [
        ws("d", timedelta(hours=20), label_hours=12, status=ServerStatus.DELETING),
        ws("x", timedelta(hours=20), label_hours=12, bivy=False),
        Workspace(name="creating", account="acct", provider="hetzner"),
    ]
    decision = decide(workspaces, [], NOW, POLICY)
    assert decision.overdue == decision.expiring == decision.unaccounted == ()


async def test_guardian_deletes_overdue_and_warns_once() -> None:
    deleted: list[str] = []

    async def delete(target: GuardianTarget) -> None:
        deleted.append(target.name)

    clock = [NOW]
    guardian = Guardian(delete, policy=POLICY, clock=lambda: clock[0])
    workspaces = [
        ws("soon", timedelta(hours=11, minutes=55), label_hours=12),
        ws("over", timedelta(hours=13), label_hours=12),
        ws("young", timedelta(hours=1), label_hours=12),
    ]
    records = [rec("soon"), rec("over"), rec("young")]
    report = await guardian.run(workspaces, records)
    assert deleted == ["over"]
    assert names(report.deleted) == ["over"]
    assert names(report.new_warnings) == ["soon"]
    assert report.failed == ()
    clock[0] = NOW + timedelta(minutes=1)
    report = await guardian.run(workspaces[:1] + workspaces[2:], records)
    assert report.new_warnings == ()  # already announced
    assert names(report.decision.expiring) == ["soon"]
    assert deleted == ["over"]


async def test_a_failed_deletion_is_reported_and_retried_and_not_found_counts_as_done() -> None:
    calls: list[str] = []

    async def delete(target: GuardianTarget) -> None:
        calls.append(target.name)
        if target.name == "gone":
            raise NotFound("no such server")
        if len(calls) <= 2:
            raise ProviderUnavailable("Hetzner had a server error (HTTP 503)")

    guardian = Guardian(delete, policy=POLICY, clock=lambda: NOW)
    workspaces = [
        ws("gone", timedelta(hours=13), label_hours=12),
        ws("flaky", timedelta(hours=13), label_hours=12),
    ]
    report = await guardian.run(workspaces, [])
    assert names(report.deleted) == ["gone"]
    assert [(t.name, type(e)) for t, e in report.failed] == [("flaky", ProviderUnavailable)]
    report = await guardian.run(workspaces[1:], [])
    assert names(report.deleted) == ["flaky"] and report.failed == ()


async def test_deletions_run_with_bounded_concurrency() -> None:
    active = 0
    peak = 0
    gate = asyncio.Event()

    async def delete(target: GuardianTarget) -> None:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        try:
            await gate.wait()
        finally:
            active -= 1

    guardian = Guardian(delete, policy=POLICY, concurrency=2, clock=lambda: NOW)
    workspaces = [ws(f"w{i}", timedelta(hours=13), label_hours=12) for i in range(6)]
    run = asyncio.create_task(guardian.run(workspaces, []))
    while active < 2:
        await asyncio.sleep(0)
    for _ in range(20):  # give any unbounded extra deletion the chance to start
        await asyncio.sleep(0)
    assert active == 2
    # A second run meanwhile does not delete the same servers again.
    overlapping = await guardian.run(workspaces, [])
    assert len(overlapping.skipped) == 6 and overlapping.deleted == ()
    gate.set()
    report = await run
    assert peak == 2
    assert len(report.deleted) == 6


async def test_a_bug_in_a_deletion_propagates_after_the_others_finished() -> None:
    finished: list[str] = []

    async def delete(target: GuardianTarget) -> None:
        if target.name == "bad":
            raise RuntimeError("bug")
        await asyncio.sleep(0)
        finished.append(target.name)

    guardian = Guardian(delete, policy=POLICY, concurrency=3, clock=lambda: NOW)
    workspaces = [ws(n, timedelta(hours=13), label_hours=12) for n in ("bad", "ok1", "ok2")]
    with pytest.raises(RuntimeError, match="bug"):
        await guardian.run(workspaces, [])
    assert sorted(finished) == ["ok1", "ok2"]
    assert asyncio.all_tasks() == {asyncio.current_task()}


def test_concurrency_must_be_positive() -> None:
    async def delete(target: GuardianTarget) -> None:
        return None

    with pytest.raises(ValueError, match="at least 1"):
        Guardian(delete, concurrency=0)
