"""A second launch of the window brings the first forward and exits (real `python -m app`
processes under QT_QPA_PLATFORM=offscreen); the CLI runs beside the window regardless."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FIRST = "first window; later launches knock on"
ASKED = "another launch asked for the window: bringing it forward"


class App:
    """One `python -m app` process; its stderr lines are collected as they come."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "app", *args],
            env=env,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, text: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            if self.process.poll() is not None and not self._reader.is_alive():
                raise AssertionError(f"exited {self.process.returncode}: {self.lines[-20:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {text!r} within {timeout} s: {self.lines[-20:]}")
            time.sleep(0.05)  # another process's output: polled, there is no event here

    def finish(self, timeout: float = 60.0) -> int:
        code = self.process.wait(timeout=timeout)
        self._reader.join(timeout=10)
        if self.process.stdout is not None:
            self.process.stdout.close()
        return code

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        self.finish()


@pytest.fixture
def env() -> dict[str, str]:
    """The test's private config/data dirs (from conftest), offscreen Qt, no keychain."""
    return {
        **os.environ,
        "QT_QPA_PLATFORM": "offscreen",
        "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring",
        "PYTHONPATH": str(ROOT),
    }


@pytest.fixture
def apps() -> Iterator[list[App]]:
    started: list[App] = []
    yield started
    for app in started:
        app.stop(signal.SIGKILL)
    # A killed first window leaves its socket file (in the temp folder): remove it.
    from PySide6.QtNetwork import QLocalServer

    from app.ui.single_instance import server_name

    QLocalServer.removeServer(server_name())


@pytest.mark.slow
def test_a_second_launch_brings_the_first_forward_and_exits(
    env: dict[str, str], apps: list[App]
) -> None:
    first = App(env)
    apps.append(first)
    first.wait_for(FIRST)

    second = App(env)
    apps.append(second)
    assert second.finish(timeout=60) == 0
    assert any("already running; its window was brought forward" in x for x in second.lines)
    assert not any(FIRST in line for line in second.lines)  # it never opened a window
    first.wait_for(ASKED, timeout=30)
    assert first.process.poll() is None  # the first one goes on

    # The CLI is not affected: it runs beside the window.
    cli = subprocess.run(
        [sys.executable, "-m", "app", "ls"], env=env, cwd=ROOT, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert "already running" not in cli.stdout + cli.stderr


@pytest.mark.slow
def test_after_the_first_window_crashed_the_next_launch_is_first(
    env: dict[str, str], apps: list[App]
) -> None:
    first = App(env)
    apps.append(first)
    first.wait_for(FIRST)
    first.stop(signal.SIGKILL)  # no cleanup: its lock dies with it, its socket file stays

    again = App(env)
    apps.append(again)
    again.wait_for(FIRST)
    third = App(env)
    apps.append(third)
    assert third.finish(timeout=60) == 0
    again.wait_for(ASKED, timeout=30)
