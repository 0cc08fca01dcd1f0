"""The workspace table model and the notifier: cells, in-place updates, countdowns, notices."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from PySide6.QtCore import Qt

from app.domain import AgentState, Phase, ServerStatus
from app.ui.models import Column, CostFigure, ProgressRole, WorkspaceTableModel, status_text
from app.ui.notifications import Notifier
from tests.ui.factories import NOW, workspace


def cell(model: WorkspaceTableModel, row: int, column: Column, role: int = 0) -> object:
    return model.data(model.index(row, column), role or Qt.ItemDataRole.DisplayRole)


def test_cells_show_status_cost_and_countdowns(qapp: object) -> None:
    model = WorkspaceTableModel(now=lambda: NOW)
    model.set_workspaces(
        [
            workspace("alpha", agent=AgentState.WAITING),
            workspace("beta", phase=Phase.BUILDING, progress=0.45),
        ]
    )
    model.set_costs({("hetzner", "alpha"): CostFigure(Decimal("0.016"))})
    assert model.rowCount() == 2
    assert cell(model, 0, Column.NAME) == "alpha"
    assert cell(model, 0, Column.REPO) == "github.com/example/alpha"
    assert cell(model, 0, Column.STATUS) == "ready · agent waiting for you"
    assert cell(model, 0, Column.STATUS, ProgressRole) is None
    assert cell(model, 1, Column.STATUS) == "building"
    assert cell(model, 1, Column.STATUS, ProgressRole) == 0.45
    assert cell(model, 0, Column.UPTIME) == "1 h 00 min"
    assert cell(model, 0, Column.COST) == "€0.02"
    assert cell(model, 1, Column.COST) == "–"
    assert cell(model, 0, Column.PRICE) == "€0.0080"
    assert cell(model, 0, Column.IDLE_LEFT) == "25 min"
    assert cell(model, 0, Column.LIFETIME_LEFT) == "11 h 00 min"


def test_refresh_updates_rows_in_place(qapp: object) -> None:
    model = WorkspaceTableModel(now=lambda: NOW)
    model.set_workspaces([workspace("a"), workspace("b"), workspace("c")])
    inserted: list[tuple[int, int]] = []
    removed: list[tuple[int, int]] = []
    changed: list[int] = []
    model.rowsInserted.connect(lambda _p, first, last: inserted.append((first, last)))
    model.rowsRemoved.connect(lambda _p, first, last: removed.append((first, last)))
    model.dataChanged.connect(lambda tl, br, *_: changed.append(tl.row()))
    model.set_workspaces(
        [workspace("a"), workspace("c", phase=Phase.FAILED), workspace("d", server=False)]
    )
    assert removed == [(1, 1)]
    assert inserted == [(2, 2)]
    assert changed == [0]  # one dataChanged over the rows refreshed (identity, not equality)
    assert [model.data(model.index(r, 0)) for r in range(3)] == ["a", "c", "d"]
    assert cell(model, 2, Column.STATUS) == "creating"


def test_status_texts() -> None:
    assert status_text(workspace("x", status=ServerStatus.STARTING, phase=None)) == "starting"
    assert status_text(workspace("x", phase=None)) == "running · booting"
    assert status_text(workspace("x", phase=Phase.FAILED)) == "failed"


def test_notifier_announces_each_event_once() -> None:
    notifier = Notifier()
    assert notifier.update([workspace("w", phase=Phase.BUILDING)], NOW) == []
    notices = notifier.update([workspace("w", agent=AgentState.WAITING)], NOW)
    assert [n.kind for n in notices] == ["ready", "waiting"]
    assert notifier.update([workspace("w", agent=AgentState.WAITING)], NOW) == []
    soon = workspace("w", idle_in=timedelta(minutes=3), agent=AgentState.IDLE)
    assert [n.kind for n in notifier.update([soon], NOW)] == ["idle"]
    assert notifier.update([soon], NOW) == []
    late = workspace("w", created_ago=timedelta(hours=11, minutes=50), agent=AgentState.IDLE)
    assert [n.kind for n in notifier.update([late], NOW)] == ["lifetime"]
    failed = workspace("w", phase=Phase.FAILED)
    assert "failed" in [n.kind for n in notifier.update([failed], NOW)]
