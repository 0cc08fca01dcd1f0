"""The workspace service over the local provider: a reaped VM's workspace is forgotten at once
(record, terminal password, ssh entry), not after the grace period clouds get."""

from __future__ import annotations

from collections.abc import Callable

from app.domain import LABEL_MANAGED_BY, LABEL_MANAGED_BY_VALUE, ServerStatus
from app.paths import data_dir
from app.providers.local.client import VmStore
from app.providers.local.models import VmState
from app.services.registry import Registry, WorkspaceRecord
from app.services.workspaces import TTYD_PASSWORD, WorkspaceService
from app.settings import SecretKeys, SecretStore, Settings


async def test_a_reaped_vm_is_forgotten_at_once(make_state: Callable[..., VmState]) -> None:
    secrets = SecretStore()
    registry = Registry()
    service = WorkspaceService(Settings(), secrets, registry=registry, environ={})
    store = VmStore(data_dir() / "local" / "vms")
    labels = {LABEL_MANAGED_BY: LABEL_MANAGED_BY_VALUE, "bivy-workspace": "kept"}
    kept = make_state("kept-00000001", name="bivy-kept", labels=labels)
    store.make(kept.id)
    store.write(kept)  # its QEMU is not running: listed as off, so kept
    for name in ("kept", "gone"):
        await registry.aput(WorkspaceRecord(name=name, account="local", provider="local",
                                            server_id=f"{name}-00000001", ipv4="127.0.0.1",
                                            ssh_port=40022))  # fmt: skip
        await secrets.aset(SecretKeys.workspace(name, TTYD_PASSWORD), "pw")
    try:
        listing = await service.list_workspaces()
    finally:
        await service.aclose()
    assert listing.errors == {}
    assert [(w.name, w.server.status if w.server else None) for w in listing.workspaces] == [
        ("kept", ServerStatus.OFF)
    ]
    # "gone" was created a moment ago, yet it is forgotten: the VM folders are the truth.
    assert [r.name for r in await registry.aall()] == ["kept"]
    assert await secrets.aget(SecretKeys.workspace("gone", TTYD_PASSWORD)) is None
    assert await secrets.aget(SecretKeys.workspace("kept", TTYD_PASSWORD)) == "pw"
