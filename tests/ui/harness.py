"""A Bivy shell over the real services, talking to the in-process Hetzner emulator."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from app.providers._polling import Backoff
from app.providers.hetzner import HetznerProvider
from app.providers.registry import PROVIDERS
from app.services.costs import CostService
from app.services.keys import KeyService
from app.services.workspaces import WorkspaceService
from app.settings import Account, SecretKeys, SecretStore, Settings
from app.ui.controllers import StatusController
from app.ui.shell import Shell
from tests.emulators.hetzner import HetznerEmulator

TOKEN = "good-token-1234"


def emulator_validator(emulator: HetznerEmulator):  # type: ignore[no-untyped-def]
    """Validate an account through the real provider code against the emulator."""

    async def validate(kind: str, options: Mapping[str, str]) -> str:
        provider = HetznerProvider(options, transport=emulator.transport())
        try:
            info = await provider.validate()
        finally:
            await provider.aclose()
        return info.description

    return validate


def configured_settings(budget: str | None = None) -> Settings:
    """Settings with one Hetzner account whose token is in the (test) keychain."""
    SecretStore().set(SecretKeys.account("hetzner", "token"), TOKEN)
    settings = Settings(accounts=[Account(id="hetzner", provider="hetzner", label="Personal")])
    if budget is not None:
        from decimal import Decimal

        settings.monthly_budget = Decimal(budget)
    return settings


def make_shell(
    emulator: HetznerEmulator,
    data_dir: Path,
    settings: Settings | None = None,
    *,
    confirm: bool = True,
    refresh_seconds: int | None = None,
    status: StatusController | None = None,
) -> Shell:
    """The app's shell with real WorkspaceService/CostService; deletes are confirmed."""
    settings = settings if settings is not None else Settings()
    if refresh_seconds is not None:
        settings.refresh_seconds = refresh_seconds
    secrets = SecretStore()

    def service() -> WorkspaceService:
        return WorkspaceService(
            settings,
            secrets,
            transport_factory=lambda _account: emulator.transport(),
            poll_backoff=Backoff(initial=0.05, factor=1.5, maximum=0.2),
        )

    return Shell(
        settings,
        secrets,
        workspace_service=service(),
        cost_service=CostService(data_dir / "ledger.sqlite3"),
        status=status,
        providers=PROVIDERS,
        validator=emulator_validator(emulator),
        public_key=KeyService(secrets).public_key,
        confirm=lambda *_: confirm,
    )


def live_servers(emulator: HetznerEmulator) -> list[str]:
    """Names of servers that exist at the emulated provider (deleting ones excluded)."""
    with emulator.lock:
        ids = [s.id for s in emulator.project.servers.values()]
    return [str(i) for i in ids if emulator.server_status(i) not in (None, "deleting")]


def add_bivy_servers(emulator: HetznerEmulator, count: int) -> None:
    """``count`` running Bivy servers, created an hour ago, spread over three locations."""
    import time

    created = time.time() - 3600
    for i in range(count):
        name = f"ws{i:03d}"
        emulator.add_server(
            f"bivy-{name}",
            {"managed-by": "bivy", "bivy-workspace": name},
            location=("fsn1", "nbg1", "hel1")[i % 3],
            created=created,
        )


@dataclass(frozen=True)
class StallFigures:
    """What ``refresh_stall`` measured.

    Attributes:
        wall_ms: longest wall-clock gap of the heartbeat beyond its interval.
        cpu_ms: most CPU time the Qt thread spent between two heartbeats.
        rows: rows shown at the end; per_refresh_s: seconds per refresh.
        own_ms: longest gap not explained by waiting for a CPU (``StallMeter.longest_own_ms``).
    """

    wall_ms: float
    cpu_ms: float
    rows: int
    per_refresh_s: float
    own_ms: float


async def refresh_stall(shell: Shell, refreshes: int = 3) -> StallFigures:
    """Run ``refreshes`` full refreshes (list + costs + tray) under a 5 ms QTimer heartbeat."""
    import asyncio
    import time

    from app.ui.heartbeat import StallMeter

    assert shell.workspaces is not None and shell.cost_controller is not None
    meter = StallMeter(interval_ms=5)
    meter.start()
    started = time.perf_counter()
    listed = asyncio.Event()
    costed = asyncio.Event()

    def on_listed(*_: object) -> None:
        listed.set()

    def on_costs(*_: object) -> None:
        costed.set()

    shell.workspaces.listed.connect(on_listed)
    shell.cost_controller.snapshot.connect(on_costs)
    try:
        for _ in range(refreshes):
            listed.clear()
            costed.clear()
            shell.refresh_timer.stop()
            shell.request_refresh()
            await asyncio.wait_for(listed.wait(), 120)
            await asyncio.wait_for(costed.wait(), 120)
    finally:
        shell.workspaces.listed.disconnect(on_listed)
        shell.cost_controller.snapshot.disconnect(on_costs)
    elapsed = (time.perf_counter() - started) / refreshes
    await asyncio.sleep(0.05)
    meter.stop()
    return StallFigures(
        meter.longest_ms,
        meter.longest_cpu_ms,
        shell.window.model.rowCount(),
        elapsed,
        meter.longest_own_ms,
    )


def assert_responsive(meter: object, limit_ms: float = 200) -> None:
    """Between two heartbeats the Qt thread never worked ``limit_ms``, nor was it stalled that
    long by anything but waiting for a CPU (a blocking call counts, a busy machine does not).
    Both checks always run, however loaded the machine; the limit sits below the latencies and
    waits the flows inject, so a blocking call fails; smoothness figures are a benchmark's job
    (see test_responsiveness.py)."""
    import os

    cpu = meter.longest_cpu_ms  # type: ignore[attr-defined]
    own = meter.longest_own_ms  # type: ignore[attr-defined]
    wall = meter.longest_ms  # type: ignore[attr-defined]
    load = f"wall {wall:.1f} ms, load average {os.getloadavg()[0]:.1f}"
    assert cpu < limit_ms, f"the Qt thread worked {cpu:.1f} ms without a break ({load})"
    assert own < limit_ms, f"the event loop was blocked {own:.1f} ms ({load})"
