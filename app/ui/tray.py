"""The system tray: running workspaces with their sessions, status and cost, quick actions,
notifications (a session that needs the user: clicking the notification opens its tab)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QAction, QIcon
from PySide6.QtWidgets import QMenu, QSystemTrayIcon

from app.domain import AgentState, Workspace
from app.paths import resource_path
from app.ui import formatting
from app.ui.icons import icon as action_icon
from app.ui.models import (
    CostFigure,
    is_ready,
    is_running,
    sessions_of,
    status_text,
    workspace_key,
)
from app.ui.notifications import KEEP_ALIVE, OPEN_SESSION, Notice
from app.ui.panes import state_icon
from app.ui.theme import SessionState, session_state

#: Workspaces listed in the tray menu; the rest are one click away in the window.
MAX_ENTRIES = 15


def _icon(name: str) -> QIcon:
    return QIcon(str(resource_path("icons", name)))


class Tray(QObject):
    """The tray icon and its menu.

    Signals:
        openRequested(ws), keepAliveRequested(ws), deleteRequested(ws): actions on one
        workspace; keepAliveRequested also when the user clicks an idle-delete notification.
        openSessionRequested(ws, session): a session's terminal tab, from the menu or a click
        on the notification that the session needs the user.
        deleteAllRequested, newRequested, showRequested, quitRequested: global actions.
    Attributes:
        icon: the QSystemTrayIcon (shown only where the platform has a tray).
        menu: its context menu, rebuilt on every update.
    """

    openRequested = Signal(object)
    openSessionRequested = Signal(object, str)
    keepAliveRequested = Signal(object)
    deleteRequested = Signal(object)
    deleteAllRequested = Signal()
    newRequested = Signal()
    showRequested = Signal()
    quitRequested = Signal()

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.icon_name = "tray-idle.svg"
        self.icon = QSystemTrayIcon(_icon(self.icon_name), self)
        self.icon.setToolTip("Bivy")
        self.menu = QMenu()
        self.icon.setContextMenu(self.menu)
        self.icon.activated.connect(self._activated)
        self.icon.messageClicked.connect(self._message_clicked)
        self.shown: Notice | None = None  # the notification on screen (a click refers to it)
        self.workspaces: list[Workspace] = []
        self._signature: tuple[object, ...] | None = None
        self.update([], {})

    @staticmethod
    def available() -> bool:
        return QSystemTrayIcon.isSystemTrayAvailable()

    def show(self) -> None:
        if self.available():
            self.icon.show()

    def hide(self) -> None:
        self.icon.hide()

    def update(
        self, workspaces: Sequence[Workspace], costs: Mapping[tuple[str, str], CostFigure]
    ) -> None:
        """Rebuild the menu and the icon's state from the current workspaces."""
        self.workspaces = [ws for ws in workspaces if ws.server is not None]
        shown = self.workspaces[:MAX_ENTRIES]
        entries = [
            (
                ws.name,
                status_text(ws),
                is_ready(ws),
                costs.get(workspace_key(ws)),
                tuple((x.name, session_state(x)) for x in sessions_of(ws)),
            )
            for ws in shown
        ]
        signature = (*entries, len(self.workspaces))
        self._update_icon()
        if signature == self._signature:
            return  # nothing a user could see changed: keep the menu (it may be open)
        self._signature = signature
        self.menu.clear()
        header = self.menu.addAction(
            f"{len(self.workspaces)} workspace(s) running" if self.workspaces else "No workspaces"
        )
        header.setEnabled(False)
        for ws in shown:
            cost = costs.get(workspace_key(ws))
            label = f"{ws.name} — {status_text(ws)}"
            if cost is not None:
                label += f" — {formatting.money(cost.so_far, cost.currency)}"
            sub = self.menu.addMenu(label)
            if any(session_state(x) is SessionState.WAITING for x in sessions_of(ws)):
                sub.setIcon(state_icon(SessionState.WAITING))
            open_action = QAction("Open terminal", sub)
            open_action.setEnabled(is_ready(ws))
            open_action.setIcon(action_icon("terminal"))
            open_action.triggered.connect(lambda _=False, w=ws: self.openRequested.emit(w))
            keep_action = QAction(action_icon("keep-alive"), "Keep alive for an hour", sub)
            keep_action.setEnabled(is_running(ws) and not ws.unrecorded)
            keep_action.triggered.connect(lambda _=False, w=ws: self.keepAliveRequested.emit(w))
            delete_action = QAction(action_icon("delete"), "Delete…", sub)
            delete_action.triggered.connect(lambda _=False, w=ws: self.deleteRequested.emit(w))
            sub.addAction(open_action)
            sessions = sessions_of(ws)
            if sessions:
                sub.addSection("Sessions")
            for session in sessions:
                state = session_state(session)
                entry = QAction(f"{session.name} — {state.value}", sub)
                entry.setIcon(state_icon(state))
                entry.setToolTip(session.message)
                entry.setEnabled(is_ready(ws))
                entry.triggered.connect(
                    lambda _=False, w=ws, n=session.name: self.openSessionRequested.emit(w, n)
                )
                sub.addAction(entry)
            if sessions:
                sub.addSeparator()
            sub.addAction(keep_action)
            sub.addAction(delete_action)
        if len(self.workspaces) > len(shown):
            more = self.menu.addAction(f"… {len(self.workspaces) - len(shown)} more in the window")
            more.triggered.connect(self.showRequested)
        self.menu.addSeparator()
        self.menu.addAction(action_icon("new-workspace"), "New workspace…").triggered.connect(
            self.newRequested
        )
        delete_all = self.menu.addAction(action_icon("delete"), "Delete all…")
        delete_all.setEnabled(bool(self.workspaces))
        delete_all.triggered.connect(self.deleteAllRequested)
        self.menu.addSeparator()
        self.menu.addAction("Show window").triggered.connect(self.showRequested)
        self.menu.addAction(action_icon("quit"), "Quit").triggered.connect(self.quitRequested)

    def _update_icon(self) -> None:
        states = {ws.agent.state for ws in self.workspaces if ws.agent is not None}
        waiting = [
            f"{x.name} in {ws.name}"
            for ws in self.workspaces
            for x in sessions_of(ws)
            if session_state(x) is SessionState.WAITING
        ]
        working = any(
            session_state(x) is SessionState.WORKING
            for ws in self.workspaces
            for x in sessions_of(ws)
        )
        if waiting or AgentState.WAITING in states:
            name = "tray-attention.svg"
        elif working or AgentState.WORKING in states:
            name = "tray-working.svg"
        else:
            name = "tray-idle.svg"
        if name != self.icon_name:
            self.icon_name = name
            self.icon.setIcon(_icon(name))
        tip = f"Bivy — {len(self.workspaces)} workspace(s)"
        if waiting:
            tip += "\nNeeds you: " + ", ".join(waiting)
        self.icon.setToolTip(tip)

    def notify(self, notice: Notice) -> bool:
        """Show a notification; False when the platform has no tray to show it in."""
        if not (self.available() and self.icon.isVisible()):
            return False
        icon = (
            QSystemTrayIcon.MessageIcon.Warning
            if notice.urgent
            else QSystemTrayIcon.MessageIcon.Information
        )
        self.shown = notice
        text = notice.text
        if notice.action == KEEP_ALIVE:
            text += " Click here to keep it alive for an hour."
        elif notice.action == OPEN_SESSION:
            text += " Click here to open its terminal."
        self.icon.showMessage(notice.title, text, icon, 10000)
        return True

    def _message_clicked(self) -> None:
        """A click on the notification: an idle-delete warning keeps its workspace alive, a
        session that needs the user opens that session's terminal tab."""
        notice, self.shown = self.shown, None
        if notice is None or notice.action not in (KEEP_ALIVE, OPEN_SESSION):
            return
        for ws in self.workspaces:
            if ws.name == notice.workspace and notice.account in ("", ws.account):
                if notice.action == KEEP_ALIVE:
                    self.keepAliveRequested.emit(ws)
                else:
                    self.showRequested.emit()
                    self.openSessionRequested.emit(ws, notice.session)
                return

    def _activated(self, reason: QSystemTrayIcon.ActivationReason) -> None:
        if reason is QSystemTrayIcon.ActivationReason.Trigger:
            self.showRequested.emit()
