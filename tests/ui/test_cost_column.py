"""The "Cost so far" column follows the provider's billing rule (Hetzner: per started hour)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

from pytestqt.qtbot import QtBot

from app.ui.models import Column
from tests.emulators.hetzner import HetznerEmulator
from tests.support.waits import WAIT_MS
from tests.ui.harness import TOKEN, configured_settings, make_shell


def test_cost_so_far_counts_started_hours(
    qtbot: QtBot, qloop: asyncio.AbstractEventLoop, tmp_path: Path
) -> None:
    emulator = HetznerEmulator(token=TOKEN)
    # A net price whose gross (with the account's VAT) rounds apart from it in every cell.
    emulator.set_price("cx23", "fsn1", "0.5100", "300.00")
    # The gross hourly price as the API states it, read from its own answer (the app must show
    # what the user pays, VAT included, in the account's currency).
    gross = _gross_hourly(emulator, "cx23", "fsn1")
    assert gross != Decimal("0.5100")  # the account has VAT: net and gross differ
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
        qtbot.waitUntil(lambda: len(shell.costs) == 2, timeout=WAIT_MS)
        model = shell.window.model
        cells = {}
        for row in range(model.rowCount()):
            ws = model.workspace_at(row)
            assert ws is not None
            cells[ws.name] = model.index(row, Column.COST).data()
        # Billed per started hour: 3 min is one hour, 3 h 12 min four; to the cent, half up.
        assert cells == {"fresh": euros(gross * 1), "older": euros(gross * 4)}
        # The figures themselves (19 % VAT on 0.51): €0.61 and €2.43, not €0.51 and €2.04.
        assert cells == {"fresh": "€0.61", "older": "€2.43"}
    finally:
        done = asyncio.ensure_future(shell.shutdown())
        qtbot.waitUntil(done.done, timeout=WAIT_MS)
        shell.window.deleteLater()


def euros(amount: Decimal) -> str:
    """``€1.23``: the test's own rendering, not the app's formatter."""
    return "€" + str(amount.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def _gross_hourly(emulator: HetznerEmulator, server_type: str, location: str) -> Decimal:
    """The gross hourly price of ``server_type`` in ``location`` from the API's GET /pricing."""
    import httpx

    with emulator.serve() as url:
        response = httpx.get(
            f"{url}/pricing", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
        )
    response.raise_for_status()
    for entry in response.json()["pricing"]["server_types"]:
        if entry["name"] == server_type:
            for price in entry["prices"]:
                if price["location"] == location:
                    return Decimal(price["price_hourly"]["gross"])
    raise AssertionError(f"no price for {server_type} in {location}")
