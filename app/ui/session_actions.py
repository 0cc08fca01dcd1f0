"""The shell's session actions (issue 15): a terminal tab per session, "New session…", and the
clicks on "needs you" notices (tray, desktop, the window's bar) that open a session's tab.

Starting a session goes to ``SessionService.new`` (``app/services/sessions.py``) over the
workspace's tunnel; ``starter`` replaces it (the tests start sessions on their own VM side).
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from app.domain import Workspace
from app.errors import BivyError
from app.ui.session_dialog import NewSession, NewSessionDialog

if TYPE_CHECKING:
    from app.ui.shell import Shell

__all__ = ["SessionActions", "Starter"]

#: Starts a session on the VM (``SessionService.new`` by default).
Starter = Callable[[NewSession], Awaitable[None]]


class SessionActions:
    """Wires the window's and the tray's session actions to the terminal tabs and the VM.

    Attributes:
        shell: the running shell; starter: how a new session is started on the VM.
    """

    def __init__(self, shell: Shell, starter: Starter | None = None) -> None:
        self.shell = shell
        self.starter: Starter = starter or self._start_on_vm
        self._service: Any = None
        window, tray = shell.window, shell.tray
        window.openSessionRequested.connect(self.open)
        window.newSessionRequested.connect(self.new_session)
        tray.openSessionRequested.connect(self.open_from_outside)

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

    def new_session(self, ws: Workspace) -> NewSessionDialog:
        dialog = NewSessionDialog(ws, self._submit, self.shell.secrets, self.shell.window)
        self.shell._keep(dialog)
        dialog.open()
        return dialog

    async def _submit(self, request: NewSession) -> None:
        await self.starter(request)
        window = self.shell.window
        window.statusBar().showMessage(
            f"Started session {request.name} ({request.agent}) in {request.workspace.name}", 8000
        )
        self.open(request.workspace, request.name)

    async def _start_on_vm(self, request: NewSession) -> None:
        service = self._sessions_service()
        await service.new(
            request.workspace.name,
            request.name,
            agent=request.agent,
            branch=request.branch or None,
            prompt=request.prompt or None,
        )

    def _sessions_service(self) -> Any:
        if self._service is None:
            try:
                module = importlib.import_module("app.services.sessions")
            except ImportError as exc:
                raise BivyError(
                    "this build cannot start sessions yet",
                    hint="Use `bivy session new` from a terminal",
                ) from exc
            self._service = module.SessionService(self.shell.settings, self.shell.secrets)
        return self._service
