"""The ways into a running workspace that the window and the tray offer.

The agent's terminal in a tab, the same terminal in the user's browser (password on the
clipboard for 45 s), "keep alive for an hour" and copying the ``ssh`` command.
"""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import QTimer, QUrl
from PySide6.QtGui import QDesktopServices, QGuiApplication

from app.domain import Workspace
from app.ui.controllers import TTYD_USER, StatusController
from app.ui.main_window import MainWindow

__all__ = ["WorkspaceAccess"]


class WorkspaceAccess:
    """Opens a workspace's terminal or browser, keeps it alive, copies its ssh command.

    Attributes:
        window: the main window (its tabs, rows and status bar).
        status: the status controller (tunnels, terminal logins, keep-alive); None when the
            app runs without services.
        closing: whether the app is shutting down (a terminal found then is not opened).
    """

    def __init__(
        self,
        window: MainWindow,
        status: StatusController | None,
        closing: Callable[[], bool],
    ) -> None:
        self.window = window
        self.status = status
        self.closing = closing

    def open_terminal(self, ws: Workspace) -> None:
        """The agent's terminal in a tab (ttyd through the tunnel, logged in by the app)."""
        existing = self.window.tab_for(ws.name)
        if existing is not None:
            self.window.tabs.setCurrentWidget(existing)
            return
        if self.status is not None:
            self.status.start(f"terminal:{ws.name}", self._open_terminal(ws.name))

    async def _open_terminal(self, name: str) -> None:
        assert self.status is not None
        found = await self.status.terminal(name)
        if found is None or self.closing():
            return
        from app.ui.ide import IdeTab  # QtWebEngine loads on first use, not at start-up

        url, password = found
        tab = IdeTab(url, TTYD_USER, password, workspace=name)
        # Without it a dropped connection went unannounced and a failed load never came back.
        tab.follow(self.status.tunnels)
        tab.titleChanged.connect(
            lambda title: self.window.tabs.setTabText(self.window.tabs.indexOf(tab), title)
        )
        self.window.add_tab(tab, name)

    def open_browser(self, ws: Workspace) -> None:
        if self.status is not None:
            self.status.start(f"browser:{ws.name}", self._open_browser(ws.name))

    async def _open_browser(self, name: str) -> None:
        assert self.status is not None
        found = await self.status.terminal(name)
        if found is None:
            return
        url, password = found
        # The password goes on the clipboard, never into the URL (process list, history).
        QGuiApplication.clipboard().setText(password)
        QTimer.singleShot(45000, lambda: _clear_if(password))
        opened = QDesktopServices.openUrl(QUrl(url))
        self.window.statusBar().showMessage(
            f"Opened {url}: log in as “{TTYD_USER}”, the password is on the clipboard for 45 s"
            if opened
            else f"No browser could be started; open {url} (password on the clipboard)",
            20000,
        )

    def keep_alive(self, ws: Workspace) -> None:
        if self.status is not None:
            self.status.start(f"keep-alive:{ws.name}", self._keep_alive(ws))

    async def _keep_alive(self, ws: Workspace) -> None:
        assert self.status is not None
        until = await self.status.keep_alive(ws.name, 3600)
        if until is None:
            return
        for row in self.window.model.workspaces():
            if row.name == ws.name:
                self.window.upsert_workspace(row.model_copy(update={"keep_alive_until": until}))
        self.window.statusBar().showMessage(
            f"{ws.name} stays alive until {until.astimezone():%H:%M}", 8000
        )

    def copy_ssh(self, ws: Workspace) -> None:
        QGuiApplication.clipboard().setText(f"ssh bivy-{ws.name}")
        self.window.statusBar().showMessage(f"Copied: ssh bivy-{ws.name}", 5000)


def _clear_if(secret: str) -> None:
    """Clear the clipboard if it still holds ``secret`` (never what the user copied since)."""
    clipboard = QGuiApplication.clipboard()
    if clipboard.text() == secret:
        clipboard.clear()
