"""Qt item models over the domain: the workspace table of the main window."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from enum import IntEnum
from typing import Any

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, Qt, Signal
from PySide6.QtGui import QColor

from app.domain import AgentState, Phase, ServerStatus, SessionReport, Workspace, utcnow
from app.ui import formatting
from app.ui.theme import SessionState, session_state, tone

ProgressRole = Qt.ItemDataRole.UserRole + 1
WorkspaceRole = Qt.ItemDataRole.UserRole + 2
SortRole = Qt.ItemDataRole.UserRole + 3
#: The sessions column: a list of ``(name, SessionState, tooltip line)`` for the delegate.
SessionsRole = Qt.ItemDataRole.UserRole + 4

AnyIndex = QModelIndex | QPersistentModelIndex


class Column(IntEnum):
    """The table's columns, in display order."""

    NAME = 0
    REPO = 1
    PROVIDER = 2
    REGION = 3
    SIZE = 4
    STATUS = 5
    UPTIME = 6
    COST = 7
    PRICE = 8
    IDLE_LEFT = 9
    LIFETIME_LEFT = 10
    SESSIONS = 11  # shown right after the status column (the window moves it there)


_COLUMNS = tuple(Column)
_COLUMN_COUNT = len(_COLUMNS)

HEADERS: dict[Column, tuple[str, str]] = {
    Column.NAME: ("Name", "The workspace name (ssh bivy-<name>)"),
    Column.REPO: ("Repository", "The git repository cloned into the workspace"),
    Column.PROVIDER: ("Account", "The cloud account that pays for the VM"),
    Column.REGION: ("Region", "Where the VM runs"),
    Column.SIZE: ("Size", "The server type"),
    Column.STATUS: ("Status", "The VM's state and bootstrap phase, with its progress"),
    Column.UPTIME: ("Uptime", "Time since the VM was created"),
    Column.COST: ("Cost so far", "What the VM has cost since it was created (provider's billing)"),
    Column.PRICE: ("Price/h", "The hourly price of the server type in its region"),
    Column.IDLE_LEFT: ("Idle delete in", "Time left before the VM deletes itself for idleness"),
    Column.LIFETIME_LEFT: ("Lifetime left", "Time left before the hard maximum lifetime"),
    Column.SESSIONS: (
        "Sessions",
        "The agent sessions on the VM and their state: working, needs you, idle, failed",
    ),
}


@dataclass(frozen=True)
class CostFigure:
    """What the cost service says about one workspace.

    Attributes:
        so_far: the running cost since creation.
        currency: the account's currency.
        hourly: the hourly price the cost is based on (when the server carries none).
    """

    so_far: Decimal
    currency: str = "EUR"
    hourly: Decimal | None = None


def workspace_key(ws: Workspace) -> tuple[str, str]:
    """Workspaces are unique per account and name."""
    return (ws.account, ws.name)


_NO_BAR = (Phase.READY, Phase.FAILED, Phase.UNKNOWN, Phase.EXPIRING, Phase.DELETING)


def is_running(ws: Workspace) -> bool:
    return ws.server is not None and ws.server.status is ServerStatus.RUNNING


def is_ready(ws: Workspace) -> bool:
    """Running and bootstrapped: the terminal can be opened."""
    return is_running(ws) and ws.status is not None and ws.status.phase is Phase.READY


def phase_of(ws: Workspace) -> Phase | None:
    return ws.status.phase if ws.status is not None else None


def status_text(ws: Workspace, now: datetime | None = None) -> str:
    """``ready · agent waiting``, ``building (45%)``, ``starting``, ``creating``…, and
    ``· deleting in 4 minutes (idle)`` when the VM is about to delete itself for idleness."""
    if ws.server is None:
        return "creating"
    if ws.unrecorded:  # Bivy's labels, no record here: no pinned key, delete is all it allows
        return f"{ws.server.status.value} · unrecorded (delete only)"
    if ws.server.status is not ServerStatus.RUNNING:
        return ws.server.status.value
    if ws.status is None or ws.status.phase is Phase.UNKNOWN:
        return "running · booting"
    text = ws.status.phase.value
    agent = ws.agent.state if ws.agent is not None else AgentState.UNKNOWN
    warning = idle_warning_text(ws, now or utcnow())
    if ws.status.phase is Phase.READY and ws.sessions:
        summary = sessions_summary(ws.sessions)
        if warning is None or summary not in ("agent idle", "agents idle"):
            text = f"{text} · {summary}"  # an idle delete coming says more than "idle"
    elif ws.status.phase is Phase.READY and agent is not AgentState.UNKNOWN:
        text = f"{text} · {_AGENT_LABELS[agent]}"
    return text if warning is None else f"{text} · {warning}"


_AGENT_LABELS = {
    AgentState.WORKING: "agent working",
    AgentState.WAITING: "agent waiting for you",
    AgentState.IDLE: "agent idle",
}


def sessions_of(ws: Workspace) -> list[SessionReport]:
    """The workspace's sessions as the VM lists them; a VM that lists none but reports its
    agent (a workspace from before sessions) shows that agent as its one session, ``main``."""
    if ws.sessions:
        return list(ws.sessions)
    if ws.agent is not None and is_ready(ws) and ws.agent.state is not AgentState.UNKNOWN:
        return [
            SessionReport(
                name="main",
                state=ws.agent.state,
                event=ws.agent.event,
                message=ws.agent.message,
                updated_at=ws.agent.updated_at,
            )
        ]
    return []


def session_line(session: SessionReport) -> str:
    """``review (codex, bivy/review): needs you — Allow Bash?`` for tooltips and text."""
    facts = ", ".join(x for x in (session.agent, session.branch) if x)
    line = f"{session.name} ({facts})" if facts else session.name
    line += f": {session_state(session).value}"
    return f"{line} — {session.message}" if session.message else line


def sessions_text(ws: Workspace) -> str:
    """``main: working · review: needs you`` (the sessions cell as text)."""
    return " · ".join(f"{s.name}: {session_state(s).value}" for s in sessions_of(ws))


def sessions_summary(sessions: Sequence[SessionReport]) -> str:
    """``review needs you``, ``2 sessions need you``, ``1 agent working``, ``agents idle``."""
    by_state: dict[SessionState, list[str]] = {}
    for x in sessions:
        by_state.setdefault(session_state(x), []).append(x.name)
    waiting = by_state.get(SessionState.WAITING, [])
    working = by_state.get(SessionState.WORKING, [])
    failed = by_state.get(SessionState.FAILED, [])
    if len(waiting) == 1:
        return f"{waiting[0]} needs you"
    if waiting:
        return f"{len(waiting)} sessions need you"
    if working:
        return f"{len(working)} agent{'' if len(working) == 1 else 's'} working"
    if failed:
        return f"{len(failed)} session{'' if len(failed) == 1 else 's'} failed"
    return "agent idle" if len(sessions) == 1 else "agents idle"


def progress_of(ws: Workspace) -> float | None:
    """The bootstrap progress to draw as a bar, or None when no bar belongs there."""
    if ws.server is None:
        return 0.0
    if ws.status is None:
        booting = ws.server.status in (ServerStatus.INITIALIZING, ServerStatus.STARTING)
        return 0.02 if booting else None
    if ws.status.phase in _NO_BAR:
        return None
    return max(0.0, min(1.0, ws.status.progress))


def idle_deadline(ws: Workspace) -> datetime | None:
    return ws.status.idle_deadline if ws.status is not None else None


#: How close an idle delete must be for the window and the tray to warn about it.
IDLE_WARNING = timedelta(minutes=5)
#: After its idle deadline a VM runs its final backup (bounded to 30 min on the VM) and looks
#: for activity once more before it deletes itself: a keep-alive still saves it meanwhile.
FINAL_BACKUP_GRACE = timedelta(minutes=30)


def idle_warning_left(ws: Workspace, now: datetime) -> timedelta | None:
    """Time left before ``ws`` deletes itself for idleness when that is close enough to warn
    about (at most ``IDLE_WARNING``; zero while its final backup runs), else None.

    Nothing to warn about for a VM that is not running, already deleting, or kept alive by
    this app since the VM last reported (its next report clears the deadline).
    """
    if ws.server is None or ws.unrecorded or ws.server.status is not ServerStatus.RUNNING:
        return None
    if ws.status is None or ws.status.phase is Phase.DELETING:
        return None
    deadline = ws.status.idle_deadline
    if deadline is None or (ws.keep_alive_until is not None and ws.keep_alive_until > now):
        return None
    left = deadline - now
    if left > IDLE_WARNING or left <= -FINAL_BACKUP_GRACE:
        return None
    return max(left, timedelta(0))


def idle_minutes(left: timedelta) -> int:
    """Whole minutes to announce, rounded up: "in 1 minute" until the very end."""
    return max(1, math.ceil(left.total_seconds() / 60))


def idle_warning_text(ws: Workspace, now: datetime) -> str | None:
    """``deleting in 4 minutes (idle)``, ``deleting now (idle)``, or None (see above)."""
    left = idle_warning_left(ws, now)
    if left is None:
        return None
    if left <= timedelta(0):
        return "deleting now (idle)"
    minutes = idle_minutes(left)
    return f"deleting in {minutes} minute{'' if minutes == 1 else 's'} (idle)"


def lifetime_deadline(ws: Workspace) -> datetime | None:
    if ws.status is not None and ws.status.lifetime_deadline is not None:
        return ws.status.lifetime_deadline
    return ws.lifetime_deadline


class WorkspaceTableModel(QAbstractTableModel):
    """The workspaces of every account, one row each, updated in place on refresh.

    Rows are keyed by (account, name), so a refresh keeps the selection and only changed rows
    repaint. Time-dependent cells (uptime, cost, countdowns) are computed when painted, with
    ``now`` (injectable so countdowns can be tested).

    Signals:
        costsChanged: new cost figures arrived (views repaint their visible cells).
    """

    costsChanged = Signal()

    def __init__(self, parent: Any = None, *, now: Callable[[], datetime] = utcnow) -> None:
        super().__init__(parent)
        self._rows: list[Workspace] = []
        self._index: dict[tuple[str, str], int] = {}
        self._costs: dict[tuple[str, str], CostFigure] = {}
        self._now = now
        self._sort_column = Column.NAME
        self._sort_order = Qt.SortOrder.AscendingOrder

    # -- Qt model interface ---------------------------------------------------------------

    def rowCount(self, parent: AnyIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent: AnyIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else _COLUMN_COUNT

    def headerData(
        self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole
    ) -> Any:
        if orientation is not Qt.Orientation.Horizontal or section >= len(Column):
            return None
        title, tip = HEADERS[Column(section)]
        if role == Qt.ItemDataRole.DisplayRole:
            return title
        if role == Qt.ItemDataRole.ToolTipRole:
            return tip
        return None

    def data(self, index: AnyIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or index.row() >= len(self._rows):
            return None
        ws = self._rows[index.row()]
        column = _COLUMNS[index.column()]
        if role == Qt.ItemDataRole.DisplayRole:
            return self._display(ws, column)
        if role == SortRole:
            return self._sort_key(ws, column)
        if role == WorkspaceRole:
            return ws
        if role == ProgressRole and column is Column.STATUS:
            return progress_of(ws)
        if role == SessionsRole and column is Column.SESSIONS:
            return [(x.name, session_state(x), session_line(x)) for x in sessions_of(ws)]
        if role == Qt.ItemDataRole.ToolTipRole:
            return self._tooltip(ws, column)
        if role == Qt.ItemDataRole.ForegroundRole and column is Column.STATUS:
            return _status_colour(ws, self._now())
        if role == Qt.ItemDataRole.TextAlignmentRole and column in (
            Column.UPTIME,
            Column.COST,
            Column.PRICE,
            Column.IDLE_LEFT,
            Column.LIFETIME_LEFT,
        ):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    def sort(self, column: int, order: Qt.SortOrder = Qt.SortOrder.AscendingOrder) -> None:
        """Sort the rows (the view calls this when a header is clicked).

        Sorting here rather than in a QSortFilterProxyModel computes each row's key once;
        the proxy compared through ``data()`` n·log n times, which stalled the window with
        hundreds of rows. Persistent indexes (the selection) follow their rows.
        """
        if not 0 <= column < _COLUMN_COUNT:
            return
        self._sort_column = _COLUMNS[column]
        self._sort_order = order
        self.layoutAboutToBeChanged.emit()
        old = self.persistentIndexList()
        keys = [(workspace_key(self._rows[i.row()]), i.column()) for i in old]
        key_of = self._sort_key
        decorated = [(key_of(ws, self._sort_column), i) for i, ws in enumerate(self._rows)]
        decorated.sort(reverse=order is Qt.SortOrder.DescendingOrder)
        self._rows = [self._rows[i] for _, i in decorated]
        self._reindex()
        self.changePersistentIndexList(
            old, [self.index(self._index[key], column) for key, column in keys]
        )
        self.layoutChanged.emit()

    def resort(self) -> None:
        """Apply the current sort again (after rows were added or changed)."""
        self.sort(self._sort_column, self._sort_order)

    # -- updates --------------------------------------------------------------------------

    def set_workspaces(self, workspaces: Iterable[Workspace]) -> None:
        """Replace the rows: changed ones update in place, new ones append, gone ones go."""
        incoming = {workspace_key(ws): ws for ws in workspaces}
        gone = [i for i, ws in enumerate(self._rows) if workspace_key(ws) not in incoming]
        for row in reversed(gone):
            self.beginRemoveRows(QModelIndex(), row, row)
            del self._rows[row]
            self.endRemoveRows()
        self._reindex()
        changed: list[int] = []
        for key, ws in incoming.items():
            at = self._index.get(key)
            # Identity, not equality: comparing hundreds of nested models costs more than
            # repainting the visible rows, which is all a dataChanged does.
            if at is not None and self._rows[at] is not ws:
                self._rows[at] = ws
                changed.append(at)
        new = [ws for key, ws in incoming.items() if key not in self._index]
        if new:
            first = len(self._rows)
            self.beginInsertRows(QModelIndex(), first, first + len(new) - 1)
            self._rows.extend(new)
            self.endInsertRows()
            self._reindex()
        if changed:
            self.dataChanged.emit(
                self.index(min(changed), 0), self.index(max(changed), _COLUMN_COUNT - 1)
            )

    def upsert(self, ws: Workspace) -> None:
        """Add or update one workspace (a create in progress, a status read)."""
        row = self._index.get(workspace_key(ws))
        if row is None:
            self.set_workspaces([*self._rows, ws])
            return
        self._rows[row] = ws
        self.dataChanged.emit(self.index(row, 0), self.index(row, len(Column) - 1))

    def remove(self, account: str, name: str) -> None:
        row = self._index.get((account, name))
        if row is None:
            return
        self.beginRemoveRows(QModelIndex(), row, row)
        del self._rows[row]
        self.endRemoveRows()
        self._reindex()

    def set_costs(self, costs: Mapping[tuple[str, str], CostFigure]) -> None:
        """New cost figures; views repaint on ``costsChanged`` (no per-row dataChanged: with
        hundreds of rows that made the sorting proxy re-sort everything on every update)."""
        self._costs = dict(costs)
        self.costsChanged.emit()

    def workspaces(self) -> Sequence[Workspace]:
        return tuple(self._rows)

    def workspace_at(self, row: int) -> Workspace | None:
        return self._rows[row] if 0 <= row < len(self._rows) else None

    def row_of(self, account: str, name: str) -> int | None:
        return self._index.get((account, name))

    def _reindex(self) -> None:
        self._index = {workspace_key(ws): i for i, ws in enumerate(self._rows)}

    # -- cell contents --------------------------------------------------------------------

    def _display(self, ws: Workspace, column: Column) -> str:
        now = self._now()
        server = ws.server
        price = server.price if server is not None else None
        match column:
            case Column.NAME:
                return ws.name
            case Column.REPO:
                return _short_repo(ws.repo_url)
            case Column.PROVIDER:
                return ws.account if ws.account == ws.provider else f"{ws.account} ({ws.provider})"
            case Column.REGION:
                return server.region if server else "–"
            case Column.SIZE:
                return server.size if server else "–"
            case Column.STATUS:
                return status_text(ws, now)
            case Column.UPTIME:
                return formatting.since(server.created_at if server else None, now)
            case Column.COST:
                cost = self._costs.get(workspace_key(ws))
                return formatting.money(cost.so_far, cost.currency) if cost else "–"
            case Column.PRICE:
                if price is not None:
                    return formatting.hourly(price.hourly, price.currency)
                cost = self._costs.get(workspace_key(ws))
                return formatting.hourly(cost.hourly, cost.currency) if cost else "–"
            case Column.IDLE_LEFT:
                if ws.keep_alive_until is not None and ws.keep_alive_until > now:
                    return f"kept alive {formatting.until(ws.keep_alive_until, now)}"
                return formatting.until(idle_deadline(ws), now)
            case Column.LIFETIME_LEFT:
                return formatting.until(lifetime_deadline(ws), now)
            case Column.SESSIONS:
                return sessions_text(ws) or ("–" if not is_ready(ws) else "no sessions yet")
        return ""  # pragma: no cover - every column is matched above

    def _sort_key(self, ws: Workspace, column: Column) -> Any:
        now = self._now()
        far = now + timedelta(days=3650)
        match column:
            case Column.UPTIME:
                created = ws.server.created_at if ws.server else None
                return (now - created).total_seconds() if created else -1.0
            case Column.COST:
                cost = self._costs.get(workspace_key(ws))
                return float(cost.so_far) if cost else -1.0
            case Column.PRICE:
                price = ws.server.price if ws.server else None
                cost = self._costs.get(workspace_key(ws))
                hourly = price.hourly if price else (cost.hourly if cost else None)
                return float(hourly) if hourly is not None else -1.0
            case Column.IDLE_LEFT:
                return (idle_deadline(ws) or far).timestamp()
            case Column.LIFETIME_LEFT:
                return (lifetime_deadline(ws) or far).timestamp()
        return self._display(ws, column).lower()

    def _tooltip(self, ws: Workspace, column: Column) -> str | None:
        if column is Column.REPO:
            return ws.repo_url or None
        if column is Column.STATUS:
            parts = [status_text(ws, self._now())]
            if ws.status is not None:
                if ws.status.detail:
                    parts.append(ws.status.detail)
                if ws.status.error:
                    parts.append(f"Error: {ws.status.error}")
                if ws.status.backup_error:
                    parts.append(f"Backup failed: {ws.status.backup_error}")
            if ws.agent is not None and ws.agent.message:
                parts.append(f"Agent: {ws.agent.message}")
            return "\n".join(parts)
        if column is Column.SESSIONS:
            lines = [session_line(x) for x in sessions_of(ws)]
            return "\n".join(lines) if lines else "No agent session reported yet"
        if column is Column.IDLE_LEFT:
            return f"Deletes itself after {ws.idle_minutes} min without agent or user activity"
        if column is Column.LIFETIME_LEFT:
            return f"Deleted at the latest {ws.max_hours} h after creation, whatever happens"
        return None


def _status_colour(ws: Workspace, now: datetime) -> QColor | None:
    """Red for failures, amber when an agent waits for the user or the VM is about to delete
    itself for idleness (each in its light- or dark-theme variant); else the palette's."""
    if ws.status is not None and ws.status.phase is Phase.FAILED:
        return tone("error")
    if ws.agent is not None and ws.agent.state is AgentState.WAITING:
        return tone("warning")
    if any(session_state(x) is SessionState.WAITING for x in ws.sessions):
        return tone("warning")
    if idle_warning_left(ws, now) is not None:
        return tone("warning")
    return None


def _short_repo(url: str) -> str:
    """``github.com/owner/repo`` for ``https://github.com/owner/repo.git``."""
    text = url.strip()
    for prefix in ("https://", "http://", "ssh://"):
        if text.startswith(prefix):
            text = text[len(prefix) :]
    if text.startswith("git@"):
        text = text[4:].replace(":", "/", 1)
    return text.removesuffix(".git") or "–"
