"""The main window's tabs: the workspace list first (it cannot be closed), then one terminal
tab per open session, each with its session's state as its icon."""

from __future__ import annotations

from collections.abc import Iterable

from PySide6.QtGui import QIcon
from PySide6.QtWidgets import QTabBar, QTabWidget, QWidget

from app.domain import Workspace
from app.ui.models import sessions_of
from app.ui.panes import state_icon
from app.ui.theme import session_state

__all__ = ["TerminalTabs"]


class TerminalTabs(QTabWidget):
    """The list tab plus terminal tabs; a terminal tab's widget says whose it is with its
    ``workspace`` and ``session`` attributes (``IdeTab``)."""

    def __init__(self, home: QWidget, title: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setDocumentMode(True)
        self.setTabBarAutoHide(True)  # the tab bar appears with the first terminal
        self.setTabsClosable(True)
        self.addTab(home, title)
        self.tabBar().setTabButton(0, QTabBar.ButtonPosition.RightSide, None)
        self.tabBar().setTabButton(0, QTabBar.ButtonPosition.LeftSide, None)

    def add(self, widget: QWidget, title: str) -> int:
        """Show ``widget`` (a terminal) in a new closable tab and switch to it."""
        index = self.addTab(widget, title)
        self.setCurrentIndex(index)
        return index

    def session_tab(self, name: str, session: str = "main") -> QWidget | None:
        """The open terminal tab of ``session`` of workspace ``name`` (None when not open)."""
        for i in range(1, self.count()):
            widget = self.widget(i)
            if (
                getattr(widget, "workspace", None) == name
                and (getattr(widget, "session", "main") or "main") == session
            ):
                return widget
        return None

    def step(self, step: int) -> None:
        """Next (1) or previous (-1) tab, wrapping around."""
        if self.count() > 1:
            self.setCurrentIndex((self.currentIndex() + step) % self.count())

    def follow_states(self, workspaces: Iterable[Workspace]) -> None:
        """Each terminal tab's icon shows its session's state (none while it is unknown)."""
        states = {(ws.name, x.name): session_state(x) for ws in workspaces for x in sessions_of(ws)}
        palette = self.palette()
        for i in range(1, self.count()):
            widget = self.widget(i)
            key = (getattr(widget, "workspace", None), getattr(widget, "session", "main"))
            state = states.get(key)  # type: ignore[arg-type]
            self.setTabIcon(i, state_icon(state, palette) if state is not None else QIcon())
            if state is not None:
                self.setTabToolTip(i, f"Session {key[1]} of {key[0]}: {state.value}")
