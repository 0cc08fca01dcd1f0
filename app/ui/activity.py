"""Tells the refresh scheduler when the user types or clicks in Bivy's windows."""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import QEvent, QObject
from PySide6.QtGui import QWindow
from PySide6.QtWidgets import QWidget
from shiboken6 import isValid


class ActivityFilter(QObject):
    """Tells the refresh scheduler when the user types or clicks (else the app is idle).

    It watches the top-level windows' QWindows, which receive every input event before their
    widgets do. Not the whole application: a Python filter there is handed every QObject Qt
    delivers to, including QtWebEngine's half-built Quick items while the terminal tab opens,
    and PySide crashes (segfault) wrapping those (found by the --smoke-test WebEngine check).
    """

    _INPUT = (
        QEvent.Type.KeyPress,
        QEvent.Type.MouseButtonPress,
        QEvent.Type.Wheel,
    )

    def __init__(self, on_input: Callable[[], None], parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._on_input = on_input
        self._windows: list[QWindow] = []

    def watch(self, widget: QWidget) -> None:
        """Count input to ``widget``'s top-level window (created now if it was not yet)."""
        widget.winId()  # makes the native window, so windowHandle() exists
        handle = widget.windowHandle()
        if handle is None or handle in self._windows:
            return
        handle.installEventFilter(self)
        self._windows.append(handle)
        handle.destroyed.connect(lambda *_: self._forget(handle))

    def _forget(self, handle: QWindow) -> None:
        if handle in self._windows:
            self._windows.remove(handle)

    def unwatch_all(self) -> None:
        for handle in self._windows:
            if isValid(handle):
                handle.removeEventFilter(self)
        self._windows.clear()

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if event.type() in self._INPUT:
            self._on_input()
        return False
