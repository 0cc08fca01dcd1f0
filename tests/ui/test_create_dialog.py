"""The create dialog: repo URL checked as the user types, live prices with a busy indicator."""

from __future__ import annotations

import asyncio
from pathlib import Path

from pytestqt.qtbot import QtBot

from app.ui.create_dialog import CreateDialog, name_from_repo
from tests.emulators.hetzner import HetznerEmulator
from tests.ui.harness import TOKEN, configured_settings, make_shell


def test_validation_and_live_prices(
    qtbot: QtBot, qloop: asyncio.AbstractEventLoop, tmp_path: Path
) -> None:
    emulator = HetznerEmulator(token=TOKEN)
    emulator.inject_latency("GET", r"/v1/(pricing|server_types)", 0.3, times=None)
    shell = make_shell(emulator, tmp_path, configured_settings())
    dialog = shell.open_create_dialog()
    assert isinstance(dialog, CreateDialog)
    try:
        qtbot.waitUntil(dialog.busy_loading, timeout=5000)
        assert dialog.loading.isVisible()  # prices are on their way
        qtbot.waitUntil(lambda: not dialog.busy_loading(), timeout=10000)
        assert not dialog.loading.isVisible()
        assert dialog.size_combo.count() > 0
        assert "€" in dialog.size_combo.currentText() and "/h" in dialog.size_combo.currentText()
        assert "per hour" in dialog.price.text() and "per month" in dialog.price.text()

        dialog.repo.setText("ftp://example.com/repo.git")
        assert dialog.repo_error.isVisible()
        assert "not supported" in dialog.repo_error.text()
        assert not dialog.create_button.isEnabled()
        dialog.repo.setText("git@github.com:acme/Big_Repo.git")
        assert not dialog.repo_error.isVisible()
        assert dialog.name.text() == "big-repo"
        assert dialog.create_button.isEnabled()
        dialog.branch.setText("-rf")
        assert dialog.repo_error.isVisible() and "Branch" in dialog.repo_error.text()
        assert not dialog.create_button.isEnabled()
        dialog.branch.setText("feature/x")
        assert dialog.create_button.isEnabled()
        dialog.name.setText("Bad Name")
        assert dialog.name_error.isVisible() and not dialog.create_button.isEnabled()

        # A price change at the provider shows up when sizes load again (never cached).
        emulator.set_price("cx23", "nbg1", "0.0200", "12.00")
        index = dialog.region_combo.findData("nbg1")
        dialog.region_combo.setCurrentIndex(index if index != 0 else 1)
        dialog.region_combo.setCurrentIndex(index)
        qtbot.waitUntil(lambda: not dialog.busy_loading(), timeout=10000)
        dialog.size_combo.setCurrentIndex(dialog.size_combo.findData("cx23"))
        assert "€12" in dialog.price.text() or "€14" in dialog.price.text()  # net or with VAT
    finally:
        dialog.reject()
        done = asyncio.ensure_future(shell.shutdown())
        qtbot.waitUntil(done.done, timeout=10000)
        shell.window.deleteLater()


def test_name_from_repo() -> None:
    assert name_from_repo("https://github.com/acme/api.git") == "api"
    assert name_from_repo("git@github.com:acme/My.Repo.git") == "my-repo"
    assert name_from_repo("https://gitlab.com/g/2fast/") == "fast"
