"""The IDE tab: ttyd's web terminal through the SSH tunnel, logged in by the app, not the user.

The forwarded URL is ``http://127.0.0.1:<port>/`` (the tunnel's local end, no credential in it).
ttyd asks for HTTP basic auth; the page answers ``authenticationRequired`` with the workspace's
credential, only for that exact origin, once (a second request means it was refused and is
reported instead of retried). The tab uses an off-the-record profile, so Chromium keeps neither
the credential nor cookies on disk, and the page's console goes to Python's logger at DEBUG.

Closing the tab only closes the browser side: the terminal runs ``tmux new -A -s agent`` on the VM,
so the agent keeps working and the next tab re-attaches to the same session.

"Open in browser" opens the same plain URL in the system browser (reachable while the app and its
tunnel run). The credential is NOT put in the URL: a ``user:password@`` URL would be visible in
the process list (the browser's command line), in history and to extensions. Instead the browser
shows its own login prompt; the tab puts the password on the clipboard and clears it again after
``CLIPBOARD_SECONDS`` (if it is still there), and says so in a notice.

Import this module (or call ``prepare_application``) before the ``QApplication`` is created:
QtWebEngine must set up its shared OpenGL contexts first.
"""

from __future__ import annotations

import contextlib
import logging
import os
import weakref

from PySide6.QtCore import QCoreApplication, Qt, QTimer, QUrl, Signal, Slot
from PySide6.QtGui import QDesktopServices, QGuiApplication
from PySide6.QtNetwork import QAuthenticator
from PySide6.QtWebEngineCore import QWebEnginePage, QWebEngineProfile
from PySide6.QtWebEngineWidgets import QWebEngineView
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget
from shiboken6 import isValid

from app.services.tunnels import (
    TTYD_PORT,
    SSHTarget,
    StateChange,
    TunnelService,
    TunnelState,
    open_terminal,
)
from app.settings import SecretStore

log = logging.getLogger(__name__)

#: How long the password stays on the clipboard after "Open in browser".
CLIPBOARD_SECONDS = 45


def prepare_application() -> None:
    """Call before creating the QApplication (idempotent).

    Chromium refuses to run its sandbox as root; Bivy as root only happens in containers/CI.
    """
    if os.name == "posix" and os.geteuid() == 0:
        os.environ.setdefault("QTWEBENGINE_DISABLE_SANDBOX", "1")
    if QCoreApplication.instance() is None:
        QCoreApplication.setAttribute(Qt.ApplicationAttribute.AA_ShareOpenGLContexts)


prepare_application()


def _origin(url: QUrl) -> tuple[str, str, int]:
    return (url.scheme(), url.host(), url.port(80))


class _TerminalPage(QWebEnginePage):
    """A page that logs in to one origin, stays on it and keeps its console out of Qt's log."""

    def __init__(self, profile: QWebEngineProfile, view: QWebEngineView, home: QUrl) -> None:
        super().__init__(profile, view)
        # Only the origin is kept: a reference back to the tab would make a cycle that only
        # Python's cyclic GC breaks, at an arbitrary moment and possibly in another thread.
        self._home = _origin(home)

    def acceptNavigationRequest(  # Qt's name
        self, url: QUrl | str, type: QWebEnginePage.NavigationType, isMainFrame: bool
    ) -> bool:
        target = QUrl(url)
        if not isMainFrame or _origin(target) == self._home:
            return True
        # A link printed in the terminal: the user's browser, not this tab, opens it.
        if target.scheme() in {"http", "https"}:
            QDesktopServices.openUrl(target)
        return False

    def javaScriptConsoleMessage(  # Qt's name
        self,
        level: QWebEnginePage.JavaScriptConsoleMessageLevel,
        message: str,
        lineNumber: int,
        sourceID: str,
    ) -> None:
        log.debug("ttyd page console (%s): %s", level.name, message[:500])


class IdeTab(QWidget):
    """One workspace's terminal (ttyd in a QWebEngineView), for the main window's tab widget.

    ``IdeTab(url, username, password, workspace="name")``: ``url`` is the forward's
    ``http://127.0.0.1:<port>/``; the credential is ttyd's (user ``bivy``, the per-workspace
    password from the keychain). Nothing of it is shown, logged or put in a URL.

    Methods for the window: ``follow(tunnels)`` (show the tunnel's state, reload after a
    reconnect), ``open_in_browser()``, ``reload()``, ``close_terminal()``. Remove a tab with
    ``deleteLater()`` (what the tab widget's owner does on close); the agent keeps running.

    Attributes:
        view: the QWebEngineView; workspace: whose terminal; session: which agent session's
        (ttyd's ``?arg=<session>``; ``main`` without one); qurl: the forwarded URL.
        notice: the text shown above the terminal, "" when none.

    Signals:
        loaded(bool): the page finished loading (False: the tunnel or ttyd did not answer).
        titleChanged(str): a tab title for the terminal ("agent" from ttyd, else the workspace).
        authenticationFailed(): ttyd refused the credential (the VM's password differs).
        browserOpened(str): "Open in browser" opened this URL; the password is on the clipboard.
    """

    loaded = Signal(bool)
    titleChanged = Signal(str)
    authenticationFailed = Signal()
    browserOpened = Signal(str)

    def __init__(
        self,
        url: str,
        username: str,
        password: str,
        *,
        workspace: str = "",
        session: str = "main",
        parent: QWidget | None = None,
    ) -> None:
        qurl = QUrl(url)
        if qurl.userInfo():
            raise ValueError("the terminal URL must not carry a credential")
        super().__init__(parent)
        self.workspace = workspace
        self.session = session
        self.qurl = qurl
        self.__username = username
        self.__password = password
        self._auth_attempts = 0
        self._load_failed = False
        self.view = QWebEngineView(self)
        # No storage name: off the record. Created with a parent so C++ owns it from the start
        # (a Python-owned profile could be collected at exit before its page).
        self._profile = QWebEngineProfile(self)
        self._page = _TerminalPage(self._profile, self.view, self.qurl)
        # A profile must outlive its pages: as the page's child it is deleted right after the
        # page's own destructor ran, whatever order the tab's children go in.
        self._profile.setParent(self._page)
        self._page.authenticationRequired.connect(self._authenticate)
        self._page.loadFinished.connect(self._on_loaded)
        self._page.titleChanged.connect(self._on_title)
        self.view.setPage(self._page)

        self._notice = QLabel(self)
        self._notice.setWordWrap(True)
        self._notice.setTextFormat(Qt.TextFormat.PlainText)
        self._notice.hide()
        self._notice_is_connection = False
        self._browser_button = QPushButton("Open in browser", self)
        self._browser_button.setToolTip(
            "Open this terminal in your web browser (works while Bivy runs)"
        )
        self._browser_button.clicked.connect(self.open_in_browser)
        bar = QHBoxLayout()
        bar.setContentsMargins(4, 2, 4, 2)
        bar.addWidget(self._notice, 1)
        bar.addStretch()  # keeps the button its size while no notice is shown
        bar.addWidget(self._browser_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.addLayout(bar)
        layout.addWidget(self.view, 1)
        self.setFocusProxy(self.view)
        self._clipboard_timer = QTimer(self)
        self._clipboard_timer.setSingleShot(True)
        self._clipboard_timer.timeout.connect(self._clear_clipboard)
        self.view.load(self.qurl)

    def __repr__(self) -> str:
        where = f"workspace={self.workspace!r}, session={self.session!r}"
        return f"IdeTab({where}, url={self.qurl.toString()!r})"

    @property
    def url(self) -> str:
        return self.qurl.toString()

    @property
    def notice(self) -> str:
        """The notice shown above the terminal ("" when none is shown)."""
        return self._notice.text() if not self._notice.isHidden() else ""

    @Slot(QUrl, QAuthenticator)
    def _authenticate(self, request_url: QUrl, authenticator: QAuthenticator) -> None:
        if _origin(request_url) != _origin(self.qurl):
            log.warning("refusing to send the terminal credential to another origin")
            return  # leaving it unset cancels the request
        self._auth_attempts += 1
        if self._auth_attempts > 1:
            # Chromium asks again only after a refusal: do not loop, tell the window.
            log.warning("ttyd of workspace %s refused the credential", self.workspace)
            self.authenticationFailed.emit()
            return
        authenticator.setUser(self.__username)
        authenticator.setPassword(self.__password)

    @Slot(bool)
    def _on_loaded(self, ok: bool) -> None:
        self._load_failed = not ok
        if ok:
            self._auth_attempts = 0
        self.loaded.emit(ok)

    def follow(self, tunnels: TunnelService) -> None:
        """Show this workspace's tunnel state above the terminal, and reload the page after a
        reconnect if it had failed to load (a loaded page's websocket reconnects by itself)."""

        tab_ref = weakref.ref(self)  # the service must not keep the tab alive

        def on_change(change: StateChange) -> None:
            tab = tab_ref()
            if tab is None or not isValid(tab):  # the tab is gone: stop listening
                with contextlib.suppress(ValueError):
                    remove()
                return
            if change.workspace != tab.workspace:
                return
            detail = change.error.message if change.error is not None else ""
            tab.set_tunnel_state(change.state.value, detail)
            if change.state == TunnelState.CONNECTED and tab._load_failed:
                tab.reload()

        remove = tunnels.add_listener(on_change)

    @Slot(str)
    def _on_title(self, title: str) -> None:
        self.titleChanged.emit(title or self.workspace)

    def reload(self) -> None:
        """Load the terminal again (e.g. after the tunnel reconnected)."""
        self._auth_attempts = 0
        self.view.load(self.qurl)

    def set_tunnel_state(self, state: str, detail: str = "") -> None:
        """Show the tunnel's state ("connected", "reconnecting", …) above the terminal."""
        if state == "connected":
            if self._notice_is_connection:  # a browser hint stays until the next one
                self._notice.hide()
            return
        text = f"Connection {state}" + (f": {detail}" if detail else "")
        self._notice.setText(text)
        self._notice_is_connection = True
        self._notice.show()

    @Slot()
    def open_in_browser(self) -> bool:
        """Open the forwarded URL in the system browser; the password goes to the clipboard."""
        clipboard = QGuiApplication.clipboard()
        clipboard.setText(self.__password)
        self._clipboard_timer.start(CLIPBOARD_SECONDS * 1000)
        opened = QDesktopServices.openUrl(self.qurl)
        self._notice.setText(
            f"Your browser asks for a login: user “{self.__username}”; the password is on the "
            f"clipboard for {CLIPBOARD_SECONDS} s. The page works while Bivy runs."
            if opened
            else f"No browser could be started. Open {self.url} yourself; the password is on "
            f"the clipboard for {CLIPBOARD_SECONDS} s."
        )
        self._notice_is_connection = False
        self._notice.show()
        self.browserOpened.emit(self.url)
        return opened

    @Slot()
    def _clear_clipboard(self) -> None:
        clipboard = QGuiApplication.clipboard()
        if clipboard.text() == self.__password:  # never wipe what the user copied since
            clipboard.clear()

    def close_terminal(self) -> None:
        """Disconnect the browser side (the websocket); the agent keeps running in tmux."""
        self._clipboard_timer.stop()
        self._clear_clipboard()
        self._page.triggerAction(QWebEnginePage.WebAction.Stop)
        self.view.setUrl(QUrl("about:blank"))


async def open_ide_tab(
    tunnels: TunnelService,
    target: SSHTarget,
    secrets: SecretStore,
    *,
    parent: QWidget | None = None,
    ttyd_port: int = TTYD_PORT,
) -> IdeTab:
    """ "Open terminal" in one call: tunnel + ttyd forward + keychain password → a following tab."""
    endpoint = await open_terminal(tunnels, target, secrets, ttyd_port=ttyd_port)
    tab = IdeTab(
        endpoint.url,
        endpoint.username,
        endpoint.password,
        workspace=endpoint.workspace,
        parent=parent,
    )
    tab.follow(tunnels)
    return tab
