"""A cost ledger that is not a database is kept aside and a new one begins; a busy one is not
mistaken for a broken one (issue 13)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from app.services import ledger
from app.services.costs import CostService
from app.services.ledger import LedgerError, ledger_path
from app.settings import take_notices


async def test_a_ledger_that_is_not_a_database_is_kept_and_a_new_one_begins() -> None:
    path = ledger_path()
    path.parent.mkdir(parents=True)
    path.write_bytes(b"this is not SQLite" * 100)
    take_notices()
    assert await CostService(path).entries() == []
    (notice,) = take_notices()
    kept = Path(notice.kept_at)
    assert kept.name.startswith("ledger.sqlite3.corrupt-")
    assert kept.read_bytes() == b"this is not SQLite" * 100
    assert "not a usable SQLite database" in notice.text
    with sqlite3.connect(path) as conn:  # the new ledger is a real one, in WAL mode
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_a_busy_ledger_is_not_taken_for_a_broken_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = ledger_path()
    await CostService(path).entries()  # creates it
    monkeypatch.setattr(ledger, "BUSY_TIMEOUT", 0.2)
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("PRAGMA locking_mode=EXCLUSIVE")
        holder.execute("BEGIN EXCLUSIVE")
        take_notices()
        with pytest.raises(LedgerError, match="locked"):
            await CostService(path).entries()
        assert take_notices() == []
        assert not list(path.parent.glob("ledger.sqlite3.corrupt-*"))
    finally:
        holder.rollback()
        holder.close()
