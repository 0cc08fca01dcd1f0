"""The window with broken files, a locked or missing keychain, and a second guardian (issue 13)."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import keyring
import pytest
from keyring.backends import fail
from pytestqt.qtbot import QtBot

from app.services.registry import registry_path
from app.settings import Account, SecretKeys, SecretStore, Settings, save_settings, settings_path
from app.ui import recovery
from app.ui.recovery import guardian_lock_path
from app.ui.shell import Shell
from tests.emulators.hetzner import HetznerEmulator
from tests.support.secret_service import SecretServiceSession
from tests.support.waits import WAIT_MS
from tests.ui.harness import TOKEN, configured_settings, live_servers, make_shell

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def emulator() -> HetznerEmulator:
    return HetznerEmulator(token=TOKEN, create_seconds=0.3, start_seconds=0.3)


@pytest.fixture
def shells(qtbot: QtBot, qloop: asyncio.AbstractEventLoop) -> Iterator[list[Shell]]:
    made: list[Shell] = []
    yield made
    for shell in made:
        task = asyncio.ensure_future(shell.shutdown())
        qtbot.waitUntil(task.done, timeout=WAIT_MS)
        shell.window.close()
        shell.window.deleteLater()
        shell.deleteLater()


@pytest.fixture
def dbus_leaks() -> Iterator[None]:
    """keyring's Secret Service backend opens a D-Bus connection per call and never closes it;
    collect those sockets here, after the shell is gone, rather than in the next test."""
    yield
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


def shown_titles(shell: Shell) -> list[str]:
    return [title for title, _ in shell.recovery.shown]


def test_unreadable_settings_are_kept_and_the_window_says_where(
    qtbot: QtBot, shells: list[Shell]
) -> None:
    settings_path().parent.mkdir(parents=True)
    settings_path().write_bytes(b'{"accounts": [{"id": "hetzner", "provider": "hetz')
    shell = Shell.from_environment()
    shells.append(shell)
    shell.begin()
    qtbot.waitUntil(lambda: bool(shell.recovery.boxes), timeout=WAIT_MS)
    box = shell.recovery.boxes[0]
    assert box.windowTitle() == "Your settings could not be read"
    (kept,) = settings_path().parent.glob("settings.json.corrupt-*")
    assert str(kept) in box.text()
    assert box.isVisible() and not box.isModal()  # the window stays usable
    # Saving new settings (what the settings dialog does) never touches the kept file.
    save_settings(Settings(accounts=[Account(id="do", provider="digitalocean")]))
    assert kept.read_bytes() == b'{"accounts": [{"id": "hetzner", "provider": "hetz'


def test_a_bad_registry_record_is_reported_in_the_window(
    qtbot: QtBot, emulator: HetznerEmulator, shells: list[Shell], tmp_path: Path
) -> None:
    emulator.add_server("bivy-good", {"managed-by": "bivy", "bivy-workspace": "good"})
    registry_path().parent.mkdir(parents=True)
    registry_path().write_text(
        json.dumps(
            {
                "schema_version": 1,
                "workspaces": [
                    {"name": "good", "account": "hetzner", "provider": "hetzner"},
                    {"name": "bad", "account": "hetzner", "provider": "hetzner",
                     "created_at": "not a time"},
                ],
            }
        )
    )  # fmt: skip
    shell = make_shell(emulator, tmp_path, settings=configured_settings())
    shells.append(shell)
    shell.begin()
    qtbot.waitUntil(lambda: shell.window.model.rowCount() == 1, timeout=WAIT_MS)
    qtbot.waitUntil(lambda: bool(shell.recovery.shown), timeout=WAIT_MS)
    (text,) = [text for _, text in shell.recovery.shown]
    assert "record 2 (bad): created_at" in text and "kept as" in text
    assert shell.window.model.row_of("hetzner", "good") is not None


# keyring's Secret Service backend leaves its D-Bus sockets to the garbage collector, which may
# run in the middle of this test: those (and only those) ResourceWarnings are not ours.
@pytest.mark.filterwarnings(
    r"ignore:Exception ignored in. <socket.socket .*raddr=/tmp/dbus-"
    ":pytest.PytestUnraisableExceptionWarning"
)
def test_a_locked_keychain_gives_a_clear_dialog(
    dbus_leaks: None,
    qtbot: QtBot,
    emulator: HetznerEmulator,
    shells: list[Shell],
    tmp_path: Path,
    secret_service: SecretServiceSession,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The real gnome-keyring, locked through its D-Bus Lock call after the token was stored."""
    import secretstorage

    backend = secret_service.backend()
    keyring.set_keyring(backend)  # the conftest puts its memory keychain back afterwards
    settings = configured_settings()  # stores the account's token in the real keychain
    assert SecretStore(backend).get(SecretKeys.account("hetzner", "token")) == TOKEN
    connection = secretstorage.dbus_init()
    try:
        collection = secretstorage.get_default_collection(connection)
        collection.lock()
        assert collection.is_locked()
    finally:
        connection.close()

    shell = make_shell(emulator, tmp_path, settings=settings)
    shells.append(shell)
    shell.begin()
    qtbot.waitUntil(lambda: "The keychain is locked" in shown_titles(shell), timeout=WAIT_MS)
    (text,) = [t for title, t in shell.recovery.shown if title == "The keychain is locked"]
    assert "Unlock your keychain" in text
    # The refresh could not read the token: the account is marked failed, the window goes on.
    label = shell.window.refresh_label
    qtbot.waitUntil(lambda: "1 account(s) failed" in label.text(), timeout=WAIT_MS)
    assert "hetzner" in label.toolTip()
    assert shell.window.isVisible()

    # Later, an action that needs the keychain (here: reading a secret through the workspaces
    # controller, as Create does) fails on the lock: the dialog comes again, not a crash.
    monkeypatch.setattr(recovery, "KEYCHAIN_DIALOG_GAP", 0.0)
    assert shell.workspaces is not None
    before = len(shell.recovery.shown)
    shell.workspaces.start("needs-keychain", shell.secrets.aget(SecretKeys.SSH_PRIVATE_KEY))
    qtbot.waitUntil(lambda: len(shell.recovery.shown) > before, timeout=WAIT_MS)
    title, text = shell.recovery.shown[-1]
    assert title == "The keychain is locked" and "Unlock your keychain" in text
    assert live_servers(emulator) == []


def test_no_keychain_at_all_gives_a_clear_dialog(
    qtbot: QtBot, emulator: HetznerEmulator, shells: list[Shell], tmp_path: Path
) -> None:
    settings = configured_settings()
    keyring.set_keyring(fail.Keyring())
    shell = make_shell(emulator, tmp_path, settings=settings)
    shells.append(shell)
    shell.begin()
    qtbot.waitUntil(lambda: "No keychain" in shown_titles(shell), timeout=WAIT_MS)
    (text,) = [t for title, t in shell.recovery.shown if title == "No keychain"]
    assert "does not write secrets to plain files" in text


_HOLDER = """
import sys
from pathlib import Path
from app.settings import try_hold
held = try_hold(Path(sys.argv[1]))
print("held" if held else "busy", flush=True)
sys.stdin.read()
"""


def test_only_one_process_runs_the_guardian(
    qtbot: QtBot, emulator: HetznerEmulator, shells: list[Shell], tmp_path: Path
) -> None:
    """Another process holds the guardian lock: this window leaves the overdue VM alone; once
    that process is gone (killed: the OS drops its lock), this window takes over and deletes."""
    labels = {"managed-by": "bivy", "bivy-workspace": "old", "bivy-max-hours": "12"}
    emulator.add_server("bivy-old", labels, created=time.time() - 13 * 3600)
    other = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(guardian_lock_path())],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert other.stdout is not None
        assert other.stdout.readline().strip() == "held"
        shell = make_shell(emulator, tmp_path, settings=configured_settings())
        shells.append(shell)
        assert shell.workspaces is not None
        controller = shell.workspaces
        with qtbot.waitSignal(controller.listed, timeout=WAIT_MS):
            shell.begin()
        for _ in range(2):  # two more full refreshes (not throttled): the guardian held back
            qtbot.waitUntil(lambda: not controller.running("refresh"), timeout=WAIT_MS)
            with qtbot.waitSignal(controller.listed, timeout=WAIT_MS):
                controller.start("refresh", controller.refresh())
        assert "guardian" not in shell.workspaces.tasks
        assert len(live_servers(emulator)) == 1
        assert not emulator.calls("DELETE", r"/v1/servers/\d+")
    finally:
        other.kill()
        other.communicate(timeout=10)
    qtbot.waitUntil(lambda: not controller.running("refresh"), timeout=WAIT_MS)
    controller.start("refresh", controller.refresh())
    qtbot.waitUntil(lambda: live_servers(emulator) == [], timeout=WAIT_MS)


_LOGIN = """
from app.settings import Account, load_settings, save_settings
settings = load_settings()
settings.accounts.append(Account(id="digitalocean", provider="digitalocean", label="DO"))
save_settings(settings)
"""


def test_settings_saved_by_another_process_are_never_overwritten_by_the_window(
    qtbot: QtBot, emulator: HetznerEmulator, shells: list[Shell], tmp_path: Path
) -> None:
    """`bivy login` (here: another Python process) adds an account while the window runs."""
    from app.settings import load_settings
    from app.ui.settings_dialog import SettingsDialog

    settings = configured_settings()
    save_settings(settings)
    shell = make_shell(emulator, tmp_path, settings=settings)
    shells.append(shell)
    shell.begin()
    stale = shell.open_settings_dialog()  # opened before the other process writes
    done = subprocess.run(
        [sys.executable, "-c", _LOGIN],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    stale.budget.setValue(70)
    stale.buttons.button(stale.buttons.StandardButton.Save).click()
    qtbot.waitUntil(lambda: stale.error.isVisible(), timeout=WAIT_MS)
    assert "changed by another Bivy process" in stale.error.text()
    assert [a.id for a in load_settings().accounts] == ["hetzner", "digitalocean"]
    stale.reject()

    fresh = shell.open_settings_dialog()  # starts from the file as it is now
    assert isinstance(fresh, SettingsDialog)
    assert [a.id for a in fresh.settings.accounts] == ["hetzner", "digitalocean"]
    assert [a.id for a in shell.settings.accounts] == ["hetzner", "digitalocean"]
    fresh.budget.setValue(70)
    with qtbot.waitSignal(fresh.accepted, timeout=WAIT_MS):
        fresh.buttons.button(fresh.buttons.StandardButton.Save).click()
    saved = load_settings()
    assert [a.id for a in saved.accounts] == ["hetzner", "digitalocean"]
    assert str(saved.monthly_budget) == "70.00"
