"""Item delegates: the status cell shows its phase text with a progress strip beneath it; the
sessions cell one coloured chip per agent session."""

from __future__ import annotations

from PySide6.QtCore import QModelIndex, QPersistentModelIndex, QPointF, QRect, QRectF, Qt
from PySide6.QtGui import QColor, QFont, QFontMetrics, QPainter, QPalette, QPen, QPolygonF
from PySide6.QtWidgets import QApplication, QStyle, QStyledItemDelegate, QStyleOptionViewItem

from app.ui.models import ProgressRole, SessionsRole
from app.ui.theme import SessionState, state_colour, tone_on

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


#: Marker size and the gaps of a session chip (px).
DOT = 8
GAP = 5
CHIP_GAP = 12


def paint_state_marker(painter: QPainter, rect: QRect, state: SessionState, colour: QColor) -> None:
    """A state's marker, distinct by shape too (not colour alone): working a filled dot,
    needs you a filled dot with a ring, idle a hollow ring, failed a diamond, unknown dashed."""
    painter.save()
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    box = QRectF(rect).adjusted(0.75, 0.75, -0.75, -0.75)
    pen = QPen(colour, 1.5)
    if state is SessionState.FAILED:
        c = box.center()
        r = box.width() / 2 + 0.5
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(colour)
        painter.drawPolygon(
            QPolygonF([QPointF(c.x(), c.y() - r), QPointF(c.x() + r, c.y()),
                       QPointF(c.x(), c.y() + r), QPointF(c.x() - r, c.y())])
        )  # fmt: skip
    elif state in (SessionState.WORKING, SessionState.WAITING):
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(colour)
        painter.drawEllipse(box)
        if state is SessionState.WAITING:
            painter.setPen(pen)
            painter.setBrush(Qt.BrushStyle.NoBrush)
            painter.drawEllipse(box.adjusted(-2.5, -2.5, 2.5, 2.5))
    else:
        pen.setWidthF(2.0)  # wide enough to show its colour in full, not only blended
        box = QRectF(rect).adjusted(1, 1, -1, -1)
        if state is SessionState.UNKNOWN:
            pen.setStyle(Qt.PenStyle.DotLine)
        painter.setPen(pen)
        painter.setBrush(Qt.BrushStyle.NoBrush)
        painter.drawEllipse(box)
    painter.restore()


class SessionsDelegate(QStyledItemDelegate):
    """The sessions cell: one chip per session, a coloured marker and the session's name
    (bold when it needs the user); "+N" when the cell is too narrow for the rest."""

    def paint(
        self,
        painter: QPainter,
        option: QStyleOptionViewItem,
        index: QModelIndex | QPersistentModelIndex,
    ) -> None:
        chips = index.data(SessionsRole) or []
        if not chips:
            super().paint(painter, option, index)
            return
        styled = QStyleOptionViewItem(option)
        self.initStyleOption(styled, index)
        styled.text = ""
        widget = option.widget
        style = widget.style() if widget is not None else QApplication.style()
        style.drawControl(QStyle.ControlElement.CE_ItemViewItem, styled, painter, widget)
        palette = option.palette
        selected = bool(option.state & QStyle.StateFlag.State_Selected)
        text_colour = palette.color(
            QPalette.ColorRole.HighlightedText if selected else QPalette.ColorRole.Text
        )
        rect = option.rect.adjusted(6, 0, -4, 0)
        x = rect.left()
        painter.save()
        for i, (name, state, _line) in enumerate(chips):
            font = QFont(option.font)
            font.setBold(state is SessionState.WAITING)
            metrics = QFontMetrics(font)
            width = DOT + GAP + metrics.horizontalAdvance(name)
            rest = len(chips) - i - 1
            more = f"+{rest}" if rest else ""
            reserve = metrics.horizontalAdvance(more) + CHIP_GAP if more else 0
            if x + width + reserve > rect.right() and i > 0:
                painter.setFont(option.font)
                painter.setPen(text_colour)
                painter.drawText(
                    QRect(x, rect.top(), rect.right() - x, rect.height()),
                    int(Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft),
                    f"+{len(chips) - i}",
                )
                break
            colour = tone_on(state, text_colour) if selected else state_colour(state, palette)
            dot = QRect(x, rect.center().y() - DOT // 2 + 1, DOT, DOT)
            if selected:  # on the highlight: the marker sits on a disc of the text colour
                painter.setRenderHint(QPainter.RenderHint.Antialiasing)
                painter.setPen(Qt.PenStyle.NoPen)
                painter.setBrush(text_colour)
                painter.drawEllipse(QRectF(dot).adjusted(-3, -3, 3, 3))
            paint_state_marker(painter, dot, state, colour)
            painter.setFont(font)
            painter.setPen(text_colour)
            label = QRect(x + DOT + GAP, rect.top(), rect.right() - x - DOT - GAP, rect.height())
            painter.drawText(
                label,
                int(Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft),
                metrics.elidedText(name, Qt.TextElideMode.ElideRight, label.width()),
            )
            x += width + CHIP_GAP
        painter.restore()
