"""Issue 15 in the window: sessions at a glance, notices naming session and workspace that open
the session's terminal tab, New session…, and colours that read in light and dark themes."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QImage
from PySide6.QtWidgets import QApplication, QLineEdit, QWidget
from pytestqt.qtbot import QtBot

from app.domain import AgentReport, AgentState, Phase, SessionReport, StatusReport, Workspace
from app.services.registry import Registry, WorkspaceRecord
from app.services.status import StatusEvent, StatusEventKind, StatusService, StatusSnapshot
from app.services.tunnels import TunnelService
from app.settings import SecretStore
from app.ui.controllers import StatusController
from app.ui.main_window import MainWindow
from app.ui.models import Column, SessionsRole
from app.ui.theme import (
    SessionState,
    contrast_ratio,
    dark_palette,
    light_palette,
    state_colour,
    tone,
)
from app.ui.workspace_access import session_url
from tests.emulators.hetzner import HetznerEmulator
from tests.support.waits import WAIT_MS
from tests.ui.factories import EVERY_STATE, NOW, session, with_sessions, workspace
from tests.ui.harness import TOKEN, configured_settings, make_shell


def has_colour(image: QImage, colour: QColor, tolerance: int = 6) -> bool:
    """Whether ``image`` has a pixel of ``colour`` (the solid middle of a state marker)."""
    image = image.convertToFormat(QImage.Format.Format_RGB32)
    for y in range(image.height()):
        for x in range(image.width()):
            pixel = image.pixelColor(x, y)
            if (
                abs(pixel.red() - colour.red()) <= tolerance
                and abs(pixel.green() - colour.green()) <= tolerance
                and abs(pixel.blue() - colour.blue()) <= tolerance
            ):
                return True
    return False


def make_window(qtbot: QtBot) -> MainWindow:
    window = MainWindow(now=lambda: NOW)
    qtbot.addWidget(window)
    window.resize(1500, 700)
    window.show()
    return window


def test_session_rows_render_each_state(qtbot: QtBot) -> None:
    window = make_window(qtbot)
    window.table.horizontalHeader().resizeSection(Column.SESSIONS, 420)
    window.set_workspaces([with_sessions(workspace("api"), *EVERY_STATE), workspace("fresh")])
    model = window.model
    api = model.index(model.row_of("hetzner", "api") or 0, Column.SESSIONS)
    chips = api.data(SessionsRole)
    assert [(name, state) for name, state, _ in chips] == [
        ("main", SessionState.WORKING),
        ("review", SessionState.WAITING),
        ("docs", SessionState.IDLE),
        ("tests", SessionState.FAILED),
    ]
    assert api.data() == "main: working · review: needs you · docs: idle · tests: failed"
    assert "review (codex, bivy/review): needs you — Allow git push?" in api.data(0x3)
    # The sessions come right after the workspace's name in the list.
    header = window.table.horizontalHeader()
    assert header.visualIndex(Column.SESSIONS) == header.visualIndex(Column.NAME) + 1
    assert api.siblingAtColumn(Column.STATUS).data() == "ready · review needs you"
    # Painted: each state's marker in its colour (no row selected: the palette's highlight
    # would take the markers' place).
    window.table.clearSelection()
    qtbot.waitExposed(window)
    image = window.table.viewport().grab(window.table.visualRect(api)).toImage()
    for state in (SessionState.WORKING, SessionState.WAITING, SessionState.IDLE):
        assert has_colour(image, state_colour(state)), state
    assert has_colour(image, state_colour(SessionState.FAILED)), "failed"
    # A workspace that waits on a session shows its status in the warning colour.
    status = api.siblingAtColumn(Column.STATUS).data(0x9)  # ForegroundRole
    assert status is not None and status.name() == tone("warning").name()
    fresh = model.index(model.row_of("hetzner", "fresh") or 0, Column.SESSIONS)
    assert fresh.data() == "no sessions yet" and fresh.data(SessionsRole) == []

    # The details list every session with its state, agent and branch.
    window.select("hetzner", "api")
    tree = window.detail.sessions.tree
    rows = [
        [tree.topLevelItem(i).text(c) for c in range(4)] for i in range(tree.topLevelItemCount())
    ]
    assert rows == [
        ["main", "working", "claude", ""],
        ["review", "needs you", "codex", "bivy/review"],
        ["docs", "idle", "gemini", "bivy/docs"],
        ["tests", "failed", "opencode", "bivy/tests"],
    ]
    assert window.detail.new_session.isEnabled() and window.act_new_session.isEnabled()
    # Double click (activate) on a session asks for that session's tab.
    with qtbot.waitSignal(window.openSessionRequested) as opened:
        tree.itemActivated.emit(tree.topLevelItem(1), 0)
    assert opened.args[0].name == "api" and opened.args[1] == "review"
    # The selected session is what Open terminal opens.
    tree.setCurrentItem(tree.topLevelItem(2))
    with qtbot.waitSignal(window.openSessionRequested) as opened:
        window.act_terminal.trigger()
    assert opened.args[1] == "docs"

    # No sessions yet: the details say how to start one.
    window.select("hetzner", "fresh")
    assert window.detail.sessions.stack.currentWidget() is window.detail.sessions.empty
    assert "No sessions yet" in window.detail.sessions.empty.text()


def test_first_run_and_empty_states_read(qtbot: QtBot) -> None:
    window = make_window(qtbot)
    empty = window.empty
    assert window.stack.currentWidget() is empty
    assert empty.title.text() == "Welcome to Bivy"
    assert empty.local_card.isVisible() and empty.cloud_card.isVisible()
    assert empty.local_button.text() == "Try it on this computer…"
    with qtbot.waitSignal(window.settingsRequested):
        empty.button.click()  # "Add an account…"
    with qtbot.waitSignal(window.newRequested):
        empty.local_button.click()
    window.set_has_accounts(True)
    assert empty.title.text() == "No workspaces yet"
    assert not empty.local_card.isVisible() and empty.new_button.isVisible()
    with qtbot.waitSignal(window.newRequested):
        empty.new_button.click()


def test_shortcuts_for_the_main_actions(qtbot: QtBot) -> None:
    window = make_window(qtbot)
    shortcuts = {
        a.text(): [s.toString() for s in a.shortcuts()]
        for a in (
            window.act_new,
            window.act_new_session,
            window.act_terminal,
            window.act_next_tab,
            window.act_previous_tab,
        )
    }
    assert shortcuts == {
        "New workspace…": ["Ctrl+N"],
        "New session…": ["Ctrl+Shift+N"],
        "Open terminal": ["Ctrl+T"],
        "Next tab": ["Ctrl+PgDown", "Ctrl+Tab"],
        "Previous tab": ["Ctrl+PgUp", "Ctrl+Shift+Tab"],
    }
    for action in (window.act_next_tab, window.act_previous_tab, window.act_quit):
        assert action in window.actions()  # window-wide, also with the toolbar hidden
    for name in ("a", "b"):
        tab = QWidget()
        tab.workspace, tab.session = "api", name  # type: ignore[attr-defined]
        window.add_tab(tab, name)
    assert window.tabs.currentIndex() == 2
    window.act_next_tab.trigger()
    assert window.tabs.currentIndex() == 0  # wraps around to the list
    window.act_previous_tab.trigger()
    assert window.tabs.currentIndex() == 2
    window.act_previous_tab.trigger()
    assert window.tabs.currentIndex() == 1
    # In a terminal tab the terminal keeps its keys (tmux's Ctrl+B, readline's Ctrl+T, Del);
    # tab switching and New session… still work there.
    window.set_workspaces([workspace("api")])
    window.select("hetzner", "api")
    asked: list[object] = []
    for signal in (
        window.openBrowserRequested,
        window.openSessionRequested,
        window.deleteRequested,
    ):
        signal.connect(lambda *args: asked.append(args))
    terminal = QLineEdit()
    terminal.workspace, terminal.session = "api", "x"  # type: ignore[attr-defined]
    window.add_tab(terminal, "x")
    window.activateWindow()
    terminal.setFocus()
    qtbot.waitUntil(terminal.hasFocus, timeout=WAIT_MS)
    for key in (Qt.Key.Key_B, Qt.Key.Key_T):
        qtbot.keyClick(terminal, key, Qt.KeyboardModifier.ControlModifier)
    qtbot.keyClick(terminal, Qt.Key.Key_Delete)
    assert asked == []
    qtbot.keyClick(terminal, Qt.Key.Key_PageUp, Qt.KeyboardModifier.ControlModifier)
    assert window.tabs.currentIndex() == 2
    # In the list they are the list's shortcuts.
    window.tabs.setCurrentIndex(0)
    window.table.setFocus()
    qtbot.waitUntil(window.table.hasFocus, timeout=WAIT_MS)
    with qtbot.waitSignal(window.openSessionRequested):
        qtbot.keyClick(window.table, Qt.Key.Key_T, Qt.KeyboardModifier.ControlModifier)
    # Every toolbar action has an icon.
    for action in window.toolbar.actions():
        assert action.isSeparator() or not action.icon().isNull(), action.text()


@pytest.fixture
def dark_app(qapp: QApplication) -> Iterator[QApplication]:
    """The application in a dark system theme (the palette a dark desktop hands Qt)."""
    before = qapp.palette()
    qapp.setPalette(dark_palette())
    try:
        yield qapp
    finally:
        qapp.setPalette(before)


@pytest.mark.parametrize("palette", [light_palette, dark_palette], ids=["light", "dark"])
def test_state_colours_have_readable_contrast(palette: Any) -> None:
    pal = palette()
    base = pal.color(pal.ColorRole.Base)
    alternate = pal.color(pal.ColorRole.AlternateBase)
    for name in [*SessionState, "warning", "error"]:
        colour = tone(name, pal)
        assert contrast_ratio(colour, base) >= 3.0, (name, colour.name(), base.name())
        assert contrast_ratio(colour, alternate) >= 3.0, (name, colour.name())
    assert contrast_ratio(QColor("#000000"), QColor("#ffffff")) == pytest.approx(21.0)


def _lightness_of_strokes(window: MainWindow) -> float:
    image = window.act_terminal.icon().pixmap(24).toImage()
    values = [
        image.pixelColor(x, y).lightnessF()
        for y in range(image.height())
        for x in range(image.width())
        if image.pixelColor(x, y).alpha() > 200
    ]
    assert values, "the icon draws nothing"
    return sum(values) / len(values)


def test_dark_palette_recolours_states_and_icons(qtbot: QtBot, dark_app: QApplication) -> None:
    window = make_window(qtbot)
    window.set_workspaces([with_sessions(workspace("api"), *EVERY_STATE)])
    base = window.palette().color(window.palette().ColorRole.Base)
    assert base.lightnessF() < 0.2
    status = window.model.index(0, Column.STATUS).data(0x9)
    assert status.name() == tone("warning", dark_palette()).name() != "#b35c00"
    assert contrast_ratio(status, base) >= 3.0
    window.table.horizontalHeader().resizeSection(Column.SESSIONS, 420)
    window.table.clearSelection()
    cell = window.model.index(0, Column.SESSIONS)
    image = window.table.viewport().grab(window.table.visualRect(cell)).toImage()
    for state in SessionState:
        if state is not SessionState.UNKNOWN:
            colour = state_colour(state, dark_palette())
            assert has_colour(image, colour), state
            assert contrast_ratio(colour, base) >= 3.0
    assert _lightness_of_strokes(window) > 0.7  # light strokes on the dark toolbar
    QApplication.setPalette(light_palette())
    # Re-tinted when the theme changes.
    qtbot.waitUntil(lambda: _lightness_of_strokes(window) < 0.3, timeout=WAIT_MS)


def test_session_url_picks_the_session() -> None:
    assert session_url("http://127.0.0.1:4000/", "main") == "http://127.0.0.1:4000/"
    assert session_url("http://127.0.0.1:4000/", "review") == "http://127.0.0.1:4000/?arg=review"
    assert session_url("http://127.0.0.1:4000", "a-1") == "http://127.0.0.1:4000/?arg=a-1"


# -- the shell: status events with sessions, notices, tabs ----------------------------------


def snapshot(name: str, sessions: Sequence[SessionReport]) -> StatusSnapshot:
    """A status read of a ready VM whose ``session ls`` listed ``sessions``."""
    now = datetime.now(UTC)
    status = StatusReport(phase=Phase.READY, progress=1.0, updated_at=now)
    main = next((s for s in sessions if s.name == "main"), None)
    agent = AgentReport(state=main.state, message=main.message) if main else None
    return StatusSnapshot(name, status, agent, now, sessions=tuple(sessions))


def _terminal_tab(workspace: str, session: str) -> QWidget:
    """Stands in for an open terminal tab (the tab switching does not need QtWebEngine;
    test_session_terminal_e2e.py opens real ones)."""
    tab = QWidget()
    tab.workspace, tab.session = workspace, session  # type: ignore[attr-defined]
    return tab


# The test platform (offscreen) cannot raise a window; bringing it up is all a desktop does.
@pytest.mark.qt_log_ignore("does not support raise", "does not support propagateSizeHints")
def test_waiting_session_notifies_and_its_click_opens_the_tab(
    qtbot: QtBot, qloop: asyncio.AbstractEventLoop, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    emulator = HetznerEmulator(token=TOKEN, create_seconds=0, start_seconds=0)
    server_id = emulator.add_server("bivy-api", {"managed-by": "bivy", "bivy-workspace": "api"})
    Registry().put(
        WorkspaceRecord(
            name="api",
            account="hetzner",
            provider="hetzner",
            server_id=str(server_id),
            host_public_key="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBivyTestHostKey",
        )
    )
    secrets = SecretStore()
    tunnels = TunnelService(secrets)
    controller = StatusController(tunnels, StatusService(tunnels), Registry(), secrets)

    async def follow(workspaces: Sequence[Workspace]) -> None:
        return None  # the SSH side is the status service's tests'; events come in below

    monkeypatch.setattr(controller, "follow", follow)
    shell = make_shell(emulator, tmp_path, configured_settings(), status=controller)
    shell.begin()
    window = shell.window
    try:
        qtbot.waitUntil(lambda: window.model.rowCount() == 1, timeout=WAIT_MS)
        two = [session("main", AgentState.WORKING), session("review", AgentState.WORKING)]
        controller.changed.emit(StatusEvent(StatusEventKind.UPDATED, "api", snapshot("api", two)))
        cell = window.model.index(0, Column.SESSIONS)
        assert cell.data() == "main: working · review: working"
        assert not window.notice_bar.isVisible()
        main_tab = _terminal_tab("api", "main")
        review_tab = _terminal_tab("api", "review")
        window.add_tab(review_tab, "api · review")
        window.add_tab(main_tab, "api · main")
        assert window.tabs.currentWidget() is main_tab

        # review turns to waiting: the notice names the session and the workspace.
        waiting = [
            session("main", AgentState.WORKING),
            session("review", AgentState.WAITING, agent="codex", message="Allow edits?"),
        ]
        controller.changed.emit(
            StatusEvent(StatusEventKind.UPDATED, "api", snapshot("api", waiting))
        )
        assert cell.data() == "main: working · review: needs you"
        # No tray on the test platform: the status bar and the window's bar say it.
        assert "review in api needs you" in window.statusBar().currentMessage()
        assert window.notice_bar.isVisible()
        assert "review in api needs you: Allow edits?" in window.notice_bar.text.text()
        assert shell.tray.icon_name == "tray-attention.svg"
        # The open tabs show their session's state as their icon.
        assert not window.tabs.tabIcon(window.tabs.indexOf(review_tab)).isNull()
        assert "review of api: needs you" in window.tabs.tabToolTip(window.tabs.indexOf(review_tab))
        assert "Needs you: review in api" in shell.tray.icon.toolTip()
        # Its button opens (here: switches to) review's terminal tab.
        window.notice_bar.open_button.click()
        assert window.tabs.currentWidget() is review_tab
        assert not window.notice_bar.isVisible()

        # With a tray (a desktop's notification area): the desktop notification says it, and
        # clicking it brings up the window on that session's tab.
        shown: list[tuple[str, str]] = []
        monkeypatch.setattr(type(shell.tray), "available", staticmethod(lambda: True))
        monkeypatch.setattr(shell.tray.icon, "isVisible", lambda: True)
        monkeypatch.setattr(
            shell.tray.icon, "showMessage", lambda title, text, *_: shown.append((title, text))
        )
        window.tabs.setCurrentWidget(main_tab)
        idle = [session("main", AgentState.IDLE), session("review", AgentState.IDLE)]
        controller.changed.emit(StatusEvent(StatusEventKind.UPDATED, "api", snapshot("api", idle)))
        assert shown == []  # idle is not news
        again = [session("main", AgentState.WAITING, message="Which file?"), idle[1]]
        controller.changed.emit(StatusEvent(StatusEventKind.UPDATED, "api", snapshot("api", again)))
        assert shown == [
            ("main in api needs you", "Which file? (claude) Click here to open its terminal.")
        ]
        window.tabs.setCurrentIndex(0)  # the list
        shell.tray.icon.messageClicked.emit()
        assert window.tabs.currentWidget() is main_tab
        # The tray menu lists the sessions; each entry opens its tab.
        api_menu = next(a for a in shell.tray.menu.actions() if a.text().startswith("api"))
        entries = {a.text(): a for a in api_menu.menu().actions() if a.text()}
        assert {"main — needs you", "review — idle"} <= set(entries)
        entries["review — idle"].trigger()
        assert window.tabs.currentWidget() is review_tab
    finally:
        done = asyncio.ensure_future(shell.shutdown())
        qtbot.waitUntil(done.done, timeout=WAIT_MS)
        window.close()
        window.deleteLater()


def test_new_session_dialog_starts_a_session_and_opens_its_tab(
    qtbot: QtBot, qloop: asyncio.AbstractEventLoop, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.errors import BivyError
    from app.ui.session_dialog import NewSession, NewSessionDialog

    emulator = HetznerEmulator(token=TOKEN, create_seconds=0, start_seconds=0)
    emulator.add_server("bivy-api", {"managed-by": "bivy", "bivy-workspace": "api"})
    shell = make_shell(emulator, tmp_path, configured_settings())
    shell.begin()
    window = shell.window
    started: list[NewSession] = []
    opened: list[tuple[str, str]] = []

    async def starter(request: NewSession) -> SessionReport:
        if request.name == "taken-on-vm":
            raise BivyError("a session called taken-on-vm exists on the VM")
        started.append(request)
        return session(request.name, AgentState.WORKING, agent=request.agent)

    shell.session_actions.starter = starter
    messages: list[str] = []
    window.statusBar().messageChanged.connect(messages.append)
    monkeypatch.setattr(
        shell.access, "open_terminal", lambda ws, name="main": opened.append((ws.name, name))
    )
    try:
        ws = with_sessions(workspace("api"), session("main", AgentState.WORKING))
        window.upsert_workspace(ws)
        window.select("hetzner", "api")
        window.act_new_session.trigger()
        dialog = shell.dialogs[-1]
        assert isinstance(dialog, NewSessionDialog)
        assert dialog.agent.currentData() == "claude" and dialog.name.text() == "claude"
        dialog.agent.setCurrentIndex(dialog.agent.findData("codex"))
        assert dialog.name.text() == "codex"  # the suggestion follows the agent
        assert dialog.branch.placeholderText() == "bivy/codex"
        dialog.name.setText("main")
        assert not dialog.ok.isEnabled() and "already has a session" in dialog.problem()
        dialog.name.setText("taken-on-vm")
        dialog.branch.setText("feature/x")
        dialog.ok.click()
        qtbot.waitUntil(lambda: bool(dialog.error), timeout=WAIT_MS)
        assert "taken-on-vm exists" in dialog.error and dialog.isVisible()
        dialog.name.setText("fix-login")
        dialog.prompt.setPlainText("Fix the login redirect")
        with qtbot.waitSignal(dialog.accepted, timeout=WAIT_MS):
            dialog.ok.click()
        assert started == [
            NewSession(ws, "fix-login", "codex", "feature/x", "Fix the login redirect")
        ]
        assert opened == [("api", "fix-login")]
        # The row shows the new session before the next status read lists it.
        cell = window.model.index(window.model.row_of("hetzner", "api") or 0, Column.SESSIONS)
        assert cell.data() == "main: working · fix-login: working"
        assert "Started session fix-login (codex) in api" in messages
    finally:
        done = asyncio.ensure_future(shell.shutdown())
        qtbot.waitUntil(done.done, timeout=WAIT_MS)
        window.close()
        window.deleteLater()


def test_new_session_goes_to_the_session_service_over_the_apps_tunnels(
    qtbot: QtBot, qloop: asyncio.AbstractEventLoop, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.services.sessions import SessionService
    from app.ui.session_dialog import NewSession

    secrets = SecretStore()
    tunnels = TunnelService(secrets)
    controller = StatusController(tunnels, StatusService(tunnels), Registry(), secrets)
    emulator = HetznerEmulator(token=TOKEN, create_seconds=0, start_seconds=0)
    shell = make_shell(emulator, tmp_path, configured_settings(), status=controller)
    calls: list[tuple[object, ...]] = []

    async def new(self: SessionService, workspace: str, name: str | None, **kw: object) -> object:
        calls.append((self._tunnels, workspace, name, kw))  # type: ignore[attr-defined]
        return session(str(name), AgentState.WORKING, agent=str(kw["agent"]))

    monkeypatch.setattr(SessionService, "new", new)
    try:
        ws = workspace("api")
        task = asyncio.ensure_future(
            shell.session_actions.starter(NewSession(ws, "docs", "gemini", "", "Write the docs"))
        )
        qtbot.waitUntil(task.done, timeout=WAIT_MS)
        assert task.result().name == "docs"
        assert calls == [
            (
                tunnels,
                "api",
                "docs",
                {"agent": "gemini", "branch": None, "prompt": "Write the docs"},
            )
        ]
    finally:
        done = asyncio.ensure_future(shell.shutdown())
        qtbot.waitUntil(done.done, timeout=WAIT_MS)
        shell.window.close()
        shell.window.deleteLater()


def test_the_needs_you_bar_goes_once_the_session_is_answered(qtbot: QtBot) -> None:
    window = make_window(qtbot)
    waiting = with_sessions(
        workspace("api"), session("main"), session("review", AgentState.WAITING)
    )
    window.set_workspaces([waiting])
    window.show_session_notice("hetzner", "api", "review", "review in api needs you")
    assert window.notice_bar.isVisible()
    window.upsert_workspace(waiting)  # another read, still waiting: the bar stays
    assert window.notice_bar.isVisible()
    answered = with_sessions(
        workspace("api"), session("main"), session("review", AgentState.WORKING)
    )
    window.upsert_workspace(answered)  # answered in its terminal
    assert not window.notice_bar.isVisible()


def test_open_in_browser_opens_the_selected_session(
    qtbot: QtBot, qloop: asyncio.AbstractEventLoop, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secrets = SecretStore()
    tunnels = TunnelService(secrets)
    controller = StatusController(tunnels, StatusService(tunnels), Registry(), secrets)

    async def terminal(name: str) -> tuple[str, str]:
        return "http://127.0.0.1:41234/", "the-password"

    opened: list[str] = []
    monkeypatch.setattr(controller, "terminal", terminal)
    monkeypatch.setattr(
        "app.ui.workspace_access.QDesktopServices.openUrl",
        lambda url: opened.append(url.toString()) or True,
    )
    emulator = HetznerEmulator(token=TOKEN, create_seconds=0, start_seconds=0)
    shell = make_shell(emulator, tmp_path, configured_settings(), status=controller)
    window = shell.window
    try:
        window.set_workspaces([with_sessions(workspace("api"), *EVERY_STATE)])
        window.select("hetzner", "api")
        tree = window.detail.sessions.tree
        tree.setCurrentItem(tree.topLevelItem(1))
        window.act_browser.trigger()
        qtbot.waitUntil(lambda: bool(opened), timeout=WAIT_MS)
        assert opened == ["http://127.0.0.1:41234/?arg=review"]  # no password in it
        tree.setCurrentItem(tree.topLevelItem(0))
        window.act_browser.trigger()
        qtbot.waitUntil(lambda: len(opened) == 2, timeout=WAIT_MS)
        assert opened[1] == "http://127.0.0.1:41234/"
    finally:
        done = asyncio.ensure_future(shell.shutdown())
        qtbot.waitUntil(done.done, timeout=WAIT_MS)
        window.close()
        window.deleteLater()
