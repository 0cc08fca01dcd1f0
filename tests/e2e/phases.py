"""Seconds per bootstrap phase, from the VM's status.json ``timings`` and the host's clock.

The VM records when each phase began (``timings``: phase → epoch seconds) and how long each
bootstrap step took (``steps``). The host knows when ``bivy create`` started and when the
terminal first answered. Together they give the figures the e2e prints and
benchmarks/boot_phases.py compares::

    boot        create → the VM's first phase (QEMU start, kernel, systemd, cloud-init)
    installing  installing → cloning
    cloning     cloning → building
    building    building → starting
    starting    starting → ready
    ready       ready → a keystroke echoed by the terminal (tunnel + ttyd)
    total       create → that keystroke
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field

PHASES = ("booting", "installing", "cloning", "building", "starting", "ready")
COLUMNS = ("boot", "installing", "cloning", "building", "starting", "ready", "total")


@dataclass
class PhaseReport:
    """Seconds per column of ``COLUMNS`` (missing when not measured) and the bootstrap steps."""

    seconds: dict[str, float] = field(default_factory=dict)
    steps: dict[str, float] = field(default_factory=dict)

    def line(self, label: str) -> str:
        cells = [f"{self.seconds[c]:7.1f}" if c in self.seconds else "      -" for c in COLUMNS]
        return f"{label:<14}" + " ".join(cells)

    @staticmethod
    def header() -> str:
        return f"{'':<14}" + " ".join(f"{c:>7}" for c in COLUMNS)

    def steps_line(self) -> str:
        return ", ".join(f"{name} {value:.1f}s" for name, value in sorted(self.steps.items()))


def report(
    status: Mapping[str, object], created_at: float, terminal_at: float | None
) -> PhaseReport:
    """Build the report from status.json (``timings``, ``steps``) and two host timestamps."""
    raw = status.get("timings")
    timings = {k: float(v) for k, v in raw.items()} if isinstance(raw, dict) else {}
    raw_steps = status.get("steps")
    steps = (
        {k: float(v) for k, v in raw_steps.items() if isinstance(v, int | float)}
        if isinstance(raw_steps, dict)
        else {}
    )
    out = PhaseReport(steps=steps)
    first = min((timings[p] for p in PHASES if p in timings), default=None)
    if first is not None:
        out.seconds["boot"] = max(0.0, first - created_at)
    ordered = [p for p in PHASES if p in timings]
    for phase, following in itertools.pairwise(ordered):
        column = "boot" if phase == "booting" else phase
        out.seconds[column] = out.seconds.get(column, 0.0) + timings[following] - timings[phase]
    if terminal_at is not None:
        if "ready" in timings:
            out.seconds["ready"] = max(0.0, terminal_at - timings["ready"])
        out.seconds["total"] = terminal_at - created_at
    return out
