"""A terminal tab per session: the window's Open terminal reaches ttyd with ``?arg=<session>``
and the terminal that answers is that session's (a real ttyd run with ``-a`` as on the VM)."""

from __future__ import annotations

import asyncio
import gc
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("QTWEBENGINE_DISABLE_SANDBOX", "1")  # Chromium's sandbox refuses root

from pytestqt.qtbot import QtBot

from app.domain import AgentState
from app.services.registry import Registry
from app.services.status import StatusService
from app.services.tunnels import TunnelService
from app.settings import SecretStore
from app.ui.controllers import StatusController
from app.ui.ide import IdeTab  # imports QtWebEngine before pytest-qt creates the QApplication
from tests.emulators.hetzner import HetznerEmulator
from tests.support.sshd import Ttyd
from tests.support.waits import WAIT_MS
from tests.ui.factories import session, with_sessions, workspace
from tests.ui.harness import TOKEN, configured_settings, make_shell
from tests.ui.session_ttyd import start_session_ttyd
from tests.ui.terminal_view import terminal_text
from tests.ui.test_ide import gpu_less

PASSWORD = "session-tabs-5e1f"


@pytest.fixture(autouse=True)
def collect_garbage_on_the_gui_thread() -> Iterator[None]:
    yield
    gc.collect()  # see test_ide.py: Qt objects freed later, in another thread, crash


@pytest.fixture
def ttyd(tmp_path: Path) -> Iterator[Ttyd]:
    server = start_session_ttyd(tmp_path / "ttyd", password=PASSWORD)
    try:
        yield server
    finally:
        server.stop()


@gpu_less
@pytest.mark.slow
def test_each_session_gets_its_own_terminal_tab(
    qtbot: QtBot,
    qloop: asyncio.AbstractEventLoop,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    ttyd: Ttyd,
) -> None:
    secrets = SecretStore()
    tunnels = TunnelService(secrets)
    controller = StatusController(tunnels, StatusService(tunnels), Registry(), secrets)
    asked: list[str] = []

    async def terminal(name: str) -> tuple[str, str]:
        # The forward through the workspace's tunnel is test_terminal_e2e.py's; here the
        # forward's URL is ttyd's own.
        asked.append(name)
        return f"http://127.0.0.1:{ttyd.port}/", PASSWORD

    async def follow(_workspaces: object) -> None:
        return None

    monkeypatch.setattr(controller, "terminal", terminal)
    monkeypatch.setattr(controller, "follow", follow)
    emulator = HetznerEmulator(token=TOKEN, create_seconds=0, start_seconds=0)
    shell = make_shell(emulator, tmp_path, configured_settings(), status=controller)
    shell.begin(smoke_test=True)
    window = shell.window
    window.resize(1100, 700)
    try:
        ws = with_sessions(
            workspace("api"),
            session("main", AgentState.WORKING),
            session("review", AgentState.WAITING, agent="codex"),
        )
        window.upsert_workspace(ws)
        window.select("hetzner", "api")
        tree = window.detail.sessions.tree
        tree.setCurrentItem(tree.topLevelItem(1))
        window.act_terminal.trigger()  # the selected session: review
        qtbot.waitUntil(lambda: window.tab_for("api", "review") is not None, timeout=WAIT_MS)
        review = window.tab_for("api", "review")
        assert isinstance(review, IdeTab) and window.tabs.currentWidget() is review
        assert review.url.endswith("/?arg=review") and PASSWORD not in review.url
        assert window.tabs.tabText(window.tabs.indexOf(review)) == "api · review"
        qtbot.waitUntil(
            lambda: "Bivy session: review" in terminal_text(qtbot, review), timeout=WAIT_MS
        )

        tree.setCurrentItem(tree.topLevelItem(0))
        window.act_terminal.trigger()  # main: no argument
        qtbot.waitUntil(lambda: window.tab_for("api", "main") is not None, timeout=WAIT_MS)
        main = window.tab_for("api", "main")
        assert isinstance(main, IdeTab) and "?arg" not in main.url
        qtbot.waitUntil(lambda: "Bivy session: main" in terminal_text(qtbot, main), timeout=WAIT_MS)
        assert window.tabs.count() == 3 and asked == ["api", "api"]

        # Asking again for an open session switches to its tab (no second tab, no new login).
        window.openSessionRequested.emit(ws, "review")
        assert window.tabs.currentWidget() is review and window.tabs.count() == 3
        assert asked == ["api", "api"]
        window.act_next_tab.trigger()  # tabs: the list, review, main
        assert window.tabs.currentWidget() is main
        window.act_previous_tab.trigger()
        window.act_previous_tab.trigger()
        assert window.tabs.currentIndex() == 0
    finally:
        done = asyncio.ensure_future(shell.shutdown())
        qtbot.waitUntil(done.done, timeout=WAIT_MS)
        window.close()
        window.deleteLater()
