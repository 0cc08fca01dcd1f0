"""Issue 13 §3: a workspace about to delete itself for idleness says so, in the row, the detail
pane and the tray, and one click on the tray's notification keeps it alive (the lease)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pytestqt.qtbot import QtBot

from app.domain import AgentState, Phase, ServerStatus, Workspace
from app.services.registry import Registry, WorkspaceRecord
from app.services.status import StatusEvent, StatusEventKind, StatusService
from app.services.tunnels import TunnelService
from app.settings import SecretStore
from app.ui.controllers import StatusController
from app.ui.main_window import MainWindow
from app.ui.models import Column, status_text
from app.ui.notifications import KEEP_ALIVE, Notice, Notifier
from app.ui.tray import Tray
from tests.emulators.hetzner import HetznerEmulator
from tests.support.waits import WAIT_MS
from tests.ui.factories import NOW, workspace
from tests.ui.harness import TOKEN, configured_settings, make_shell
from tests.ui.test_status import snapshot


def _status_cell(window: MainWindow, name: str) -> str:
    row = window.model.row_of("hetzner", name)
    assert row is not None
    return str(window.model.index(row, Column.STATUS).data())


def test_row_and_detail_count_down_to_the_idle_delete(qtbot: QtBot) -> None:
    clock = [NOW]
    window = MainWindow(now=lambda: clock[0], confirm=lambda *_: True)
    qtbot.addWidget(window)
    quiet = workspace("quiet", idle_in=timedelta(minutes=3, seconds=20))
    window.set_workspaces([quiet, workspace("busy", agent=AgentState.WORKING)])
    assert _status_cell(window, "quiet") == "ready · deleting in 4 minutes (idle)"
    assert _status_cell(window, "busy") == "ready · agent working"  # 25 min away: no warning
    row = window.model.row_of("hetzner", "quiet")
    assert row is not None
    colour = window.model.index(row, Column.STATUS).data(0x9)  # ForegroundRole
    assert colour is not None and colour.name() == "#b35c00"
    window.select("hetzner", "quiet")
    assert window.detail.header.text() == "quiet — ready · deleting in 4 minutes (idle)"
    clock[0] = NOW + timedelta(minutes=2, seconds=30)
    window.tick()  # the one-second clock repaints the countdown
    assert window.detail.header.text() == "quiet — ready · deleting in 1 minute (idle)"
    clock[0] = NOW + timedelta(minutes=4)  # past the deadline: the final backup runs
    window.tick()
    assert window.detail.header.text() == "quiet — ready · deleting now (idle)"
    assert _status_cell(window, "quiet") == "ready · deleting now (idle)"
    # Kept alive from this app: no warning while the VM has not reported yet.
    window.upsert_workspace(
        quiet.model_copy(update={"keep_alive_until": clock[0] + timedelta(hours=1)})
    )
    assert window.detail.header.text() == "quiet — ready"
    assert _status_cell(window, "quiet") == "ready"


def test_no_countdown_for_what_is_not_about_to_idle_out() -> None:
    now = NOW
    assert status_text(workspace("far", idle_in=timedelta(minutes=6)), now) == "ready"
    assert status_text(workspace("none", idle_in=None), now) == "ready"
    stale = workspace("stale", idle_in=-timedelta(hours=1))  # an old report, not a backup
    assert status_text(stale, now) == "ready"
    stopped = workspace("off", status=ServerStatus.OFF, idle_in=timedelta(minutes=2))
    assert status_text(stopped, now) == "off"
    deleting = workspace("bye", phase=Phase.DELETING, idle_in=timedelta(minutes=2))
    assert status_text(deleting, now) == "deleting"
    failed = workspace("broken", phase=Phase.FAILED, idle_in=timedelta(minutes=2))
    assert status_text(failed, now) == "failed · deleting in 2 minutes (idle)"


def test_the_notifier_warns_once_per_idle_spell_with_a_keep_alive_action() -> None:
    notifier = Notifier()
    quiet = workspace("quiet", account="work", idle_in=timedelta(minutes=4, seconds=30))
    assert notifier.update([workspace("quiet", account="work")], NOW) == []  # 25 min away
    (notice,) = notifier.update([quiet], NOW)
    assert notice.kind == "idle" and notice.urgent
    assert notice.title == "quiet will be deleted in 5 minutes"
    assert (notice.workspace, notice.account, notice.action) == ("quiet", "work", KEEP_ALIVE)
    assert notifier.update([quiet], NOW + timedelta(minutes=2)) == []  # once, not every poll
    assert notifier.update([quiet], NOW + timedelta(minutes=5)) == []  # nor when it is due
    active = workspace("quiet", account="work", idle_in=None)  # someone came back
    assert notifier.update([active], NOW + timedelta(minutes=6)) == []
    again = workspace("quiet", account="work", idle_in=timedelta(minutes=1))
    (notice,) = notifier.update([again], NOW)
    assert notice.title == "quiet will be deleted in 1 minute"


def test_clicking_the_idle_notification_keeps_that_workspace_alive(
    qtbot: QtBot, monkeypatch: pytest.MonkeyPatch
) -> None:
    tray = Tray()
    shown: list[tuple[str, str]] = []
    monkeypatch.setattr(Tray, "available", staticmethod(lambda: True))
    monkeypatch.setattr(tray.icon, "isVisible", lambda: True)
    monkeypatch.setattr(
        tray.icon, "showMessage", lambda title, text, *_: shown.append((title, text))
    )
    tray.update([workspace("quiet", account="a"), workspace("quiet", account="b")], {})
    idle = Notice("idle", "quiet", "quiet will be deleted in 3 minutes", "Nobody has used it "
                  "for a while.", urgent=True, account="b", action=KEEP_ALIVE)  # fmt: skip
    assert tray.notify(idle)
    assert shown == [
        (
            "quiet will be deleted in 3 minutes",
            "Nobody has used it for a while. Click here to keep it alive for an hour.",
        )
    ]
    with qtbot.waitSignal(tray.keepAliveRequested, timeout=WAIT_MS) as kept:
        tray.icon.messageClicked.emit()
    assert (kept.args[0].account, kept.args[0].name) == ("b", "quiet")
    # Another notification on screen: its click keeps nothing alive.
    assert tray.notify(Notice("ready", "quiet", "quiet is ready", "Open its terminal."))
    with qtbot.assertNotEmitted(tray.keepAliveRequested, wait=50):
        tray.icon.messageClicked.emit()


def test_the_warning_reaches_the_tray_and_its_click_writes_the_lease(
    qtbot: QtBot, qloop: asyncio.AbstractEventLoop, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    emulator = HetznerEmulator(token=TOKEN, create_seconds=0, start_seconds=0)
    server_id = emulator.add_server("bivy-old", {"managed-by": "bivy", "bivy-workspace": "old"})
    # Recorded by this install (an unrecorded server has no pinned key: nothing to keep alive).
    Registry().put(
        WorkspaceRecord(
            name="old",
            account="hetzner",
            provider="hetzner",
            server_id=str(server_id),
            host_public_key="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBivyTestHostKey",
        )
    )
    secrets = SecretStore()
    tunnels = TunnelService(secrets)
    controller = StatusController(tunnels, StatusService(tunnels), Registry(), secrets)
    leases: list[tuple[str, int]] = []

    async def follow(workspaces: Sequence[Workspace]) -> None:
        return None

    async def keep_alive(name: str, seconds: int = 3600) -> datetime:
        # StatusService.keep_alive writes the lease over SSH (covered against a real sshd by
        # the status integration tests); here the call and what the window makes of it.
        leases.append((name, seconds))
        return datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=seconds)

    monkeypatch.setattr(controller, "follow", follow)
    monkeypatch.setattr(controller, "keep_alive", keep_alive)
    monkeypatch.setattr(Tray, "available", staticmethod(lambda: True))
    shell = make_shell(emulator, tmp_path, configured_settings(), status=controller)
    shown: list[str] = []
    # The test platform has no tray: the icon claims to be shown and records its messages.
    monkeypatch.setattr(shell.tray.icon, "show", lambda: None)
    monkeypatch.setattr(shell.tray.icon, "isVisible", lambda: True)
    monkeypatch.setattr(shell.tray.icon, "showMessage", lambda title, *_: shown.append(title))
    shell.begin()
    try:
        qtbot.waitUntil(lambda: shell.window.model.rowCount() == 1, timeout=WAIT_MS)
        snap = snapshot("old", Phase.READY, 1.0, AgentState.IDLE)
        assert snap.status is not None
        snap.status.idle_deadline = datetime.now(UTC) + timedelta(minutes=3)
        controller.changed.emit(StatusEvent(StatusEventKind.UPDATED, "old", snap))
        assert _status_cell(shell.window, "old").endswith(" · deleting in 3 minutes (idle)")
        assert "old will be deleted in 3 minutes" in shown
        controller.changed.emit(StatusEvent(StatusEventKind.UPDATED, "old", snap))  # next poll
        assert shown.count("old will be deleted in 3 minutes") == 1
        shell.tray.icon.messageClicked.emit()
        qtbot.waitUntil(lambda: leases == [("old", 3600)], timeout=WAIT_MS)
        qtbot.waitUntil(
            lambda: "stays alive until" in shell.window.statusBar().currentMessage(),
            timeout=WAIT_MS,
        )
        assert "deleting" not in _status_cell(shell.window, "old")
        row = shell.window.model.row_of("hetzner", "old")
        assert row is not None
        assert str(shell.window.model.index(row, Column.IDLE_LEFT).data()).startswith("kept alive")
    finally:
        done = asyncio.ensure_future(shell.shutdown())
        qtbot.waitUntil(done.done, timeout=WAIT_MS)
        shell.window.close()
        shell.window.deleteLater()
