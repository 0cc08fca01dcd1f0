"""Fixtures for the local provider: a state folder in tmp, a fixed host, a VM state factory."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest

from app.domain import LABEL_MANAGED_BY, LABEL_MANAGED_BY_VALUE, LABEL_WORKSPACE, utcnow
from app.providers.local import provider as provider_mod
from app.providers.local.host import HostResources
from app.providers.local.models import BootImage, VmState

GiB = 1 << 30


@pytest.fixture
def host(monkeypatch: pytest.MonkeyPatch) -> HostResources:
    """This computer, as the provider sees it: 2 CPUs, 8 GiB, 100 GiB free."""
    resources = HostResources(cpus=2, memory_bytes=8 * GiB, disk_free_bytes=100 * GiB)
    monkeypatch.setattr(provider_mod, "host_resources", lambda _path: resources)
    return resources


@pytest.fixture
def make_state(tmp_path: Path) -> Callable[..., VmState]:
    def make(vm_id: str = "demo-0a1b2c3d", *, created_at: datetime | None = None,
             **changes: object) -> VmState:  # fmt: skip
        base = tmp_path / "base.img"
        base.write_bytes(b"\0" * 512)
        state = VmState(
            id=vm_id,
            name="bivy-demo",
            labels={LABEL_MANAGED_BY: LABEL_MANAGED_BY_VALUE, LABEL_WORKSPACE: "demo"},
            size="local-2cpu-4gb",
            cpus=2,
            memory_mb=4096,
            disk_gb=30,
            ssh_port=40022,
            qmp_socket=str(tmp_path / "qmp.sock"),
            phase="started",
            created_at=created_at or utcnow(),
            image=BootImage(disk=base, format="raw", source="test"),
        )
        return state.model_copy(update=changes)

    return make
