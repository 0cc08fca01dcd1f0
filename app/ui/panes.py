"""The panes of the main window's list tab: the first-run and empty screens, the selected
workspace's details with its sessions, and the bar that says a session needs the user."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from PySide6.QtCore import QRect, QSize, Qt, Signal
from PySide6.QtGui import QColor, QFont, QIcon, QPainter, QPalette, QPixmap
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QPlainTextEdit,
    QPushButton,
    QStackedWidget,
    QToolButton,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.domain import SessionReport, Workspace
from app.ui import formatting
from app.ui.delegates import paint_state_marker
from app.ui.icons import icon
from app.ui.models import is_ready, session_line, sessions_of, status_text
from app.ui.theme import SessionState, session_state, state_colour, tone

__all__ = ["DetailPane", "EmptyState", "NoticeBar", "PhaseEntry", "SessionList", "state_icon"]


@dataclass(frozen=True)
class PhaseEntry:
    """One line of a workspace's phase history."""

    at: datetime
    phase: str
    detail: str


def _scaled(label: QLabel, factor: float, bold: bool = True) -> None:
    font = QFont(label.font())
    font.setPointSizeF(font.pointSizeF() * factor)
    font.setBold(bold)
    label.setFont(font)


def state_icon(state: SessionState, palette: QPalette | None = None) -> QIcon:
    """A session state's marker as an icon, in its colour for ``palette`` (the app's)."""
    pixmap = QPixmap(16, 16)
    pixmap.fill(Qt.GlobalColor.transparent)
    painter = QPainter(pixmap)
    paint_state_marker(painter, QRect(4, 4, 8, 8), state, state_colour(state, palette))
    painter.end()
    return QIcon(pixmap)


class _Choice(QFrame):
    """One card of the first-run screen: an icon, a title, a line of text and a button."""

    def __init__(self, icon_name: str, title: str, text: str, button: QPushButton) -> None:
        super().__init__()
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.setFixedWidth(300)
        self.icon_name = icon_name
        self.picture = QLabel()
        self.picture.setAlignment(Qt.AlignmentFlag.AlignCenter)
        heading = QLabel(title)
        _scaled(heading, 1.15)
        heading.setAlignment(Qt.AlignmentFlag.AlignCenter)
        body = QLabel(text)
        body.setWordWrap(True)
        body.setAlignment(Qt.AlignmentFlag.AlignCenter)
        body.setMinimumHeight(body.fontMetrics().lineSpacing() * 4)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(18, 18, 18, 18)
        layout.setSpacing(10)
        layout.addWidget(self.picture)
        layout.addWidget(heading)
        layout.addWidget(body, 1)
        layout.addWidget(button)
        self.retint()

    def retint(self) -> None:
        self.picture.setPixmap(icon(self.icon_name, self.palette()).pixmap(QSize(48, 48)))


class EmptyState(QWidget):
    """What an empty list shows: on first run a choice between this computer and a cloud
    account, later the one next step (create a workspace).

    Signals:
        addAccount: the user wants to add a cloud account.
        createWorkspace: the user wants to create a workspace (on first run: on this computer).
    """

    addAccount = Signal()
    createWorkspace = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.addStretch(2)
        self.title = QLabel()
        _scaled(self.title, 1.6)
        self.title.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.text = QLabel()
        self.text.setWordWrap(True)
        self.text.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.text.setFixedWidth(560)
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
        self.local_card = _Choice(
            "computer",
            "Try it on this computer",
            "A workspace in a VM on this machine (QEMU). No account, no cost; "
            "as fast as your computer.",
            self.local_button,
        )
        self.cloud_card = _Choice(
            "cloud",
            "Add a cloud account",
            "Hetzner, DigitalOcean, Scaleway or OVHcloud: an API token is enough. "
            "You pay the provider by the hour.",
            self.button,
        )
        self.single = QWidget()  # "No workspaces yet": one button
        single = QHBoxLayout(self.single)
        single.addStretch()
        self.new_button = QPushButton("Create a workspace…")
        self.new_button.setMinimumSize(240, 36)
        self.new_button.setDefault(True)
        self.new_button.clicked.connect(self.createWorkspace)
        single.addWidget(self.new_button)
        single.addStretch()
        layout.addWidget(self.title)
        layout.addSpacing(6)
        row = QHBoxLayout()
        row.addStretch()
        row.addWidget(self.text)
        row.addStretch()
        layout.addLayout(row)
        layout.addSpacing(18)
        cards = QHBoxLayout()
        cards.setSpacing(18)
        cards.addStretch()
        cards.addWidget(self.local_card)
        cards.addWidget(self.cloud_card)
        cards.addStretch()
        layout.addLayout(cards)
        layout.addWidget(self.single)
        layout.addStretch(3)
        self._has_accounts = False
        self.set_has_accounts(False)

    def set_has_accounts(self, has_accounts: bool) -> None:
        self._has_accounts = has_accounts
        self.local_card.setVisible(not has_accounts)
        self.cloud_card.setVisible(not has_accounts)
        self.single.setVisible(has_accounts)
        if has_accounts:
            self.title.setText("No workspaces yet")
            self.text.setText(
                "A workspace is a VM with your repository, its devcontainer and a coding agent "
                "in a terminal. It deletes itself when nobody has used it for a while."
            )
            self.button.setText("Create your first workspace…")
        else:
            self.title.setText("Welcome to Bivy")
            self.text.setText(
                "Bivy runs coding agents in disposable VMs, one per repository.\n"
                "Where should your first workspace run?"
            )
            self.button.setText("Add an account…")

    def retint(self) -> None:
        self.local_card.retint()
        self.cloud_card.retint()
        self.new_button.setIcon(icon("new-workspace", self.palette()))

    def _clicked(self) -> None:
        (self.createWorkspace if self._has_accounts else self.addAccount).emit()


class SessionList(QWidget):
    """The selected workspace's sessions: state, agent, branch and what the agent said.

    Signals:
        openRequested(str): open this session's terminal (double click or Enter).
        newRequested: the user wants another session.
    """

    openRequested = Signal(str)
    newRequested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.tree = QTreeWidget()
        self.tree.setHeaderLabels(["Session", "State", "Agent", "Branch", "Last message"])
        self.tree.setRootIsDecorated(False)
        self.tree.setUniformRowHeights(True)
        self.tree.setAlternatingRowColors(True)
        for column, width in enumerate((140, 100, 90, 170)):
            self.tree.setColumnWidth(column, width)
        self.tree.itemActivated.connect(self._activated)
        self.empty = QLabel()
        self.empty.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty.setWordWrap(True)
        self.stack = QStackedWidget()
        self.stack.addWidget(self.empty)
        self.stack.addWidget(self.tree)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.stack)
        self.sessions: list[SessionReport] = []
        self.show_sessions([], ready=False)

    def show_sessions(self, sessions: Sequence[SessionReport], *, ready: bool) -> None:
        self.sessions = list(sessions)
        if not sessions:
            self.empty.setText(
                "No sessions yet. Start one with New session… (Ctrl+Shift+N): pick an agent, "
                "and it gets its own branch and terminal tab."
                if ready
                else "Sessions appear once the workspace is ready."
            )
            self.stack.setCurrentWidget(self.empty)
            return
        self.stack.setCurrentWidget(self.tree)
        selected = self.current()
        self.tree.clear()
        for session in sessions:
            state = session_state(session)
            item = QTreeWidgetItem(
                [session.name, state.value, session.agent, session.branch, session.message]
            )
            item.setIcon(1, state_icon(state, self.palette()))
            item.setForeground(1, state_colour(state, self.palette()))
            item.setToolTip(0, session_line(session))
            item.setToolTip(4, session.message)
            item.setData(0, Qt.ItemDataRole.UserRole, session.name)
            if state is SessionState.WAITING:
                font = QFont(item.font(0))
                font.setBold(True)
                item.setFont(0, font)
                item.setFont(1, font)
            self.tree.addTopLevelItem(item)
            if session.name == selected:
                self.tree.setCurrentItem(item)

    def current(self) -> str | None:
        item = self.tree.currentItem()
        value = item.data(0, Qt.ItemDataRole.UserRole) if item is not None else None
        return value if isinstance(value, str) else None

    def _activated(self, item: QTreeWidgetItem, _column: int) -> None:
        name = item.data(0, Qt.ItemDataRole.UserRole)
        if isinstance(name, str):
            self.openRequested.emit(name)


class DetailPane(QWidget):
    """The selected workspace: its sessions, phase history, log tail, backup and agent state.

    Signals:
        openSessionRequested(str), newSessionRequested: from the sessions list.
    """

    openSessionRequested = Signal(str)
    newSessionRequested = Signal()

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
        self.sessions = SessionList()
        self.sessions.openRequested.connect(self.openSessionRequested)
        self.new_session = QPushButton("New session…")
        self.new_session.setToolTip("Start another agent on its own branch (Ctrl+Shift+N)")
        self.new_session.clicked.connect(self.newSessionRequested)
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
        sessions_head = QHBoxLayout()
        sessions_head.addWidget(QLabel("Sessions"))
        sessions_head.addStretch()
        sessions_head.addWidget(self.new_session)
        layout.addLayout(sessions_head)
        layout.addWidget(self.sessions, 3)
        lower = QHBoxLayout()
        history_box = QVBoxLayout()
        history_box.addWidget(QLabel("Phase history"))
        history_box.addWidget(self.history)
        log_box = QVBoxLayout()
        log_box.addWidget(QLabel("Log tail"))
        log_box.addWidget(self.log)
        lower.addLayout(history_box, 2)
        lower.addLayout(log_box, 3)
        layout.addLayout(lower, 2)
        self.retint()

    def retint(self) -> None:
        self.new_session.setIcon(icon("new-session", self.palette()))

    def show_workspace(
        self, ws: Workspace | None, history: list[PhaseEntry], now: datetime | None = None
    ) -> None:
        self.shown = ws
        self.new_session.setEnabled(ws is not None and is_ready(ws) and not ws.unrecorded)
        if ws is None:
            self.header.setText("Select a workspace")
            self.facts.clear()
            self.sessions.show_sessions([], ready=False)
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
        if ws.agent is not None and ws.agent.message and not ws.sessions:
            facts.append(f"Agent: {ws.agent.message}")
        self.facts.setText("\n".join(facts))
        self.sessions.show_sessions(sessions_of(ws), ready=is_ready(ws))
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


class NoticeBar(QFrame):
    """A line above the tabs when a session needs the user: what it asks, and a button that
    opens its terminal tab (the in-window twin of the desktop notification).

    Signals:
        openRequested(str, str, str): account, workspace and session to open.
    """

    openRequested = Signal(str, str, str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("noticeBar")
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.marker = QLabel()
        self.text = QLabel()
        self.text.setTextFormat(Qt.TextFormat.PlainText)
        self.text.setWordWrap(False)
        self.open_button = QPushButton("Open terminal")
        self.open_button.clicked.connect(self._open)
        self.close_button = QToolButton()
        self.close_button.setText("✕")
        self.close_button.setAutoRaise(True)
        self.close_button.setToolTip("Dismiss")
        self.close_button.clicked.connect(self.hide)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(10, 4, 6, 4)
        layout.addWidget(self.marker)
        layout.addWidget(self.text, 1)
        layout.addWidget(self.open_button)
        layout.addWidget(self.close_button)
        self.target: tuple[str, str, str] | None = None
        self.hide()

    def show_notice(self, account: str, workspace: str, session: str, text: str) -> None:
        self.target = (account, workspace, session)
        self.text.setText(text)
        self.text.setToolTip(text)
        self.marker.setPixmap(state_icon(SessionState.WAITING, self.palette()).pixmap(16, 16))
        colour = QColor(tone("warning", self.palette()))
        colour.setAlpha(40)
        self.setStyleSheet(
            f"QFrame#noticeBar {{ background: rgba({colour.red()}, {colour.green()}, "
            f"{colour.blue()}, 40); border: 1px solid {tone('warning', self.palette()).name()};"
            " border-radius: 4px; }"
        )
        self.open_button.setIcon(icon("terminal", self.palette()))
        self.show()

    def follow(self, workspaces: Sequence[Workspace]) -> None:
        """Hide the bar once its session no longer needs the user (answered in its terminal,
        or gone)."""
        if self.target is None or self.isHidden():
            return
        account, name, session = self.target
        for ws in workspaces:
            if ws.name == name and account in ("", ws.account):
                for x in sessions_of(ws):
                    if x.name == session and session_state(x) is SessionState.WAITING:
                        return
        self.hide()

    def _open(self) -> None:
        if self.target is not None:
            self.hide()
            self.openRequested.emit(*self.target)
