"""Back up now and Delete with backups from the window: signals, confirmation, order."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pytestqt.qtbot import QtBot

from app.domain import StatusReport
from app.errors import NotFound
from app.services.backup import BackupService
from app.settings import BackupSettings, SecretStore, Settings
from app.ui.backup_actions import BackupActionsController, install, last_backup_text
from app.ui.main_window import MainWindow
from tests.support.waits import WAIT_MS
from tests.ui.factories import NOW, workspace
from tests.unit.services.test_backup import FakeRunner, FakeS3, Result

WHEN = datetime(2026, 11, 27, 3, 0, tzinfo=UTC)


class Workspaces:
    """Stands in for WorkspaceService.delete; records what the storage held at that moment."""

    def __init__(self, fake: FakeS3, gone: bool = False) -> None:
        self.fake = fake
        self.gone = gone
        self.deleted: list[tuple[str, int]] = []

    async def delete(self, name: str, *, wait: bool = False) -> None:
        assert wait
        self.deleted.append((name, len(self.fake.objects)))
        if self.gone:
            raise NotFound("gone")


def make_controller(
    fake: FakeS3, runner: FakeRunner, status: StatusReport | None = None, gone: bool = False
) -> tuple[BackupActionsController, Workspaces]:
    store = SecretStore()
    config = BackupSettings(
        enabled=True, endpoint="https://fsn1.your-objectstorage.com", bucket="my-bivy",
        region="fsn1", prefix="bivy",
    )  # fmt: skip
    service = BackupService(Settings(backup=config), store, transport=fake.transport())
    store.set("backup/access-key-id", "AKIDEXAMPLE")
    store.set("backup/secret-access-key", "secret-example")
    opened: list[str] = []

    async def runner_for(name: str) -> FakeRunner:
        opened.append(name)
        return runner

    async def status_reader(name: str) -> StatusReport | None:
        return status

    workspaces = Workspaces(fake, gone)
    controller = BackupActionsController(
        service, workspaces, runner_for, status_reader=status_reader
    )
    controller.opened = opened  # type: ignore[attr-defined]
    return controller, workspaces


def test_back_up_now_reports_the_time(qtbot: QtBot, qloop: asyncio.AbstractEventLoop) -> None:
    runner = FakeRunner(Result(0))
    controller, _ = make_controller(FakeS3({}), runner, StatusReport(last_backup_at=WHEN))
    busy: list[tuple[str, bool]] = []
    controller.busy.connect(lambda name, on: busy.append((name, on)))
    with qtbot.waitSignal(controller.backedUp, timeout=WAIT_MS) as signal:
        controller.start_backup_now("demo")
    assert signal.args == ["demo", WHEN]
    assert runner.commands[0][0] == "sudo -n /usr/local/lib/bivy/backup run"
    assert controller.opened == ["demo"]  # type: ignore[attr-defined]
    qtbot.waitUntil(
        lambda: busy == [("backup:demo", True), ("backup:demo", False)], timeout=WAIT_MS
    )


def test_back_up_now_failure_is_reported(qtbot: QtBot, qloop: asyncio.AbstractEventLoop) -> None:
    runner = FakeRunner(
        Result(1, stderr="2026-11-27T03:00:00Z bivy-backup: backup failed: Fatal: unable to "
               "open config file: Stat: dial tcp: connection refused\n")
    )  # fmt: skip
    controller, _ = make_controller(FakeS3({}), runner)
    with qtbot.waitSignal(controller.failed, timeout=WAIT_MS) as signal:
        controller.start_backup_now("demo")
    assert "connection refused" in signal.args[0]


def test_delete_with_backups_needs_an_explicit_yes(
    qtbot: QtBot, qloop: asyncio.AbstractEventLoop
) -> None:
    fake = FakeS3({"bivy/demo/config": b"c", "bivy/demo/snapshots/s1": b"s"})
    controller, workspaces = make_controller(fake, FakeRunner(Result(0)))
    asked: list[tuple[str, str]] = []

    def no(_parent: object, title: str, text: str) -> bool:
        asked.append((title, text))
        return False

    assert controller.confirm_and_delete("demo", None, no) is None
    assert asked[0][0] == "Delete workspace demo and its backups?"
    assert "s3:https://fsn1.your-objectstorage.com/my-bivy/bivy/demo" in asked[0][1]
    assert "cannot be undone" in asked[0][1]
    assert workspaces.deleted == [] and len(fake.objects) == 2

    with qtbot.waitSignal(controller.backupsDeleted, timeout=WAIT_MS) as signal:
        controller.confirm_and_delete("demo", None, lambda *_: True)
    name, report = signal.args
    assert name == "demo" and report.vm_deleted and report.objects_deleted == 2
    assert workspaces.deleted == [("demo", 2)]  # the VM went first, backups still there then
    assert fake.objects == {}


def test_window_wiring(qtbot: QtBot, qloop: asyncio.AbstractEventLoop) -> None:
    fake = FakeS3({"bivy/alpha/config": b"c"})
    runner = FakeRunner(Result(0))
    controller, workspaces = make_controller(
        fake, runner, StatusReport(last_backup_at=WHEN), gone=True
    )
    window = MainWindow(now=lambda: NOW, confirm=lambda *_: True)
    qtbot.addWidget(window)
    window.show()
    action = install(window, controller, confirm=lambda *_: True)
    assert action in window.toolbar.actions()
    assert not action.isEnabled()  # nothing selected
    window.set_workspaces([workspace("alpha")])
    window.select("hetzner", "alpha")
    assert action.isEnabled()
    messages: list[str] = []
    window.statusBar().messageChanged.connect(messages.append)

    with qtbot.waitSignal(controller.backedUp, timeout=WAIT_MS):
        window.act_backup.trigger()
    assert runner.commands and f"Backed up alpha at {WHEN.astimezone():%H:%M}" in messages

    with qtbot.waitSignal(controller.backupsDeleted, timeout=WAIT_MS):
        action.trigger()
    assert workspaces.deleted == [("alpha", 1)] and fake.objects == {}
    assert "Deleted alpha and 1 backup objects" in messages


def test_last_backup_text() -> None:
    now = WHEN + timedelta(minutes=12)
    assert last_backup_text(None) == "unknown"
    assert last_backup_text(StatusReport()) == "not yet"
    assert last_backup_text(StatusReport(last_backup_at=WHEN), now) == "12 min ago"
    assert last_backup_text(StatusReport(last_backup_at=now), now) == "just now"
    assert last_backup_text(
        StatusReport(last_backup_at=WHEN), WHEN + timedelta(hours=2, minutes=5)
    ) == ("2 h 05 min ago")
    failed = StatusReport(last_backup_at=WHEN, backup_error="backup failed: no network")
    assert last_backup_text(failed, now) == "failed: backup failed: no network"


def test_the_app_shell_wires_backups(
    qtbot: QtBot, qloop: asyncio.AbstractEventLoop, tmp_path: Path
) -> None:
    from tests.emulators.hetzner import HetznerEmulator
    from tests.ui.harness import (
        TOKEN,
        add_bivy_servers,
        configured_settings,
        live_servers,
        make_shell,
    )

    emulator = HetznerEmulator(token=TOKEN, delete_seconds=0.2)
    add_bivy_servers(emulator, 1)
    shell = make_shell(emulator, tmp_path, configured_settings())
    try:
        controller = shell.backup_actions
        assert isinstance(controller, BackupActionsController)
        action = shell.window.act_delete_with_backups
        assert action in shell.window.toolbar.actions()
        # The storage as the settings would reach it, answered at the transport seam.
        fake = FakeS3({"bivy/ws000/config": b"c", "bivy/ws000/snapshots/s": b"s"})
        shell.settings.backup = BackupSettings(
            enabled=True, endpoint="https://fsn1.your-objectstorage.com", bucket="my-bivy",
            region="fsn1", prefix="bivy",
        )  # fmt: skip
        controller.service = BackupService(
            shell.settings, shell.secrets, transport=fake.transport()
        )
        shell.secrets.set("backup/access-key-id", "AKIDEXAMPLE")
        shell.secrets.set("backup/secret-access-key", "secret-example")

        shell.request_refresh()
        qtbot.waitUntil(lambda: shell.window.model.rowCount() == 1, timeout=WAIT_MS)
        shell.window.select("hetzner", "ws000")
        with qtbot.waitSignal(controller.backupsDeleted, timeout=WAIT_MS) as signal:
            action.trigger()
        assert signal.args[1].vm_deleted and signal.args[1].objects_deleted == 2
        assert fake.objects == {} and live_servers(emulator) == []
    finally:
        task = asyncio.ensure_future(shell.shutdown())
        qtbot.waitUntil(task.done, timeout=WAIT_MS)
        shell.window.close()
        shell.window.deleteLater()
        shell.deleteLater()


def test_attach_is_idempotent(
    qtbot: QtBot, qloop: asyncio.AbstractEventLoop, tmp_path: Path
) -> None:
    from app.ui.backup_actions import attach
    from tests.emulators.hetzner import HetznerEmulator
    from tests.ui.harness import TOKEN, make_shell

    shell = make_shell(HetznerEmulator(token=TOKEN), tmp_path)
    try:
        first = shell.backup_actions
        assert first is not None and attach(shell) is first
        labels = [a.text() for a in shell.window.toolbar.actions()]
        assert labels.count("Delete with backups…") == 1
    finally:
        task = asyncio.ensure_future(shell.shutdown())
        qtbot.waitUntil(task.done, timeout=WAIT_MS)
        shell.window.close()
        shell.window.deleteLater()
        shell.deleteLater()
