"""The main window: the workspace table with each workspace's sessions, its actions, a detail
pane, the terminal tabs (one per session) and the cost status bar.

The panes (first run, empty list, details, the "needs you" bar) are in ``app/ui/panes.py``."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from pathlib import Path

from PySide6.QtCore import QByteArray, QEvent, QModelIndex, QPoint, QSize, Qt, Signal
from PySide6.QtGui import QAction, QCloseEvent, QIcon, QKeySequence
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHeaderView,
    QLabel,
    QMainWindow,
    QMenu,
    QSplitter,
    QStackedWidget,
    QTableView,
    QToolBar,
    QVBoxLayout,
    QWidget,
)

from app.domain import Phase, Workspace, utcnow
from app.paths import resource_path
from app.ui import formatting
from app.ui.delegates import ProgressDelegate, SessionsDelegate
from app.ui.icons import refresh_icons
from app.ui.models import (
    Column,
    WorkspaceRole,
    WorkspaceTableModel,
    is_ready,
    is_running,
)
from app.ui.panes import DetailPane, EmptyState, NoticeBar, PhaseEntry
from app.ui.tabs import TerminalTabs
from app.ui.theme import tone
from app.ui.window_actions import add_actions as _add_actions
from app.ui.window_actions import ask_delete as _ask
from app.ui.window_actions import list_only, make_action

__all__ = ["COLUMN_WIDTHS", "DetailPane", "EmptyState", "MainWindow", "PhaseEntry"]

#: Default column widths (px) chosen so a typical row reads without eliding.
COLUMN_WIDTHS = {
    Column.NAME: 110,
    Column.SESSIONS: 260,
    Column.REPO: 180,
    Column.PROVIDER: 80,
    Column.REGION: 55,
    Column.SIZE: 55,
    Column.STATUS: 240,
    Column.UPTIME: 80,
    Column.COST: 85,
    Column.PRICE: 75,
    Column.IDLE_LEFT: 105,
    Column.LIFETIME_LEFT: 100,
}


class MainWindow(QMainWindow):
    """The workspace list across every account.

    Signals:
        newRequested, settingsRequested, refreshRequested: toolbar actions without a target.
        openSessionRequested(ws, session): open that session's terminal tab (a row's double
        click and Open terminal open the selected session, else ``main``).
        newSessionRequested(ws): "New session…" on the selected workspace.
        openBrowserRequested(ws), copySshRequested(ws),
        keepAliveRequested(ws), backupRequested(ws), deleteRequested(ws): actions on the selection
        (delete is emitted only after the user confirmed).
        closing: the user closed the window (the app runs its one shutdown path).
    Attributes:
        model: the table model (it sorts itself); table: the view.
    """

    newRequested = Signal()
    settingsRequested = Signal()
    refreshRequested = Signal()
    openSessionRequested = Signal(object, str)
    newSessionRequested = Signal(object)
    openBrowserRequested = Signal(object)
    copySshRequested = Signal(object)
    keepAliveRequested = Signal(object)
    backupRequested = Signal(object)
    deleteRequested = Signal(object)
    closing = Signal()

    def __init__(
        self,
        parent: QWidget | None = None,
        *,
        now: Callable[[], datetime] = utcnow,
        confirm: Callable[[QWidget, str, str], bool] | None = None,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Bivy")
        self.setWindowIcon(QIcon(str(resource_path("icons", "bivy.svg"))))
        self.resize(1280, 720)
        self.confirm = confirm or _ask
        self._history: dict[tuple[str, str], list[PhaseEntry]] = {}
        self._now = now
        self.model = WorkspaceTableModel(self, now=now)
        self.extra_context_actions: list[QAction] = []  # other modules' row actions
        self._build_actions()
        self._build_central()
        self._build_status_bar()
        self.model.rowsInserted.connect(self._update_empty_state)
        self.model.rowsRemoved.connect(self._update_empty_state)
        self.model.modelReset.connect(self._update_empty_state)
        self.model.dataChanged.connect(self._selection_changed)
        self.model.costsChanged.connect(self.tick)
        self._has_accounts = False
        self._update_empty_state()
        self._selection_changed()
        self.retint()

    # -- construction ---------------------------------------------------------------------

    def _action(
        self,
        text: str,
        tip: str,
        shortcut: QKeySequence | QKeySequence.StandardKey | str | None = None,
        icon: str = "",
    ) -> QAction:
        return make_action(self, text, tip, shortcut, icon)  # icons tinted by retint()

    def _build_actions(self) -> None:
        self.act_new = self._action(
            "New workspace…",
            "Create a workspace from a git repository",
            QKeySequence.StandardKey.New,
            "new-workspace",
        )
        self.act_new_session = self._action(
            "New session…",
            "Start another agent session on the selected workspace, on its own branch",
            "Ctrl+Shift+N",
            "new-session",
        )
        self.act_terminal = self._action(
            "Open terminal", "Open the selected session's terminal in a tab", "Ctrl+T", "terminal"
        )
        self.act_browser = self._action(
            "Open in browser",
            "Open the agent's terminal in the system browser",
            "Ctrl+B",
            "browser",
        )
        self.act_copy_ssh = self._action(
            "Copy SSH command", "Copy “ssh bivy-<name>” to the clipboard", "Ctrl+Shift+C", "copy"
        )
        self.act_keep_alive = self._action(
            "Keep alive 1 h",
            "Keep the VM from deleting itself for idleness for one hour",
            "Ctrl+K",
            "keep-alive",
        )
        self.act_backup = self._action(
            "Back up now", "Back up the agents' history and uncommitted work now", None, "backup"
        )
        self.act_delete = self._action(
            "Delete…",
            "Delete the VM (its backups are kept)",
            QKeySequence.StandardKey.Delete,
            "delete",
        )
        self.act_refresh = self._action(
            "Refresh",
            "Refresh the list from every account",
            QKeySequence.StandardKey.Refresh,
            "refresh",
        )
        self.act_settings = self._action(
            "Settings…", "Accounts, credentials, SSH key, defaults and budget", "Ctrl+,", "settings"
        )
        self.act_quit = self._action(
            "Quit", "Quit Bivy (workspaces keep running)", "Ctrl+Q", "quit"
        )
        self.act_next_tab = self._action("Next tab", "Show the next tab", "Ctrl+PgDown", "next-tab")
        self.act_next_tab.setShortcuts([QKeySequence("Ctrl+PgDown"), QKeySequence("Ctrl+Tab")])
        self.act_previous_tab = self._action(
            "Previous tab", "Show the previous tab", "Ctrl+PgUp", "previous-tab"
        )
        self.act_previous_tab.setShortcuts(
            [QKeySequence("Ctrl+PgUp"), QKeySequence("Ctrl+Shift+Tab")]
        )
        self.act_next_tab.triggered.connect(lambda: self.tabs.step(1))
        self.act_previous_tab.triggered.connect(lambda: self.tabs.step(-1))
        self.act_new.triggered.connect(self.newRequested)
        self.act_new_session.triggered.connect(self._new_session)
        self.act_settings.triggered.connect(self.settingsRequested)
        self.act_refresh.triggered.connect(self.refreshRequested)
        self.act_quit.triggered.connect(self.close)
        self.act_terminal.triggered.connect(lambda: self.open_session())
        for action, signal in (
            (self.act_browser, self.openBrowserRequested),
            (self.act_copy_ssh, self.copySshRequested),
            (self.act_keep_alive, self.keepAliveRequested),
            (self.act_backup, self.backupRequested),
        ):
            action.triggered.connect(lambda _=False, s=signal: self._emit_for_selection(s))
        self.act_delete.triggered.connect(self._confirm_delete)

        toolbar = QToolBar("Workspace actions", self)
        toolbar.setObjectName("actions")
        toolbar.setMovable(False)
        toolbar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        toolbar.setIconSize(QSize(18, 18))
        actions: tuple[QAction | None, ...] = (
            self.act_new,
            self.act_new_session,
            None,
            self.act_terminal,
            self.act_browser,
            self.act_copy_ssh,
            self.act_keep_alive,
            self.act_backup,
            None,
            self.act_delete,
            None,
            self.act_refresh,
            self.act_settings,
        )
        _add_actions(toolbar, actions)
        self.addToolBar(toolbar)
        self.toolbar = toolbar
        for action in (self.act_quit, self.act_next_tab, self.act_previous_tab):
            self.addAction(action)

    def _build_central(self) -> None:
        self.table = QTableView()
        self.table.setModel(self.model)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(Column.NAME, Qt.SortOrder.AscendingOrder)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setAlternatingRowColors(True)
        self.table.setWordWrap(False)
        self.table.verticalHeader().hide()
        self.table.verticalHeader().setDefaultSectionSize(26)
        self.table.setItemDelegateForColumn(Column.STATUS, ProgressDelegate(self.table))
        self.table.setItemDelegateForColumn(Column.SESSIONS, SessionsDelegate(self.table))
        header = self.table.horizontalHeader()
        header.setHighlightSections(False)
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        for column, width in COLUMN_WIDTHS.items():
            header.resizeSection(column, width)
        # The sessions at a glance, right after the name (a column added last keeps the other
        # columns' numbers).
        header.moveSection(header.visualIndex(Column.SESSIONS), Column.NAME + 1)
        header.setStretchLastSection(True)
        self.table.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.table.customContextMenuRequested.connect(self._context_menu)
        self.table.doubleClicked.connect(self._double_clicked)
        self.table.selectionModel().selectionChanged.connect(self._selection_changed)

        self.detail = DetailPane()
        self.detail.openSessionRequested.connect(lambda name: self.open_session(name))
        self.detail.newSessionRequested.connect(self._new_session)
        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.addWidget(self.table)
        splitter.addWidget(self.detail)
        splitter.setStretchFactor(0, 3)
        splitter.setStretchFactor(1, 2)
        splitter.setSizes([300, 380])
        self.splitter = splitter

        self.empty = EmptyState()
        self.empty.addAccount.connect(self.settingsRequested)
        self.empty.createWorkspace.connect(self.newRequested)
        self.stack = QStackedWidget()
        self.stack.addWidget(self.empty)
        self.stack.addWidget(splitter)
        # A terminal tab keeps its keys: these shortcuts act only in the list tab.
        list_only(
            (self.act_new, self.act_terminal, self.act_browser, self.act_copy_ssh),
            self.stack,
        )
        list_only((self.act_keep_alive, self.act_delete, self.act_refresh), self.stack)
        # Terminals open as tabs beside the list; the list tab itself cannot be closed.
        self.tabs = TerminalTabs(self.stack, "Workspaces")
        self.tabs.tabCloseRequested.connect(self.close_tab)
        self.notice_bar = NoticeBar()
        self.notice_bar.openRequested.connect(self._notice_open)
        central = QWidget()
        stacked = QVBoxLayout(central)
        stacked.setContentsMargins(0, 0, 0, 0)
        stacked.setSpacing(0)
        stacked.addWidget(self.notice_bar)
        stacked.addWidget(self.tabs, 1)
        self.setCentralWidget(central)

    def _build_status_bar(self) -> None:
        bar = self.statusBar()
        self.rate_label = QLabel("Now: –")
        self.rate_label.setToolTip("What the running workspaces cost per hour, all accounts")
        self.month_label = QLabel("This month: –")
        self.month_label.setToolTip("Spend this month, deleted workspaces included (local ledger)")
        self.budget_label = QLabel()
        self.budget_label.hide()
        self.unaccounted_label = QLabel()
        self.unaccounted_label.hide()
        self.refresh_label = QLabel()
        self.refresh_label.setToolTip("When the list was last refreshed from the providers")
        for widget in (
            self.unaccounted_label,
            self.budget_label,
            self.rate_label,
            self.month_label,
            self.refresh_label,
        ):
            bar.addPermanentWidget(widget)

    # -- state from the app ---------------------------------------------------------------

    def set_has_accounts(self, has_accounts: bool) -> None:
        self._has_accounts = has_accounts
        self.empty.set_has_accounts(has_accounts)
        self._update_empty_state()

    def set_workspaces(self, workspaces: list[Workspace]) -> None:
        for ws in workspaces:
            self.record_phase(ws)
        self.model.set_workspaces(workspaces)
        self._resort()
        self._selection_changed()
        self.tabs.follow_states(workspaces)
        self.notice_bar.follow(workspaces)

    def upsert_workspace(self, ws: Workspace) -> None:
        self.record_phase(ws)
        self.model.upsert(ws)
        self._resort()
        self._selection_changed()
        self.tabs.follow_states(self.model.workspaces())
        self.notice_bar.follow(self.model.workspaces())

    def tick(self) -> None:
        """Repaint the visible time-dependent cells (uptime, cost, countdowns)."""
        self.table.viewport().update()
        self.detail.show_header(self._now())

    def _resort(self) -> None:
        # Sorted once per refresh, not on every cell change (see WorkspaceTableModel.sort).
        self.model.resort()

    def record_phase(self, ws: Workspace, detail: str | None = None) -> None:
        """Append the workspace's phase to its history when it changed."""
        if ws.status is None or ws.status.phase is Phase.UNKNOWN:
            return
        self.add_history(ws.account, ws.name, ws.status.phase.value, detail or ws.status.detail)

    def add_history(self, account: str, name: str, phase: str, detail: str) -> None:
        entries = self._history.setdefault((account, name), [])
        if not entries or entries[-1].phase != phase:
            entries.append(PhaseEntry(self._now(), phase, detail))

    def history(self, account: str, name: str) -> list[PhaseEntry]:
        return list(self._history.get((account, name), []))

    def set_costs_summary(
        self,
        *,
        per_hour: Decimal | None,
        month_to_date: Decimal | None,
        currency: str,
        budget_warning: str | None,
    ) -> None:
        self.rate_label.setText(f"Now: {formatting.hourly(per_hour, currency)}/h")
        self.month_label.setText(f"This month: {formatting.money(month_to_date, currency)}")
        self.budget_label.setVisible(bool(budget_warning))
        self.budget_label.setText(budget_warning or "")
        self.budget_label.setToolTip(budget_warning or "")

    def set_refreshed(self, at: datetime | None, errors: dict[str, str]) -> None:
        text = f"Updated {at.astimezone().strftime('%H:%M:%S')}" if at else ""
        if errors:
            text += f" · {len(errors)} account(s) failed"
            self.refresh_label.setToolTip(
                "\n".join(f"{account}: {message}" for account, message in errors.items())
            )
        else:
            self.refresh_label.setToolTip("When the list was last refreshed from the providers")
        self.refresh_label.setText(text)

    def save_state(self, path: Path) -> None:
        """Window geometry, column widths/sort and the splitter, in ``path`` (window.json)."""
        state = {
            "geometry": bytes(self.saveGeometry().toBase64().data()).decode(),
            "header": bytes(self.table.horizontalHeader().saveState().toBase64().data()).decode(),
            "splitter": bytes(self.splitter.saveState().toBase64().data()).decode(),
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state), encoding="utf-8")
        tmp.replace(path)

    def restore_state(self, path: Path) -> bool:
        """Restore what ``save_state`` wrote; a missing or broken file keeps the defaults."""
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
            geometry, header, splitter = state["geometry"], state["header"], state["splitter"]
        except (OSError, ValueError, KeyError, TypeError):
            return False
        self.restoreGeometry(QByteArray.fromBase64(geometry.encode()))
        self.table.horizontalHeader().restoreState(QByteArray.fromBase64(header.encode()))
        self.splitter.restoreState(QByteArray.fromBase64(splitter.encode()))
        header_view = self.table.horizontalHeader()
        self.model.sort(header_view.sortIndicatorSection(), header_view.sortIndicatorOrder())
        return True

    def add_tab(self, widget: QWidget, title: str) -> int:
        """Show ``widget`` (a terminal) in a new closable tab and switch to it."""
        index = self.tabs.add(widget, title)
        self.tabs.follow_states(self.model.workspaces())
        return index

    def tab_for(self, name: str, session: str = "main") -> QWidget | None:
        """The open terminal tab of ``session`` of workspace ``name`` (None when not open)."""
        return self.tabs.session_tab(name, session)

    def show_session_notice(self, account: str, workspace: str, session: str, text: str) -> None:
        """The "needs you" bar above the tabs; its button opens that session's tab."""
        self.notice_bar.show_notice(account, workspace, session, text)

    def open_session(self, session: str | None = None) -> None:
        """Open a session's terminal of the selected workspace: ``session``, else the one
        selected in the details, else ``main``."""
        ws = self.selected()
        if ws is None or not is_ready(ws) or ws.unrecorded:
            return
        self.openSessionRequested.emit(ws, session or self.detail.sessions.current() or "main")

    def _new_session(self) -> None:
        ws = self.selected()
        if ws is not None and is_ready(ws) and not ws.unrecorded:
            self.newSessionRequested.emit(ws)

    def _notice_open(self, account: str, workspace: str, session: str) -> None:
        for ws in self.model.workspaces():
            if ws.name == workspace and account in ("", ws.account):
                self.openSessionRequested.emit(ws, session)
                return

    def retint(self) -> None:
        """Icons and status colours for the current palette (light or dark theme)."""
        refresh_icons(self)
        self.empty.retint()
        self.detail.retint()
        self.budget_label.setStyleSheet(
            f"color: {tone('error', self.palette()).name()}; font-weight: bold;"
        )
        self.unaccounted_label.setStyleSheet(f"color: {tone('warning', self.palette()).name()};")
        self._selection_changed()
        self.tabs.follow_states(self.model.workspaces())
        self.table.viewport().update()

    def changeEvent(self, event: QEvent) -> None:
        super().changeEvent(event)
        if hasattr(self, "notice_bar") and event.type() in (
            QEvent.Type.PaletteChange,
            QEvent.Type.ApplicationPaletteChange,
        ):
            self.retint()

    def close_tab(self, index: int) -> None:
        """Close a terminal tab: the browser side goes, the agent keeps running in tmux."""
        if index <= 0:
            return
        widget = self.tabs.widget(index)
        if widget is None:
            return
        closer = getattr(widget, "close_terminal", None)
        if closer is not None:
            closer()
        self.tabs.removeTab(index)
        widget.deleteLater()

    def set_unaccounted(self, lines: list[str]) -> None:
        """Bivy VMs at the provider that this install has no record of (shown, never hidden)."""
        self.unaccounted_label.setVisible(bool(lines))
        self.unaccounted_label.setText(f"{len(lines)} VM(s) not created here" if lines else "")
        self.unaccounted_label.setToolTip(
            "Labelled managed-by=bivy but unknown to this computer (another install, or a lost "
            "record). They still cost money; delete them if you do not need them.\n"
            + "\n".join(lines)
        )

    def show_error(self, message: str, hint: str = "") -> None:
        """A non-blocking error in the status bar (dialogs are for user-initiated actions)."""
        text = message if not hint else f"{message} — {hint}"
        self.statusBar().showMessage(text, 15000)

    # -- selection and actions ------------------------------------------------------------

    def selected(self) -> Workspace | None:
        rows = self.table.selectionModel().selectedRows()
        if not rows:
            return None
        ws = rows[0].data(WorkspaceRole)
        return ws if isinstance(ws, Workspace) else None

    def select(self, account: str, name: str) -> None:
        row = self.model.row_of(account, name)
        if row is None:
            return
        self.table.selectRow(row)

    def _emit_for_selection(self, signal: Signal) -> None:
        ws = self.selected()
        if ws is not None:
            signal.emit(ws)  # type: ignore[attr-defined]

    def _confirm_delete(self) -> None:
        ws = self.selected()
        if ws is None:
            return
        if self.confirm(
            self,
            f"Delete workspace {ws.name}?",
            f"The VM of {ws.name} is deleted now; anything not pushed or backed up on it is "
            "lost. Its backups are kept.",
        ):
            self.deleteRequested.emit(ws)

    def _selection_changed(self, *_: object) -> None:
        ws = self.selected()
        running, ready = (is_running(ws), is_ready(ws)) if ws else (False, False)
        if ws is not None and ws.unrecorded:  # no record, no pinned key: delete is all it allows
            running = ready = False
        for action in (self.act_terminal, self.act_browser, self.act_backup):
            action.setEnabled(ready)
        self.act_new_session.setEnabled(ready)
        self.act_copy_ssh.setEnabled(running)
        self.act_keep_alive.setEnabled(running)
        self.act_delete.setEnabled(ws is not None and ws.server is not None)
        key = (ws.account, ws.name) if ws else None
        self.detail.show_workspace(ws, self._history.get(key, []) if key else [], self._now())

    def _update_empty_state(self, *_: object) -> None:
        self.stack.setCurrentIndex(0 if self.model.rowCount() == 0 else 1)

    def _context_menu(self, pos: QPoint) -> None:
        index = self.table.indexAt(pos)
        if index.isValid():
            self.table.selectRow(index.row())
        menu = QMenu(self)
        entries: tuple[QAction | None, ...] = (
            self.act_terminal,
            self.act_new_session,
            self.act_browser,
            self.act_copy_ssh,
            self.act_keep_alive,
            self.act_backup,
            None,
            self.act_delete,
            None,
            self.act_new,
            self.act_refresh,
        )
        if self.extra_context_actions:  # e.g. "Prebuild this repository…" (prebuild_actions.py)
            entries = (*entries, None, *self.extra_context_actions)
        _add_actions(menu, entries)
        menu.popup(self.table.viewport().mapToGlobal(pos))

    def _double_clicked(self, index: QModelIndex) -> None:
        if self.act_terminal.isEnabled():
            self.act_terminal.trigger()

    def closeEvent(self, event: QCloseEvent) -> None:
        self.closing.emit()
        event.accept()
