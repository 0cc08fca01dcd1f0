"""Longest Qt event-loop stall while refreshing 200 workspaces behind 300 ms of API latency.

Usage: python benchmarks/ui_responsiveness.py [--workspaces 200] [--latency 0.3] [--refreshes 5]
The app's real shell (WorkspaceService, CostService, window, tray) refreshes against the
in-process Hetzner emulator while a 5 ms QTimer heartbeat measures its gaps: the wall-clock
figure (what a user feels, including time the OS gives other processes) and the Qt thread's CPU
time between two beats (the app's own work). Offscreen Qt, isolated config/data/keychain.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


async def measure(workspaces: int, latency: float, refreshes: int, data: Path) -> None:
    from tests.emulators.hetzner import HetznerEmulator
    from tests.ui.harness import (
        TOKEN,
        add_bivy_servers,
        configured_settings,
        make_shell,
        refresh_stall,
    )

    emulator = HetznerEmulator(token=TOKEN, server_limit=10000, rate_limit=1000000, validate=False)
    add_bivy_servers(emulator, workspaces)
    emulator.inject_latency("*", r".*", latency, times=None)
    shell = make_shell(emulator, data, configured_settings())
    shell.begin()
    try:
        warm = await refresh_stall(shell, refreshes=1)  # first list: clients, keychain, ledger
        figures = await refresh_stall(shell, refreshes=refreshes)
    finally:
        await shell.shutdown()
    print(f"workspaces: {figures.rows}, API latency: {latency * 1000:.0f} ms per request")
    print(
        f"first refresh (cold): longest stall {warm.wall_ms:.1f} ms wall, {warm.cpu_ms:.1f} ms CPU"
    )
    print(
        f"{refreshes} refreshes: longest event-loop stall {figures.wall_ms:.1f} ms wall, "
        f"{figures.cpu_ms:.1f} ms CPU on the Qt thread; {figures.per_refresh_s:.2f} s per refresh"
    )
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspaces", type=int, default=200)
    parser.add_argument("--latency", type=float, default=0.3)
    parser.add_argument("--refreshes", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    with tempfile.TemporaryDirectory(prefix="bivy-bench-") as tmp:
        os.environ.update(HOME=tmp, BIVY_CONFIG_DIR=f"{tmp}/config", BIVY_DATA_DIR=f"{tmp}/data")
        import keyring

        from tests.support.memory_keyring import MemoryKeyring

        keyring.set_keyring(MemoryKeyring())
        import qasync
        from PySide6.QtWidgets import QApplication

        app = QApplication(sys.argv[:1])
        loop = qasync.QEventLoop(app)
        asyncio.set_event_loop(loop)
        with loop:
            loop.run_until_complete(
                measure(args.workspaces, args.latency, args.refreshes, Path(tmp))
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
