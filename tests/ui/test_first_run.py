"""First run without a cloud account: the window offers a workspace on this computer."""

from __future__ import annotations

from pytestqt.qtbot import QtBot

from app.ui.create_dialog import CreateDialog
from tests.emulators.hetzner import HetznerEmulator
from tests.support.waits import WAIT_MS
from tests.ui.test_flows import emulator, shell_factory

__all__ = ["emulator", "shell_factory"]


def test_first_run_offers_a_workspace_on_this_computer(
    qtbot: QtBot,
    emulator: HetznerEmulator,
    shell_factory,
) -> None:  # type: ignore[no-untyped-def]
    shell = shell_factory(emulator)
    shell.begin()
    empty = shell.window.empty
    assert empty.button.text() == "Add an account…"
    qtbot.waitUntil(empty.local_button.isVisible, timeout=WAIT_MS)

    empty.local_button.click()
    dialog = shell.dialogs[-1]
    assert isinstance(dialog, CreateDialog)
    assert dialog.account.currentData() == "local"
    qtbot.waitUntil(lambda: dialog.size_combo.count() > 0, timeout=WAIT_MS)
    assert "free" in dialog.price.text().lower()


def test_with_a_cloud_account_the_local_offer_steps_aside(qtbot: QtBot) -> None:
    from app.ui.main_window import MainWindow

    window = MainWindow()
    qtbot.addWidget(window)
    window.show()
    assert window.empty.local_button.isVisible()
    window.set_has_accounts(True)
    assert not window.empty.local_button.isVisible()
    with qtbot.waitSignal(window.newRequested, timeout=WAIT_MS):
        window.empty.button.click()
