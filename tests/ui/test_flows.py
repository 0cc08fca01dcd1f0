"""End-to-end flows of the desktop app over the real services and the Hetzner emulator."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from PySide6.QtWidgets import QDialog
from pytestqt.qtbot import QtBot

from app.services.registry import Registry
from app.ui.create_dialog import CreateDialog
from app.ui.heartbeat import StallMeter
from app.ui.settings_dialog import SettingsDialog
from app.ui.shell import Shell
from tests.emulators.hetzner import HetznerEmulator
from tests.support.waits import WAIT_MS
from tests.ui.harness import (
    TOKEN,
    assert_responsive,
    configured_settings,
    live_servers,
    make_shell,
)

REPO = "https://github.com/acme/api.git"


@pytest.fixture
def emulator() -> HetznerEmulator:
    return HetznerEmulator(token=TOKEN, create_seconds=0.3, start_seconds=0.3)


@pytest.fixture
def shell_factory(qtbot: QtBot, qloop: asyncio.AbstractEventLoop, tmp_path: Path):  # type: ignore[no-untyped-def]
    shells: list[Shell] = []

    def make(emulator: HetznerEmulator, **kw: object) -> Shell:
        shell = make_shell(emulator, tmp_path, **kw)  # type: ignore[arg-type]
        shells.append(shell)
        return shell

    yield make
    for shell in shells:
        # The app's own way out: cancel operations, close clients, then drop the window.
        task = asyncio.ensure_future(shell.shutdown())
        qtbot.waitUntil(task.done, timeout=WAIT_MS)
        shell.window.close()
        shell.window.deleteLater()
        shell.deleteLater()


def open_create(qtbot: QtBot, shell: Shell) -> CreateDialog:
    shell.window.act_new.trigger()
    dialog = shell.dialogs[-1]
    assert isinstance(dialog, CreateDialog)
    dialog.repo.setText(REPO)
    qtbot.waitUntil(
        lambda: dialog.size_combo.count() > 0 and not dialog.busy_loading(), timeout=WAIT_MS
    )
    return dialog


def test_add_account_create_phases_open_delete(
    qtbot: QtBot, emulator: HetznerEmulator, shell_factory
) -> None:  # type: ignore[no-untyped-def]
    shell = shell_factory(emulator)
    shell.begin()
    window = shell.window
    assert window.empty.button.text() == "Add an account…"

    # Add an account from the empty state.
    window.empty.button.click()
    settings_dialog = shell.dialogs[-1]
    assert isinstance(settings_dialog, SettingsDialog)
    qtbot.waitUntil(lambda: not settings_dialog.tasks, timeout=WAIT_MS)
    form = settings_dialog.add_account("hetzner")
    form.fields["token"].setText(TOKEN)
    form.validate_button.click()
    qtbot.waitUntil(lambda: form.result.text().startswith("✓"), timeout=WAIT_MS)
    with qtbot.waitSignal(settings_dialog.accepted, timeout=WAIT_MS):
        settings_dialog.buttons.button(settings_dialog.buttons.StandardButton.Save).click()
    assert [a.id for a in shell.settings.accounts] == ["hetzner"]
    from app.settings import load_settings

    assert [a.id for a in load_settings().accounts] == ["hetzner"]  # written (in a thread)
    assert window.empty.button.text() == "Create your first workspace…"

    # Create: the dialog shows every step, in order, without blocking.
    window.empty.button.click()
    dialog = shell.dialogs[-1]
    assert isinstance(dialog, CreateDialog)
    dialog.repo.setText(REPO)
    qtbot.waitUntil(
        lambda: dialog.size_combo.count() > 0 and not dialog.busy_loading(), timeout=WAIT_MS
    )
    assert dialog.name.text() == "api"
    assert "per hour" in dialog.price.text() and "per month" in dialog.price.text()
    assert dialog.create_button.isEnabled()
    steps: list[tuple[str, float]] = []
    shell.workspaces.progress.connect(lambda _n, step, _d, f: steps.append((step, f)))
    meter = StallMeter()
    meter.start()
    with qtbot.waitSignal(dialog.finished, timeout=WAIT_MS) as finished:
        dialog.create_button.click()
        assert not dialog.form_widget.isEnabled()
    assert finished.args == [QDialog.DialogCode.Accepted.value]
    meter.stop()
    names = [s for s, _ in steps]
    assert names[0] == "validate" and names[-1] == "done"
    assert {"keys", "user-data", "create", "record"} <= set(names)
    fractions = [f for _, f in steps]
    assert fractions == sorted(fractions)
    assert_responsive(meter)

    # The new workspace is listed and selected; actions that need a running VM are enabled.
    qtbot.waitUntil(
        lambda: shell.window.model.row_of("hetzner", "api") is not None, timeout=WAIT_MS
    )
    window.select("hetzner", "api")
    ws = window.selected()
    assert ws is not None and ws.server is not None and ws.server.status.value == "running"
    assert window.act_copy_ssh.isEnabled()
    assert window.act_keep_alive.isEnabled()
    assert window.act_delete.isEnabled()
    assert len(live_servers(emulator)) == 1

    # Delete, confirmed: the server goes at the provider and the row goes from the table.
    window.act_delete.trigger()
    qtbot.waitUntil(lambda: live_servers(emulator) == [], timeout=WAIT_MS)
    qtbot.waitUntil(lambda: shell.window.model.rowCount() == 0, timeout=WAIT_MS)
    assert Registry().all() == []


@pytest.mark.parametrize("when", ["request in flight", "server accepted, booting"])
def test_cancel_mid_create_leaves_nothing_behind(
    qtbot: QtBot, emulator: HetznerEmulator, shell_factory, when: str
) -> None:  # type: ignore[no-untyped-def]
    emulator.create_seconds = 30  # the server would take long to run: cancel while waiting
    if when == "request in flight":
        # The emulator creates the server, then holds the answer until the cancel: the app
        # cannot know its id. (An emulated delay, so the cancel ends it at once.)
        emulator.inject_latency("POST", r"/v1/servers", 600.0, times=1)
    shell = shell_factory(emulator, settings=configured_settings())
    shell.begin()
    dialog = open_create(qtbot, shell)
    steps: list[str] = []
    shell.workspaces.progress.connect(lambda _n, step, *_: steps.append(step))
    dialog.create_button.click()
    qtbot.waitUntil(lambda: len(emulator.calls("POST", r"/v1/servers")) == 1, timeout=WAIT_MS)
    assert "create" in steps
    actions = r"/v1/actions/\d+"
    if when == "request in flight":
        assert not emulator.calls("GET", actions)  # no answer yet: this case, not the next one
    else:
        # The answer arrived: the app knows the create action and polls it until the server runs.
        qtbot.waitUntil(lambda: bool(emulator.calls("GET", actions)), timeout=WAIT_MS)
    assert len(live_servers(emulator)) == 1
    dialog.cancel_button.click()
    assert "Cancelling" in dialog.step.text()
    qtbot.waitUntil(lambda: dialog.create_task is None, timeout=WAIT_MS)
    assert live_servers(emulator) == []
    assert Registry().all() == []
    assert dialog.form_widget.isEnabled()
    assert dialog.step.text() == "Cancelled; nothing was left running."
    assert dialog.isVisible()  # the user can fix something and try again


def test_bad_token_on_refresh_is_reported_clearly(
    qtbot: QtBot, emulator: HetznerEmulator, shell_factory
) -> None:  # type: ignore[no-untyped-def]
    emulator.token = "another-token-5678"
    shell = shell_factory(emulator, settings=configured_settings())
    shell.begin()
    qtbot.waitUntil(lambda: "failed" in shell.window.refresh_label.text(), timeout=WAIT_MS)
    tip = shell.window.refresh_label.toolTip()
    assert tip.startswith("hetzner: Hetzner rejected the API token")
    assert TOKEN not in tip


def test_429_during_refresh_does_not_freeze(
    qtbot: QtBot, emulator: HetznerEmulator, shell_factory
) -> None:  # type: ignore[no-untyped-def]
    for i in range(3):
        emulator.add_server(f"bivy-w{i}", {"managed-by": "bivy", "bivy-workspace": f"w{i}"})
    shell = shell_factory(emulator, settings=configured_settings())
    shell.begin()
    qtbot.waitUntil(lambda: shell.window.model.rowCount() == 3, timeout=WAIT_MS)
    # The next refresh meets the rate limit twice, then gets a fourth workspace.
    emulator.add_server("bivy-w3", {"managed-by": "bivy", "bivy-workspace": "w3"})
    emulator.inject_error(
        "GET", r"/v1/servers", 429, "rate_limit_exceeded", times=2, headers={"Retry-After": "1"}
    )
    before = len(emulator.calls("GET", r"/v1/servers"))
    meter = StallMeter()
    meter.start()
    shell.request_refresh()
    qtbot.waitUntil(lambda: shell.window.model.rowCount() == 4, timeout=WAIT_MS)
    meter.stop()
    assert len(emulator.calls("GET", r"/v1/servers")) - before == 3  # 429, 429, answer
    assert meter.ticks > 100  # the loop kept ticking while the client waited out the limit
    assert_responsive(meter)


def test_budget_warning_appears(qtbot: QtBot, emulator: HetznerEmulator, shell_factory) -> None:  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime, timedelta

    created = (datetime.now(UTC) - timedelta(hours=5)).timestamp()
    for i in range(2):
        emulator.add_server(
            f"bivy-b{i}", {"managed-by": "bivy", "bivy-workspace": f"b{i}"}, created=created
        )
    shell = shell_factory(emulator, settings=configured_settings(budget="0.05"))
    shell.begin()
    qtbot.waitUntil(lambda: shell.window.budget_label.isVisible(), timeout=WAIT_MS)
    assert "budget" in shell.window.budget_label.text().lower()
    assert shell.window.month_label.text() != "This month: –"
    assert shell.costs  # the cost column has figures


def test_guardian_deletes_overdue_and_shows_unaccounted(
    qtbot: QtBot, emulator: HetznerEmulator, shell_factory
) -> None:  # type: ignore[no-untyped-def]
    import time

    labels = {"managed-by": "bivy", "bivy-workspace": "old", "bivy-max-hours": "12"}
    emulator.add_server("bivy-old", labels, created=time.time() - 13 * 3600)
    emulator.add_server("bivy-stray", {"managed-by": "bivy", "bivy-workspace": "stray"})
    shell = shell_factory(emulator, settings=configured_settings())
    messages: list[str] = []
    shell.window.statusBar().messageChanged.connect(messages.append)
    shell.begin()
    qtbot.waitUntil(lambda: any(m.startswith("Deleted old") for m in messages), timeout=WAIT_MS)
    assert len(live_servers(emulator)) == 1
    qtbot.waitUntil(lambda: shell.window.unaccounted_label.isVisible(), timeout=WAIT_MS)
    assert "stray" in shell.window.unaccounted_label.toolTip()
    qtbot.waitUntil(lambda: shell.window.model.row_of("hetzner", "old") is None, timeout=WAIT_MS)


@pytest.mark.parametrize("confirmed", [False, True])
def test_tray_delete_asks_first(
    qtbot: QtBot, emulator: HetznerEmulator, shell_factory, confirmed: bool
) -> None:  # type: ignore[no-untyped-def]
    emulator.add_server("bivy-t", {"managed-by": "bivy", "bivy-workspace": "t"})
    shell = shell_factory(emulator, settings=configured_settings(), confirm=confirmed)
    shell.begin()
    qtbot.waitUntil(lambda: shell.window.model.rowCount() == 1, timeout=WAIT_MS)
    asked: list[str] = []
    answer = shell.window.confirm

    def confirm(parent: object, title: str, text: str) -> bool:
        asked.append(text)
        return answer(parent, title, text)

    shell.window.confirm = confirm
    shell.tray.deleteRequested.emit(shell.window.model.workspace_at(0))
    # The user was asked, about this workspace.
    assert len(asked) == 1 and "The VM of t " in asked[0]
    if confirmed:
        qtbot.waitUntil(lambda: live_servers(emulator) == [], timeout=WAIT_MS)
    else:
        assert "delete:t" not in shell.workspaces.tasks  # nothing was started
        # A full refresh after the answer (a positive signal that every event queued by the
        # "no" has been handled): the workspace is still listed and was never asked to go.
        with qtbot.waitSignal(shell.workspaces.listed, timeout=WAIT_MS):
            shell.request_refresh()
        assert shell.window.model.row_of("hetzner", "t") is not None
        assert len(live_servers(emulator)) == 1
        assert not emulator.calls("DELETE", r"/v1/servers/\d+")
        assert "delete:t" not in shell.workspaces.tasks


def test_window_layout_survives_a_restart(
    qtbot: QtBot, emulator: HetznerEmulator, shell_factory
) -> None:  # type: ignore[no-untyped-def]
    from app.ui.shell import window_state_path

    first = shell_factory(emulator)
    first.begin()
    first.window.resize(700, 500)  # within the offscreen screen (800×600)
    first.window.table.horizontalHeader().resizeSection(0, 222)
    done = asyncio.ensure_future(first.shutdown())
    qtbot.waitUntil(done.done, timeout=WAIT_MS)
    assert window_state_path().is_file()
    second = shell_factory(emulator)
    second.begin()
    assert second.window.table.horizontalHeader().sectionSize(0) == 222
    assert second.window.width() == 700


def test_failed_create_is_explained_in_the_dialog(
    qtbot: QtBot, emulator: HetznerEmulator, shell_factory
) -> None:  # type: ignore[no-untyped-def]
    emulator.server_limit = 0  # the project's server quota is used up
    shell = shell_factory(emulator, settings=configured_settings())
    shell.begin()
    dialog = open_create(qtbot, shell)
    dialog.create_button.click()
    qtbot.waitUntil(lambda: dialog.create_task is None, timeout=WAIT_MS)
    assert dialog.step.isVisible()
    assert dialog.step.text().startswith("Not created: ")
    assert dialog.form_widget.isEnabled() and dialog.create_button.isEnabled()
    assert live_servers(emulator) == []


def test_input_in_the_window_and_its_dialogs_counts_as_activity(
    qtbot: QtBot, emulator: HetznerEmulator, shell_factory
) -> None:  # type: ignore[no-untyped-def]
    from PySide6.QtCore import QPoint, Qt
    from PySide6.QtTest import QTest

    shell = shell_factory(emulator, settings=configured_settings())
    shell.begin()
    seen: list[bool] = []
    shell._activity._on_input = lambda: seen.append(True)
    # As the platform delivers input: to the top-level QWindow first, then to the widget.
    window = shell.window.windowHandle()
    QTest.mouseClick(window, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier,
                     QPoint(200, 200))  # fmt: skip
    assert seen, "a click anywhere in the main window counts"
    seen.clear()
    dialog = open_create(qtbot, shell)
    dialog.branch.setFocus()
    QTest.keyClick(dialog.windowHandle(), Qt.Key.Key_X)
    assert seen, "typing in a dialog counts too"
    dialog.reject()
