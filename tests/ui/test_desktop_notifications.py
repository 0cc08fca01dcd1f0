"""Without a tray, a session that needs the user is announced through the desktop's notification
server (D-Bus), naming session and workspace; clicking it opens the session's terminal tab."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest
from PySide6.QtWidgets import QWidget
from pytestqt.qtbot import QtBot

from app.domain import AgentState, Workspace
from app.services.registry import Registry
from app.services.status import StatusEvent, StatusEventKind, StatusService
from app.services.tunnels import TunnelService
from app.settings import SecretStore
from app.ui.controllers import StatusController
from tests.emulators.hetzner import HetznerEmulator
from tests.support.waits import WAIT_MS
from tests.ui.factories import session
from tests.ui.harness import TOKEN, configured_settings, make_shell
from tests.ui.notification_server import notification_bus
from tests.ui.test_sessions import snapshot


# The test platform (offscreen) cannot raise a window; bringing it up is all a desktop does.
@pytest.mark.qt_log_ignore("does not support raise", "does not support propagateSizeHints")
def test_desktop_notification_names_session_and_its_click_opens_the_tab(
    qtbot: QtBot, qloop: asyncio.AbstractEventLoop, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    emulator = HetznerEmulator(token=TOKEN, create_seconds=0, start_seconds=0)
    emulator.add_server("bivy-api", {"managed-by": "bivy", "bivy-workspace": "api"})
    secrets = SecretStore()
    tunnels = TunnelService(secrets)
    controller = StatusController(tunnels, StatusService(tunnels), Registry(), secrets)

    async def follow(workspaces: Sequence[Workspace]) -> None:
        return None

    monkeypatch.setattr(controller, "follow", follow)
    with notification_bus() as server:
        monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", server.address)
        shell = make_shell(emulator, tmp_path, configured_settings(), status=controller)
        shell.begin()
        window = shell.window
        try:
            qtbot.waitUntil(lambda: window.model.rowCount() == 1, timeout=WAIT_MS)
            assert not shell.tray.available()  # the offscreen platform has no tray
            working = [session("main", AgentState.WORKING), session("review", AgentState.WORKING)]
            controller.changed.emit(
                StatusEvent(StatusEventKind.UPDATED, "api", snapshot("api", working))
            )
            tab = QWidget()
            tab.workspace, tab.session = "api", "review"  # type: ignore[attr-defined]
            window.add_tab(tab, "api · review")
            window.tabs.setCurrentIndex(0)
            waiting = [working[0], session("review", AgentState.WAITING, message="Allow edits?")]
            controller.changed.emit(
                StatusEvent(StatusEventKind.UPDATED, "api", snapshot("api", waiting))
            )
            qtbot.waitUntil(lambda: bool(server.shown), timeout=WAIT_MS)
            [shown] = server.shown
            assert shown.app_name == "Bivy"
            assert shown.summary == "review in api needs you"
            assert shown.body == "Allow edits? (claude)"
            assert shown.actions == ["default", "Open terminal"]
            assert window.tabs.currentIndex() == 0
            server.click(shown.id)
            qtbot.waitUntil(lambda: window.tabs.currentWidget() is tab, timeout=WAIT_MS)
        finally:
            done = asyncio.ensure_future(shell.shutdown())
            qtbot.waitUntil(done.done, timeout=WAIT_MS)
            window.close()
            window.deleteLater()
