"""The main window: empty state, actions enabled only when they make sense, confirmation, costs."""

from __future__ import annotations

from decimal import Decimal

from pytestqt.qtbot import QtBot

from app.domain import Phase
from app.ui.main_window import MainWindow
from tests.ui.factories import NOW, workspace


def make_window(qtbot: QtBot, answer: bool = True) -> tuple[MainWindow, list[str]]:
    asked: list[str] = []

    def confirm(_parent: object, title: str, _text: str) -> bool:
        asked.append(title)
        return answer

    window = MainWindow(now=lambda: NOW, confirm=confirm)
    qtbot.addWidget(window)
    window.show()
    return window, asked


def test_empty_state_leads_to_account_then_workspace(qtbot: QtBot) -> None:
    window, _ = make_window(qtbot)
    assert window.stack.currentWidget() is window.empty
    assert window.empty.button.text() == "Add an account…"
    with qtbot.waitSignal(window.settingsRequested):
        window.empty.button.click()
    window.set_has_accounts(True)
    assert window.empty.button.text() == "Create your first workspace…"
    with qtbot.waitSignal(window.newRequested):
        window.empty.button.click()
    window.set_workspaces([workspace("alpha")])
    assert window.stack.currentIndex() == 1


def test_actions_follow_the_selection(qtbot: QtBot) -> None:
    window, asked = make_window(qtbot)
    window.set_workspaces(
        [workspace("ready"), workspace("building", phase=Phase.BUILDING, progress=0.3)]
    )
    for action in (window.act_terminal, window.act_delete, window.act_keep_alive):
        assert not action.isEnabled()
    window.select("hetzner", "building")
    assert not window.act_terminal.isEnabled()
    assert not window.act_browser.isEnabled()
    assert window.act_copy_ssh.isEnabled()
    assert window.act_delete.isEnabled()
    assert "building" in window.detail.header.text()
    window.select("hetzner", "ready")
    assert window.act_terminal.isEnabled()
    assert window.act_browser.isEnabled()
    assert window.detail.log.toPlainText() == "log of ready\nline 2"
    with qtbot.waitSignal(window.openSessionRequested) as opened:
        window.act_terminal.trigger()
    assert opened.args[0].name == "ready" and opened.args[1] == "main"
    with qtbot.waitSignal(window.deleteRequested) as deleted:
        window.act_delete.trigger()
    assert deleted.args[0].name == "ready"
    assert asked == ["Delete workspace ready?"]


def test_declined_confirmation_deletes_nothing(qtbot: QtBot) -> None:
    window, asked = make_window(qtbot, answer=False)
    window.set_workspaces([workspace("keep")])
    window.select("hetzner", "keep")
    with qtbot.assertNotEmitted(window.deleteRequested):
        window.act_delete.trigger()
    assert asked


def test_phase_history_accumulates(qtbot: QtBot) -> None:
    window, _ = make_window(qtbot)
    for phase in (Phase.BOOTING, Phase.CLONING, Phase.CLONING, Phase.READY):
        window.set_workspaces([workspace("w", phase=phase)])
    window.select("hetzner", "w")
    items = [window.detail.history.item(i).text() for i in range(window.detail.history.count())]
    assert [text.split("  ")[1].split(" —")[0] for text in items] == ["booting", "cloning", "ready"]


def test_cost_summary_and_budget_warning(qtbot: QtBot) -> None:
    window, _ = make_window(qtbot)
    window.set_costs_summary(
        per_hour=Decimal("0.0240"),
        month_to_date=Decimal("12.5"),
        currency="EUR",
        budget_warning=None,
    )
    assert window.rate_label.text() == "Now: €0.0240/h"
    assert window.month_label.text() == "This month: €12.50"
    assert not window.budget_label.isVisible()
    window.set_costs_summary(
        per_hour=Decimal("1"),
        month_to_date=Decimal("48"),
        currency="EUR",
        budget_warning="Budget: €48.00 of €50.00 spent; at this rate it is exceeded in 2 h",
    )
    assert window.budget_label.isVisible()
    assert "exceeded" in window.budget_label.text()
