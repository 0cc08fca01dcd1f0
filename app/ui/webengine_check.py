"""A frozen-bundle check of QtWebEngine: a web view like the IDE tab's renders an inline page."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from PySide6.QtGui import QColor

#: The colour the check page fills its view with; unlikely to come from anything else.
PAGE_COLOUR = QColor(222, 17, 127)
_PAGE = (
    "<!doctype html><html><body style='margin:0;background:#fff'>"
    "<div style='position:fixed;inset:0;background:rgb({r},{g},{b})'></div>"
    "</body></html>"
)


@dataclass(frozen=True)
class WebEngineResult:
    """What ``check_webengine`` found.

    Attributes:
        ok: the page loaded and its colour is on screen.
        detail: one line for the user (what was seen, or what went wrong).
        seconds: how long it took.
    """

    ok: bool
    detail: str
    seconds: float


def _matches(colour: QColor, expected: QColor, tolerance: int = 12) -> bool:
    pairs = (
        (colour.red(), expected.red()),
        (colour.green(), expected.green()),
        (colour.blue(), expected.blue()),
    )
    return all(abs(a - b) <= tolerance for a, b in pairs)


async def check_webengine(
    within: float = 30.0, *, colour: QColor = PAGE_COLOUR, expected: QColor | None = None
) -> WebEngineResult:
    """Open a web view like the IDE tab's offscreen, show an inline page filled with ``colour`` and
    look for ``expected`` (default: the same colour) in the grabbed pixels.

    QtWebEngine is imported here, as the IDE tab does on first use: a bundle that lacks its
    resources, locales or helper process fails this check instead of the user's first terminal.
    """
    started = time.perf_counter()
    expected = colour if expected is None else expected
    try:
        # The modules the IDE tab imports on first use; importing the tab's module also runs
        # its prepare_application (sandbox off as root), as opening a terminal does.
        from PySide6.QtWebEngineCore import QWebEnginePage, QWebEngineProfile
        from PySide6.QtWebEngineWidgets import QWebEngineView

        import app.ui.ide  # noqa: F401
    except ImportError as exc:
        return WebEngineResult(False, f"QtWebEngine cannot be imported: {exc}", 0.0)

    view = QWebEngineView()
    # Off the record and owned by the page, as in the IDE tab (nothing written to disk).
    profile = QWebEngineProfile(view)
    page = QWebEnginePage(profile, view)
    profile.setParent(page)
    view.setPage(page)
    loaded = asyncio.Event()
    outcome: list[bool] = []

    def on_loaded(ok: bool) -> None:
        outcome.append(ok)
        loaded.set()

    page.loadFinished.connect(on_loaded)
    view.resize(240, 180)
    view.show()
    view.setHtml(_PAGE.format(r=colour.red(), g=colour.green(), b=colour.blue()))
    deadline = started + within
    try:
        try:
            await asyncio.wait_for(loaded.wait(), max(0.1, deadline - time.perf_counter()))
        except TimeoutError:
            return WebEngineResult(
                False, f"the page did not load within {within:g} s", time.perf_counter() - started
            )
        if not outcome[0]:
            return WebEngineResult(
                False,
                "the page failed to load (loadFinished(False))",
                time.perf_counter() - started,
            )
        # The first frame can come a little after loadFinished: look until the deadline.
        found = QColor()
        while True:
            image = view.grab().toImage()
            if not image.isNull():
                found = image.pixelColor(image.width() // 2, image.height() // 2)
                if _matches(found, expected):
                    return WebEngineResult(
                        True,
                        f"page rendered ({image.width()}x{image.height()}, centre {found.name()})",
                        time.perf_counter() - started,
                    )
            if time.perf_counter() >= deadline:
                return WebEngineResult(
                    False,
                    f"the page loaded but its colour {expected.name()} is not on screen "
                    f"(centre pixel {found.name() if found.isValid() else 'none'})",
                    time.perf_counter() - started,
                )
            await asyncio.sleep(0.05)
    finally:
        view.hide()
        view.deleteLater()
        await asyncio.sleep(0.05)  # let the deferred delete run before the app goes on
