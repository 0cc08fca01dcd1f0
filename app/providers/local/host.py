"""This computer as the local provider sees it: architecture, QEMU binaries, CPUs, memory, disk."""

from __future__ import annotations

import os
import platform
import shutil
from dataclasses import dataclass
from pathlib import Path

from app.errors import InvalidInput
from app.providers.local.models import KIND

#: platform.machine() → QEMU's name for the architecture.
_ARCH = {"x86_64": "x86_64", "amd64": "x86_64", "arm64": "aarch64", "aarch64": "aarch64"}
#: QEMU's architecture name → Ubuntu's (cloud image file names).
UBUNTU_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}


@dataclass(frozen=True)
class HostResources:
    """What the host can give VMs.

    Attributes:
        cpus: logical CPUs; memory_bytes: physical memory; disk_free_bytes: free space where
        the VM disks go.
    """

    cpus: int
    memory_bytes: int
    disk_free_bytes: int


def host_arch() -> str:
    """``x86_64`` or ``aarch64``; ``InvalidInput`` on anything else."""
    machine = platform.machine().lower()
    arch = _ARCH.get(machine)
    if arch is None:
        raise InvalidInput(
            f"local VMs need an x86_64 or arm64 computer, this one is {machine or 'unknown'}",
            provider=KIND,
        )
    return arch


def find_qemu(arch: str, override: str = "") -> Path:
    """The ``qemu-system-<arch>`` binary: ``override`` (a path or a name on PATH), else PATH."""
    wanted = override.strip() or f"qemu-system-{arch}"
    found = shutil.which(wanted)
    if found is None:
        raise InvalidInput(
            f"QEMU ({wanted}) is not installed",
            hint=(
                "Install it: Debian/Ubuntu `sudo apt install qemu-system-x86 qemu-utils` "
                "(arm64: qemu-system-arm), Fedora `sudo dnf install qemu-kvm qemu-img`, "
                "macOS `brew install qemu`"
            ),
            provider=KIND,
        )
    return Path(found)


def find_qemu_img(qemu: Path) -> Path:
    """``qemu-img``: beside the QEMU binary, else on PATH."""
    beside = qemu.parent / "qemu-img"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("qemu-img")
    if found is None:
        raise InvalidInput(
            "qemu-img is not installed",
            hint="Install it: Debian/Ubuntu `sudo apt install qemu-utils`; macOS `brew install "
            "qemu`",
            provider=KIND,
        )
    return Path(found)


def _memory_bytes() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 0


def host_resources(disk_dir: Path) -> HostResources:
    """CPUs, memory and the free space of ``disk_dir`` (or its nearest existing parent)."""
    probe = disk_dir
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        free = shutil.disk_usage(probe).free
    except OSError:
        free = 0
    return HostResources(
        cpus=os.cpu_count() or 1, memory_bytes=_memory_bytes(), disk_free_bytes=free
    )
