"""Entry point of the desktop app: QApplication + qasync loop, the window, one shutdown path."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time

from PySide6.QtGui import QIcon
from PySide6.QtWidgets import QApplication, QWidget

from app import APP_ID
from app.paths import resource_path

log = logging.getLogger(__name__)


def _application() -> QApplication:
    existing = QApplication.instance()
    if isinstance(existing, QApplication):
        return existing
    app = QApplication(sys.argv[:1])
    app.setApplicationName("Bivy")
    app.setOrganizationName("Bivy")
    app.setDesktopFileName(APP_ID)
    app.setWindowIcon(QIcon(str(resource_path("icons", "bivy.svg"))))
    # The tray keeps running workspaces in view; quitting is explicit (window close or tray Quit).
    app.setQuitOnLastWindowClosed(False)
    return app


def _prepare_webengine() -> None:
    """What app.ui.ide.prepare_application does, without importing QtWebEngine at start-up
    (the terminal tab loads it on first use): shared GL contexts, no sandbox as root."""
    from PySide6.QtCore import QCoreApplication, Qt

    if os.name == "posix" and os.geteuid() == 0:
        os.environ.setdefault("QTWEBENGINE_DISABLE_SANDBOX", "1")
    if QCoreApplication.instance() is None:
        QCoreApplication.setAttribute(Qt.ApplicationAttribute.AA_ShareOpenGLContexts)


def _webengine_timeout() -> float:
    """Seconds the smoke test waits for the check page (``BIVY_SMOKE_WEBENGINE_TIMEOUT``)."""
    try:
        return float(os.environ.get("BIVY_SMOKE_WEBENGINE_TIMEOUT", "60"))
    except ValueError:
        return 60.0


def run_gui(smoke_test: bool = False) -> int:
    """Open the main window and run until the user quits; ``smoke_test`` shows it and exits 0."""
    import qasync

    started = time.perf_counter()
    if smoke_test:
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    _prepare_webengine()
    logging.basicConfig(level=logging.INFO if not smoke_test else logging.WARNING)
    app = _application()
    instance = None
    if not smoke_test:
        # One window per user: a second launch brings the first forward and exits.
        from app.ui.single_instance import SingleInstance

        instance = SingleInstance(parent=app)
        if not instance.claim():
            print(
                "bivy: Bivy is already running; "
                + (
                    "its window was brought forward"
                    if instance.knocked
                    else "its window did not answer (close it, or end that process)"
                ),
                file=sys.stderr,
                flush=True,
            )
            return 0 if instance.knocked else 1
    loop = qasync.QEventLoop(app)
    asyncio.set_event_loop(loop)

    async def main() -> int:
        # The window shows first; the services (keychain, HTTP, SSH libraries) load behind it.
        from app.ui.main_window import MainWindow

        window = MainWindow()
        window.show()
        if instance is not None:
            instance.activated.connect(lambda: _bring_forward(window))
        await asyncio.sleep(0)
        shown_at = time.time()
        from app.ui.shell import Shell

        shell = Shell.from_environment(window)
        await shell.start(smoke_test=smoke_test)
        if smoke_test:
            # Let the window map and paint, then leave through the same path as Quit.
            for _ in range(5):
                app.processEvents()
                await asyncio.sleep(0.01)
            shown = shell.window.isVisible()
            elapsed = time.perf_counter() - started
            print(
                f"bivy smoke test: window shown={shown}, services ready after {elapsed:.3f} s "
                f"(shown_at={shown_at:.3f})",
                flush=True,
            )
            code = 0 if shown else 1
            if os.environ.get("BIVY_SMOKE_WEBENGINE") == "1":
                # The terminal tab's engine, checked in the bundle (packaging/build.py).
                from app.ui.webengine_check import check_webengine

                result = await check_webengine(_webengine_timeout())
                print(
                    f"bivy smoke test: webengine {'ok' if result.ok else 'FAILED'}: "
                    f"{result.detail} after {result.seconds:.3f} s",
                    flush=True,
                )
                code = code or (0 if result.ok else 2)
            await shell.shutdown()
            return code
        return await shell.wait_closed()

    try:
        with loop:
            return int(loop.run_until_complete(main()))
    finally:
        if instance is not None:
            instance.release()


def _bring_forward(window: QWidget) -> None:
    """Show the window (from the tray or minimised), on top, with the focus."""
    window.showNormal()
    window.raise_()
    window.activateWindow()
