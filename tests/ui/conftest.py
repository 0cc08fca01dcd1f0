"""pytest-qt fixtures for the UI: an offscreen QApplication driven by a qasync event loop."""

from __future__ import annotations

import asyncio
import gc
import os
import warnings
from collections.abc import Iterator

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import qasync
from PySide6.QtWidgets import QApplication

from tests.support.waits import WAIT_S


@pytest.fixture
def qloop(qapp: QApplication) -> Iterator[asyncio.AbstractEventLoop]:
    """A qasync loop that runs whenever Qt processes events (qtbot.waitUntil/waitSignal)."""
    loop = qasync.QEventLoop(qapp, already_running=True)
    asyncio.set_event_loop(loop)
    try:
        yield loop
    finally:
        pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for task in pending:
            task.cancel()
        deadline = loop.time() + WAIT_S  # ends as soon as they are done
        while any(not t.done() for t in pending) and loop.time() < deadline:
            qapp.processEvents()
        asyncio.events._set_running_loop(None)
        loop._QEventLoop__is_running = False  # type: ignore[attr-defined]
        loop.close()
        asyncio.set_event_loop(None)
        # keyring's Secret Service backend leaves its D-Bus connection open when it cannot get
        # the collection (SecretService.get_preferred_collection raises before anything closes
        # the bus), as when a keychain read in a worker thread outlives the test's private
        # Secret Service. Such sockets are collected here, at the end of the test that leaked
        # them, not by a later test's gc.collect() (Shell.begin) as that test's failure.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Qt's offscreen platform warns that it cannot propagate size hints whenever a top-level
    # window with a minimum size is shown; that is a limit of the test platform, not a bug.
    for item in items:
        if "tests/ui/" in str(item.path).replace("\\", "/"):
            item.add_marker(pytest.mark.qt_log_ignore("does not support propagateSizeHints"))
