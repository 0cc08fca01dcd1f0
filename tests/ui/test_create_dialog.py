"""The create dialog: repo URL checked as the user types, live prices with a busy indicator."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from PySide6.QtCore import Qt
from pytestqt.qtbot import QtBot

from app.services.workspaces import WorkspaceService
from app.settings import Account, SecretKeys, SecretStore, Settings
from app.ui.controllers import WorkspacesController
from app.ui.create_dialog import CreateDialog, name_from_repo
from tests.emulators.digitalocean import DigitalOceanEmulator
from tests.emulators.hetzner import HetznerEmulator
from tests.support.waits import WAIT_MS
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
        qtbot.waitUntil(dialog.busy_loading, timeout=WAIT_MS)
        assert dialog.loading.isVisible()  # prices are on their way
        qtbot.waitUntil(lambda: not dialog.busy_loading(), timeout=WAIT_MS)
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
        qtbot.waitUntil(lambda: not dialog.busy_loading(), timeout=WAIT_MS)
        dialog.size_combo.setCurrentIndex(dialog.size_combo.findData("cx23"))
        assert "€12" in dialog.price.text() or "€14" in dialog.price.text()  # net or with VAT
    finally:
        dialog.reject()
        done = asyncio.ensure_future(shell.shutdown())
        qtbot.waitUntil(done.done, timeout=WAIT_MS)
        shell.window.deleteLater()


def test_name_from_repo() -> None:
    assert name_from_repo("https://github.com/acme/api.git") == "api"
    assert name_from_repo("git@github.com:acme/My.Repo.git") == "my-repo"
    assert name_from_repo("https://gitlab.com/g/2fast/") == "fast"


def test_one_account_shows_no_comparison_only_a_hint(
    qtbot: QtBot, qloop: asyncio.AbstractEventLoop, tmp_path: Path
) -> None:
    shell = make_shell(HetznerEmulator(token=TOKEN), tmp_path, configured_settings())
    dialog = shell.open_create_dialog()
    assert isinstance(dialog, CreateDialog)
    try:
        qtbot.waitUntil(
            lambda: dialog.size_combo.count() > 0 and not dialog.busy_loading(), timeout=WAIT_MS
        )
        assert not dialog.compare.isVisible()
        assert (
            dialog.compare_hint.isVisible() and "second cloud account" in dialog.compare_hint.text()
        )
        assert dialog.compare_task is None
    finally:
        dialog.reject()
        done = asyncio.ensure_future(shell.shutdown())
        qtbot.waitUntil(done.done, timeout=WAIT_MS)
        shell.window.deleteLater()


def test_compares_the_size_class_across_accounts_and_picking_switches(
    qtbot: QtBot, qloop: asyncio.AbstractEventLoop, tmp_path: Path
) -> None:
    hetzner = HetznerEmulator(token=TOKEN)
    ocean = DigitalOceanEmulator()
    # The other account's prices arrive late (held until the test lets them go, however slow
    # the machine): the dialog stays usable, with a busy indicator.
    sizes_held = asyncio.Event()
    SecretStore().set(SecretKeys.account("hetzner", "token"), TOKEN)
    SecretStore().set(SecretKeys.account("ocean", "token"), ocean.token)
    settings = Settings(
        accounts=[
            Account(id="hetzner", provider="hetzner", label="Personal"),
            Account(id="ocean", provider="digitalocean", label="Work"),
        ]
    )
    transports = {"hetzner": hetzner.transport, "digitalocean": lambda: _held(ocean, sizes_held)}
    service = WorkspaceService(
        settings, SecretStore(), transport_factory=lambda a: transports[a.provider]()
    )
    controller = WorkspacesController(service)
    dialog = CreateDialog(
        controller,
        settings,
        [("hetzner", "Personal (Hetzner Cloud)"), ("ocean", "Work (DigitalOcean)")],
    )
    qtbot.addWidget(dialog)
    dialog.show()
    try:
        qtbot.waitUntil(lambda: dialog.compare.busy.isVisible(), timeout=WAIT_MS)
        # The form loaded its own account meanwhile (not blocked by the comparison).
        qtbot.waitUntil(
            lambda: dialog.size_combo.count() > 0 and not dialog.busy_loading(), timeout=WAIT_MS
        )
        assert dialog.compare_task is not None and not dialog.compare_task.done()
        sizes_held.set()
        qtbot.waitUntil(lambda: dialog.compare_task.done(), timeout=WAIT_MS)  # type: ignore[union-attr]
        assert not dialog.compare.busy.isVisible()
        assert not dialog.compare_hint.isVisible()

        # The cheapest Hetzner size (cx23, 2 vCPU, 4 GB, x86) is chosen: its class at each account.
        assert dialog.size_combo.currentData() == "cx23"
        assert "2 vCPU · 4 GB (x86)" in dialog.compare.heading.text()
        table = dialog.compare.table
        rows = [
            [table.item(r, c).text() for c in range(table.columnCount())]
            for r in range(table.rowCount())
        ]
        assert rows == [
            ["Personal (Hetzner Cloud)", "cx23", "fsn1", "€0.0067", "€4.15", "incl."],
            # USD is not converted: after the EUR offers; s-2vcpu-4gb beats c-2 (same class).
            ["Work (DigitalOcean)", "s-2vcpu-4gb", "ams3", "$0.0357", "$24.00", "excl."],
        ]
        assert "not converted" in dialog.compare.note.text()
        assert table.item(0, 0).font().bold() and not table.item(1, 0).font().bold()

        # Choosing the DigitalOcean row switches account, region and size.
        row = table.visualRect(table.model().index(1, 0))
        qtbot.mouseClick(table.viewport(), Qt.MouseButton.LeftButton, pos=row.center())
        qtbot.waitUntil(
            lambda: (
                dialog.account.currentData() == "ocean"
                and dialog.size_combo.currentData() == "s-2vcpu-4gb"
                and not dialog.busy_loading()
            ),
            timeout=WAIT_MS,
        )
        assert dialog.region_combo.currentData() == "ams3"
        assert "$0.0357 per hour" in dialog.price.text()
        dialog.repo.setText("https://github.com/acme/api.git")
        assert dialog.create_button.isEnabled()
        spec_account, spec_size = dialog.spec().account, dialog.spec().size
        assert (spec_account, spec_size) == ("ocean", "s-2vcpu-4gb")
        assert table.item(1, 0).font().bold() and not table.item(0, 0).font().bold()

        # And back to Hetzner, in the same dialog.
        dialog.compare.table.cellClicked.emit(0, 2)
        qtbot.waitUntil(
            lambda: (
                dialog.account.currentData() == "hetzner"
                and dialog.size_combo.currentData() == "cx23"
                and dialog.region_combo.currentData() == "fsn1"
                and not dialog.busy_loading()
            ),
            timeout=WAIT_MS,
        )
    finally:
        dialog.reject()
        done = asyncio.ensure_future(service.aclose())
        qtbot.waitUntil(done.done, timeout=WAIT_MS)


def test_an_account_whose_prices_fail_is_named_not_raised(
    qtbot: QtBot, qloop: asyncio.AbstractEventLoop
) -> None:
    hetzner = HetznerEmulator(token=TOKEN)
    ocean = DigitalOceanEmulator()
    SecretStore().set(SecretKeys.account("hetzner", "token"), TOKEN)
    SecretStore().set(SecretKeys.account("ocean", "token"), "dop_v1_" + "0" * 64)  # revoked
    settings = Settings(
        accounts=[
            Account(id="hetzner", provider="hetzner", label="Personal"),
            Account(id="ocean", provider="digitalocean", label="Work"),
        ]
    )
    emulators = {"hetzner": hetzner, "digitalocean": ocean}
    service = WorkspaceService(
        settings, SecretStore(), transport_factory=lambda a: emulators[a.provider].transport()
    )
    controller = WorkspacesController(service)
    failures: list[str] = []
    controller.failed.connect(lambda message, _hint: failures.append(message))
    dialog = CreateDialog(
        controller,
        settings,
        [("hetzner", "Personal (Hetzner Cloud)"), ("ocean", "Work (DigitalOcean)")],
    )
    qtbot.addWidget(dialog)
    dialog.show()
    try:
        qtbot.waitUntil(
            lambda: (
                dialog.compare_task is not None
                and dialog.compare_task.done()
                and dialog.size_combo.count() > 0
                and not dialog.busy_loading()
            ),
            timeout=WAIT_MS,
        )
        assert dialog.compare.table.rowCount() == 1  # Hetzner only
        assert "Work (DigitalOcean): prices could not be loaded" in dialog.compare.note.text()
        assert not failures  # no error dialog for an account the user did not choose
    finally:
        dialog.reject()
        done = asyncio.ensure_future(service.aclose())
        qtbot.waitUntil(done.done, timeout=WAIT_MS)


def test_a_local_checkout_as_the_repository(
    qtbot: QtBot,
    qloop: asyncio.AbstractEventLoop,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A folder instead of a URL: quick checks as the user types, git's verdict off the UI
    thread, "Choose folder…", and "Include uncommitted changes" only for a folder."""
    from PySide6.QtWidgets import QFileDialog

    from tests.support.local_repo import git, make_repo

    project = make_repo(tmp_path / "work" / "project")
    empty = tmp_path / "work" / "empty"
    empty.mkdir()
    git(empty, "init", "-q")
    shell = make_shell(HetznerEmulator(token=TOKEN), tmp_path, configured_settings())
    dialog = shell.open_create_dialog()
    assert isinstance(dialog, CreateDialog)
    try:
        qtbot.waitUntil(
            lambda: dialog.size_combo.count() > 0 and not dialog.busy_loading(), timeout=WAIT_MS
        )
        assert dialog.idle.minimum() == 1
        dialog.repo.setText("https://github.com/acme/api.git")
        assert not dialog.include_uncommitted.isEnabled()

        dialog.repo.setText("relative/folder")
        assert dialog.repo_error.isVisible() and "full path" in dialog.repo_error.text()
        dialog.repo.setText(str(project / "src"))
        assert "not the top folder of a git checkout" in dialog.repo_error.text()
        assert not dialog.create_button.isEnabled()

        # git's verdict comes a moment later: a checkout without a commit cannot be sent
        dialog.repo.setText(str(empty))
        assert not dialog.repo_error.isVisible()
        qtbot.waitUntil(dialog.repo_error.isVisible, timeout=WAIT_MS)
        assert "has no commit yet" in dialog.repo_error.text()
        assert not dialog.create_button.isEnabled()

        monkeypatch.setattr(
            QFileDialog, "getExistingDirectory", staticmethod(lambda *a, **k: str(project))
        )
        dialog.choose_folder_button.click()
        assert dialog.repo.text() == str(project)
        assert dialog.name.text() == "project"
        assert dialog.include_uncommitted.isEnabled()
        assert dialog.branch.placeholderText() == "current branch"
        qtbot.waitUntil(dialog.local_state.isVisible, timeout=WAIT_MS)
        assert dialog.local_state.text() == "(on feature; uncommitted changes)"
        assert not dialog.repo_error.isVisible() and dialog.create_button.isEnabled()
        assert not dialog.spec().include_uncommitted
        dialog.include_uncommitted.setChecked(True)
        spec = dialog.spec()
        assert (spec.repo_url, spec.include_uncommitted, spec.branch) == (
            str(project),
            True,
            None,
        )
        dialog.repo.setText("https://github.com/acme/api.git")
        assert not dialog.spec().include_uncommitted  # only a folder sends uncommitted work
    finally:
        dialog.reject()
        done = asyncio.ensure_future(shell.shutdown())
        qtbot.waitUntil(done.done, timeout=WAIT_MS)
        shell.window.deleteLater()


def _held(emulator: DigitalOceanEmulator, release: asyncio.Event) -> httpx.MockTransport:
    """The emulator's transport, but GET /v2/sizes answers only once ``release`` is set."""
    inner = emulator.transport()

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "GET" and request.url.path.endswith("/v2/sizes"):
            await release.wait()
        return await inner.handle_async_request(request)

    return httpx.MockTransport(handler)
