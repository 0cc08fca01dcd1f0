"""Wires the window, dialogs and tray to the controllers, and owns the one shutdown path."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from decimal import Decimal
from pathlib import Path

from PySide6.QtCore import QObject, QTimer
from PySide6.QtWidgets import QWidget

from app.domain import ServerStatus, Size, Workspace, utcnow
from app.errors import BivyError
from app.providers.base import Provider
from app.services.accounts import effective_accounts, user_accounts
from app.services.costs import CostService, CostSnapshot
from app.services.guardian import Guardian, GuardianTarget
from app.services.keys import KeyService
from app.services.refresh import AccountRate, RefreshPolicy, RefreshScheduler
from app.services.registry import Registry
from app.services.status import StatusEvent, StatusEventKind, StatusService, StatusSnapshot
from app.services.tunnels import TunnelService
from app.services.workspaces import WorkspaceService
from app.settings import (
    SecretStore,
    Settings,
    config_dir,
    load_settings,
)
from app.ui.activity import ActivityFilter
from app.ui.controllers import (
    CostsController,
    StatusController,
    WorkspacesController,
)
from app.ui.main_window import MainWindow
from app.ui.models import CostFigure
from app.ui.notifications import Notice, Notifier
from app.ui.recovery import Recovery
from app.ui.settings_dialog import Validator
from app.ui.shell_dialogs import ShellDialogs
from app.ui.tray import Tray
from app.ui.workspace_access import WorkspaceAccess

log = logging.getLogger(__name__)

#: How long sizes and prices fetched for the cost column are reused (seconds).
SIZES_TTL = 1800.0


class Shell(ShellDialogs, QObject):
    """The running app: settings, services, controllers, window and tray.

    Attributes:
        window: the main window; tray: the tray icon; workspaces: the workspaces controller.
        access: a workspace's terminal, browser, keep-alive and ssh command (``WorkspaceAccess``).
        settings: the current settings (saved by the settings dialog).
        costs: the last cost figures per (account, name).
        closed: set when shutdown finished.
    """

    def __init__(
        self,
        settings: Settings,
        secrets: SecretStore,
        *,
        workspace_service: WorkspaceService | None,
        cost_service: CostService | None = None,
        status: StatusController | None = None,
        providers: Mapping[str, type[Provider]],
        validator: Validator,
        public_key: Callable[[], Awaitable[str]] | None = None,
        now: Callable[[], datetime] = utcnow,
        confirm: Callable[[QWidget, str, str], bool] | None = None,
        window: MainWindow | None = None,
    ) -> None:
        super().__init__()
        self.settings = settings
        self.secrets = secrets
        self.providers = providers
        self.validator = validator
        self.public_key = public_key
        self.now = now
        self.closed = asyncio.Event()
        self._shutting_down = False
        self._froze_gc = False
        self._began_for_real = False
        self.costs: dict[tuple[str, str], CostFigure] = {}
        self.notifier = Notifier()
        self.window = window if window is not None else MainWindow(now=now, confirm=confirm)
        self.tray = Tray(self)
        self.workspaces: WorkspacesController | None = None
        self.cost_controller = CostsController(cost_service, self) if cost_service else None
        if self.cost_controller is not None:
            self.cost_controller.snapshot.connect(self._costs)
            self.cost_controller.failed.connect(self.window.show_error)
        self.last_snapshot: CostSnapshot | None = None
        self.recently_deleted: set[str] = set()
        self.snapshots: dict[str, StatusSnapshot] = {}
        self.status = status
        self.access = WorkspaceAccess(self.window, status, lambda: self._shutting_down)
        if status is not None:
            status.setParent(self)
            status.changed.connect(self._status_changed)
            status.failed.connect(self.window.show_error)
        self.scheduler = RefreshScheduler(
            RefreshPolicy(base_seconds=float(settings.refresh_seconds)), rates=self._rates
        )
        self._activity = ActivityFilter(self.scheduler.user_active, self)
        self._last_refresh = 0.0
        self.sizes_cache: dict[str, tuple[float, list[Size]]] = {}
        self.refresh_timer = QTimer(self)
        self.refresh_timer.setSingleShot(True)
        self.refresh_timer.timeout.connect(self.request_refresh)
        self.tick_timer = QTimer(self)
        self.tick_timer.setInterval(1000)
        self.tick_timer.timeout.connect(self.window.tick)
        self.dialogs: list[QWidget] = []
        # Issue 13: files moved aside, a missing or locked keychain, one guardian per user.
        self.recovery = Recovery(self.window, secrets)
        if status is not None:
            status.failed.connect(self.recovery.on_failure)
        self._set_service(workspace_service)
        self.guardian = (
            Guardian(self._guardian_delete, clock=now, final_backup=self._final_backup)
            if workspace_service is not None
            else None
        )
        self._connect()
        # Issue 6: "Back up now" and "Delete with backups…" (app/ui/backup_actions.py).
        from app.ui.backup_actions import attach

        self.backup_actions = attach(self)
        # Issue 14: "Prebuild repository…", the Prebuilds dialog (app/ui/prebuild_actions.py).
        from app.ui.prebuild_actions import attach as attach_prebuilds

        self.prebuild_actions = attach_prebuilds(self)
        # Issue 15: a tab per session, "New session…", notices that open a session's tab.
        from app.ui.session_actions import SessionActions

        self.session_actions = SessionActions(self)
        # Issue 15: "Review & push…" for the selected session (app/ui/review_dialog.py).
        from app.ui.review_dialog import ReviewActions

        self.review_actions = ReviewActions(self)

    @classmethod
    def from_environment(cls, window: MainWindow | None = None) -> Shell:
        """Build the shell over the real services, settings and keychain of this user."""
        from app.providers.registry import PROVIDERS

        try:
            settings = load_settings()
            problem = None
        except BivyError as exc:
            # Moved aside (kept) or left in place; either way never written over by a Save.
            problem = exc.one_line()
            settings = Settings()
        secrets = SecretStore()

        async def validate(kind: str, options: Mapping[str, str]) -> str:
            provider = PROVIDERS[kind](options)
            try:
                info = await provider.validate()
            finally:
                await provider.aclose()
            return info.description or "The credentials work."

        tunnels = TunnelService(secrets)
        shell = cls(
            settings,
            secrets,
            workspace_service=WorkspaceService(settings, secrets),
            cost_service=CostService(),
            status=StatusController(tunnels, StatusService(tunnels), Registry(), secrets),
            providers=PROVIDERS,
            validator=validate,
            public_key=KeyService(secrets).public_key,
            window=window,
        )
        if problem is not None:
            shell.recovery.add("Your settings could not be read", problem)
        return shell

    # -- wiring ---------------------------------------------------------------------------

    def _set_service(self, service: WorkspaceService | None) -> None:
        if self.workspaces is not None:
            self.workspaces.deleteLater()
        self.workspaces = WorkspacesController(service, self) if service is not None else None
        if self.workspaces is None:
            return
        self.workspaces.listed.connect(self._listed)
        self.workspaces.failed.connect(self.window.show_error)
        self.workspaces.failed.connect(self.recovery.on_failure)
        self.workspaces.created.connect(self._created)
        self.workspaces.deleted.connect(self._deleted)
        self.workspaces.progress.connect(self._progress)
        self.workspaces.busy.connect(self._busy)

    def _connect(self) -> None:
        w = self.window
        w.newRequested.connect(self.open_create_dialog)
        w.settingsRequested.connect(self.open_settings_dialog)
        w.refreshRequested.connect(self.request_refresh)
        w.deleteRequested.connect(self.delete)
        w.copySshRequested.connect(self.access.copy_ssh)
        w.openBrowserRequested.connect(self.access.open_browser)
        w.keepAliveRequested.connect(self.access.keep_alive)
        w.closing.connect(self.request_shutdown)
        t = self.tray
        t.newRequested.connect(self.open_create_dialog)
        t.openRequested.connect(self.access.open_terminal)
        t.keepAliveRequested.connect(self.access.keep_alive)
        t.showRequested.connect(self._show_window)
        t.quitRequested.connect(self.request_shutdown)
        t.deleteRequested.connect(self.confirm_delete)
        t.deleteAllRequested.connect(self.delete_all)

    async def start(self, *, smoke_test: bool = False) -> None:
        self.begin(smoke_test=smoke_test)

    def begin(self, *, smoke_test: bool = False) -> None:
        """Show the window; outside the smoke test also the tray, the clock and a refresh."""
        self.window.set_has_accounts(bool(user_accounts(self.settings)))
        if not smoke_test:
            self.window.restore_state(window_state_path())
        self.window.show()
        self._activity.watch(self.window)
        # Everything loaded so far (Qt bindings, modules, pydantic schemas) lives as long as the
        # app: move it out of the collector's sight. A full collection over it took ~150 ms on
        # a busy 2-core machine, which froze the window in the middle of a refresh.
        gc.collect()
        gc.freeze()
        self._froze_gc = True
        self._began_for_real = not smoke_test
        if not smoke_test:
            self.recovery.show_pending()
            self.recovery.check_keychain()
            self.tray.show()
            self.tick_timer.start()
            self.request_refresh()

    # -- refresh --------------------------------------------------------------------------

    def request_refresh(self) -> None:
        """Refresh now unless one is running; the next one is scheduled when it ends."""
        if self.workspaces is None or self._shutting_down:
            return
        if self.workspaces.running("refresh"):
            return
        # Never closer together than the rate-limit share allows, even on F5.
        wait = self._last_refresh + self.scheduler.min_gap() - time.monotonic()
        if wait > 0:
            self.refresh_timer.start(int(wait * 1000))
            return
        self.refresh_timer.stop()
        self._last_refresh = time.monotonic()
        self.workspaces.start("refresh", self.workspaces.refresh())

    def next_interval_ms(self) -> int:
        """From the refresh policy: slower when hidden or idle, faster while creating or
        deleting, never above the share of the providers' rate limits."""
        self.scheduler.visible = self.window.isVisible() and not self.window.isMinimized()
        self.scheduler.busy = self.workspaces is not None and any(
            name.startswith(("create:", "delete:")) for name in self.workspaces.tasks
        )
        return int(self.scheduler.next_delay() * 1000)

    def _rates(self) -> list[AccountRate]:
        if self.workspaces is None:
            return []
        # One list call per 50 servers per account (the providers' page size).
        per_account: dict[str, int] = {}
        for ws in self.window.model.workspaces():
            per_account[ws.account] = per_account.get(ws.account, 0) + 1
        providers = getattr(self.workspaces.service, "_providers", {})
        return [
            AccountRate.of(provider, calls_per_refresh=1 + per_account.get(account, 0) // 50)
            for account, (_, provider) in providers.items()
        ]

    def _busy(self, name: str, on: bool) -> None:
        if name == "refresh" and not on and not self._shutting_down:
            self.refresh_timer.start(self.next_interval_ms())

    def _listed(self, workspaces: list[Workspace], errors: dict[str, str]) -> None:
        # A server Bivy deleted may be listed as "deleting" for a while: it is gone for the user.
        names = {ws.name for ws in workspaces}
        self.recently_deleted &= names
        workspaces = [
            ws
            for ws in workspaces
            if not (
                ws.name in self.recently_deleted
                and ws.server is not None
                and ws.server.status in (ServerStatus.DELETING, ServerStatus.OFF)
            )
        ]
        workspaces = [self._with_status(ws) for ws in workspaces]
        self.window.set_workspaces(workspaces)
        self.window.set_refreshed(self.now(), errors)
        self.recovery.show_pending()  # e.g. a registry record that could not be read
        if (
            self.guardian is not None
            and self.workspaces is not None
            and not self._shutting_down
            and self.recovery.may_guard()
        ):
            self.workspaces.start("guardian", self._guard(workspaces))
        if self.status is not None and not self._shutting_down:
            self.status.start("follow", self.status.follow(workspaces))
        self.tray.update(workspaces, self.costs)
        if self.cost_controller is not None and not self._shutting_down:
            accounts = effective_accounts(self.settings)
            listed = [a.id for a in accounts if a.id not in errors]
            listed += sorted({ws.account for ws in workspaces} - set(errors) - set(listed))
            self.cost_controller.start("costs", self._observe_costs(workspaces, listed))
        for notice in self.notifier.update(workspaces, self.now()):
            self._announce(notice)

    async def _guardian_delete(self, target: GuardianTarget) -> None:
        assert self.workspaces is not None
        await self.workspaces.service.delete(target.name)

    async def _final_backup(self, target: GuardianTarget) -> bool:
        """Issue 13: an overdue VM backs up (bounded) before the guardian deletes it."""
        from app.services.backup import BackupService
        from app.services.final_backup import FinalBackup

        assert self.workspaces is not None
        backups = BackupService(self.settings, self.secrets)  # the settings of now
        return await FinalBackup(self.workspaces.service.registry, self.secrets, backups)(target)

    async def _guard(self, workspaces: list[Workspace]) -> None:
        """The app's own lifetime enforcement: delete overdue VMs, show unaccounted ones."""
        assert self.guardian is not None and self.workspaces is not None
        records = await self.workspaces.service.registry.aall()
        report = await self.guardian.run(workspaces, records)
        for target in report.deleted:
            self._deleted(target.name)
            self._announce(
                Notice(
                    "lifetime",
                    target.name,
                    f"Deleted {target.name}",
                    "It was past its maximum lifetime.",
                    urgent=True,
                )
            )
        for target, error in report.failed:
            self.window.show_error(f"Could not delete overdue {target.name}: {error.message}")
        self.window.set_unaccounted(
            [f"{t.name} ({t.account}, server {t.server_id}): {t.reason}" for t in
             report.decision.unaccounted]
        )  # fmt: skip

    def _announce(self, notice: Notice) -> None:
        """The tray's (desktop) notification, else the status bar; a session that needs the
        user also gets the window's bar whose button opens its tab."""
        if notice.session:
            text = f"{notice.title}: {notice.text}"
            self.window.show_session_notice(notice.account, notice.workspace, notice.session, text)
        if not self.tray.notify(notice):
            self.window.show_error(notice.title, notice.text)
            if notice.session:  # no tray: the desktop's own notifications, if it has them
                self.session_actions.notify_desktop(notice)

    def _with_status(self, ws: Workspace) -> Workspace:
        snapshot = self.snapshots.get(ws.name)
        if snapshot is None:
            return ws
        update: dict[str, object] = {"status": snapshot.status, "agent": snapshot.agent}
        sessions = getattr(snapshot, "sessions", None)  # issue 15: the VM's session ls
        if sessions is not None:
            update["sessions"] = list(sessions)
        return ws.model_copy(update=update)

    def _status_changed(self, event: StatusEvent) -> None:
        """A status read: the row shows the VM's phase, agent state and countdowns."""
        if event.snapshot is None or event.kind is not StatusEventKind.UPDATED:
            return
        self.snapshots[event.workspace] = event.snapshot
        for ws in self.window.model.workspaces():
            if ws.name == event.workspace:
                updated = self._with_status(ws)
                self.window.upsert_workspace(updated)
                for notice in self.notifier.update(self.window.model.workspaces(), self.now()):
                    self._announce(notice)
                self.tray.update(self.window.model.workspaces(), self.costs)

    async def _observe_costs(self, workspaces: list[Workspace], listed: list[str]) -> None:
        assert self.cost_controller is not None
        await self.cost_controller.observe(
            workspaces,
            listed,
            self.settings.monthly_budget,
            self.settings.budget_currency,
            await self._sizes_for(workspaces),
        )

    async def _sizes_for(self, workspaces: list[Workspace]) -> dict[str, list[Size]]:
        """Sizes (with prices) of accounts whose servers come without a price; cached a while
        because list calls share the provider's rate limit with the refresh."""
        now = time.monotonic()
        wanted = {
            ws.account for ws in workspaces if ws.server is not None and ws.server.price is None
        }
        service = self.workspaces.service if self.workspaces else None
        for account in wanted:
            cached = self.sizes_cache.get(account)
            if service is None or (cached is not None and now - cached[0] <= SIZES_TTL):
                continue
            try:
                sizes = await service.sizes(account)
            except BivyError as exc:
                log.info("no prices for %s: %s", account, exc)
                continue
            self.sizes_cache[account] = (now, sizes)
        return {a: sizes for a, (_, sizes) in self.sizes_cache.items() if a in wanted}

    def _costs(self, snapshot: CostSnapshot) -> None:
        self.last_snapshot = snapshot
        self.costs = {
            key: CostFigure(cost.so_far, cost.currency, cost.hourly)
            for key, cost in snapshot.workspaces.items()
        }
        self.window.model.set_costs(self.costs)
        currency = self.settings.budget_currency
        currencies = set(snapshot.per_hour) | set(snapshot.month_to_date)
        if currency not in currencies and currencies:
            currency = sorted(currencies)[0]
        self.window.set_costs_summary(
            per_hour=snapshot.per_hour.get(currency, Decimal(0)),
            month_to_date=snapshot.month_to_date.get(currency, Decimal(0)),
            currency=currency,
            budget_warning=snapshot.budget.warning if snapshot.budget is not None else None,
        )
        self.tray.update(self.window.model.workspaces(), self.costs)

    def _created(self, ws: Workspace) -> None:
        self.window.upsert_workspace(ws)
        self.window.select(ws.account, ws.name)
        self.request_refresh()

    def _deleted(self, name: str) -> None:
        self.recently_deleted.add(name)
        for ws in self.window.model.workspaces():
            if ws.name == name:
                self.window.model.remove(ws.account, ws.name)
                if self.cost_controller is not None:
                    self.cost_controller.start(
                        f"ledger:{name}", self.cost_controller.record_deleted(ws)
                    )
        self.window.statusBar().showMessage(f"Deleted {name}", 5000)
        self.request_refresh()

    def _progress(self, name: str, step: str, detail: str, fraction: float) -> None:
        self.window.statusBar().showMessage(f"{name}: {step} {detail}".strip(), 5000)

    # -- actions --------------------------------------------------------------------------

    def confirm_delete(self, ws: Workspace) -> None:
        """Delete after the user confirmed (the tray's Delete; the window asks on its own)."""
        if self.window.confirm(
            self.window,
            f"Delete workspace {ws.name}?",
            f"The VM of {ws.name} is deleted now; anything not pushed or backed up on it is "
            "lost. Its backups are kept.",
        ):
            self.delete(ws)

    def delete(self, ws: Workspace) -> None:
        if self.workspaces is not None:
            self.window.statusBar().showMessage(f"Deleting {ws.name}…")
            self.workspaces.start_delete(ws.name)

    def delete_all(self) -> None:
        running = [ws for ws in self.window.model.workspaces() if ws.server is not None]
        if running and self.window.confirm(
            self.window,
            f"Delete all {len(running)} workspaces?",
            "Every Bivy VM in every account is deleted now. Backups are kept.",
        ):
            for ws in running:
                self.delete(ws)

    def _show_window(self) -> None:
        self.window.showNormal()
        self.window.raise_()
        self.window.activateWindow()

    # -- shutdown -------------------------------------------------------------------------

    def request_shutdown(self) -> None:
        if not self._shutting_down:
            self._shutdown_task = asyncio.ensure_future(self.shutdown())

    async def shutdown(self) -> None:
        """The one way out (window close, tray Quit, smoke test): stop, cancel, close."""
        if self._shutting_down:
            await self.closed.wait()
            return
        self._shutting_down = True
        self.refresh_timer.stop()
        self.tick_timer.stop()
        for dialog in list(self.dialogs):
            dialog.close()
        if self._began_for_real:
            try:
                self.window.save_state(window_state_path())
            except OSError as exc:
                log.warning("cannot save the window layout: %s", exc)
        if self.cost_controller is not None:
            await self.cost_controller.cancel_all()
        if self.status is not None:
            await self.status.close()
        for index in range(self.window.tabs.count() - 1, 0, -1):
            self.window.close_tab(index)
        self._activity.unwatch_all()
        if self.prebuild_actions is not None:  # first: a build's cleanup deletes its builder
            await self.prebuild_actions.cancel_all()
        if self.workspaces is not None:
            await self.workspaces.cancel_all()
            await self.workspaces.service.aclose()
        if self.backup_actions is not None:
            await self.backup_actions.cancel_all()
        await self.recovery.close()
        await self.session_actions.aclose()

        self.tray.hide()
        self.window.hide()
        if self._froze_gc:
            gc.unfreeze()
            self._froze_gc = False
        self.closed.set()

    async def wait_closed(self) -> int:
        await self.closed.wait()
        return 0


def window_state_path() -> Path:
    """Window layout, kept apart from the settings (``config_dir()/window.json``)."""
    return config_dir() / "window.json"
