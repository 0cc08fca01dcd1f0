"""The QtWebEngine check of `bivy --smoke-test` (BIVY_SMOKE_WEBENGINE=1) for frozen bundles."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest

os.environ.setdefault("QTWEBENGINE_DISABLE_SANDBOX", "1")  # Chromium's sandbox refuses root

from PySide6.QtGui import QColor
from pytestqt.qtbot import QtBot

import app.ui.ide  # noqa: F401  (QtWebEngine before pytest-qt creates the QApplication)
from app.ui.webengine_check import PAGE_COLOUR, WebEngineResult, check_webengine
from tests.support.waits import WAIT_MS

gpu_less = pytest.mark.qt_log_ignore(
    "QRhiGles2: Failed to create",
    "Failed to create RHI for backend",
    "does not support createPlatformVulkanInstance",
    "QVulkanInstance: Failed to initialize Vulkan",
    "GBM is not supported",
    "GPUInfo not initialized",
    "does not support propagateSizeHints",
)


def _run(qtbot: QtBot, within: float = 30, **kwargs: object) -> WebEngineResult:
    task = asyncio.ensure_future(check_webengine(within, **kwargs))  # type: ignore[arg-type]
    qtbot.waitUntil(task.done, timeout=WAIT_MS)
    return task.result()


@gpu_less
def test_check_sees_the_page_colour_and_only_it(
    qtbot: QtBot, qloop: asyncio.AbstractEventLoop
) -> None:
    result = _run(qtbot)
    assert result.ok, result.detail
    assert PAGE_COLOUR.name() in result.detail
    other = _run(qtbot, 3, expected=QColor(0, 200, 0))
    assert not other.ok
    assert "not on screen" in other.detail and PAGE_COLOUR.name() in other.detail


def test_smoke_test_checks_webengine_with_the_whole_app() -> None:
    # With the app's shell around it: this crashed (segfault) while the shell watched input with
    # an application-wide Python event filter.
    env = {k: v for k, v in os.environ.items() if k != "QT_QPA_PLATFORM"}
    env["BIVY_SMOKE_WEBENGINE"] = "1"
    result = subprocess.run(
        [sys.executable, "-m", "app", "--smoke-test"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [line for line in result.stdout.splitlines() if "webengine" in line]
    assert len(lines) == 1 and lines[0].startswith("bivy smoke test: webengine ok: page rendered")


def test_smoke_test_fails_when_the_page_is_not_seen_in_time() -> None:
    env = {k: v for k, v in os.environ.items() if k != "QT_QPA_PLATFORM"}
    env.update(BIVY_SMOKE_WEBENGINE="1", BIVY_SMOKE_WEBENGINE_TIMEOUT="0")
    result = subprocess.run(
        [sys.executable, "-m", "app", "--smoke-test"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2, result.stdout + result.stderr[-2000:]
    # No time at all: the page cannot have loaded and painted, so the check must say so.
    lines = [line for line in result.stdout.splitlines() if "webengine" in line]
    assert len(lines) == 1 and lines[0].startswith("bivy smoke test: webengine FAILED: ")
