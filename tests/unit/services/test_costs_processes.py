"""The cost ledger shared by two real processes (window and CLI): WAL, waits, no collisions."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from app.services.ledger import ledger_path

ROOT = Path(__file__).resolve().parents[3]

_RECORDER = textwrap.dedent(
    """
    import sys
    from datetime import UTC, datetime, timedelta
    from app.domain import Server, ServerStatus
    from app.services.billing import default_rule_for
    from app.services.ledger import Ledger, SeenServer, ledger_path
    rounds, per_round, offset = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    ledger = Ledger(ledger_path())
    base = datetime(2026, 3, 1, tzinfo=UTC)
    for r in range(rounds):
        # Both processes see the same new servers in the same round: each round's first
        # sighting races to insert the same rows.
        seen = [
            SeenServer("hetzner", Server(provider="hetzner", id=f"{r}-{i}", name=f"bivy-{r}-{i}",
                                    status=ServerStatus.RUNNING, created_at=base),
                  None, default_rule_for("hetzner"), 2)
            for i in range(per_round)
        ]
        ledger.record(seen, ["hetzner"], base + timedelta(minutes=r, seconds=offset))
        ledger.entries(None)
    print("done", flush=True)
    """
)


@pytest.mark.slow
def test_two_processes_record_at_once_without_errors() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _RECORDER, "80", "15", offset],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for offset in ("0", "1")
    ]
    for proc in procs:
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err[-2000:]
        assert out.strip() == "done"
    with sqlite3.connect(ledger_path()) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        (count,) = conn.execute("SELECT count(*) FROM servers").fetchone()
    assert count == 80 * 15
