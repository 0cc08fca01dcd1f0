"""Reading a ttyd terminal shown in a QWebEngineView: glyph rows on screen and xterm's text."""

from __future__ import annotations

from PySide6.QtGui import QImage
from pytestqt.qtbot import QtBot

from app.ui.ide import IdeTab
from tests.support.waits import WAIT_MS


def text_lines(image: QImage) -> int:
    """How many separate horizontal bands of light (glyph) pixels the image shows."""
    image = image.convertToFormat(QImage.Format.Format_RGB32)
    width = image.width() - 20  # leave out the scrollbar
    bands = 0
    inside = False
    for y in range(image.height()):
        lit = any(image.pixelColor(x, y).lightness() > 140 for x in range(0, width, 2))
        if lit and not inside:
            bands += 1
        inside = lit
    return bands


def terminal_text(qtbot: QtBot, tab: IdeTab) -> str:
    """The terminal's visible lines, read from xterm.js (ttyd exposes it as ``window.term``)."""
    result: list[str] = []
    script = (
        "(() => { const b = window.term && window.term.buffer.active; if (!b) return '';"
        " const out = []; for (let i = 0; i < b.length; i++) {"
        " const l = b.getLine(i); if (l) out.push(l.translateToString(true)); }"
        " return out.join('\\n'); })()"
    )
    tab.view.page().runJavaScript(script, 0, lambda value: result.append(str(value or "")))
    qtbot.waitUntil(lambda: bool(result), timeout=WAIT_MS)
    return result[0]
