"""Status from the VM reaches the window: phases advance, open actions follow, notices fire."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pytestqt.qtbot import QtBot

from app.domain import AgentReport, AgentState, Phase, StatusReport, Workspace
from app.services.registry import Registry, WorkspaceRecord
from app.services.status import StatusEvent, StatusEventKind, StatusService, StatusSnapshot
from app.services.tunnels import TunnelService
from app.settings import SecretStore
from app.ui.controllers import StatusController
from tests.emulators.hetzner import HetznerEmulator
from tests.support.waits import WAIT_MS
from tests.ui.harness import TOKEN, configured_settings, make_shell


def snapshot(name: str, phase: Phase, progress: float, agent: AgentState | None = None):  # type: ignore[no-untyped-def]
    now = datetime.now(UTC)
    return StatusSnapshot(
        name,
        StatusReport(phase=phase, progress=progress, detail=f"{phase.value}…", updated_at=now),
        AgentReport(state=agent, message="Allow edits?") if agent else None,
        now,
    )


def test_phases_advance_and_open_actions_follow(
    qtbot: QtBot, qloop: asyncio.AbstractEventLoop, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    emulator = HetznerEmulator(token=TOKEN, create_seconds=0, start_seconds=0)
    server_id = emulator.add_server("bivy-api", {"managed-by": "bivy", "bivy-workspace": "api"})
    # Recorded by this install (an unrecorded server offers Delete only: no pinned host key).
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
    followed: list[list[str]] = []

    async def follow(workspaces: Sequence[Workspace]) -> None:
        # The SSH side is covered by the tunnel/status integration tests (real sshd); here the
        # events come in as StatusService would deliver them.
        followed.append([ws.name for ws in workspaces])

    monkeypatch.setattr(controller, "follow", follow)
    shell = make_shell(emulator, tmp_path, configured_settings(), status=controller)
    shell.begin()
    window = shell.window
    try:
        qtbot.waitUntil(lambda: window.model.rowCount() == 1, timeout=WAIT_MS)
        # The rows land first; the status controller is told to follow them in a later step.
        qtbot.waitUntil(lambda: bool(followed), timeout=WAIT_MS)
        assert followed[0] == ["api"]
        window.select("hetzner", "api")
        assert window.act_copy_ssh.isEnabled() and not window.act_terminal.isEnabled()
        seen: list[str] = []
        for phase, progress in (
            (Phase.BOOTING, 0.05),
            (Phase.INSTALLING, 0.2),
            (Phase.CLONING, 0.4),
            (Phase.BUILDING, 0.7),
            (Phase.STARTING, 0.9),
        ):
            controller.changed.emit(
                StatusEvent(StatusEventKind.UPDATED, "api", snapshot("api", phase, progress))
            )
            seen.append(window.model.data(window.model.index(0, 5)))
            assert not window.act_terminal.isEnabled()
        assert seen == ["booting", "installing", "cloning", "building", "starting"]
        controller.changed.emit(
            StatusEvent(
                StatusEventKind.UPDATED,
                "api",
                snapshot("api", Phase.READY, 1.0, AgentState.WAITING),
            )
        )
        assert window.model.data(window.model.index(0, 5)) == "ready · agent waiting for you"
        assert window.act_terminal.isEnabled() and window.act_browser.isEnabled()
        history = [
            window.detail.history.item(i).text() for i in range(window.detail.history.count())
        ]
        assert len(history) == 6 and "ready" in history[-1]
        # A refresh keeps the VM's status on the row (it comes from SSH, not the provider).
        shell.request_refresh()
        qtbot.waitUntil(lambda: not shell.workspaces.running("refresh"), timeout=WAIT_MS)  # type: ignore[union-attr]
        assert window.model.data(window.model.index(0, 5)) == "ready · agent waiting for you"
        # The agent waiting became a notice (status bar when the platform has no tray).
        assert "agent waiting" in window.statusBar().currentMessage()
    finally:
        done = asyncio.ensure_future(shell.shutdown())
        qtbot.waitUntil(done.done, timeout=WAIT_MS)
        window.close()
        window.deleteLater()


def test_expiring_workspace_warns(
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

    async def follow(workspaces: Sequence[Workspace]) -> None:
        return None

    monkeypatch.setattr(controller, "follow", follow)
    shell = make_shell(emulator, tmp_path, configured_settings(), status=controller)
    shell.begin()
    try:
        qtbot.waitUntil(lambda: shell.window.model.rowCount() == 1, timeout=WAIT_MS)
        snap = snapshot("old", Phase.READY, 1.0, AgentState.IDLE)
        assert snap.status is not None
        snap.status.idle_deadline = datetime.now(UTC) + timedelta(minutes=3)
        shell.notifier.update(shell.window.model.workspaces(), shell.now())  # ready seen once
        controller.changed.emit(StatusEvent(StatusEventKind.UPDATED, "old", snap))
        # No tray on the test platform: the warning lands in the status bar.
        assert "old will be deleted in 3 minutes" in shell.window.statusBar().currentMessage()
    finally:
        done = asyncio.ensure_future(shell.shutdown())
        qtbot.waitUntil(done.done, timeout=WAIT_MS)
        shell.window.close()
        shell.window.deleteLater()
