"""The local provider's images (prebuilds) with real QEMU and qemu-img: a builder VM that powers
itself off stays (off) to be imaged, its disk is flattened into a standalone qcow2 that keeps
what the VM wrote, a VM created from the image boots it through an overlay, an image in use
cannot be deleted, and ``power_off`` stops a running VM for imaging.

The guest is the boot-sector guest of test_local_provider.py (prints "BIVY-GUEST-UP", powers off
after N seconds). What the "VM wrote" is put into its overlay with ``qemu-io`` while it is off.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from app.domain import (
    LABEL_MANAGED_BY,
    LABEL_MANAGED_BY_VALUE,
    CreateServerRequest,
    ImageStatus,
    ServerStatus,
)
from app.errors import Conflict, NotFound
from app.providers.local import LocalProvider
from app.providers.local import provider as provider_mod
from tests.integration.test_local_provider import FOREVER, guest_image

pytestmark = pytest.mark.skipif(
    shutil.which("qemu-system-x86_64") is None
    or shutil.which("qemu-img") is None
    or shutil.which("qemu-io") is None
    or os.uname().machine != "x86_64",
    reason="needs qemu-system-x86_64, qemu-img and qemu-io on x86_64 (.ci/setup installs "
    "qemu-system-x86 qemu-utils)",
)

PREBUILD_LABELS = {"bivy-prebuild": "0123456789abcdef", "bivy-config-hash": "fedcba9876543210"}


def request(
    name: str, labels: dict[str, str] | None = None, image: str | None = None
) -> CreateServerRequest:
    return CreateServerRequest(
        name=name,
        region="local",
        size="local-1cpu-2gb",
        ssh_public_key="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMm0tTSXFaQ2MSYqGIr1/9iXdNxkvUDlQp x",
        labels={LABEL_MANAGED_BY: LABEL_MANAGED_BY_VALUE, "bivy-workspace": name[5:],
                **(labels or {})},
        user_data="#cloud-config\nhostname: demo\n",
        image=image,
    )  # fmt: skip


def qemu_io(disk: Path, command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["qemu-io", "-f", "qcow2", "-c", command, str(disk)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip


def info(disk: Path) -> dict[str, object]:
    out = subprocess.run(["qemu-img", "info", "--output=json", "-U", str(disk)],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    result: dict[str, object] = json.loads(out)
    return result


async def wait_status(local: LocalProvider, server_id: str, status: ServerStatus) -> None:
    deadline = time.monotonic() + 90
    while (await local.get(server_id)).status != status:
        assert time.monotonic() < deadline, (await local.get(server_id)).status
        await asyncio.sleep(0.3)


async def test_builder_image_create_from_it_and_delete(tmp_path: Path) -> None:
    base = guest_image(tmp_path / "guest.img", seconds=2)
    local = LocalProvider({"image": str(base), "accel": "tcg"}, root=tmp_path / "local")
    builder = await local.create(request("bivy-pb-1", PREBUILD_LABELS))
    files = local.store.files(builder.id)
    # The builder powers itself off (as the seal does): kept, reported off, not reaped.
    await wait_status(local, builder.id, ServerStatus.OFF)
    await asyncio.sleep(1)
    assert [s.id for s in await local.list()] == [builder.id]
    assert "prebuild" in (await local.get(builder.id)).status_detail
    # What the build left on its disk (written into the overlay while it is off).
    assert qemu_io(files.disk, "write -P 0xab 2M 64k").returncode == 0

    image = await local.create_image(
        builder.id, name="bivy-prebuild-test", labels={**PREBUILD_LABELS, "bivy-agent": "claude"}
    )
    assert image.status == ImageStatus.AVAILABLE and image.id.startswith("img-")
    assert image.labels[LABEL_MANAGED_BY] == LABEL_MANAGED_BY_VALUE
    assert image.labels["bivy-prebuild"] == PREBUILD_LABELS["bivy-prebuild"]
    assert image.monthly_price is not None and image.monthly_price.monthly == 0
    disk = local.images.folder(image.id) / "disk.qcow2"
    flat = info(disk)
    assert flat["format"] == "qcow2" and "backing-filename" not in flat  # standalone
    assert qemu_io(disk, "read -P 0xab 2M 64k").returncode == 0
    assert qemu_io(disk, "read -P 0xab 4M 64k").returncode != 0  # a real check
    # The boot sector came along from the base.
    raw = tmp_path / "flat.raw"
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(disk), str(raw)], check=True)
    with raw.open("rb") as flat_raw, base.open("rb") as base_raw:  # (20 GB sparse: not whole)
        assert flat_raw.read(512) == base_raw.read(512)
    raw.unlink()
    assert (await local.get_image(image.id)).status == ImageStatus.AVAILABLE
    assert [i.id for i in await local.list_images()] == [image.id]

    await local.delete(builder.id)
    assert not files.root.exists()

    # A VM from the image: an overlay on the image's disk, which boots (and then powers off,
    # being an ordinary workspace: reaped).
    server = await local.create(request("bivy-from", image=image.id))
    vm_files = local.store.files(server.id)
    assert info(vm_files.disk)["backing-filename"] == str(disk)
    with pytest.raises(Conflict):
        await local.delete_image(image.id)  # a VM's disk is an overlay on it
    deadline = time.monotonic() + 90
    console = ""
    while await local.list():
        console = vm_files.console.read_text(errors="replace") if vm_files.console.exists() else ""
        assert time.monotonic() < deadline
        await asyncio.sleep(0.3)
    assert "BIVY-GUEST-UP" in console
    await local.delete_image(image.id)
    assert not local.images.folder(image.id).exists()
    assert await local.list_images() == []
    with pytest.raises(NotFound):
        await local.get_image(image.id)
    await local.delete_image(image.id)  # gone already: fine
    assert base.exists()


async def test_power_off_a_running_vm_then_image_it(tmp_path: Path) -> None:
    base = guest_image(tmp_path / "guest.img", seconds=FOREVER)
    local = LocalProvider({"image": str(base), "accel": "tcg"}, root=tmp_path / "local")
    server = await local.create(request("bivy-pb-2", PREBUILD_LABELS))
    with pytest.raises(Conflict):
        await local.create_image(server.id, name="x", labels={})  # still running
    assert local.images.ids() == []
    await local.power_off(server.id)
    assert (await local.get(server.id)).status == ServerStatus.OFF
    image = await local.create_image(server.id, name="x", labels=PREBUILD_LABELS)
    assert image.status == ImageStatus.AVAILABLE
    await local.delete(server.id)
    await local.delete_image(image.id)
    assert local.images.ids() == []


async def test_a_forgotten_builder_is_reaped_after_its_keep_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = guest_image(tmp_path / "guest.img", seconds=1)
    local = LocalProvider({"image": str(base), "accel": "tcg"}, root=tmp_path / "local")
    builder = await local.create(request("bivy-pb-3", PREBUILD_LABELS))
    await wait_status(local, builder.id, ServerStatus.OFF)
    from datetime import timedelta

    monkeypatch.setattr(provider_mod, "BUILDER_KEEP", timedelta(seconds=0))
    assert await local.list() == []
    assert not local.store.files(builder.id).root.exists()


async def test_workspace_create_starts_from_a_prebuild_and_forgets_a_vanished_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``WorkspaceService.create`` over the local provider: the matching prebuild's image is what
    the VM's overlay is backed by (and recorded); ``use_prebuild=False`` and an image deleted
    behind Bivy's back both give the plain base (the vanished one is forgotten)."""
    from app.services.prebuild_hash import repo_key
    from app.services.prebuild_registry import PrebuildRecord, PrebuildRegistry
    from app.services.registry import Registry
    from app.services.workspaces import WorkspaceService
    from app.settings import SecretStore, Settings

    base = guest_image(tmp_path / "guest.img", seconds=FOREVER)
    monkeypatch.setenv("BIVY_LOCAL_IMAGE", str(base))
    monkeypatch.setenv("BIVY_LOCAL_ACCEL", "tcg")
    repo = "https://git.example.org/o/r.git"
    service = WorkspaceService(Settings(), SecretStore())
    local = await service.provider(service.account(provider="local"))
    assert isinstance(local, LocalProvider)
    builder = await local.create(request("bivy-pb-4", PREBUILD_LABELS))
    await local.power_off(builder.id)
    image = await local.create_image(builder.id, name="pb", labels=PREBUILD_LABELS)
    await local.delete(builder.id)
    prebuilds = PrebuildRegistry()
    prebuilds.put(PrebuildRecord(id=image.id, account="local", provider="local", region="local",
                                 repo=repo, repo_key=repo_key(repo, None)))  # fmt: skip
    from app.domain import WorkspaceSpec

    def spec(name: str) -> WorkspaceSpec:
        return WorkspaceSpec(name=name, repo_url=repo, provider="local", size="local-1cpu-2gb")

    steps: list[str] = []
    try:
        made = await service.create(spec("warm"), lambda p: steps.append(p.detail))
        assert made.server is not None
        assert local.store.read(made.server.id).image.disk.parent == local.images.folder(image.id)
        assert f"Starting from the prebuild {image.id}" in " ".join(steps)
        assert Registry().get("warm").prebuild == image.id  # type: ignore[union-attr]
        plain = await service.create(spec("plain"), use_prebuild=False)
        assert plain.server is not None
        assert local.store.read(plain.server.id).image.disk == base
        await service.delete("warm")
        await local.delete_image(image.id)  # gone behind Bivy's back: the registry still has it
        assert [r.id for r in prebuilds.all()] == [image.id]
        cold = await service.create(spec("cold"))
        assert cold.server is not None
        assert local.store.read(cold.server.id).image.disk == base
        assert prebuilds.all() == [] and Registry().get("cold").prebuild == ""  # type: ignore[union-attr]
    finally:
        for name in ("warm", "plain", "cold"):
            with contextlib.suppress(NotFound):
                await service.delete(name)
        await service.aclose()
    assert local.store.ids() == []
