"""200 workspaces behind 300 ms of API latency: a refresh never blocks the event loop.

The heartbeat is a 5 ms QTimer. Its CPU-time figure is work done on the Qt thread between two
ticks; its wall-clock figure minus the time the thread waited for a CPU (Linux schedstat) is
what the app blocked. A synchronous request behind the 300 ms latency would show as 300 ms or
more, so both are held to 200 ms here, however loaded the machine: this test proves nothing
blocks. How smooth a refresh is (the 50 ms goal) is a speed figure, printed here and by
benchmarks/ui_responsiveness.py, not asserted (on a loaded 2-core machine it varies 25-90 ms).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from pytestqt.qtbot import QtBot

from tests.emulators.hetzner import HetznerEmulator
from tests.support.waits import WAIT_MS
from tests.ui.harness import (
    TOKEN,
    add_bivy_servers,
    configured_settings,
    make_shell,
    refresh_stall,
)

#: Below the injected 300 ms latency: any synchronous request fails the test.
MAX_STALL_MS = 200


@pytest.mark.slow
def test_refresh_of_200_workspaces_never_stalls_the_window(
    qtbot: QtBot, qloop: asyncio.AbstractEventLoop, tmp_path: Path
) -> None:
    # Spec validation of 200-server pages is test machinery, not app work: off here (the
    # flow tests validate every request and response).
    emulator = HetznerEmulator(token=TOKEN, server_limit=1000, rate_limit=100000, validate=False)
    add_bivy_servers(emulator, 200)
    emulator.inject_latency("*", r".*", 0.3, times=None)
    shell = make_shell(emulator, tmp_path, configured_settings())
    shell.begin()
    try:
        task = asyncio.ensure_future(refresh_stall(shell, refreshes=3))
        qtbot.waitUntil(task.done, timeout=120000)
        figures = task.result()
        load = os.getloadavg()[0]
        print(
            f"longest stall {figures.wall_ms:.1f} ms wall, {figures.cpu_ms:.1f} ms CPU, "
            f"{figures.own_ms:.1f} ms not waiting for a CPU, "
            f"{figures.rows} rows, {figures.per_refresh_s:.2f} s per refresh, load {load:.1f}"
        )
        assert figures.rows == 200
        assert figures.per_refresh_s >= 0.3  # the latency really applied
        assert figures.cpu_ms < MAX_STALL_MS, f"Qt thread worked {figures.cpu_ms:.1f} ms"
        assert figures.own_ms < MAX_STALL_MS, f"event loop blocked {figures.own_ms:.1f} ms"
    finally:
        done = asyncio.ensure_future(shell.shutdown())
        qtbot.waitUntil(done.done, timeout=WAIT_MS)
        shell.window.close()
        shell.window.deleteLater()
