"""A Bivy shell over the real services, talking to the in-process Hetzner emulator."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from app.providers._polling import Backoff
from app.providers.hetzner import HetznerProvider
from app.providers.registry import PROVIDERS
from app.services.costs import CostService
from app.services.keys import KeyService
from app.services.workspaces import WorkspaceService
from app.settings import Account, SecretKeys, SecretStore, Settings
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
) -> Shell:
    """The app's shell with real WorkspaceService/CostService; deletes are confirmed."""
    settings = settings if settings is not None else Settings()
    if refresh_seconds is not None:
        settings.refresh_seconds = refresh_seconds
    secrets = SecretStore()
    service = WorkspaceService(
        settings,
        secrets,
        transport_factory=lambda _account: emulator.transport(),
        poll_backoff=Backoff(initial=0.05, factor=1.5, maximum=0.2),
    )
    return Shell(
        settings,
        secrets,
        workspace_service=service,
        cost_service=CostService(data_dir / "ledger.sqlite3"),
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
