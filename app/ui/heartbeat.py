"""Measures how long the Qt event loop stalls: a fast QTimer whose gaps reveal blocked time."""

from __future__ import annotations

import time

from PySide6.QtCore import QObject, Qt, QTimer


class StallMeter(QObject):
    """Ticks every ``interval_ms``; the longest gap beyond the interval is the worst stall.

    Two clocks: wall time (what the user sees, including time the OS gave other processes) and
    the Qt thread's CPU time (work done on the event loop's thread between two ticks, which is
    what the app itself is responsible for, whatever else the machine runs).

    Attributes:
        longest_ms: the longest wall-clock stall since ``start`` (gap minus the interval).
        longest_cpu_ms: the most CPU time the Qt thread spent between two ticks.
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
        self.ticks = 0
        self._last = 0.0
        self._last_cpu = 0.0

    def start(self) -> None:
        self.longest_ms = 0.0
        self.longest_cpu_ms = 0.0
        self.ticks = 0
        self._last = time.perf_counter()
        self._last_cpu = time.thread_time()
        self.timer.start()

    def stop(self) -> float:
        self.timer.stop()
        self._tick()
        return self.longest_ms

    def _tick(self) -> None:
        now = time.perf_counter()
        cpu = time.thread_time()
        self.longest_ms = max(self.longest_ms, (now - self._last) * 1000 - self.interval_ms)
        self.longest_cpu_ms = max(self.longest_cpu_ms, (cpu - self._last_cpu) * 1000)
        self.ticks += 1
        self._last = now
        self._last_cpu = cpu
