"""Action icons drawn as SVG line art (``resources/icons/actions/``), tinted to the palette.

The files stroke with ``currentColor``; each icon is rendered with the palette's window text
colour (and its disabled colour for the disabled state), so the icons follow a light or dark
system theme. ``refresh_icons(widget)`` re-tints the icons of a widget's actions after a
palette change.
"""

from __future__ import annotations

from functools import lru_cache

from PySide6.QtCore import QByteArray, QRectF, Qt
from PySide6.QtGui import QAction, QGuiApplication, QIcon, QPainter, QPalette, QPixmap
from PySide6.QtSvg import QSvgRenderer
from PySide6.QtWidgets import QWidget

from app.paths import resource_path

__all__ = ["ICON_PROPERTY", "icon", "icon_names", "refresh_icons"]

#: The dynamic property on a QAction naming its icon (used to re-tint it).
ICON_PROPERTY = "bivyIcon"
_SIZES = (16, 20, 24, 32, 48)


def icon_names() -> list[str]:
    return sorted(p.stem for p in resource_path("icons", "actions").glob("*.svg"))


@lru_cache(maxsize=64)
def _svg(name: str) -> str:
    return resource_path("icons", "actions", f"{name}.svg").read_text(encoding="utf-8")


@lru_cache(maxsize=512)
def _pixmap(name: str, colour: str, size: int, ratio: float) -> QPixmap:
    data = _svg(name).replace("currentColor", colour)
    renderer = QSvgRenderer(QByteArray(data.encode()))
    pixels = round(size * ratio)
    pixmap = QPixmap(pixels, pixels)
    pixmap.fill(Qt.GlobalColor.transparent)
    painter = QPainter(pixmap)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    renderer.render(painter, QRectF(0, 0, pixels, pixels))
    painter.end()
    pixmap.setDevicePixelRatio(ratio)
    return pixmap


def icon(name: str, palette: QPalette | None = None) -> QIcon:
    """The icon ``name`` in the palette's text colours (normal, active and disabled)."""
    palette = palette if palette is not None else QGuiApplication.palette()
    app = QGuiApplication.instance()
    ratio = app.devicePixelRatio() if isinstance(app, QGuiApplication) else 1.0
    role = QPalette.ColorRole.WindowText
    normal = palette.color(QPalette.ColorGroup.Active, role).name()
    disabled = palette.color(QPalette.ColorGroup.Disabled, role).name()
    result = QIcon()
    for size in _SIZES:
        result.addPixmap(_pixmap(name, normal, size, ratio), QIcon.Mode.Normal)
        result.addPixmap(_pixmap(name, normal, size, ratio), QIcon.Mode.Active)
        result.addPixmap(_pixmap(name, disabled, size, ratio), QIcon.Mode.Disabled)
    return result


def refresh_icons(widget: QWidget) -> None:
    """Re-tint every action of ``widget`` (and its children) that names its icon."""
    palette = widget.palette()
    for action in widget.findChildren(QAction):
        name = action.property(ICON_PROPERTY)
        if isinstance(name, str) and name:
            action.setIcon(icon(name, palette))
