"""The local provider's files as models: a VM's state (``vm.json``), image manifests, sizes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

KIND = "local"
REGION_ID = "local"
REGION_NAME = "This computer"

#: What ``vm.json`` says about the VM's life: ``creating`` until QEMU has started, then
#: ``started``; ``deleting`` once a delete began (a crash halfway leaves it deletable).
VmPhase = Literal["creating", "started", "deleting"]

Accel = Literal["kvm", "hvf", "tcg"]


class BootImage(BaseModel):
    """What a VM boots from, with absolute paths.

    Attributes:
        disk: the base disk image (the VM's overlay is backed by it; it is never written).
        format: ``qcow2`` or ``raw``.
        kernel, initrd, append: direct-kernel boot (from a ``.json`` manifest), else None/"".
        source: where it came from, for messages ("Ubuntu 24.04 cloud image", a path).
    """

    model_config = ConfigDict(frozen=True)

    disk: Path
    format: Literal["qcow2", "raw"] = "qcow2"
    kernel: Path | None = None
    initrd: Path | None = None
    append: str = ""
    source: str = ""


class ImageManifest(BaseModel):
    """A ``.json`` manifest for ``BIVY_LOCAL_IMAGE``: a disk plus a kernel to boot directly.

    Paths are relative to the manifest's folder (or absolute). Other keys (a builder's own
    notes, e.g. ``recipe``) are ignored.
    """

    model_config = ConfigDict(extra="ignore")

    disk: str
    format: Literal["qcow2", "raw"] = "qcow2"
    kernel: str | None = None
    initrd: str | None = None
    append: str = ""


class VmState(BaseModel):
    """One VM's ``vm.json``: everything ``list/get/delete`` need after the app restarted.

    Attributes:
        id: the folder name under ``<data_dir>/local/vms/``.
        name: the server name (``bivy-<workspace>``); labels: Bivy's labels.
        size: the size preset; cpus, memory_mb, disk_gb: what the VM got.
        ssh_port: the port on 127.0.0.1 forwarded to the guest's port 22.
        accel: the accelerator QEMU runs with; accel_note: why (shown to the user).
        qmp_socket: the QMP unix socket (inside the folder unless that path is too long).
        phase: see ``VmPhase``.
        image: what the overlay is backed by.
    """

    id: str
    name: str
    labels: dict[str, str] = Field(default_factory=dict)
    size: str
    cpus: int
    memory_mb: int
    disk_gb: int
    ssh_port: int = 0
    accel: Accel = "tcg"
    accel_note: str = ""
    arch: str = "x86_64"
    qmp_socket: str = ""
    phase: VmPhase = "creating"
    created_at: datetime
    image: BootImage


@dataclass(frozen=True)
class SizePreset:
    """One CPU/memory/disk combination offered (only those the host can give are listed)."""

    name: str
    cpus: int
    memory_gb: int
    disk_gb: int


#: Smallest first. A devcontainer with Docker needs about 2 GB of memory to build comfortably.
SIZE_PRESETS: tuple[SizePreset, ...] = (
    SizePreset("local-1cpu-2gb", 1, 2, 20),
    SizePreset("local-2cpu-4gb", 2, 4, 30),
    SizePreset("local-4cpu-8gb", 4, 8, 40),
    SizePreset("local-8cpu-16gb", 8, 16, 60),
)
DEFAULT_SIZE = "local-2cpu-4gb"
