"""The window's prebuilds controller (issue 14): builds, deletes, listings over PrebuildService.

``PrebuildsController`` runs them as its tasks (off the Qt thread's critical path) and records
every listing and deletion in the cost ledger (snapshot storage is billed per GB-month and belongs
in the month-to-date total). ``BuildRequest`` and ``Build`` are what the dialogs ask for and show;
``MatchState`` is the create dialog's answer about a prebuild for its repository and place.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from PySide6.QtCore import QObject, Signal

from app.domain import ImageStatus, WorkspaceSpec
from app.errors import BivyError
from app.services.accounts import provider_class
from app.services.costs import CostService, seen_prebuild
from app.services.prebuild_hash import repo_key
from app.services.prebuilds import BuildProgress, PrebuildRecord, PrebuildService, match_prebuild
from app.settings import Account
from app.ui.controllers import Controller


@dataclass(frozen=True)
class BuildRequest:
    """What to prebuild and where.

    Attributes:
        repo: URL or absolute path of a local checkout; branch: None for the default.
        account, region, size: where the builder VM runs (the image is made there).
        agent: the agent installed; include_uncommitted: for a local checkout.
        replaces: the prebuild a "Rebuild" replaces (deleted once the new one is ready).
    """

    repo: str
    account: str
    region: str | None = None
    size: str | None = None
    branch: str | None = None
    agent: str = "claude"
    include_uncommitted: bool = False
    replaces: PrebuildRecord | None = None

    @property
    def key(self) -> str:
        """One build at a time per repository, branch, agent and place."""
        return "\0".join(
            (self.account, self.region or "", repo_key(self.repo, self.branch), self.agent)
        )


@dataclass
class Build:
    """A build the window started: running (``error`` empty) or failed.

    Attributes:
        request: what is built; progress: the last step reported (None before the first);
        error: why it failed ("" while running); started: monotonic seconds.
    """

    request: BuildRequest
    progress: BuildProgress | None = None
    error: str = ""
    started: float = field(default_factory=time.monotonic)

    @property
    def fraction(self) -> float:
        return self.progress.fraction if self.progress is not None else 0.0


class MatchState(StrEnum):
    """What the create dialog says about prebuilds for the chosen repository and place."""

    READY = "ready"
    STALE = "stale"
    BUILDING = "building"
    NONE = "none"
    UNSUPPORTED = "unsupported"


def snapshot_accounts(accounts: list[Account]) -> list[Account]:
    """The accounts whose provider can make images (the only ones with prebuilds)."""
    out = []
    for account in accounts:
        try:
            if provider_class(account.provider).capabilities.snapshots:
                out.append(account)
        except BivyError:
            continue
    return out


class PrebuildsController(Controller):
    """Prebuilds over ``PrebuildService``; the ledger learns every listing and deletion.

    Signals:
        listed(records): a listing finished (``records``: list of ``PrebuildRecord``).
        changed(): a build started, advanced, finished or failed (see ``builds``).
        built(record): a build finished; deleted(record): a prebuild was deleted.
        storage(per_currency): this month's storage cost so far per currency, after a listing.
    Attributes:
        service: the ``PrebuildService``; costs: the ``CostService`` (None: no ledger).
        records: the last listing; builds: key → ``Build`` (running or failed).
    """

    listed = Signal(object)
    changed = Signal()
    built = Signal(object)
    deleted = Signal(object)
    storage = Signal(object)

    def __init__(
        self,
        service: PrebuildService,
        costs: CostService | None = None,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.service = service
        self.costs = costs
        self.records: list[PrebuildRecord] = []
        self.builds: dict[str, Build] = {}
        self.listed_once = False

    def accounts(self) -> list[Account]:
        return snapshot_accounts(self.service.workspaces.accounts())

    # -- listing --------------------------------------------------------------------------

    def start_refresh(self) -> asyncio.Task[Any] | None:
        if self.running("list"):
            return None
        return self.start("list", self._refresh())

    async def _refresh(self) -> list[PrebuildRecord]:
        records = await self.service.list(refresh=True)
        self.records = records
        self.listed_once = True
        self.listed.emit(records)
        if self.costs is not None:
            failed = set(self.service.errors)
            complete = [a.id for a in self.accounts() if a.id not in failed]
            priced = [
                seen_prebuild(_named(r)) for r in records if r.status is not ImageStatus.FAILED
            ]
            await self.costs.observe_images(priced, listed_accounts=complete)
            snapshot = await self.costs.snapshot()
            self.storage.emit(dict(snapshot.storage_month_to_date))
        return records

    # -- builds ---------------------------------------------------------------------------

    def start_build(self, request: BuildRequest) -> asyncio.Task[Any] | None:
        """Build in the background (one at a time per ``request.key``); a failure stays in
        ``builds`` with its message until the same build is started again."""
        name = f"build:{request.key}"
        if self.running(name):
            return None
        self.builds[request.key] = Build(request)
        self.changed.emit()
        task = self.start(name, self._build(request))
        task.add_done_callback(lambda _: self._build_ended(request.key))
        return task

    def _build_ended(self, key: str) -> None:
        # Cancelled, even before it began: its row goes (a failure keeps its row and reason).
        build = self.builds.get(key)
        if build is not None and not build.error and not self.running(f"build:{key}"):
            del self.builds[key]
            self.changed.emit()

    async def _build(self, request: BuildRequest) -> PrebuildRecord | None:
        build = self.builds[request.key]

        def progress(step: BuildProgress) -> None:
            build.progress = step
            self.changed.emit()

        try:
            record = await self.service.build(
                request.repo,
                account=request.account,
                region=request.region,
                size=request.size,
                branch=request.branch,
                agent=request.agent,
                include_uncommitted=request.include_uncommitted,
                progress=progress,
            )
        except BivyError as exc:
            build.error = exc.message + (f" — {exc.hint}" if exc.hint else "")
            self.changed.emit()
            raise
        except asyncio.CancelledError:
            self.builds.pop(request.key, None)
            self.changed.emit()
            raise
        self.builds.pop(request.key, None)
        if self.costs is not None:
            # Counted from its creation even if nobody lists the prebuilds again this month.
            await self.costs.observe_images([seen_prebuild(_named(record))], listed_accounts=())
        self.built.emit(record)
        self.changed.emit()
        old = request.replaces
        if old is not None and old.id != record.id:
            await self._delete(old)  # the rebuild replaces it: no double storage bill
        await self._refresh()
        return record

    def dismiss(self, key: str) -> None:
        """Forget a failed build's row."""
        build = self.builds.get(key)
        if build is not None and build.error:
            del self.builds[key]
            self.changed.emit()

    # -- delete ---------------------------------------------------------------------------

    def start_delete(self, record: PrebuildRecord) -> asyncio.Task[Any] | None:
        name = f"delete:{record.account}:{record.id}"
        if self.running(name):
            return None
        return self.start(name, self._delete_then_list(record))

    async def _delete_then_list(self, record: PrebuildRecord) -> None:
        await self._delete(record)
        await self._refresh()

    async def _delete(self, record: PrebuildRecord) -> None:
        await self.service.delete(record.id, record.account)
        if self.costs is not None:
            # What it cost this month stays in the total; from now on it costs nothing.
            await self.costs.record_image_deleted(record.account, record.provider, record.id)
        self.records = [r for r in self.records if r.key != record.key]
        self.deleted.emit(record)

    def deleting(self, record: PrebuildRecord) -> bool:
        return self.running(f"delete:{record.account}:{record.id}")

    # -- the create dialog's question -----------------------------------------------------

    async def match_state(
        self, spec: WorkspaceSpec, account: str, region: str | None
    ) -> tuple[MatchState, PrebuildRecord | None]:
        """Whether a new workspace of ``spec`` in ``account``/``region`` starts from a
        prebuild: READY (this one), STALE (there is one, but its devcontainer config changed),
        BUILDING, NONE, or UNSUPPORTED (the provider makes no images). Reads the local
        registry and hashes a local checkout in a thread; asks no provider."""
        known = {a.id for a in self.accounts()}
        if account not in known:
            return MatchState.UNSUPPORTED, None
        key = repo_key(spec.repo_url, spec.branch)
        for build in self.builds.values():
            r = build.request
            if (
                not build.error
                and r.account == account
                and repo_key(r.repo, r.branch) == key
                and r.agent == spec.agent
                and (r.region or "") in ("", region or "")
            ):
                return MatchState.BUILDING, None
        records = await self.service.list(refresh=False)
        hit = await asyncio.to_thread(match_prebuild, records, spec, account, region)
        if hit is not None:
            return MatchState.READY, hit
        for record in records:
            if (
                record.account == account
                and record.repo_key == key
                and record.agent == spec.agent
                and record.region in ("", region or "")
                and record.status is ImageStatus.AVAILABLE
            ):
                # Same repository here but not usable: its devcontainer config changed.
                return MatchState.STALE, record
        return MatchState.NONE, None


def _named(record: PrebuildRecord) -> PrebuildRecord:
    # The ledger names a prebuild by its repository; one made elsewhere by its image name.
    return record if record.repo else record.model_copy(update={"repo": record.name or record.id})
