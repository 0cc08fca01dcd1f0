"""End to end: a ready workspace, Terminal, a live ttyd tab through a real SSH tunnel, Quit."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("QTWEBENGINE_DISABLE_SANDBOX", "1")  # Chromium's sandbox refuses root

from PySide6.QtCore import Qt, QUrl
from PySide6.QtGui import QImage
from pytestqt.qtbot import QtBot

from app.domain import Phase, StatusReport, utcnow
from app.services.keys import generate_keypair
from app.services.registry import Registry, WorkspaceRecord
from app.services.status import StatusService
from app.services.tunnels import SSHTarget, TunnelService, TunnelState
from app.services.workspaces import TTYD_PASSWORD
from app.settings import SecretKeys, SecretStore
from app.ui.controllers import StatusController
from app.ui.ide import IdeTab  # imports QtWebEngine before pytest-qt creates the QApplication
from tests.emulators.hetzner import HetznerEmulator
from tests.support.sshd import SshServer, Ttyd, start_sshd, start_ttyd
from tests.support.waits import WAIT_MS
from tests.ui.harness import TOKEN, configured_settings, make_shell
from tests.ui.terminal_view import terminal_text, text_lines

PASSWORD = "e2e-ttyd-pass-5c1e"
NAME = "demo"

# Facts of the GPU-less test machine (QtWebEngine falls back to software rendering), as in
# tests/ui/test_ide.py; anything else logged at WARNING still fails the test.
gpu_less = pytest.mark.qt_log_ignore(
    "QRhiGles2: Failed to create",
    "Failed to create RHI for backend",
    "does not support createPlatformVulkanInstance",
    "QVulkanInstance: Failed to initialize Vulkan",
    "GBM is not supported",
    "GPUInfo not initialized",
    "does not support propagateSizeHints",
)


@pytest.fixture(autouse=True)
def collect_garbage_on_the_gui_thread() -> Iterator[None]:
    """Break left-over Qt reference cycles here, on the GUI thread (see tests/ui/test_ide.py)."""
    yield
    gc.collect()


@pytest.fixture
def install_key(keychain: SecretStore) -> tuple[str, str]:
    """The install's SSH keypair in the keychain (a real private gnome-keyring: this test is
    end to end), as KeyService leaves it."""
    pair = generate_keypair("bivy")
    keychain.set(SecretKeys.SSH_PRIVATE_KEY, pair.private_openssh)
    return pair.private_openssh, pair.public_openssh


@pytest.fixture
def sshd(tmp_path: Path, install_key: tuple[str, str]) -> Iterator[SshServer]:
    server = start_sshd(tmp_path / "sshd", authorized_keys=[install_key[1]])
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def ttyd(tmp_path: Path) -> Iterator[Ttyd]:
    server = start_ttyd(tmp_path / "ttyd", password=PASSWORD)
    try:
        yield server
    finally:
        server.stop()


def dark_ratio(image: QImage, step: int = 3) -> float:
    image = image.convertToFormat(QImage.Format.Format_RGB32)
    dark = total = 0
    for y in range(0, image.height(), step):
        for x in range(0, image.width(), step):
            total += 1
            dark += image.pixelColor(x, y).lightness() < 60
    return dark / total


def light_pixels(image: QImage) -> int:
    image = image.convertToFormat(QImage.Format.Format_RGB32)
    return sum(
        image.pixelColor(x, y).lightness() > 140
        for y in range(image.height())
        for x in range(image.width() - 20)  # leave out the scrollbar
    )


def refuses(url: str) -> bool:
    """Nothing listens behind the forward's local port any more."""
    port = QUrl(url).port()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return False
    except OSError:
        return True


@gpu_less
@pytest.mark.slow
def test_terminal_action_opens_a_live_tab_and_quit_closes_everything(
    qtbot: QtBot,
    qloop: asyncio.AbstractEventLoop,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    sshd: SshServer,
    ttyd: Ttyd,
    caplog: pytest.LogCaptureFixture,
    keychain: SecretStore,
) -> None:
    # The VM side: a READY status file where StatusService reads it, ttyd's password in the
    # keychain (put there at create time), and the record with the address and pinned host key.
    vm = tmp_path / "vm"
    vm.mkdir()
    (vm / "status.json").write_text(
        StatusReport(phase=Phase.READY, progress=1.0, updated_at=utcnow()).model_dump_json()
    )
    secrets = SecretStore()  # the app's default: the keychain fixture's gnome-keyring
    assert secrets.backend is keychain.backend
    secrets.set(SecretKeys.workspace(NAME, TTYD_PASSWORD), PASSWORD)
    emulator = HetznerEmulator(token=TOKEN, create_seconds=0, start_seconds=0)
    emulator.add_server(f"bivy-{NAME}", {"managed-by": "bivy", "bivy-workspace": NAME})
    Registry().put(
        WorkspaceRecord(
            name=NAME,
            account="hetzner",
            provider="hetzner",
            ipv4=sshd.host,
            host_public_key=sshd.host_public_key,
        )
    )
    # Seams: a VM is always dev@<ip>:22 with ttyd on 7681 (neither is in the record); the test's
    # sshd and ttyd run on free ports as the test user. Everything else is the app's own path.
    from_record = SSHTarget.from_record.__func__  # type: ignore[attr-defined]
    monkeypatch.setattr(
        SSHTarget,
        "from_record",
        classmethod(
            lambda cls, record: dataclasses.replace(
                from_record(cls, record), port=sshd.port, username=sshd.user
            )
        ),
    )
    monkeypatch.setattr("app.ui.controllers.TTYD_PORT", ttyd.port)

    tunnels = TunnelService(secrets)
    status = StatusService(
        tunnels,
        status_path=str(vm / "status.json"),
        agent_path=str(vm / "agent.json"),
        lease_path=str(vm / "lease"),
    )
    controller = StatusController(tunnels, status, Registry(), secrets)
    shell = make_shell(emulator, tmp_path, configured_settings(), status=controller)
    window = shell.window
    window.resize(1000, 700)
    errors: list[str] = []
    controller.failed.connect(lambda message, hint: errors.append(message))
    shell.begin()
    shut: asyncio.Future[None] | None = None
    try:
        qtbot.waitUntil(lambda: window.model.rowCount() == 1, timeout=WAIT_MS)
        window.select("hetzner", NAME)
        # READY arrives over the real tunnel (refresh → follow → SSH → status.json)
        qtbot.waitUntil(window.act_terminal.isEnabled, timeout=WAIT_MS)
        assert tunnels.state(NAME) is TunnelState.CONNECTED

        window.act_terminal.trigger()
        qtbot.waitUntil(lambda: window.tab_for(NAME) is not None, timeout=WAIT_MS)
        tab = window.tab_for(NAME)
        assert isinstance(tab, IdeTab) and window.tabs.currentWidget() is tab
        assert not errors
        url = tab.url
        assert PASSWORD not in url and "@" not in url

        # xterm.js paints ttyd's dark background once logged in and connected
        qtbot.waitUntil(lambda: dark_ratio(tab.view.grab().toImage()) > 0.9, timeout=WAIT_MS)
        qtbot.waitUntil(lambda: "$" in terminal_text(qtbot, tab), timeout=WAIT_MS)
        before = light_pixels(tab.view.grab().toImage())

        tab.view.setFocus()
        qtbot.keyClicks(tab.view.focusProxy(), "echo BIVY_E2E_$((6*7))")
        qtbot.keyClick(tab.view.focusProxy(), Qt.Key.Key_Return)
        qtbot.waitUntil(lambda: "BIVY_E2E_42" in terminal_text(qtbot, tab), timeout=WAIT_MS)
        # on screen too: the command line, its output and the next prompt, light on dark
        qtbot.waitUntil(lambda: text_lines(tab.view.grab().toImage()) >= 3, timeout=WAIT_MS)
        shot = tab.view.grab().toImage()
        assert light_pixels(shot) > before + 200
        assert dark_ratio(shot) > 0.8

        # The connection drops: the tab says so until the tunnel is back, then works again
        notices: list[str] = []
        tunnels.add_listener(lambda change: notices.append(tab.notice))
        assert tab.notice == ""
        sshd.kill_connections()
        qtbot.waitUntil(lambda: any("reconnecting" in text for text in notices), timeout=WAIT_MS)
        qtbot.waitUntil(lambda: tunnels.state(NAME) is TunnelState.CONNECTED, timeout=WAIT_MS)
        assert tab.notice == ""
        tab.view.setFocus()

        # ttyd's page reconnects its websocket by itself; the new session starts on a clean screen
        # (on the VM tmux brings the old one back, see test_ide.py)
        def fresh_prompt() -> bool:
            text = terminal_text(qtbot, tab)
            return "BIVY_E2E_42" not in text and "$" in text

        qtbot.waitUntil(fresh_prompt, timeout=WAIT_MS)
        qtbot.keyClicks(tab.view.focusProxy(), "echo AGAIN_$((6*7+1))")
        qtbot.keyClick(tab.view.focusProxy(), Qt.Key.Key_Return)
        qtbot.waitUntil(lambda: "AGAIN_43" in terminal_text(qtbot, tab), timeout=WAIT_MS)

        # Terminal again on the same row switches to the open tab, it does not open a second
        window.tabs.setCurrentIndex(0)
        window.act_terminal.trigger()
        assert window.tabs.currentWidget() is tab and window.tabs.count() == 2

        # Quit: the tab goes, the tunnel and its forward close, sshd sees the connection end
        gone: list[bool] = []
        tab.destroyed.connect(lambda: gone.append(True))
        shut = asyncio.ensure_future(shell.shutdown())
        qtbot.waitUntil(shut.done, timeout=WAIT_MS)
        shut.result()
        qtbot.waitUntil(lambda: bool(gone), timeout=WAIT_MS)
        assert window.tabs.count() == 1
        assert tunnels.get(NAME) is None and tunnels.state(NAME) is TunnelState.CLOSED
        assert refuses(url)
        qtbot.waitUntil(lambda: not sshd.connection_pids(), timeout=WAIT_MS)
        current = asyncio.current_task(qloop) if qloop.is_running() else None
        leaked = [t for t in asyncio.all_tasks(qloop) if not t.done() and t is not current]
        assert leaked == []
        assert PASSWORD not in caplog.text
    finally:
        if shut is None:
            done = asyncio.ensure_future(shell.shutdown())
            qtbot.waitUntil(done.done, timeout=WAIT_MS)
        window.close()
        window.deleteLater()
