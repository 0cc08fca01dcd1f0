"""The tray: running workspaces with status and cost, per-workspace and global actions."""

from __future__ import annotations

from decimal import Decimal

from pytestqt.qtbot import QtBot

from app.domain import AgentState, Phase
from app.ui.models import CostFigure
from app.ui.tray import Tray
from tests.ui.factories import workspace


def test_menu_lists_running_workspaces_with_cost(qtbot: QtBot) -> None:
    tray = Tray()
    tray.update(
        [
            workspace("alpha", agent=AgentState.WAITING),
            workspace("beta", phase=Phase.BUILDING),
            workspace("pending", server=False),
        ],
        {("hetzner", "alpha"): CostFigure(Decimal("0.12"))},
    )
    texts = [a.text() for a in tray.menu.actions()]
    assert texts[0] == "2 workspace(s) running"
    assert "alpha — ready · agent waiting for you — €0.12" in texts
    assert "beta — building" in texts
    assert {"New workspace…", "Delete all…", "Show window", "Quit"} <= set(texts)
    alpha = next(a for a in tray.menu.actions() if a.text().startswith("alpha"))
    beta = next(a for a in tray.menu.actions() if a.text().startswith("beta"))
    entries = {a.text(): a for a in alpha.menu().actions() if a.text()}
    open_alpha = entries["Open terminal"]
    keep_alpha = entries["Keep alive for an hour"]
    delete_alpha = entries["Delete…"]
    # A VM from before sessions: its agent shows as the one session, main.
    assert "main — needs you" in entries
    assert open_alpha.isEnabled()
    with qtbot.waitSignal(tray.keepAliveRequested) as kept:
        keep_alpha.trigger()
    assert kept.args[0].name == "alpha"
    assert not beta.menu().actions()[0].isEnabled()  # not ready: no terminal yet
    with qtbot.waitSignal(tray.openRequested) as opened:
        open_alpha.trigger()
    assert opened.args[0].name == "alpha"
    with qtbot.waitSignal(tray.deleteRequested) as deleted:
        delete_alpha.trigger()
    assert deleted.args[0].name == "alpha"
    quit_action = next(a for a in tray.menu.actions() if a.text() == "Quit")
    with qtbot.waitSignal(tray.quitRequested):
        quit_action.trigger()


def test_empty_tray_disables_delete_all(qtbot: QtBot) -> None:
    tray = Tray()
    tray.update([], {})
    delete_all = next(a for a in tray.menu.actions() if a.text() == "Delete all…")
    assert not delete_all.isEnabled()
    assert tray.menu.actions()[0].text() == "No workspaces"
