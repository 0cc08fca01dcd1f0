"""The ways into a running workspace that the window and the tray offer.

A session's terminal in a tab (one tab per session: ttyd's ``?arg=<session>`` through the
workspace's tunnel), the same terminal in the user's browser (password on the clipboard for
45 s), "keep alive for an hour" and copying the ``ssh`` command.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import quote

from PySide6.QtCore import QTimer, QUrl
from PySide6.QtGui import QDesktopServices, QGuiApplication

from app.domain import Workspace
from app.ui.controllers import TTYD_USER, StatusController
from app.ui.main_window import MainWindow

__all__ = ["WorkspaceAccess", "session_url"]

#: The session the bootstrap starts; ttyd opens it without a URL argument.
MAIN_SESSION = "main"


def session_url(url: str, session: str) -> str:
    """The terminal URL of ``session``: ttyd (run with ``-a``) hands ``?arg=`` to the script
    that attaches to the session's tmux session; ``main`` needs no argument."""
    if not session or session == MAIN_SESSION:
        return url
    base = url if url.endswith("/") else f"{url}/"
    return f"{base}?arg={quote(session, safe='')}"


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

    def open_terminal(self, ws: Workspace, session: str = MAIN_SESSION) -> None:
        """A session's terminal in a tab (ttyd through the tunnel, logged in by the app); an
        open tab of that session is brought to the front instead."""
        session = session or MAIN_SESSION
        existing = self.window.tab_for(ws.name, session)
        if existing is not None:
            self.window.tabs.setCurrentWidget(existing)
            return
        if self.status is not None:
            self.status.start(
                f"terminal:{ws.name}:{session}", self._open_terminal(ws.name, session)
            )

    async def _open_terminal(self, name: str, session: str) -> None:
        assert self.status is not None
        found = await self.status.terminal(name)
        if found is None or self.closing():
            return
        existing = self.window.tab_for(name, session)  # opened meanwhile (a second click)
        if existing is not None:
            self.window.tabs.setCurrentWidget(existing)
            return
        from app.ui.ide import IdeTab  # QtWebEngine loads on first use, not at start-up

        url, password = found
        tab = IdeTab(
            session_url(url, session), TTYD_USER, password, workspace=name, session=session
        )
        # Without it a dropped connection went unannounced and a failed load never came back.
        tab.follow(self.status.tunnels)
        self.window.add_tab(tab, tab_title(name, session))
        index = self.window.tabs.indexOf(tab)
        self.window.tabs.setTabToolTip(index, f"Session {session} of workspace {name}")

    def open_browser(self, ws: Workspace, session: str | None = None) -> None:
        """The terminal in the system browser: ``session``, else the one selected in the
        window's details when they show ``ws``, else ``main``."""
        if session is None:
            shown = self.window.detail.shown
            same = shown is not None and (shown.account, shown.name) == (ws.account, ws.name)
            session = (self.window.detail.sessions.current() if same else None) or MAIN_SESSION
        if self.status is not None:
            self.status.start(f"browser:{ws.name}", self._open_browser(ws.name, session))

    async def _open_browser(self, name: str, session: str = MAIN_SESSION) -> None:
        assert self.status is not None
        found = await self.status.terminal(name)
        if found is None:
            return
        url, password = found
        url = session_url(url, session)
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


def tab_title(workspace: str, session: str) -> str:
    """``api · review`` (the session tells tabs of one workspace apart)."""
    return f"{workspace} · {session}"


def _clear_if(secret: str) -> None:
    """Clear the clipboard if it still holds ``secret`` (never what the user copied since)."""
    clipboard = QGuiApplication.clipboard()
    if clipboard.text() == secret:
        clipboard.clear()
