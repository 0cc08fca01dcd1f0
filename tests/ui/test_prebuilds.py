"""The window's prebuilds over the real services and the Hetzner emulator: the Prebuilds dialog
(rows with size, cost per month and state; one-click rebuild of a stale one; a confirmed delete
that the ledger remembers; the empty state), "Prebuild repository…" from the toolbar and a
workspace's context menu, and the create dialog's line saying whether a prebuild matches.

A real build needs a VM that answers over SSH (the local e2e run covers it); here the service's
``build`` is replaced by a scripted one that reports steps and makes a real snapshot at the
emulator, so what the window does with a build (progress, replacing, failing) is tested whole.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import pytest
from PySide6.QtWidgets import QProgressBar, QPushButton
from pytestqt.qtbot import QtBot

from app.domain import ImageStatus, Workspace, utcnow
from app.errors import ActionFailed
from app.services.costs import CostService
from app.services.prebuild_hash import LABEL_PREBUILD, repo_key
from app.services.prebuilds import BuildProgress, PrebuildRecord, PrebuildRegistry
from app.ui.create_dialog import CreateDialog
from app.ui.heartbeat import StallMeter
from app.ui.prebuild_actions import BuildRequest, MatchState, PrebuildActions
from app.ui.prebuilds_dialog import PrebuildForm, PrebuildsDialog
from app.ui.shell import Shell
from tests.emulators.hetzner import HetznerEmulator
from tests.support.waits import WAIT_MS
from tests.ui.harness import TOKEN, assert_responsive, configured_settings, make_shell

T = TypeVar("T")

REPO = "https://github.com/acme/api.git"
OTHER = "https://github.com/acme/web.git"


@pytest.fixture
def emulator() -> HetznerEmulator:
    return HetznerEmulator(token=TOKEN, create_seconds=0.2, start_seconds=0.2)


@pytest.fixture
def shell(
    qtbot: QtBot, qloop: asyncio.AbstractEventLoop, tmp_path: Path, emulator: HetznerEmulator
) -> Iterator[Shell]:
    shell = make_shell(emulator, tmp_path, configured_settings())
    yield shell
    task = asyncio.ensure_future(shell.shutdown())
    qtbot.waitUntil(task.done, timeout=WAIT_MS)
    shell.window.close()
    shell.window.deleteLater()
    shell.deleteLater()


def actions(shell: Shell) -> PrebuildActions:
    assert isinstance(shell.prebuild_actions, PrebuildActions)
    return shell.prebuild_actions


def add_prebuild(
    emulator: HetznerEmulator,
    repo: str,
    *,
    size: float = 3.5,
    stale: bool = False,
    branch: str | None = None,
    age: timedelta = timedelta(days=2),
) -> PrebuildRecord:
    """A snapshot at the emulator with Bivy's labels, and the app's record of it."""
    key = repo_key(repo, branch)
    image_id = emulator.add_snapshot({"managed-by": "bivy", LABEL_PREBUILD: key}, size=size)
    record = PrebuildRecord(
        id=str(image_id),
        account="hetzner",
        provider="hetzner",
        repo=repo,
        branch=branch,
        repo_key=key,
        config_hash="0123456789abcdef",
        commit="4f1c2b9a7d3e5f60",
        size_gb=size,
        created_at=utcnow() - age,
        stale=stale,
    )
    PrebuildRegistry().put(record)
    return record


def wait_for(qtbot: QtBot, coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on the window's (qasync) loop and return its result."""
    task = asyncio.ensure_future(coro)
    qtbot.waitUntil(task.done, timeout=WAIT_MS)
    return task.result()


def image_ids(emulator: HetznerEmulator) -> set[str]:
    with emulator.lock:
        return {str(i["id"]) for i in emulator.images if i["type"] == "snapshot"}


def open_list(qtbot: QtBot, shell: Shell) -> PrebuildsDialog:
    actions(shell).act_list.trigger()
    dialog = actions(shell).dialog
    assert isinstance(dialog, PrebuildsDialog)
    qtbot.waitUntil(
        lambda: dialog.controller.listed_once and not dialog.controller.running("list"),
        timeout=WAIT_MS,
    )
    return dialog


def cell(dialog: PrebuildsDialog, row: int, column: int) -> str:
    item = dialog.table.item(row, column)
    return item.text() if item is not None else ""


def row_of(dialog: PrebuildsDialog, repo: str) -> int:
    for row in range(dialog.table.rowCount()):
        if cell(dialog, row, 0).startswith(repo):
            return row
    raise AssertionError(f"no row for {repo}: {[cell(dialog, r, 0) for r in range(9)]}")


def scripted_build(
    emulator: HetznerEmulator, calls: list[BuildRequest | dict[str, object]], *, fail: bool = False
) -> Callable[..., object]:
    """A stand-in for ``PrebuildService.build``: steps with progress, then a real snapshot at
    the emulator and its record (or an ``ActionFailed``)."""

    async def build(repo: str, **kw: object) -> PrebuildRecord:
        calls.append({"repo": repo, **kw})
        progress = kw["progress"]
        assert callable(progress)
        for step, fraction in (("create", 0.1), ("build", 0.4), ("image", 0.8)):
            progress(BuildProgress(step, f"{step} step", fraction))
            await asyncio.sleep(0.2)
        if fail:
            raise ActionFailed("the builder pb-1234 failed: npm ERR! 404", hint="see its log")
        branch = kw.get("branch")
        return add_prebuild(
            emulator, repo, size=2.0, branch=branch if isinstance(branch, str) else None,
            age=timedelta(0),
        )  # fmt: skip

    return build


# --- the dialog ------------------------------------------------------------------------------


def test_empty_state_says_what_a_prebuild_is_and_costs(qtbot: QtBot, shell: Shell) -> None:
    dialog = open_list(qtbot, shell)
    assert dialog.stack.currentWidget() is dialog.empty
    text = " ".join(
        label.text() for label in dialog.empty.findChildren(type(dialog.footer))
    )  # fmt: skip
    assert "snapshot" in text and "starts from it in seconds" in text
    assert "per GB and month" in text and "This month" in text
    assert dialog.empty.button.text() == "Prebuild a repository…"
    dialog.empty.button.click()
    form = shell.dialogs[-1]
    assert isinstance(form, PrebuildForm)
    form.reject()


def test_rows_show_size_cost_and_state_and_a_delete_is_confirmed_and_kept_in_the_ledger(
    qtbot: QtBot, shell: Shell, emulator: HetznerEmulator, tmp_path: Path
) -> None:
    ready = add_prebuild(emulator, REPO, size=3.5)
    stale = add_prebuild(emulator, OTHER, size=10.0, stale=True, branch="dev")
    emulator.inject_latency("GET", r"/v1/(images|pricing)", 0.3, times=None)
    meter = StallMeter()
    meter.start()
    dialog = open_list(qtbot, shell)
    meter.stop()
    assert_responsive(meter)
    assert dialog.table.rowCount() == 2
    r = row_of(dialog, REPO)
    # 3.5 GB × €0.01309 per GB-month (the emulator's /pricing, gross) = €0.0458 (to 0.001).
    assert cell(dialog, r, 1) == "Hetzner Cloud · any region"
    assert cell(dialog, r, 2) == "3.5 GB"
    assert cell(dialog, r, 3) == "€0.046/month"
    assert cell(dialog, r, 4).endswith("(2 days ago)")
    assert cell(dialog, r, 5) == "ready"
    s = row_of(dialog, OTHER)
    assert cell(dialog, s, 0) == f"{OTHER} @ dev"
    assert cell(dialog, s, 3) == "€0.13/month"
    stale_cell = dialog.table.cellWidget(s, 5)
    assert stale_cell is not None and "stale" in stale_cell.findChildren(type(dialog.footer))[
        0
    ].text()  # fmt: skip
    assert dialog.footer.text().startswith("2 prebuilds · 13.5 GB · €0.18 per month")

    # Delete… asks; Cancel keeps it.
    asked: list[str] = []
    dialog.confirm = lambda _parent, title, text: asked.append(text) or False  # type: ignore[func-returns-value]
    dialog.table.selectRow(r)
    assert dialog.delete_button.isEnabled()
    dialog.delete_button.click()
    assert "3.5 GB, €0.046/month" in asked[0] and "Hetzner Cloud" in asked[0]
    assert ready.id in image_ids(emulator)
    # Confirmed: gone at the provider, from the registry and the table; the ledger keeps
    # what it cost this month and the month-to-date total still has it.
    dialog.confirm = lambda *_: True
    dialog.delete_button.click()
    qtbot.waitUntil(lambda: ready.id not in image_ids(emulator), timeout=WAIT_MS)
    qtbot.waitUntil(lambda: dialog.table.rowCount() == 1, timeout=WAIT_MS)
    assert [r.id for r in PrebuildRegistry().all()] == [stale.id]
    costs = CostService(tmp_path / "ledger.sqlite3")
    entries = {e.image_id: e for e in wait_for(qtbot, costs.image_entries())}
    assert entries[ready.id].deleted_by == "bivy"
    assert entries[ready.id].price is not None
    assert entries[ready.id].price.monthly == Decimal("0.0458")
    assert entries[stale.id].deleted_at is None
    assert wait_for(qtbot, costs.month_to_date())["EUR"] > 0


def test_a_stale_prebuild_is_rebuilt_with_one_click_and_replaced(
    qtbot: QtBot, shell: Shell, emulator: HetznerEmulator
) -> None:
    stale = add_prebuild(emulator, OTHER, size=10.0, stale=True, branch="dev")
    calls: list[BuildRequest | dict[str, object]] = []
    controller = actions(shell).controller
    controller.service.build = scripted_build(emulator, calls)  # type: ignore[method-assign]
    dialog = open_list(qtbot, shell)
    widget = dialog.table.cellWidget(row_of(dialog, OTHER), 5)
    assert widget is not None
    (button,) = widget.findChildren(QPushButton)
    button.click()
    # Building: a row with its progress, above the prebuilds.
    qtbot.waitUntil(lambda: dialog.table.rowCount() == 2, timeout=WAIT_MS)
    bar = dialog.table.cellWidget(0, 5)
    assert isinstance(bar, QProgressBar) and "building" in bar.format()
    qtbot.waitUntil(lambda: bool(calls), timeout=WAIT_MS)
    assert calls[0]["repo"] == OTHER and calls[0]["branch"] == "dev"
    assert calls[0]["account"] == "hetzner" and calls[0]["agent"] == "claude"
    qtbot.waitUntil(lambda: controller.builds == {}, timeout=WAIT_MS)
    # The new prebuild replaced the stale one, at the provider too.
    qtbot.waitUntil(lambda: stale.id not in image_ids(emulator), timeout=WAIT_MS)
    qtbot.waitUntil(
        lambda: dialog.table.rowCount() == 1 and cell(dialog, 0, 5) == "ready", timeout=WAIT_MS
    )
    assert cell(dialog, 0, 0) == f"{OTHER} @ dev"
    assert [r.stale for r in PrebuildRegistry().all()] == [False]


def test_a_failed_build_says_why_and_can_be_tried_again_or_dismissed(
    qtbot: QtBot, shell: Shell, emulator: HetznerEmulator
) -> None:
    calls: list[BuildRequest | dict[str, object]] = []
    controller = actions(shell).controller
    controller.service.build = scripted_build(emulator, calls, fail=True)  # type: ignore[method-assign]
    dialog = open_list(qtbot, shell)
    controller.start_build(BuildRequest(repo=REPO, account="hetzner", region="fsn1"))
    qtbot.waitUntil(lambda: cell(dialog, 0, 5).startswith("failed:"), timeout=WAIT_MS)
    assert "npm ERR! 404" in cell(dialog, 0, 5) and "see its log" in cell(dialog, 0, 5)
    dialog.table.selectRow(0)
    assert dialog.rebuild_button.text() == "Try again" and dialog.rebuild_button.isEnabled()
    dialog.rebuild_button.click()
    qtbot.waitUntil(lambda: len(calls) == 2, timeout=WAIT_MS)
    qtbot.waitUntil(lambda: cell(dialog, 0, 5).startswith("failed:"), timeout=WAIT_MS)
    dialog.table.selectRow(0)
    assert dialog.delete_button.text() == "Dismiss"
    dialog.delete_button.click()
    assert dialog.table.rowCount() == 0 and controller.builds == {}


# --- the actions -----------------------------------------------------------------------------


def test_prebuild_repository_from_the_toolbar_and_from_a_workspace(
    qtbot: QtBot, shell: Shell, emulator: HetznerEmulator
) -> None:
    acts = actions(shell)
    assert acts.act_prebuild.shortcut().toString() == "Ctrl+Shift+P"
    assert acts.toolbar_button.defaultAction() is acts.act_prebuild
    assert acts.act_prebuild_selected in shell.window.extra_context_actions
    calls: list[BuildRequest | dict[str, object]] = []
    acts.controller.service.build = scripted_build(emulator, calls)  # type: ignore[method-assign]

    # From a workspace: its repository, account and region are filled in.
    emulator.add_server("bivy-api", {"managed-by": "bivy", "bivy-workspace": "api"},
                        location="nbg1")  # fmt: skip
    ws = Workspace(name="api", account="hetzner", provider="hetzner", repo_url=REPO)
    listed = asyncio.ensure_future(shell.workspaces.service.list_workspaces())  # type: ignore[union-attr]
    qtbot.waitUntil(listed.done, timeout=WAIT_MS)
    server = next(w.server for w in listed.result().workspaces if w.name == "api")
    shell.window.set_workspaces([ws.model_copy(update={"server": server})])
    shell.window.select("hetzner", "api")
    assert acts.act_prebuild_selected.isEnabled()
    acts.act_prebuild_selected.trigger()
    form = shell.dialogs[-1]
    assert isinstance(form, PrebuildForm)
    qtbot.waitUntil(lambda: form.size_combo.count() > 0, timeout=WAIT_MS)
    assert form.repo.text() == REPO
    assert form.region_combo.currentData() == "nbg1"
    assert form.account.currentData() == "hetzner"
    assert form.build_button.isEnabled()
    form.build_button.click()
    # The build runs and the Prebuilds dialog shows it.
    qtbot.waitUntil(lambda: len(calls) == 1, timeout=WAIT_MS)
    assert calls[0]["region"] == "nbg1" and calls[0]["repo"] == REPO
    assert isinstance(acts.dialog, PrebuildsDialog)
    qtbot.waitUntil(lambda: acts.controller.builds == {}, timeout=WAIT_MS)

    # From the toolbar, with nothing selected: an empty form that checks the repository.
    shell.window.table.clearSelection()
    acts.act_prebuild.trigger()
    form = shell.dialogs[-1]
    assert isinstance(form, PrebuildForm)
    assert form.repo.text() == "" and not form.build_button.isEnabled()
    form.repo.setText("ftp://example.com/x.git")
    assert form.repo_error.isVisible() and not form.build_button.isEnabled()
    form.repo.setText(OTHER)
    assert form.build_button.isEnabled()
    form.reject()


def test_the_create_dialog_says_whether_a_prebuild_matches(
    qtbot: QtBot, shell: Shell, emulator: HetznerEmulator
) -> None:
    add_prebuild(emulator, REPO)
    add_prebuild(emulator, OTHER, stale=True)
    dialog = shell.open_create_dialog()
    assert isinstance(dialog, CreateDialog) and dialog.prebuild_hint is not None
    hint = dialog.prebuild_hint
    qtbot.waitUntil(lambda: dialog.region_combo.count() > 0, timeout=WAIT_MS)

    def shows(state: MatchState, words: str) -> Callable[[], bool]:
        return lambda: hint.state is state and words in hint.label.text()

    meter = StallMeter()
    meter.start()
    dialog.repo.setText(REPO)
    qtbot.waitUntil(shows(MatchState.READY, "Prebuild ready — starts in seconds"),
                    timeout=WAIT_MS)  # fmt: skip
    assert hint.label.isVisible()
    dialog.branch.setText("feature")  # another branch: another repository key
    qtbot.waitUntil(shows(MatchState.NONE, "No prebuild here"), timeout=WAIT_MS)
    dialog.branch.setText("")
    dialog.repo.setText(OTHER)
    qtbot.waitUntil(shows(MatchState.STALE, "stale"), timeout=WAIT_MS)
    meter.stop()
    assert_responsive(meter)
    dialog.repo.setText("")
    qtbot.waitUntil(lambda: hint.state is None and not hint.label.isVisible(), timeout=WAIT_MS)
    dialog.reject()


def test_image_states_at_the_provider_read_plainly(qtbot: QtBot, shell: Shell) -> None:
    from app.domain import Price
    from app.ui.prebuilds_dialog import _record_state, per_month_text

    base = PrebuildRecord(id="1", account="hetzner", provider="hetzner", repo=REPO)
    assert _record_state(base, False)[0] == "ready"
    assert _record_state(base, True)[0] == "deleting…"
    creating = base.model_copy(update={"status": ImageStatus.CREATING})
    assert _record_state(creating, False)[0] == "image being made"
    assert _record_state(base.model_copy(update={"status": ImageStatus.FAILED}), False)[0] == (
        "failed"
    )
    assert _record_state(base.model_copy(update={"repo": ""}), False)[0] == "ready (not used)"
    assert per_month_text(base) == "–"  # not reported yet
    free = Price(currency="EUR", hourly=Decimal(0), monthly=Decimal(0))
    assert per_month_text(base.model_copy(update={"monthly_price": free})) == "free"
    usd = Price(currency="USD", hourly=Decimal(0), monthly=Decimal("1.2"))
    assert per_month_text(base.model_copy(update={"monthly_price": usd})) == "$1.20/month"


def test_prebuild_storage_reaches_the_month_total_without_opening_the_dialog(
    qtbot: QtBot, shell: Shell, emulator: HetznerEmulator, tmp_path: Path
) -> None:
    record = add_prebuild(emulator, REPO, size=40.0)
    costs = CostService(tmp_path / "ledger.sqlite3")
    shell.request_refresh()  # a workspace refresh lists the prebuilds too (every 15 min)
    qtbot.waitUntil(
        lambda: any(e.image_id == record.id for e in wait_for(qtbot, costs.image_entries())),
        timeout=WAIT_MS,
    )
    assert actions(shell).dialog is None
    # The next refresh's cost snapshot has the storage in the month-to-date total.
    shell.refresh_timer.stop()
    shell._last_refresh = 0.0
    shell.request_refresh()
    qtbot.waitUntil(
        lambda: (
            shell.last_snapshot is not None
            and shell.last_snapshot.storage_month_to_date.get("EUR", Decimal(0)) > 0
        ),
        timeout=WAIT_MS,
    )
    snapshot = shell.last_snapshot
    assert snapshot is not None
    assert snapshot.month_to_date["EUR"] >= snapshot.storage_month_to_date["EUR"]
    assert snapshot.storage_per_month == {"EUR": Decimal("0.5236")}  # 40 GB × €0.01309
    tip = shell.window.month_label.toolTip()
    assert "prebuild storage: €0.0" in tip and "cost €0.52 per month" in tip


def test_a_running_build_can_be_cancelled_from_the_dialog(
    qtbot: QtBot, shell: Shell, emulator: HetznerEmulator
) -> None:
    controller = actions(shell).controller
    cancelled: list[bool] = []

    async def slow_build(repo: str, **kw: object) -> PrebuildRecord:
        progress = kw["progress"]
        assert callable(progress)
        progress(BuildProgress("create", "Creating the builder VM", 0.05))
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.append(True)  # the real service deletes its builder here
            raise
        raise AssertionError("not reached")

    controller.service.build = slow_build  # type: ignore[method-assign]
    dialog = open_list(qtbot, shell)
    controller.start_build(BuildRequest(repo=REPO, account="hetzner"))
    qtbot.waitUntil(lambda: isinstance(dialog.table.cellWidget(0, 5), QProgressBar),
                    timeout=WAIT_MS)  # fmt: skip
    (build,) = controller.builds.values()
    qtbot.waitUntil(lambda: build.progress is not None, timeout=WAIT_MS)  # it is running
    dialog.table.selectRow(0)
    assert dialog.delete_button.text() == "Cancel build" and dialog.delete_button.isEnabled()
    assert not dialog.rebuild_button.isEnabled()
    dialog.delete_button.click()
    qtbot.waitUntil(lambda: cancelled == [True] and controller.builds == {}, timeout=WAIT_MS)
    qtbot.waitUntil(lambda: dialog.table.rowCount() == 0, timeout=WAIT_MS)
    # Cancelled before it even began: the row goes too.
    controller.start_build(BuildRequest(repo=OTHER, account="hetzner"))
    assert dialog.table.rowCount() == 1
    dialog.table.selectRow(0)
    dialog.delete_button.click()
    qtbot.waitUntil(lambda: controller.builds == {} and dialog.table.rowCount() == 0,
                    timeout=WAIT_MS)  # fmt: skip


def test_a_vm_that_rebuilt_marks_its_prebuild_stale_in_the_window(
    qtbot: QtBot, qloop: asyncio.AbstractEventLoop
) -> None:
    """A status read saying ``prebuild_stale`` (the VM rebuilt its devcontainer) marks the
    prebuild the workspace came from stale, as ``bivy ls`` does; other prebuilds stay."""
    from app.domain import Phase, StatusReport
    from app.services.registry import Registry, WorkspaceRecord
    from app.services.status import StatusEvent, StatusEventKind, StatusService, StatusSnapshot
    from app.services.tunnels import TunnelService
    from app.settings import SecretStore
    from app.ui.controllers import StatusController

    prebuilds = PrebuildRegistry()
    for image in ("img-1", "img-2"):
        prebuilds.put(PrebuildRecord(id=image, account="hetzner", provider="hetzner"))
    Registry().put(
        WorkspaceRecord(name="api", account="hetzner", provider="hetzner", prebuild="img-1")
    )
    secrets = SecretStore()
    status = StatusService(TunnelService(secrets))
    StatusController(TunnelService(secrets), status, Registry(), secrets)

    def read(stale: bool) -> None:
        report = StatusReport(phase=Phase.READY, prebuild_stale=stale)
        snapshot = StatusSnapshot("api", report, None, datetime.now(UTC))
        status._emit(StatusEvent(StatusEventKind.UPDATED, "api", snapshot))

    read(False)
    qtbot.wait(200)
    assert not prebuilds.get("hetzner", "img-1").stale  # type: ignore[union-attr]
    read(True)
    qtbot.waitUntil(lambda: prebuilds.get("hetzner", "img-1").stale, timeout=WAIT_MS)  # type: ignore[union-attr]
    assert not prebuilds.get("hetzner", "img-2").stale  # type: ignore[union-attr]
