"""The local provider with real QEMU (TCG) and a real, tiny guest: the accelerator probe boots
its guest; create → running (only SSH forwarded, on 127.0.0.1) → the guest powers off → the VM
is reaped; deleting a running VM leaves no process and no disk; and ``bivy create --provider
local`` / ``ls`` / ``rm`` in a child process.

The guest is a boot sector (tests/unit/providers/local/test_guest.S) that prints
"BIVY-GUEST-UP" on the serial console, waits the seconds in its byte 509 (255: forever) and
powers the machine off through ACPI, as ``systemctl poweroff`` would.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from app.domain import LABEL_MANAGED_BY, LABEL_MANAGED_BY_VALUE, CreateServerRequest, ServerStatus
from app.errors import NotFound
from app.providers.local import LocalProvider
from app.providers.local import accel as accel_mod
from app.providers.local.host import find_qemu
from app.providers.local.qemu import qmp, running_pid, stop
from app.providers.local.seed import read_seed

QEMU = shutil.which("qemu-system-x86_64")
pytestmark = pytest.mark.skipif(
    QEMU is None or shutil.which("qemu-img") is None or os.uname().machine != "x86_64",
    reason="needs qemu-system-x86_64 and qemu-img on x86_64 (.ci/setup installs qemu-system-x86 "
    "qemu-utils)",
)

_GUEST = bytes.fromhex(
    "31c08ed88ed0bc007cfcfbbe4c7ce82f00a0fd7d3cff741584c07414fec8a2fd7db90f00ba4042b486cd15eb"
    "e4f4ebfdbe5c7ce80a00ba0406b80020eff4ebfdbaf803ac84c07403eeebf8c3424956592d47554553542d55"
    "500d0a00424956592d47554553542d504f5745524f46460d0a"
)
FOREVER = 255


def guest_image(path: Path, seconds: int) -> Path:
    """A 1 MiB raw disk whose boot sector powers off after ``seconds`` (255: never)."""
    sector = _GUEST.ljust(509, b"\0") + bytes([seconds]) + b"\x55\xaa"
    path.write_bytes(sector.ljust(1 << 20, b"\0"))
    return path


def request(name: str = "bivy-demo") -> CreateServerRequest:
    return CreateServerRequest(
        name=name,
        region="local",
        size="local-1cpu-2gb",
        ssh_public_key="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMm0tTSXFaQ2MSYqGIr1/9iXdNxkvUDlQp x",
        labels={LABEL_MANAGED_BY: LABEL_MANAGED_BY_VALUE, "bivy-workspace": name[5:]},
        user_data="#cloud-config\nhostname: demo\n",
    )


def listening_addresses(port: int) -> set[str]:
    """Local addresses listening on TCP ``port`` (from /proc/net/tcp and tcp6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as handle:
            next(handle)
            for line in handle:
                local, state = line.split()[1], line.split()[3]
                addr, hex_port = local.split(":")
                if state == "0A" and int(hex_port, 16) == port:
                    found.add(addr)
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purposes (QEMU daemonized: init reaps it).
    with open(f"/proc/{pid}/stat") as handle:
        return handle.read().split(")")[-1].split()[0] != "Z"


def test_probe_boots_its_guest_under_tcg_and_gives_a_verdict(tmp_path: Path) -> None:
    qemu = find_qemu("x86_64")
    why, seconds = accel_mod.run_probe(qemu, "tcg", "x86_64", 30.0)
    assert why == "" and seconds < 30
    cache = tmp_path / "accel.json"
    verdict = accel_mod.detect(qemu, "x86_64", cache)
    assert verdict.accel in ("kvm", "tcg")
    assert verdict.slow == bool(verdict.note)
    print(f"\nprobe: TCG guest {seconds:.2f} s; verdict {verdict.accel} {verdict.note}")
    assert json.loads(cache.read_text())  # cached per binary and version


async def test_create_run_power_off_reaped(tmp_path: Path) -> None:
    image = guest_image(tmp_path / "guest.img", seconds=6)
    local = LocalProvider({"image": str(image), "accel": "tcg"}, root=tmp_path / "local")
    started = time.monotonic()
    server = await local.create(request())
    print(f"\ncreate returned after {time.monotonic() - started:.2f} s")
    assert server.status == ServerStatus.RUNNING and server.ipv4 == "127.0.0.1"
    assert server.ssh_port > 0 and server.size == "local-1cpu-2gb"
    files = local.store.files(server.id)
    pid = running_pid(files)
    assert pid is not None and alive(pid)
    # Only SSH, only on loopback: QEMU listens on 127.0.0.1:<port> and nowhere else.
    assert listening_addresses(server.ssh_port) == {"0100007F"}
    with socket.create_connection(("127.0.0.1", server.ssh_port), timeout=5):
        pass
    # The overlay is backed by the image; the seed carries the user data unchanged.
    command = ["qemu-img", "info", "--output=json", "-U", str(files.disk)]
    info = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)
    assert info["format"] == "qcow2" and info["backing-filename"] == str(image)
    assert read_seed(files.seed)["user-data"] == b"#cloud-config\nhostname: demo\n"
    got = await local.get(server.id)
    assert got.status == ServerStatus.RUNNING and got.ssh_port == server.ssh_port
    assert "slow: no hardware virtualisation" in got.status_detail

    deadline = time.monotonic() + 120
    while await local.list():
        assert time.monotonic() < deadline, files.console.read_text(errors="replace")
        await asyncio.sleep(0.5)
    print(f"reaped {time.monotonic() - started:.2f} s after create")
    assert not files.root.exists()
    assert not alive(pid)
    assert not Path(server_qmp := str(files.root / "qmp.sock")).exists(), server_qmp
    with pytest.raises(NotFound):
        await local.get(server.id)


async def test_delete_running_vm_leaves_no_process_and_no_disk(tmp_path: Path) -> None:
    image = guest_image(tmp_path / "guest.img", seconds=FOREVER)
    local = LocalProvider({"image": str(image), "accel": "tcg"}, root=tmp_path / "local")
    server = await local.create(request())
    files = local.store.files(server.id)
    pid = running_pid(files)
    assert pid is not None
    deadline = time.monotonic() + 30
    while "BIVY-GUEST-UP" not in files.console.read_text(errors="replace"):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.2)
    # A second app process (fresh provider) sees it running and can delete it.
    other = LocalProvider({}, root=tmp_path / "local")
    assert [(s.id, s.status) for s in await other.list()] == [(server.id, ServerStatus.RUNNING)]
    state = other.store.read(server.id)
    assert (await qmp(state.qmp_socket, "query-status"))["status"] == "running"
    await other.delete(server.id)
    assert not alive(pid)
    assert not files.root.exists()
    assert await local.list() == []
    assert image.exists()  # the base image is never touched


@pytest.mark.slow
def test_bivy_create_ls_rm_with_provider_local(
    tmp_path: Path, cli: Any, secret_service: Any
) -> None:
    """``bivy create NAME --provider local --repo URL`` with no account configured at all
    (the install's SSH key lives in a real, private Secret Service)."""
    image = guest_image(tmp_path / "guest.img", seconds=FOREVER)
    env = secret_service.env(cli.env) | {"BIVY_LOCAL_IMAGE": str(image), "BIVY_LOCAL_ACCEL": "tcg"}
    created = cli("create", "demo", "--provider", "local", "--repo",
                  "https://git.example.org/project.git", "--size", "local-1cpu-2gb", "--json",
                  env=env)  # fmt: skip
    try:
        assert created.returncode == 0, created.stderr
        workspace = json.loads(created.stdout)
        assert workspace["name"] == "demo" and workspace["provider"] == "local"
        assert "slow: no hardware virtualisation" in created.stderr.lower()
        vms = list((Path(cli.env["BIVY_DATA_DIR"]) / "local" / "vms").iterdir())
        assert len(vms) == 1
        records = json.loads((Path(cli.env["BIVY_DATA_DIR"]) / "workspaces.json").read_text())
        (record,) = records["workspaces"]
        assert record["ipv4"] == "127.0.0.1" and record["ssh_port"] > 1024
        listed = cli("ls", "--json", env=env)
        assert listed.returncode == 0, listed.stderr
        rows = json.loads(listed.stdout)
        assert [(r["name"], r["provider"], r["status"]) for r in rows] == [
            ("demo", "local", "running")
        ]
    finally:
        removed = cli("rm", "demo", "--yes", env=env)
    assert removed.returncode == 0, removed.stderr
    assert list((Path(cli.env["BIVY_DATA_DIR"]) / "local" / "vms").iterdir()) == []


async def test_qemu_stopped_on_the_host_is_shown_off_not_reaped(tmp_path: Path) -> None:
    image = guest_image(tmp_path / "guest.img", seconds=FOREVER)
    local = LocalProvider({"image": str(image), "accel": "tcg"}, root=tmp_path / "local")
    server = await local.create(request())
    files = local.store.files(server.id)
    state = local.store.read(server.id)
    await stop(files, state.qmp_socket)  # QMP quit, as a user's `kill` or a crash would end it
    assert running_pid(files) is None
    assert "reason=2" in files.qemu_log.read_text()  # host-qmp-quit: QMP did it, no signal
    got = await local.get(server.id)
    assert got.status == ServerStatus.OFF and "stopped on this computer" in got.status_detail
    assert files.disk.exists()  # not a guest power-off: kept until deleted
    await local.delete(server.id)
    assert not files.root.exists()


async def test_a_port_taken_meanwhile_is_retried_with_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.errors import BivyError
    from app.providers.local import qemu

    image = guest_image(tmp_path / "guest.img", seconds=FOREVER)
    local = LocalProvider({"image": str(image), "accel": "tcg"}, root=tmp_path / "local")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        ports = [busy]
        real = qemu.free_port
        monkeypatch.setattr(qemu, "free_port", lambda: ports.pop() if ports else real())
        server = await local.create(request())
        try:
            assert server.ssh_port != busy and server.status == ServerStatus.RUNNING
        finally:
            await local.delete(server.id)
        # Always taken: the create fails with QEMU's reason (from its -D log, not stderr) and
        # leaves nothing behind.
        monkeypatch.setattr(qemu, "free_port", lambda: busy)
        with pytest.raises(BivyError, match="Could not set up host forwarding rule"):
            await local.create(request())
    assert list((tmp_path / "local" / "vms").iterdir()) == []
