"""The local provider booting a real Linux guest from a ``.json`` manifest (direct kernel boot,
as the e2e image does): the host's Debian kernel with a busybox initramfs that mounts the
NoCloud seed, prints its label and user data on the console, and powers off. Proves the
manifest path, that the guest sees a ``cidata`` volume carrying the user data byte for byte,
and that a Linux power-off is reaped.

Needs a kernel in /boot with its modules and a static busybox (CI: ``apt-get install
linux-image-amd64 busybox-static``). About 20 s of TCG.
"""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import os
import shutil
import stat
import time
from pathlib import Path

import pytest

from app.domain import LABEL_MANAGED_BY, LABEL_MANAGED_BY_VALUE, CreateServerRequest, ServerStatus
from app.providers.local import LocalProvider

MODULES = ("virtio_ring", "virtio", "virtio_pci_legacy_dev", "virtio_pci_modern_dev",
           "virtio_pci", "virtio_blk", "cdrom", "isofs")  # fmt: skip


def _kernel() -> tuple[Path, Path] | None:
    for vmlinuz in sorted(Path("/boot").glob("vmlinuz-*"), reverse=True):
        modules = Path("/lib/modules") / vmlinuz.name.removeprefix("vmlinuz-")
        if modules.is_dir() and os.access(vmlinuz, os.R_OK):
            return vmlinuz, modules
    return None


def _busybox() -> Path | None:
    for candidate in ("/bin/busybox", "/usr/bin/busybox"):
        path = Path(candidate)
        if path.is_file() and b"ld-linux" not in path.read_bytes()[:4096]:
            return path  # static: no interpreter named in its header
    return None


KERNEL = _kernel()
BUSYBOX = _busybox()
pytestmark = pytest.mark.skipif(
    shutil.which("qemu-system-x86_64") is None or KERNEL is None or BUSYBOX is None,
    reason="needs qemu-system-x86_64, a kernel in /boot with modules and a static busybox "
    "(.ci/setup installs qemu-system-x86 qemu-utils linux-image-amd64 busybox-static)",
)

INIT = """#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in {modules}; do
    f=$(find /lib/modules -name "$m.ko" | head -n 1)
    [ -n "$f" ] && insmod "$f"
done
for i in 1 2 3 4 5 6 7 8 9 10; do [ -b /dev/vdb ] && break; sleep 0.5; done
mkdir -p /seed
mount -t iso9660 -o ro /dev/vdb /seed
echo "SEED-LABEL: $(dd if=/dev/vdb bs=1 skip=32808 count=32 2>/dev/null)"
echo "USER-DATA-BEGIN"
cat /seed/user-data
echo "USER-DATA-END"
sleep 3
poweroff -f
"""


def _cpio(entries: list[tuple[str, int, bytes]]) -> bytes:
    """A ``newc`` cpio archive of (name, mode, data); directories have empty data."""
    out = io.BytesIO()

    def pad(n: int) -> None:
        out.write(b"\0" * ((4 - n % 4) % 4))

    for ino, (name, mode, data) in enumerate([*entries, ("TRAILER!!!", 0, b"")], start=1):
        encoded = name.encode() + b"\0"
        fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(encoded), 0]
        header = b"070701" + b"".join(f"{v:08x}".encode() for v in fields)
        out.write(header + encoded)
        pad(len(header) + len(encoded))
        out.write(data)
        pad(len(data))
    return out.getvalue()


def build_initramfs(path: Path) -> None:
    assert KERNEL is not None and BUSYBOX is not None
    _, modules = KERNEL
    entries: list[tuple[str, int, bytes]] = [
        (d, stat.S_IFDIR | 0o755, b"") for d in ("bin", "proc", "sys", "dev", "lib", "lib/modules")
    ]
    entries.append(("bin/busybox", stat.S_IFREG | 0o755, BUSYBOX.read_bytes()))
    for name in MODULES:
        found = next(modules.rglob(f"{name}.ko"), None)
        if found is not None:  # built in on some kernels
            entries.append((f"lib/modules/{name}.ko", stat.S_IFREG | 0o644, found.read_bytes()))
    init = INIT.format(modules=" ".join(MODULES)).encode()
    entries.append(("init", stat.S_IFREG | 0o755, init))
    path.write_bytes(gzip.compress(_cpio(entries), compresslevel=1))


@pytest.mark.slow
async def test_linux_guest_from_a_manifest_sees_the_seed_and_is_reaped(tmp_path: Path) -> None:
    assert KERNEL is not None
    vmlinuz, _ = KERNEL
    image = tmp_path / "image"
    image.mkdir()
    (image / "disk.raw").write_bytes(b"\0" * (1 << 20))
    build_initramfs(image / "initrd.gz")
    manifest = image / "image.json"
    manifest.write_text(json.dumps({
        "disk": "disk.raw", "format": "raw", "kernel": str(vmlinuz), "initrd": "initrd.gz",
        "append": "console=ttyS0 quiet panic=-1",
    }))  # fmt: skip
    user_data = "#cloud-config\n# 'quoted' \"double\" $dollar é\nhostname: demo\n"
    local = LocalProvider({"image": str(manifest), "accel": "tcg"}, root=tmp_path / "local")
    started = time.monotonic()
    server = await local.create(
        CreateServerRequest(
            name="bivy-linux",
            region="local",
            size="local-1cpu-2gb",
            ssh_public_key="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMm0tTSXFaQ2MSYqGIr1/9iXdNx x",
            labels={LABEL_MANAGED_BY: LABEL_MANAGED_BY_VALUE, "bivy-workspace": "linux"},
            user_data=user_data,
        )
    )
    assert server.status == ServerStatus.RUNNING
    files = local.store.files(server.id)
    deadline = time.monotonic() + 240
    while await local.list():
        assert time.monotonic() < deadline, files.console.read_text(errors="replace")[-3000:]
        console = files.console.read_text(errors="replace") if files.console.exists() else ""
        await asyncio.sleep(1)
    print(
        f"\nLinux guest booted, read its seed and was reaped in {time.monotonic() - started:.1f} s"
    )
    assert not files.root.exists()
    assert "SEED-LABEL: cidata " in console, console[-2000:]
    seen = console.split("USER-DATA-BEGIN", 1)[1].split("USER-DATA-END", 1)[0]
    assert seen.replace("\r\n", "\n").strip("\n") == user_data.strip("\n")
