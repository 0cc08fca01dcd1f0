"""pytest-qt fixtures for the UI: an offscreen QApplication driven by a qasync event loop."""

from __future__ import annotations

import asyncio
import os
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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Qt's offscreen platform warns that it cannot propagate size hints whenever a top-level
    # window with a minimum size is shown; that is a limit of the test platform, not a bug.
    for item in items:
        if "tests/ui/" in str(item.path).replace("\\", "/"):
            item.add_marker(pytest.mark.qt_log_ignore("does not support propagateSizeHints"))
