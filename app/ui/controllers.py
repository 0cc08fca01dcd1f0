"""Thin Qt controllers over the plain-async services: they await, then emit signals.

An async slot is one line awaiting the service; ``@reports_errors`` turns a ``BivyError`` into the
controller's ``failed`` signal (the window shows it as a dialog or in the status bar). Every long
operation keeps its task in ``Controller.tasks`` so Cancel can cancel it, and the ``busy`` signal
is restored in ``finally`` whatever happened.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, ParamSpec, TypeVar

from PySide6.QtCore import QObject, Signal

from app.domain import Region, Size, StatusReport, Workspace, WorkspaceSpec
from app.errors import BivyError, SSHError
from app.services.costs import CostService
from app.services.prebuild_match import mark_stale_from_status
from app.services.registry import Registry
from app.services.status import StatusEvent, StatusService
from app.services.tunnels import SSHTarget, Tunnel, TunnelService
from app.services.workspaces import TTYD_PASSWORD, CreateProgress, WorkspaceList, WorkspaceService
from app.settings import SecretKeys, SecretStore

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")


def reports_errors(
    fn: Callable[..., Coroutine[Any, Any, R]],
) -> Callable[..., Coroutine[Any, Any, R | None]]:
    """Catch ``BivyError`` from a controller coroutine and emit it on ``self.failed``."""

    @functools.wraps(fn)
    async def wrapper(self: Controller, *args: Any, **kwargs: Any) -> R | None:
        try:
            return await fn(self, *args, **kwargs)
        except BivyError as exc:
            log.info("%s failed: %s", fn.__name__, exc.message)
            self.failed.emit(exc.message, exc.hint)
            return None

    return wrapper


class Controller(QObject):
    """Base of every controller.

    Signals:
        failed(message, hint): a service raised a ``BivyError``.
        busy(name, on): a named long operation started or ended (always ends, even on cancel).
    Attributes:
        tasks: the running long operations by name; ``cancel(name)`` cancels one.
    """

    failed = Signal(str, str)
    busy = Signal(str, bool)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.tasks: dict[str, asyncio.Task[Any]] = {}

    def start(self, name: str, coro: Awaitable[R]) -> asyncio.Task[R | None]:
        """Run ``coro`` as the long operation ``name``; its task is kept until it ends."""

        async def run() -> R | None:
            self.busy.emit(name, True)
            try:
                return await coro
            except asyncio.CancelledError:
                log.info("%s cancelled", name)
                return None
            except BivyError as exc:
                self.failed.emit(exc.message, exc.hint)
                return None
            finally:
                self.tasks.pop(name, None)
                self.busy.emit(name, False)

        task = asyncio.ensure_future(run())
        self.tasks[name] = task
        task.add_done_callback(lambda _: self._ended(name, task, coro))
        return task

    def _ended(self, name: str, task: asyncio.Task[Any], coro: Awaitable[Any]) -> None:
        # A task cancelled before its first step never ran ``run``: close the coroutine so it
        # is not reported as never awaited, and forget the task.
        close = getattr(coro, "close", None)
        if close is not None:
            close()
        if self.tasks.get(name) is task:
            del self.tasks[name]

    def running(self, name: str) -> bool:
        task = self.tasks.get(name)
        return task is not None and not task.done()

    def cancel(self, name: str) -> None:
        task = self.tasks.get(name)
        if task is not None:
            task.cancel()

    async def cancel_all(self) -> None:
        """Cancel every long operation and wait until their cleanup ran."""
        pending = [t for t in self.tasks.values() if not t.done()]
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)


class WorkspacesController(Controller):
    """The workspace list and its operations over ``WorkspaceService``.

    Signals:
        listed(workspaces, errors): a refresh finished; errors maps account id → message.
        progress(name, step, detail, fraction): a create advanced.
        created(workspace): a create finished.
        deleted(name): a delete finished.
    """

    listed = Signal(object, object)
    progress = Signal(str, str, str, float)
    created = Signal(object)
    deleted = Signal(str)

    def __init__(
        self,
        service: WorkspaceService,
        parent: QObject | None = None,
        *,
        lister: Callable[[], Awaitable[WorkspaceList]] | None = None,
    ) -> None:
        super().__init__(parent)
        self.service = service
        self.lister = lister or service.list_workspaces
        #: The prebuilds (app/ui/prebuild_actions.py) once attached: the create dialog asks it.
        self.prebuilds: QObject | None = None

    @reports_errors
    async def refresh(self) -> None:
        self._emit_list(await self.lister())

    def _emit_list(self, result: WorkspaceList) -> None:
        errors = {account: str(exc) for account, exc in result.errors.items()}
        self.listed.emit(list(result.workspaces), errors)

    def start_create(self, spec: WorkspaceSpec) -> asyncio.Task[Workspace | None]:
        """Create in the background as operation ``create:<name>``; Cancel cancels it."""
        return self.start(f"create:{spec.name}", self._create(spec))

    async def _create(self, spec: WorkspaceSpec) -> Workspace:
        ws = await self.service.create(spec, on_progress=lambda p: self._progress(spec.name, p))
        self.created.emit(ws)
        return ws

    def _progress(self, name: str, p: CreateProgress) -> None:
        self.progress.emit(name, p.step, p.detail, float(p.fraction))

    def start_delete(self, name: str) -> asyncio.Task[None]:
        return self.start(f"delete:{name}", self._delete(name))

    async def _delete(self, name: str) -> None:
        await self.service.delete(name)
        self.deleted.emit(name)

    @reports_errors
    async def sizes(self, account_id: str, region: str | None = None) -> list[Size]:
        return await self.service.sizes(account_id, region)

    @reports_errors
    async def regions(self, account_id: str) -> list[Region]:
        return await self.service.regions(account_id)


class CostsController(Controller):
    """Costs after every refresh, over ``CostService`` (ledger I/O runs in its thread).

    Signals:
        snapshot(CostSnapshot): the costs of the workspaces just listed, month-to-date, budget.
    """

    snapshot = Signal(object)

    def __init__(self, service: CostService, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.service = service

    @reports_errors
    async def observe(
        self,
        workspaces: Sequence[Workspace],
        listed_accounts: Sequence[str],
        budget: Decimal | None,
        currency: str,
        sizes: Mapping[str, Sequence[Size]] | None = None,
    ) -> None:
        self.snapshot.emit(
            await self.service.observe(
                workspaces,
                listed_accounts=listed_accounts,
                sizes=sizes,
                budget=budget,
                budget_currency=currency,
            )
        )

    @reports_errors
    async def record_deleted(self, ws: Workspace) -> None:
        if ws.server is not None:
            await self.service.record_deleted(ws.account, ws.server.provider, ws.server.id)


#: ttyd's port on the VM (it listens on 127.0.0.1 only; the app forwards to it).
TTYD_PORT = 7681
TTYD_USER = "bivy"


class StatusController(Controller):
    """Live VM status over SSH: one tunnel per running workspace, its status files watched.

    Signals:
        changed(StatusEvent): every status event (phase, agent, countdowns, unreachable).
    Attributes:
        tunnels, status: the services; registry: where the pinned host keys are.
    """

    changed = Signal(object)

    def __init__(
        self,
        tunnels: TunnelService,
        status: StatusService,
        registry: Registry,
        secrets: SecretStore,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.tunnels = tunnels
        self.status = status
        self.registry = registry
        self.secrets = secrets
        self.watched: set[str] = set()
        self._stale_noted: set[str] = set()
        self._background: set[asyncio.Future[None]] = set()
        status.add_listener(self.changed.emit)
        status.add_listener(self._note_prebuild_stale)

    def _note_prebuild_stale(self, event: StatusEvent) -> None:
        """A workspace made from a prebuild had to rebuild its devcontainer (its config changed
        since): that prebuild is stale, as ``bivy ls`` marks it. Once per workspace, in a task
        (the registries are files)."""
        report = event.snapshot.status if event.snapshot is not None else None
        if report is None or not report.prebuild_stale or event.workspace in self._stale_noted:
            return
        self._stale_noted.add(event.workspace)
        task = asyncio.ensure_future(self._mark_prebuild_stale(event.workspace, report))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _mark_prebuild_stale(self, name: str, report: StatusReport) -> None:
        try:
            await mark_stale_from_status(await self.registry.aget(name), report)
        except (BivyError, OSError) as exc:
            log.warning("could not mark the prebuild of %s stale: %s", name, exc)

    async def follow(self, workspaces: Sequence[Workspace]) -> None:
        """Watch every running workspace this install created; stop watching the others."""
        running = {
            ws.name for ws in workspaces if ws.server is not None and ws.server.ipv4 is not None
        }
        for name in sorted(self.watched - running):
            self.watched.discard(name)
            await self.status.unwatch(name)
            await self.tunnels.close(name)
        new = sorted(running - self.watched)
        if new:
            await asyncio.gather(*(self._watch(name) for name in new))

    async def _watch(self, name: str) -> None:
        record = await self.registry.aget(name)
        if record is None or not record.ipv4 or not record.host_public_key:
            return  # not created by this install: no pinned key, no tunnel
        try:
            await self.tunnels.open(SSHTarget.from_record(record))
        except BivyError as exc:
            # Still booting (sshd not up yet) or unreachable: tried again at the next refresh.
            log.info("no tunnel to %s yet: %s", name, exc.message)
            return
        self.status.watch(name)
        self.watched.add(name)

    async def _tunnel(self, name: str) -> Tunnel:
        tunnel = self.tunnels.get(name)
        if tunnel is not None:
            return tunnel
        record = await self.registry.aget(name)
        if record is None:
            raise SSHError(
                f"Bivy has no record of workspace {name!r}",
                hint="Only workspaces created by this installation of Bivy can be opened",
            )
        return await self.tunnels.open(SSHTarget.from_record(record))

    @reports_errors
    async def terminal(self, name: str) -> tuple[str, str]:
        """The forwarded ttyd URL and its password (from the keychain)."""
        forward = await (await self._tunnel(name)).forward(TTYD_PORT)
        password = await self.secrets.aget(SecretKeys.workspace(name, TTYD_PASSWORD))
        if not password:
            raise SSHError(
                f"the terminal password of {name!r} is not in the keychain",
                hint="Recreate the workspace from this computer",
            )
        return forward.url, password

    @reports_errors
    async def keep_alive(self, name: str, seconds: int = 3600) -> datetime:
        return await self.status.keep_alive(await self._tunnel(name), seconds)

    async def close(self) -> None:
        await self.cancel_all()
        await self.status.close()
        await self.tunnels.close_all()
