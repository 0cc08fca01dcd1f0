"""The app's guard over Bivy VMs: delete the overdue, warn before, show the unaccounted."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from app.domain import LABEL_MAX_HOURS, Server, ServerStatus, Workspace, utcnow
from app.errors import BivyError, NotFound

__all__ = [
    "FINAL_BACKUP_LIMIT",
    "DeleteCallback",
    "FinalBackupCallback",
    "Guardian",
    "GuardianDecision",
    "GuardianPolicy",
    "GuardianReport",
    "GuardianTarget",
    "RecordLike",
    "decide",
]

log = logging.getLogger(__name__)


class RecordLike(Protocol):
    """What the guardian reads of a registry record (``app.services.registry.WorkspaceRecord``)."""

    @property
    def name(self) -> str: ...
    @property
    def account(self) -> str: ...
    @property
    def provider(self) -> str: ...
    @property
    def server_id(self) -> str: ...
    @property
    def max_hours(self) -> int: ...


@dataclass(frozen=True)
class GuardianPolicy:
    """When the guardian acts.

    Attributes:
        warning_window: how long before the lifetime deadline a warning is raised.
        grace: how long after the deadline the app waits before deleting; the VM's own
            lifetime timer backs the agent's history up first and should win the race.
    """

    warning_window: timedelta = timedelta(minutes=10)
    grace: timedelta = timedelta(minutes=5)


@dataclass(frozen=True)
class GuardianTarget:
    """One Bivy server the guardian has an opinion on.

    Attributes:
        account, provider, server_id: which server.
        name: the workspace name (label ``bivy-workspace``, else the server name).
        deadline: created_at + max_hours (UTC), or None when its lifetime is unknown.
        accounted: the local registry knows it.
        reason: for an unaccounted server, why it is listed.
    """

    account: str
    provider: str
    server_id: str
    name: str
    deadline: datetime | None
    accounted: bool
    reason: str = ""

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.account, self.provider, self.server_id)


@dataclass(frozen=True)
class GuardianDecision:
    """What ``decide`` found at ``now``.

    Attributes:
        now: the moment decided for (UTC).
        overdue: past deadline + grace: delete them (accounted or not).
        expiring: deadline within the warning window (or past it, within the grace).
        unaccounted: carry managed-by=bivy but no local registry record; show, do not delete
            (unless they are also in ``overdue``).
    """

    now: datetime
    overdue: tuple[GuardianTarget, ...] = ()
    expiring: tuple[GuardianTarget, ...] = ()
    unaccounted: tuple[GuardianTarget, ...] = ()

    def remaining(self, target: GuardianTarget) -> timedelta | None:
        """Time left before ``target``'s deadline (negative once past)."""
        return None if target.deadline is None else target.deadline - self.now


def _label_hours(server: Server) -> int | None:
    try:
        value = int(server.labels.get(LABEL_MAX_HOURS, ""))
    except ValueError:
        return None
    return value if value > 0 else None


def _match(ws: Workspace, server: Server, records: Sequence[RecordLike]) -> RecordLike | None:
    for record in records:
        if record.account != ws.account or record.provider != server.provider:
            continue
        # A record with a server id matches that server only: another install may reuse a name.
        if record.server_id:
            if record.server_id == server.id:
                return record
        elif record.name == ws.name:
            return record
    return None


def decide(
    workspaces: Iterable[Workspace],
    records: Iterable[RecordLike],
    now: datetime,
    policy: GuardianPolicy | None = None,
) -> GuardianDecision:
    """Sort the listed Bivy servers into overdue, expiring soon and unaccounted (pure).

    The lifetime comes from the server's ``bivy-max-hours`` label (what the VM itself
    enforces), else from the registry record. A server with neither (or without a creation
    time) is never deleted: its lifetime is unknown. Servers already being deleted are left
    alone.
    """
    policy = policy or GuardianPolicy()
    records = list(records)
    overdue: list[GuardianTarget] = []
    expiring: list[GuardianTarget] = []
    unaccounted: list[GuardianTarget] = []
    for ws in workspaces:
        server = ws.server
        if server is None or not server.is_bivy or server.status is ServerStatus.DELETING:
            continue
        record = _match(ws, server, records)
        hours = _label_hours(server)
        if hours is None and record is not None:
            hours = record.max_hours
        deadline = (
            server.created_at + timedelta(hours=hours)
            if hours is not None and server.created_at is not None
            else None
        )
        reason = ""
        if record is None:
            reason = "not created by this installation of Bivy (no local record)"
            if deadline is None:
                reason += "; its maximum lifetime is unknown, so Bivy will not delete it"
        target = GuardianTarget(
            account=ws.account,
            provider=server.provider,
            server_id=server.id,
            name=server.workspace_name or server.name,
            deadline=deadline,
            accounted=record is not None,
            reason=reason,
        )
        if record is None:
            unaccounted.append(target)
        if deadline is None:
            continue
        if now >= deadline + policy.grace:
            overdue.append(target)
        elif now >= deadline - policy.warning_window:
            expiring.append(target)
    return GuardianDecision(
        now=now, overdue=tuple(overdue), expiring=tuple(expiring), unaccounted=tuple(unaccounted)
    )


DeleteCallback = Callable[[GuardianTarget], Awaitable[None]]
#: Asks the VM for its last backup (``app.services.final_backup.FinalBackup``): True when one
#: ran, False when there was nothing to ask (backups off); raises ``BivyError`` when it failed.
FinalBackupCallback = Callable[[GuardianTarget], Awaitable[bool]]

#: How long the guardian waits for an overdue VM's final backup before deleting it anyway.
FINAL_BACKUP_LIMIT = 300.0


@dataclass(frozen=True)
class GuardianReport:
    """The outcome of one ``Guardian.run``.

    Attributes:
        decision: what ``decide`` found.
        new_warnings: expiring targets not announced by an earlier run (notify these).
        deleted: overdue targets deleted now (``NotFound`` counts: already gone).
        failed: overdue targets whose deletion failed, with the error; retried next run.
        skipped: overdue targets whose deletion was still in flight from another run.
        backups: for each overdue target asked for a final backup, what came of it ("done",
            "not needed" when backups are off, or why it failed); the deletion went ahead
            either way.
    """

    decision: GuardianDecision
    new_warnings: tuple[GuardianTarget, ...] = ()
    deleted: tuple[GuardianTarget, ...] = ()
    failed: tuple[tuple[GuardianTarget, BivyError], ...] = field(default=())
    skipped: tuple[GuardianTarget, ...] = ()
    backups: tuple[tuple[GuardianTarget, str], ...] = ()


class Guardian:
    """Runs ``decide`` on each refresh and deletes what is overdue, a few at a time.

    Attributes:
        delete: the coroutine that deletes one target (WorkspaceService or the provider).
        final_backup: asks an overdue VM for its last backup before the delete (None: never);
            bounded by ``backup_limit`` seconds, after which the hard lifetime wins.
        policy: the warning window and grace.
        concurrency: deletions running at once, at most.
        clock: the current UTC time.
    """

    def __init__(
        self,
        delete: DeleteCallback,
        *,
        policy: GuardianPolicy | None = None,
        concurrency: int = 3,
        clock: Callable[[], datetime] = utcnow,
        final_backup: FinalBackupCallback | None = None,
        backup_limit: float = FINAL_BACKUP_LIMIT,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.delete = delete
        self.final_backup = final_backup
        self.backup_limit = backup_limit
        self.policy = policy or GuardianPolicy()
        self.concurrency = concurrency
        self.clock = clock
        self._warned: set[tuple[str, str, str]] = set()
        self._in_flight: set[tuple[str, str, str]] = set()

    async def run(
        self, workspaces: Sequence[Workspace], records: Iterable[RecordLike]
    ) -> GuardianReport:
        """Decide, delete the overdue (bounded concurrency) and report; never raises BivyError."""
        decision = decide(workspaces, records, self.clock(), self.policy)
        listed = {
            (ws.account, ws.server.provider, ws.server.id)
            for ws in workspaces
            if ws.server is not None
        }
        # Forget warnings for servers that are gone, so a reused id warns again.
        self._warned &= listed
        new_warnings = tuple(t for t in decision.expiring if t.key not in self._warned)
        self._warned.update(t.key for t in new_warnings)

        todo = [t for t in decision.overdue if t.key not in self._in_flight]
        skipped = tuple(t for t in decision.overdue if t.key in self._in_flight)
        self._in_flight.update(t.key for t in todo)
        semaphore = asyncio.Semaphore(self.concurrency)

        backups: list[tuple[GuardianTarget, str]] = []

        async def one(target: GuardianTarget) -> BivyError | None:
            try:
                async with semaphore:
                    if self.final_backup is not None and target.accounted:
                        backups.append((target, await self._final_backup(target)))
                    log.info(
                        "deleting %s (%s/%s): past its maximum lifetime",
                        target.name,
                        target.account,
                        target.server_id,
                    )
                    await self.delete(target)
                return None
            except NotFound:
                return None
            except BivyError as exc:
                log.warning("could not delete overdue %s: %s", target.name, exc.message)
                return exc
            finally:
                self._in_flight.discard(target.key)

        # return_exceptions: a bug in one deletion must not orphan the others mid-flight.
        outcomes = await asyncio.gather(*(one(t) for t in todo), return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException) and not isinstance(outcome, BivyError):
                raise outcome
        results = [o if isinstance(o, BivyError) else None for o in outcomes]
        deleted = tuple(t for t, err in zip(todo, results, strict=True) if err is None)
        failed = tuple((t, err) for t, err in zip(todo, results, strict=True) if err is not None)
        return GuardianReport(
            decision=decision,
            new_warnings=new_warnings,
            deleted=deleted,
            failed=failed,
            skipped=skipped,
            backups=tuple(backups),
        )

    async def _final_backup(self, target: GuardianTarget) -> str:
        """Ask for the last backup, at most ``backup_limit`` s; what came of it, never raises
        (a VM that cannot back up is deleted all the same: its lifetime is a hard limit)."""
        assert self.final_backup is not None
        try:
            async with asyncio.timeout(self.backup_limit):
                ran = await self.final_backup(target)
        except TimeoutError:
            log.warning(
                "the final backup of %s did not finish in %g s; deleting it anyway",
                target.name,
                self.backup_limit,
            )
            return f"did not finish in {self.backup_limit:g} s"
        except BivyError as exc:
            log.warning("the final backup of %s failed: %s; deleting it anyway", target.name, exc)
            return f"failed: {exc.one_line()}"
        return "done" if ran else "not needed"
