"""Window actions for backups: "Back up now", "Delete workspace and its backups", last backup."""

# ``BackupActionsController`` wraps ``BackupService`` the way the other controllers wrap theirs
# (signals out, ``failed`` for errors, ``busy`` while running). ``install`` adds the delete action
# to a ``MainWindow``'s toolbar and connects its ``backupRequested`` signal.
# Deleting backups is a separate, explicitly confirmed action: the window's ordinary Delete
# keeps them.

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, Protocol

from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QMessageBox, QWidget

from app.domain import StatusReport, Workspace, utcnow
from app.errors import NotFound
from app.services.backup import BackupService, CommandRunner, DeleteReport, RepositoryInfo
from app.settings import Settings
from app.ui.controllers import Controller

#: Gives a connection to run commands on a workspace's VM (a ``Tunnel``).
RunnerFactory = Callable[[str], Awaitable[CommandRunner]]
#: Reads a workspace's status.json (for the time of the backup just made); may return None.
StatusReader = Callable[[str], Awaitable[StatusReport | None]]
#: Asks the user; returns True to go ahead.
Confirm = Callable[[QWidget | None, str, str], bool]


class _Deleter(Protocol):
    async def delete(self, name: str, *, wait: bool = ...) -> None: ...


def last_backup_text(status: StatusReport | None, now: datetime | None = None) -> str:
    """What the window shows for a workspace's last backup (from its status.json)."""
    if status is None:
        return "unknown"
    if status.backup_error:
        return f"failed: {status.backup_error}"
    if status.last_backup_at is None:
        return "not yet"
    seconds = max(0, int(((now or utcnow()) - status.last_backup_at).total_seconds()))
    if seconds < 60:
        return "just now"
    if seconds < 3600:
        return f"{seconds // 60} min ago"
    if seconds < 86400:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min ago"
    return f"{seconds // 86400} days ago"


def ask_delete_with_backups(parent: QWidget | None, title: str, text: str) -> bool:
    """A warning box whose destructive button names what it does; Cancel is the default."""
    box = QMessageBox(QMessageBox.Icon.Warning, title, text, parent=parent)
    delete = box.addButton("Delete workspace and backups", QMessageBox.ButtonRole.DestructiveRole)
    box.addButton(QMessageBox.StandardButton.Cancel)
    box.setDefaultButton(QMessageBox.StandardButton.Cancel)
    box.exec()
    return box.clickedButton() is delete


class BackupActionsController(Controller):
    """Backups of the workspaces in the window.

    Signals:
        backedUp(name, when): "Back up now" finished; ``when`` is the VM's ``last_backup_at``
            (a datetime) or None when the status could not be read.
        backupsDeleted(name, report): the workspace and its backups are gone (``DeleteReport``).
        repositoryInfo(name, info): what the storage holds for a workspace (``RepositoryInfo``).
    Attributes:
        service: the ``BackupService``; workspaces: what deletes the VM (``WorkspaceService``).
    """

    backedUp = Signal(str, object)
    backupsDeleted = Signal(str, object)
    repositoryInfo = Signal(str, object)

    def __init__(
        self,
        service: BackupService,
        workspaces: _Deleter,
        runner_for: RunnerFactory,
        *,
        status_reader: StatusReader | None = None,
        release: Callable[[str], Awaitable[None]] | None = None,
        settings_source: Callable[[], Settings] | None = None,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.service = service
        self.workspaces = workspaces
        self.runner_for = runner_for
        self.status_reader = status_reader
        self.release = release
        self.settings_source = settings_source

    def _fresh(self) -> None:
        # The window replaces its settings object when the dialog saves: follow it.
        if self.settings_source is not None:
            self.service.settings = self.settings_source()

    # -- back up now ----------------------------------------------------------------------

    def start_backup_now(self, name: str, *, force: bool = False) -> asyncio.Task[Any] | None:
        """Run the VM's backup now (one at a time per workspace)."""
        key = f"backup:{name}"
        if self.running(key):
            return None
        return self.start(key, self._backup_now(name, force))

    async def _backup_now(self, name: str, force: bool) -> datetime | None:
        self._fresh()
        try:
            runner = await self.runner_for(name)
            await self.service.backup_now(runner, force=force)
            when: datetime | None = None
            if self.status_reader is not None:
                status = await self.status_reader(name)
                when = status.last_backup_at if status is not None else None
        finally:
            if self.release is not None:
                await self.release(name)
        self.backedUp.emit(name, when)
        return when

    # -- delete with backups --------------------------------------------------------------

    def confirm_and_delete(
        self,
        name: str,
        parent: QWidget | None = None,
        confirm: Confirm = ask_delete_with_backups,
    ) -> asyncio.Task[Any] | None:
        """Ask, naming exactly what goes, then delete the VM and every backup of it."""
        self._fresh()
        where = self.service.repository_url(name) if self.service.configured else "the storage"
        if not confirm(
            parent,
            f"Delete workspace {name} and its backups?",
            f"The VM of {name} is deleted, and so is every backup of its agent history and "
            f"uncommitted work in {where}. `claude --continue` will have nothing to resume. "
            "This cannot be undone.",
        ):
            return None
        return self.start_delete_with_backups(name)

    def start_delete_with_backups(self, name: str) -> asyncio.Task[Any] | None:
        key = f"delete-backups:{name}"
        if self.running(key):
            return None
        return self.start(key, self._delete_with_backups(name))

    async def _delete_with_backups(self, name: str) -> DeleteReport:
        self._fresh()
        report = await self.service.delete_workspace_and_backups(name, self.workspaces)
        self.backupsDeleted.emit(name, report)
        return report

    # -- what the storage holds -----------------------------------------------------------

    def start_info(self, name: str) -> asyncio.Task[Any] | None:
        key = f"info:{name}"
        if self.running(key):
            return None
        return self.start(key, self._info(name))

    async def _info(self, name: str) -> RepositoryInfo:
        self._fresh()
        info = await self.service.repository_info(name)
        self.repositoryInfo.emit(name, info)
        return info


def tunnel_runner(tunnels: Any, registry: Any) -> RunnerFactory:
    """A ``RunnerFactory`` over a ``TunnelService`` and the workspace ``Registry``."""
    from app.services.tunnels import SSHTarget

    async def runner_for(name: str) -> CommandRunner:
        record = await registry.aget(name)
        if record is None:
            raise NotFound(
                f"no workspace named {name!r} was created by this installation of Bivy",
                hint="Only workspaces created here can be backed up from here",
            )
        tunnel: CommandRunner = await tunnels.open(SSHTarget.from_record(record))
        return tunnel

    return runner_for


def install(
    window: Any,
    controller: BackupActionsController,
    *,
    confirm: Confirm = ask_delete_with_backups,
) -> QAction:
    """Plug the actions into a ``MainWindow``: its "Back up now" runs here, and a new
    "Delete with backups…" action joins the toolbar (``window.act_delete_with_backups``)."""
    window.backupRequested.connect(lambda ws: controller.start_backup_now(ws.name))
    action = QAction("Delete with backups…", window)
    action.setToolTip("Delete the VM AND every backup of its agent history (asks first)")
    action.setStatusTip(action.toolTip())

    def triggered() -> None:
        ws: Workspace | None = window.selected()
        if ws is not None:
            controller.confirm_and_delete(ws.name, window, confirm)

    action.triggered.connect(triggered)
    toolbar = getattr(window, "toolbar", None)
    if toolbar is not None:
        toolbar.insertAction(getattr(window, "act_refresh", None), action)
    window.act_delete_with_backups = action

    def selection_changed(*_: object) -> None:
        action.setEnabled(window.selected() is not None)

    window.table.selectionModel().selectionChanged.connect(selection_changed)
    selection_changed()
    controller.backedUp.connect(
        lambda name, when: window.statusBar().showMessage(
            f"Backed up {name}" + (f" at {when.astimezone():%H:%M}" if when else ""), 8000
        )
    )
    controller.backupsDeleted.connect(
        lambda name, report: window.statusBar().showMessage(
            f"Deleted {name} and {report.objects_deleted} backup objects", 8000
        )
    )
    controller.failed.connect(window.show_error)
    return action


def attach(shell: Any) -> BackupActionsController | None:
    """Build the controller over the shell's services and install it on its window.

    Uses its own ``TunnelService`` (opened per backup, closed right after) and the local
    registry; returns None when the shell has no workspace service. Idempotent: a shell that
    has one already gets it back.
    """
    from app.services.registry import Registry
    from app.services.status import StatusService
    from app.services.tunnels import TunnelService

    existing = getattr(shell, "backup_actions", None)
    if isinstance(existing, BackupActionsController):
        return existing  # attached already: never a second set of actions
    if shell.workspaces is None:
        return None
    tunnels = TunnelService(shell.secrets)
    statuses = StatusService(tunnels)

    async def status_reader(name: str) -> StatusReport | None:
        return (await statuses.read(name)).status

    controller = BackupActionsController(
        BackupService(shell.settings, shell.secrets),
        shell.workspaces.service,
        tunnel_runner(tunnels, Registry()),
        status_reader=status_reader,
        release=tunnels.close,
        settings_source=lambda: shell.settings,
        parent=shell,
    )
    # The window's own confirm (a destructive-button box; tests answer it).
    install(
        shell.window, controller, confirm=getattr(shell.window, "confirm", ask_delete_with_backups)
    )
    controller.backupsDeleted.connect(lambda *_: shell.request_refresh())
    return controller
