"""The "Cost so far" column follows the provider's billing rule (Hetzner: per started hour)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from pytestqt.qtbot import QtBot

from app.ui import formatting
from app.ui.models import Column
from tests.emulators.hetzner import HetznerEmulator
from tests.ui.harness import TOKEN, configured_settings, make_shell


def test_cost_so_far_counts_started_hours(
    qtbot: QtBot, qloop: asyncio.AbstractEventLoop, tmp_path: Path
) -> None:
    emulator = HetznerEmulator(token=TOKEN)
    emulator.set_price("cx23", "fsn1", "0.0080", "4.99")
    now = datetime.now(UTC)
    ages = {"fresh": timedelta(minutes=3), "older": timedelta(hours=3, minutes=12)}
    for name, age in ages.items():
        emulator.add_server(
            f"bivy-{name}",
            {"managed-by": "bivy", "bivy-workspace": name},
            location="fsn1",
            created=(now - age).timestamp(),
        )
    shell = make_shell(emulator, tmp_path, configured_settings())
    try:
        shell.begin()
        qtbot.waitUntil(lambda: len(shell.costs) == 2, timeout=10000)
        model = shell.window.model
        cells = {}
        for row in range(model.rowCount()):
            ws = model.workspace_at(row)
            assert ws is not None and ws.server is not None
            # Hetzner's server list carries no price: it comes from the live sizes.
            price = ws.server.price
            hourly = (
                price.hourly if price is not None else shell.costs[(ws.account, ws.name)].hourly
            )
            assert hourly is not None
            assert hourly in (Decimal("0.0080"), Decimal("0.0080") * Decimal("1.19"))
            cells[ws.name] = (model.index(row, Column.COST).data(), hourly)
        # 3 min: one started hour; 3 h 12 min: four started hours.
        text, hourly = cells["fresh"]
        assert text == formatting.money(hourly * 1)
        text, hourly = cells["older"]
        assert text == formatting.money(hourly * 4)
        assert cells["fresh"][0] != cells["older"][0]
    finally:
        done = asyncio.ensure_future(shell.shutdown())
        qtbot.waitUntil(done.done, timeout=10000)
        shell.window.deleteLater()
