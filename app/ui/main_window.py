"""The main window: the workspace table, its actions, a detail pane and the cost status bar."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path

from PySide6.QtCore import QByteArray, QModelIndex, QPoint, QSize, Qt, Signal
from PySide6.QtGui import QAction, QCloseEvent, QFont, QIcon, QKeySequence
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QListWidget,
    QMainWindow,
    QMenu,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QStackedWidget,
    QTabBar,
    QTableView,
    QTabWidget,
    QToolBar,
    QVBoxLayout,
    QWidget,
)

from app.domain import Phase, Workspace, utcnow
from app.paths import resource_path
from app.ui import formatting
from app.ui.delegates import ProgressDelegate
from app.ui.models import (
    Column,
    WorkspaceRole,
    WorkspaceTableModel,
    is_ready,
    is_running,
    status_text,
)

#: Default column widths (px) chosen so a typical row reads without eliding.
COLUMN_WIDTHS = {
    Column.NAME: 130,
    Column.REPO: 230,
    Column.PROVIDER: 90,
    Column.REGION: 60,
    Column.SIZE: 60,
    Column.STATUS: 210,
    Column.UPTIME: 80,
    Column.COST: 85,
    Column.PRICE: 75,
    Column.IDLE_LEFT: 105,
    Column.LIFETIME_LEFT: 100,
}


@dataclass(frozen=True)
class PhaseEntry:
    """One line of a workspace's phase history."""

    at: datetime
    phase: str
    detail: str


class EmptyState(QWidget):
    """What an empty list shows: the next step, as one big button.

    Signals:
        addAccount: the user wants to add a cloud account.
        createWorkspace: the user wants to create a workspace.
    """

    addAccount = Signal()
    createWorkspace = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.addStretch(2)
        self.title = QLabel()
        font = QFont(self.title.font())
        font.setPointSizeF(font.pointSizeF() * 1.6)
        font.setBold(True)
        self.title.setFont(font)
        self.title.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.text = QLabel()
        self.text.setWordWrap(True)
        self.text.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.text.setFixedWidth(460)
        self.button = QPushButton()
        self.button.setMinimumHeight(36)
        self.button.setDefault(True)
        self.button.clicked.connect(self._clicked)
        # Without a cloud account, the local provider is the one-click way to try Bivy.
        self.local_button = QPushButton("Try it on this computer…")
        self.local_button.setMinimumHeight(36)
        self.local_button.setToolTip(
            "Create a workspace in a VM on this computer (QEMU): no account, no cost"
        )
        self.local_button.clicked.connect(self.createWorkspace)
        layout.addWidget(self.title)
        row = QHBoxLayout()
        row.addStretch()
        row.addWidget(self.text)
        row.addStretch()
        layout.addLayout(row)
        buttons = QHBoxLayout()
        buttons.addStretch()
        buttons.addWidget(self.button)
        buttons.addWidget(self.local_button)
        buttons.addStretch()
        layout.addSpacing(12)
        layout.addLayout(buttons)
        layout.addStretch(3)
        self._has_accounts = False
        self.set_has_accounts(False)

    def set_has_accounts(self, has_accounts: bool) -> None:
        self._has_accounts = has_accounts
        if has_accounts:
            self.title.setText("No workspaces yet")
            self.text.setText(
                "A workspace is a VM on your cloud account with your repository, its "
                "devcontainer and Claude Code. It deletes itself when nobody uses it."
            )
            self.button.setText("Create your first workspace…")
            self.local_button.hide()
        else:
            self.title.setText("Welcome to Bivy")
            self.text.setText(
                "Step 1 of 2: add a cloud account (a Hetzner Cloud API token is enough), or "
                "skip it and run a workspace on this computer (QEMU, no account). "
                "Step 2: create your first workspace from a git repository URL or a folder."
            )
            self.button.setText("Add an account…")
            self.local_button.show()

    def _clicked(self) -> None:
        (self.createWorkspace if self._has_accounts else self.addAccount).emit()


class DetailPane(QWidget):
    """The selected workspace: phase history, log tail, backup and agent state."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 0, 0, 0)
        self.shown: Workspace | None = None
        self.header = QLabel("Select a workspace")
        font = QFont(self.header.font())
        font.setBold(True)
        self.header.setFont(font)
        self.header.setWordWrap(True)
        self.facts = QLabel()
        self.facts.setWordWrap(True)
        self.facts.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.history = QListWidget()
        self.history.setToolTip("Bootstrap phases the VM reported, oldest first")
        self.log = QPlainTextEdit()
        self.log.setReadOnly(True)
        self.log.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        mono = QFont("monospace")
        mono.setStyleHint(QFont.StyleHint.Monospace)
        self.log.setFont(mono)
        self.log.setPlaceholderText("The VM's bootstrap log tail appears here.")
        layout.addWidget(self.header)
        layout.addWidget(self.facts)
        layout.addWidget(QLabel("Phase history"))
        layout.addWidget(self.history, 1)
        layout.addWidget(QLabel("Log tail"))
        layout.addWidget(self.log, 2)

    def show_workspace(
        self, ws: Workspace | None, history: list[PhaseEntry], now: datetime | None = None
    ) -> None:
        self.shown = ws
        if ws is None:
            self.header.setText("Select a workspace")
            self.facts.clear()
            self.history.clear()
            self.log.clear()
            return
        self.show_header(now)
        facts = [ws.repo_url or "(repository unknown)"]
        if ws.server is not None and ws.server.ipv4:
            facts.append(f"IPv4 {ws.server.ipv4} · ssh bivy-{ws.name}")
        if ws.status is not None:
            if ws.status.error:
                facts.append(f"Error: {ws.status.error}")
            backup = formatting.local_time(ws.status.last_backup_at)
            facts.append(f"Last backup: {backup}")
            if ws.status.backup_error:
                facts.append(f"Backup failed: {ws.status.backup_error}")
        if ws.agent is not None and ws.agent.message:
            facts.append(f"Agent: {ws.agent.message}")
        self.facts.setText("\n".join(facts))
        self.history.clear()
        for entry in history:
            text = f"{formatting.local_time(entry.at)}  {entry.phase}"
            if entry.detail:
                text += f" — {entry.detail}"
            self.history.addItem(text)
        tail = ws.status.log_tail if ws.status is not None else None
        if (tail or "") != self.log.toPlainText():
            self.log.setPlainText(tail or "")
            self.log.verticalScrollBar().setValue(self.log.verticalScrollBar().maximum())

    def show_header(self, now: datetime | None = None) -> None:
        """The workspace's name and status, countdowns included (repainted every tick)."""
        if self.shown is not None:
            self.header.setText(f"{self.shown.name} — {status_text(self.shown, now)}")


class MainWindow(QMainWindow):
    """The workspace list across every account.

    Signals:
        newRequested, settingsRequested, refreshRequested: toolbar actions without a target.
        openTerminalRequested(ws), openBrowserRequested(ws), copySshRequested(ws),
        keepAliveRequested(ws), backupRequested(ws), deleteRequested(ws): actions on the selection
        (delete is emitted only after the user confirmed).
        closing: the user closed the window (the app runs its one shutdown path).
    Attributes:
        model: the table model (it sorts itself); table: the view.
    """

    newRequested = Signal()
    settingsRequested = Signal()
    refreshRequested = Signal()
    openTerminalRequested = Signal(object)
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

    # -- construction ---------------------------------------------------------------------

    def _action(
        self,
        text: str,
        tip: str,
        shortcut: QKeySequence | QKeySequence.StandardKey | str | None = None,
        icon: str = "",
    ) -> QAction:
        action = QAction(text, self)
        if icon:
            action.setIcon(QIcon.fromTheme(icon))
        if shortcut is not None:
            action.setShortcut(QKeySequence(shortcut))
            tip = f"{tip} ({action.shortcut().toString(QKeySequence.SequenceFormat.NativeText)})"
        action.setToolTip(tip)
        action.setStatusTip(tip)
        return action

    def _build_actions(self) -> None:
        self.act_new = self._action(
            "New…", "Create a workspace from a git repository", QKeySequence.StandardKey.New
        )
        self.act_terminal = self._action(
            "Open terminal", "Open the agent's terminal in a tab", "Ctrl+T"
        )
        self.act_browser = self._action(
            "Open in browser", "Open the agent's terminal in the system browser", "Ctrl+B"
        )
        self.act_copy_ssh = self._action(
            "Copy SSH command", "Copy `ssh bivy-<name>` to the clipboard", "Ctrl+Shift+C"
        )
        self.act_keep_alive = self._action(
            "Keep alive 1 h", "Keep the VM from deleting itself for idleness for one hour", "Ctrl+K"
        )
        self.act_backup = self._action(
            "Back up now", "Back up the agent's history and uncommitted work now"
        )
        self.act_delete = self._action(
            "Delete…", "Delete the VM (its backups are kept)", QKeySequence.StandardKey.Delete
        )
        self.act_refresh = self._action(
            "Refresh", "Refresh the list from every account", QKeySequence.StandardKey.Refresh
        )
        self.act_settings = self._action(
            "Settings…", "Accounts, credentials, SSH key, defaults and budget", "Ctrl+,"
        )
        self.act_quit = self._action("Quit", "Quit Bivy (workspaces keep running)", "Ctrl+Q")
        self.act_new.triggered.connect(self.newRequested)
        self.act_settings.triggered.connect(self.settingsRequested)
        self.act_refresh.triggered.connect(self.refreshRequested)
        self.act_quit.triggered.connect(self.close)
        for action, signal in (
            (self.act_terminal, self.openTerminalRequested),
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
        toolbar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
        toolbar.setIconSize(QSize(18, 18))
        actions: tuple[QAction | None, ...] = (
            self.act_new,
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
        self.addAction(self.act_quit)

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
        header = self.table.horizontalHeader()
        header.setHighlightSections(False)
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        for column, width in COLUMN_WIDTHS.items():
            header.resizeSection(column, width)
        header.setStretchLastSection(True)
        self.table.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.table.customContextMenuRequested.connect(self._context_menu)
        self.table.doubleClicked.connect(self._double_clicked)
        self.table.selectionModel().selectionChanged.connect(self._selection_changed)

        self.detail = DetailPane()
        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.addWidget(self.table)
        splitter.addWidget(self.detail)
        splitter.setStretchFactor(0, 3)
        splitter.setStretchFactor(1, 2)
        splitter.setSizes([430, 230])
        self.splitter = splitter

        self.empty = EmptyState()
        self.empty.addAccount.connect(self.settingsRequested)
        self.empty.createWorkspace.connect(self.newRequested)
        self.stack = QStackedWidget()
        self.stack.addWidget(self.empty)
        self.stack.addWidget(splitter)
        # Terminals open as tabs beside the list; the list tab itself cannot be closed.
        self.tabs = QTabWidget()
        self.tabs.setDocumentMode(True)
        self.tabs.setTabBarAutoHide(True)  # the tab bar appears with the first terminal
        self.tabs.setTabsClosable(True)
        self.tabs.addTab(self.stack, "Workspaces")
        self.tabs.tabBar().setTabButton(0, QTabBar.ButtonPosition.RightSide, None)
        self.tabs.tabBar().setTabButton(0, QTabBar.ButtonPosition.LeftSide, None)
        self.tabs.tabCloseRequested.connect(self.close_tab)
        self.setCentralWidget(self.tabs)

    def _build_status_bar(self) -> None:
        bar = self.statusBar()
        self.rate_label = QLabel("Now: –")
        self.rate_label.setToolTip("What the running workspaces cost per hour, all accounts")
        self.month_label = QLabel("This month: –")
        self.month_label.setToolTip("Spend this month, deleted workspaces included (local ledger)")
        self.budget_label = QLabel()
        self.budget_label.setStyleSheet("color: #b00020; font-weight: bold;")
        self.budget_label.hide()
        self.unaccounted_label = QLabel()
        self.unaccounted_label.setStyleSheet("color: #b35c00;")
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

    def upsert_workspace(self, ws: Workspace) -> None:
        self.record_phase(ws)
        self.model.upsert(ws)
        self._resort()
        self._selection_changed()

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
        index = self.tabs.addTab(widget, title)
        self.tabs.setCurrentIndex(index)
        return index

    def tab_for(self, name: str) -> QWidget | None:
        for i in range(1, self.tabs.count()):
            widget = self.tabs.widget(i)
            if getattr(widget, "workspace", None) == name:
                return widget
        return None

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
        _add_actions(menu, entries)
        menu.popup(self.table.viewport().mapToGlobal(pos))

    def _double_clicked(self, index: QModelIndex) -> None:
        if self.act_terminal.isEnabled():
            self.act_terminal.trigger()

    def closeEvent(self, event: QCloseEvent) -> None:
        self.closing.emit()
        event.accept()


def _ask(parent: QWidget, title: str, text: str) -> bool:
    from PySide6.QtWidgets import QMessageBox

    box = QMessageBox(QMessageBox.Icon.Warning, title, text, parent=parent)
    delete = box.addButton("Delete", QMessageBox.ButtonRole.DestructiveRole)
    box.addButton(QMessageBox.StandardButton.Cancel)
    box.setDefaultButton(QMessageBox.StandardButton.Cancel)
    box.exec()
    return box.clickedButton() is delete


def _add_actions(target: QToolBar | QMenu, actions: tuple[QAction | None, ...]) -> None:
    """Add actions in order to a toolbar or menu; ``None`` is a separator."""
    for action in actions:
        if action is None:
            target.addSeparator()
        else:
            target.addAction(action)
