"""Building blocks of the main window's actions: an action with its tip, shortcut and tinted
icon, adding actions to a toolbar or menu, the list-only shortcut context, and the delete
confirmation."""

from __future__ import annotations

from collections.abc import Iterable

from PySide6.QtCore import QObject, Qt
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QMenu, QToolBar, QWidget

from app.ui.icons import ICON_PROPERTY

__all__ = ["add_actions", "ask_delete", "list_only", "make_action"]


def make_action(
    parent: QObject,
    text: str,
    tip: str,
    shortcut: QKeySequence | QKeySequence.StandardKey | str | None = None,
    icon: str = "",
) -> QAction:
    """An action whose tool and status tips name its shortcut; ``icon`` names its line icon
    (tinted to the palette by ``app.ui.icons.refresh_icons``)."""
    action = QAction(text, parent)
    if icon:
        action.setProperty(ICON_PROPERTY, icon)
    if shortcut is not None:
        action.setShortcut(QKeySequence(shortcut))
        tip = f"{tip} ({action.shortcut().toString(QKeySequence.SequenceFormat.NativeText)})"
    action.setToolTip(tip)
    action.setStatusTip(tip)
    return action


def list_only(actions: Iterable[QAction], widget: QWidget) -> None:
    """The actions' shortcuts act only while the focus is inside ``widget`` (a terminal tab
    needs its keys: tmux's Ctrl+B, readline's Ctrl+K, Ctrl+T, Ctrl+N, Ctrl+R, Del)."""
    for action in actions:
        action.setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
        widget.addAction(action)


def add_actions(target: QToolBar | QMenu, actions: tuple[QAction | None, ...]) -> None:
    """Add actions in order to a toolbar or menu; ``None`` is a separator."""
    for action in actions:
        if action is None:
            target.addSeparator()
        else:
            target.addAction(action)


def ask_delete(parent: QWidget, title: str, text: str) -> bool:
    """The delete confirmation: Cancel is the default button."""
    from PySide6.QtWidgets import QMessageBox

    box = QMessageBox(QMessageBox.Icon.Warning, title, text, parent=parent)
    delete = box.addButton("Delete", QMessageBox.ButtonRole.DestructiveRole)
    box.addButton(QMessageBox.StandardButton.Cancel)
    box.setDefaultButton(QMessageBox.StandardButton.Cancel)
    box.exec()
    return box.clickedButton() is delete
