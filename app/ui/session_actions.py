"""The shell's session actions (issue 15): a terminal tab per session, "New session…", and the
clicks on "needs you" notices (tray, desktop, the window's bar) that open a session's tab.

Starting a session goes to ``SessionService.new`` (``app/services/sessions.py``) over the
app's tunnel to the workspace; ``starter`` replaces it (the tests start sessions on their own VM
side). The new session shows in its row at once, before the next status read lists it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from app.domain import SessionReport, Workspace
from app.services.sessions import SessionService
from app.ui.desktop_notify import DesktopNotifier
from app.ui.notifications import Notice
from app.ui.session_dialog import NewSession, NewSessionDialog

if TYPE_CHECKING:
    from app.ui.shell import Shell

__all__ = ["SessionActions", "Starter"]

#: Starts a session on the VM (``SessionService.new`` by default): its report, if it has one.
Starter = Callable[[NewSession], Awaitable[SessionReport | None]]


class SessionActions:
    """Wires the window's and the tray's session actions to the terminal tabs and the VM.

    Attributes:
        shell: the running shell; starter: how a new session is started on the VM.
    """

    def __init__(self, shell: Shell, starter: Starter | None = None) -> None:
        self.shell = shell
        self.starter: Starter = starter or self._start_on_vm
        self._service: SessionService | None = None
        window, tray = shell.window, shell.tray
        window.openSessionRequested.connect(self.open)
        window.newSessionRequested.connect(self.new_session)
        tray.openSessionRequested.connect(self.open_from_outside)
        # Without a tray: the desktop's notification server (D-Bus), its click opens the tab.
        self.desktop = DesktopNotifier(shell)
        self.desktop.activated.connect(self._notice_clicked)
        self._sent: set[asyncio.Future[bool]] = set()

    def open(self, ws: Workspace, session: str) -> None:
        """That session's terminal tab (brought to the front when open)."""
        self.shell.access.open_terminal(ws, session or "main")

    def open_from_outside(self, ws: Workspace, session: str) -> None:
        """From the tray or a notification: the window comes up with the session's tab."""
        window = self.shell.window
        window.showNormal()
        window.raise_()
        window.activateWindow()
        window.select(ws.account, ws.name)
        current = next(
            (w for w in window.model.workspaces() if (w.account, w.name) == (ws.account, ws.name)),
            ws,
        )
        self.open(current, session)

    def notify_desktop(self, notice: Notice) -> None:
        """Send ``notice`` to the desktop's notification server (where there is one)."""
        if self.desktop.available():
            sent = asyncio.ensure_future(self.desktop.notify(notice))
            self._sent.add(sent)
            sent.add_done_callback(self._sent.discard)

    def _notice_clicked(self, notice: Notice) -> None:
        for ws in self.shell.window.model.workspaces():
            if ws.name == notice.workspace and notice.account in ("", ws.account):
                self.open_from_outside(ws, notice.session)
                return

    def new_session(self, ws: Workspace) -> NewSessionDialog:
        dialog = NewSessionDialog(ws, self._submit, self.shell.secrets, self.shell.window)
        self.shell._keep(dialog)
        dialog.open()
        return dialog

    async def _submit(self, request: NewSession) -> None:
        report = await self.starter(request)
        window = self.shell.window
        if report is not None:
            self._show_started(request.workspace, report)
        window.statusBar().showMessage(
            f"Started session {request.name} ({request.agent}) in {request.workspace.name}", 8000
        )
        self.open(request.workspace, request.name)

    def _show_started(self, ws: Workspace, report: SessionReport) -> None:
        for row in self.shell.window.model.workspaces():
            if (row.account, row.name) == (ws.account, ws.name):
                if all(x.name != report.name for x in row.sessions):
                    sessions = [*row.sessions, report]
                    self.shell.window.upsert_workspace(
                        row.model_copy(update={"sessions": sessions})
                    )
                return

    async def _start_on_vm(self, request: NewSession) -> SessionReport:
        if self._service is None:
            status = self.shell.status
            self._service = SessionService(
                self.shell.settings,
                self.shell.secrets,
                status.tunnels if status is not None else None,  # the app's tunnels, reused
            )
        return await self._service.new(
            request.workspace.name,
            request.name,
            agent=request.agent,
            branch=request.branch or None,
            prompt=request.prompt or None,
        )

    async def aclose(self) -> None:
        """Close the desktop notifications' bus connection and the tunnels the session service
        opened itself (none when it used the app's)."""
        for sent in list(self._sent):
            sent.cancel()
        await self.desktop.aclose()
        if self._service is not None:
            await self._service.aclose()
