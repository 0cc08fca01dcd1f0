"""Measures how long the Qt event loop stalls: a fast QTimer whose gaps reveal blocked time."""

from __future__ import annotations

import time
from pathlib import Path

from PySide6.QtCore import QObject, Qt, QTimer


class StallMeter(QObject):
    """Ticks every ``interval_ms``; the longest gap beyond the interval is the worst stall.

    Three figures: wall time (what the user sees, including time the OS gave other processes),
    the Qt thread's CPU time (work done on the event loop's thread between two ticks, which is
    what the app itself is responsible for, whatever else the machine runs), and the wall gap
    minus the time the thread sat runnable waiting for a CPU (Linux schedstat): that one still
    counts a blocking call (a synchronous request, a sleep) but not a busy machine.

    Attributes:
        longest_ms: the longest wall-clock stall since ``start`` (gap minus the interval).
        longest_cpu_ms: the most CPU time the Qt thread spent between two ticks.
        longest_own_ms: the longest stall not explained by waiting for a CPU (equals
            ``longest_ms`` where the kernel does not report run-queue waits).
        ticks: how many ticks ran.
    """

    def __init__(self, interval_ms: int = 5, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.interval_ms = interval_ms
        self.timer = QTimer(self)
        self.timer.setTimerType(Qt.TimerType.PreciseTimer)
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(self._tick)
        self.longest_ms = 0.0
        self.longest_cpu_ms = 0.0
        self.longest_own_ms = 0.0
        self.ticks = 0
        self._last = 0.0
        self._last_cpu = 0.0
        self._last_waited = 0.0

    def start(self) -> None:
        self.longest_ms = 0.0
        self.longest_cpu_ms = 0.0
        self.longest_own_ms = 0.0
        self.ticks = 0
        self._last = time.perf_counter()
        self._last_cpu = time.thread_time()
        self._last_waited = _run_queue_wait()
        self.timer.start()

    def stop(self) -> float:
        self.timer.stop()
        self._tick()
        return self.longest_ms

    def _tick(self) -> None:
        now = time.perf_counter()
        cpu = time.thread_time()
        waited = _run_queue_wait()
        gap_ms = (now - self._last) * 1000 - self.interval_ms
        self.longest_ms = max(self.longest_ms, gap_ms)
        self.longest_cpu_ms = max(self.longest_cpu_ms, (cpu - self._last_cpu) * 1000)
        own_ms = gap_ms - (waited - self._last_waited) * 1000
        self.longest_own_ms = max(self.longest_own_ms, own_ms)
        self.ticks += 1
        self._last = now
        self._last_cpu = cpu
        self._last_waited = waited


_SCHEDSTAT = Path("/proc/thread-self/schedstat")


def _run_queue_wait() -> float:
    """Seconds the calling thread has spent runnable but waiting for a CPU (0 if unknown)."""
    try:
        return int(_SCHEDSTAT.read_text().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0
