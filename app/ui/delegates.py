"""Item delegates: the status cell shows its phase text with a progress strip beneath it."""

from __future__ import annotations

from PySide6.QtCore import QModelIndex, QPersistentModelIndex, QRect
from PySide6.QtGui import QPainter, QPalette
from PySide6.QtWidgets import QStyle, QStyledItemDelegate, QStyleOptionViewItem

from app.ui.models import ProgressRole

STRIP = 4  # px: thin enough to leave the text readable, thick enough to see at a glance


class ProgressDelegate(QStyledItemDelegate):
    """Draws the status text as usual plus, while bootstrapping, a progress strip and percent."""

    def paint(
        self,
        painter: QPainter,
        option: QStyleOptionViewItem,
        index: QModelIndex | QPersistentModelIndex,
    ) -> None:
        progress = index.data(ProgressRole)
        if progress is None:
            super().paint(painter, option, index)
            return
        percent = round(float(progress) * 100)
        styled = QStyleOptionViewItem(option)
        self.initStyleOption(styled, index)
        styled.text = f"{styled.text}  {percent}%"
        widget = option.widget
        style = widget.style() if widget is not None else None
        if style is None:
            super().paint(painter, option, index)
            return
        style.drawControl(QStyle.ControlElement.CE_ItemViewItem, styled, painter, widget)
        rect = option.rect
        track = QRect(rect.left() + 4, rect.bottom() - STRIP - 1, rect.width() - 8, STRIP)
        palette = option.palette
        painter.save()
        painter.fillRect(track, palette.color(QPalette.ColorRole.Midlight))
        done = QRect(track)
        done.setWidth(max(1, int(track.width() * float(progress))))
        selected = bool(option.state & QStyle.StateFlag.State_Selected)
        role = QPalette.ColorRole.HighlightedText if selected else QPalette.ColorRole.Highlight
        painter.fillRect(done, palette.color(role))
        painter.restore()
