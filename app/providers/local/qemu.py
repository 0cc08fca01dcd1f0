"""Running QEMU for a local VM: the command line, start (daemonized), QMP, liveness, stop.

The VM outlives the app like a cloud VM: QEMU runs with ``-daemonize`` and a ``-pidfile``,
which it keeps locked while it runs (``lockf``), so "is it alive" is a lock test that a reused
pid can never fool. Why QEMU stopped is read back from its own log (``-d
trace:qemu_system_shutdown_request``: reason 6 is a guest power-off) or the guest's console
("reboot: Power down").
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from app.errors import BivyError, InvalidInput
from app.providers.local.accel import cpu_args, machine_type
from app.providers.local.client import VmFiles
from app.providers.local.models import KIND, VmState

#: QEMU's ShutdownCause GUEST_SHUTDOWN (qapi/run-state.json: none, host-error, host-qmp-quit,
#: host-qmp-system-reset, host-signal, host-ui, guest-shutdown, ...).
GUEST_SHUTDOWN_REASON = 6
_SHUTDOWN_TRACE = re.compile(r"qemu_system_shutdown_request reason=(\d+)")
#: What a Linux guest prints last when it powers off.
POWER_DOWN_MARKERS = ("reboot: Power down", "reboot: System halted")
START_TIMEOUT = 60.0

#: Only these reach QEMU's environment (never the user's tokens).
_ENV_KEEP = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "XDG_RUNTIME_DIR")

#: UEFI firmware for arm64 guests booting from disk (Debian/Ubuntu, Homebrew, Fedora).
AARCH64_FIRMWARE = (
    "/usr/share/qemu-efi-aarch64/QEMU_EFI.fd",
    "/usr/share/AAVMF/AAVMF_CODE.fd",
    "/opt/homebrew/share/qemu/edk2-aarch64-code.fd",
    "/usr/local/share/qemu/edk2-aarch64-code.fd",
    "/usr/share/edk2/aarch64/QEMU_EFI.fd",
)


def _opt(path: Path | str) -> str:
    """A path inside a QEMU ``key=value,...`` option: commas are doubled."""
    return str(path).replace(",", ",,")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def aarch64_firmware() -> Path:
    for candidate in AARCH64_FIRMWARE:
        if Path(candidate).is_file():
            return Path(candidate)
    raise InvalidInput(
        "no UEFI firmware for arm64 guests was found",
        hint="Install it: Debian/Ubuntu `sudo apt install qemu-efi-aarch64`; macOS `brew install "
        "qemu` ships it",
        provider=KIND,
    )


def vm_command(
    qemu: Path, state: VmState, files: VmFiles, firmware: Path | None = None
) -> list[str]:
    """QEMU's command line for ``state``: daemonized, headless, SSH forwarded to 127.0.0.1 only.

    User-mode networking gives the guest outbound access (packages, the repository) and the
    host one inbound path: ``127.0.0.1:<ssh_port>`` → guest port 22. Nothing else is forwarded.
    """
    image = state.image
    command = [
        str(qemu),
        "-name", state.name,
        "-nodefaults", "-no-user-config",
        "-machine", machine_type(state.arch),
        # Emulation runs the vCPUs on one thread: with a thread per vCPU, QEMU 7.2 let one vCPU
        # run code the other had just patched (a Debian 6.12 guest died in boot, "Oops: int3"
        # in kmem_cache_free, once in about eight e2e boots here).
        "-accel", "tcg,thread=single" if state.accel == "tcg" else state.accel,
        *cpu_args(state.accel, state.arch),
        "-smp", str(state.cpus),
        "-m", f"{state.memory_mb}M",
        "-display", "none",
        "-daemonize",
        "-pidfile", str(files.pidfile),
        "-qmp", f"unix:{_opt(state.qmp_socket)},server=on,wait=off",
        "-chardev", f"file,id=console,path={_opt(files.console)}",
        "-serial", "chardev:console",
        "-d", "trace:qemu_system_shutdown_request",
        "-D", str(files.qemu_log),
        "-drive", f"file={_opt(files.disk)},format=qcow2,if=virtio,discard=unmap",
        "-drive", f"file={_opt(files.seed)},format=raw,if=virtio,readonly=on",
        "-netdev", f"user,id=net0,hostfwd=tcp:127.0.0.1:{state.ssh_port}-:22",
        "-device", "virtio-net-pci,netdev=net0",
        "-device", "virtio-rng-pci",
    ]  # fmt: skip
    if image.kernel is not None:
        command += ["-kernel", str(image.kernel)]
        if image.initrd is not None:
            command += ["-initrd", str(image.initrd)]
        if image.append:
            command += ["-append", image.append]
    elif state.arch == "aarch64":
        command += ["-bios", str(firmware or aarch64_firmware())]
    return command


def _environment() -> dict[str, str]:
    return {k: v for k in _ENV_KEEP if (v := os.environ.get(k))}


def create_overlay(qemu_img: Path, files: VmFiles, state: VmState) -> None:
    """``disk.qcow2``: copy-on-write on the base image, as large as the size (or the base)."""
    base = state.image
    size = max(state.disk_gb << 30, virtual_size(qemu_img, base.disk, base.format))
    run_tool(
        [str(qemu_img), "create", "-q", "-f", "qcow2", "-F", base.format, "-b", str(base.disk),
         str(files.disk), str(size)],
        "create the VM's disk",
    )  # fmt: skip


def virtual_size(qemu_img: Path, disk: Path, fmt: str) -> int:
    out = run_tool(
        [str(qemu_img), "info", "--output=json", "-f", fmt, "-U", str(disk)], "read the image"
    )
    try:
        return int(json.loads(out)["virtual-size"])
    except (ValueError, KeyError, TypeError):
        raise BivyError(f"qemu-img could not tell the size of {disk}", provider=KIND) from None


def run_tool(command: list[str], what: str, timeout: float = 120.0) -> str:
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, check=False,
            env=_environment(),
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BivyError(f"could not {what}: {type(exc).__name__}", provider=KIND) from None
    if done.returncode != 0:
        detail = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        raise BivyError(f"could not {what}: {detail[:300]}", provider=KIND)
    return done.stdout


def start(command: list[str], files: VmFiles) -> int:
    """Start QEMU (it daemonizes once the VM is set up) and return its pid.

    ``BivyError`` with QEMU's own last error line when it refused to start (e.g. the port was
    taken in the meantime: the caller retries with another).
    """
    with files.start_log.open("wb") as log:
        try:
            done = subprocess.run(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd="/",
                env=_environment(), timeout=START_TIMEOUT, check=False,
            )  # fmt: skip
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise BivyError(
                f"QEMU could not be started: {type(exc).__name__}", provider=KIND
            ) from None
    if done.returncode != 0:
        # With -D, QEMU reports start-up errors in its log file rather than on stderr.
        lines = []
        for log_file in (files.start_log, files.qemu_log):
            with contextlib.suppress(OSError):
                lines += [
                    line.strip()
                    for line in log_file.read_text(errors="replace").splitlines()
                    if line.strip() and not _SHUTDOWN_TRACE.search(line)
                ]
        last = lines[-1] if lines else f"exit status {done.returncode}"
        raise BivyError(f"QEMU refused to start the VM: {last[:300]}", provider=KIND)
    pid = running_pid(files)
    if pid is None:
        raise BivyError("QEMU started but left no running process", provider=KIND)
    return pid


def running_pid(files: VmFiles) -> int | None:
    """QEMU's pid while it runs (its pidfile is locked), else None."""
    import fcntl

    try:
        fd = os.open(files.pidfile, os.O_RDWR)
    except OSError:
        return None
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raw = os.pread(fd, 32, 0).decode(errors="replace").strip()
            return int(raw) if raw.isdigit() else None
        fcntl.lockf(fd, fcntl.LOCK_UN)
        return None  # nobody holds it: QEMU is gone (killed before it could remove the file)
    finally:
        os.close(fd)


def shutdown_reason(files: VmFiles, console_tail: str) -> str:
    """Why QEMU stopped: ``poweroff`` (the guest powered off), ``host`` (quit, signal...), or
    ``unknown`` (no record: killed hard, or the computer restarted)."""
    reasons: list[int] = []
    with contextlib.suppress(OSError):
        reasons = [
            int(m) for m in _SHUTDOWN_TRACE.findall(files.qemu_log.read_text(errors="replace"))
        ]
    if GUEST_SHUTDOWN_REASON in reasons:
        return "poweroff"
    if any(marker in console_tail for marker in POWER_DOWN_MARKERS):
        return "poweroff"
    return "host" if reasons else "unknown"


async def qmp(socket_path: str, command: str, arguments: dict[str, Any] | None = None,
              timeout: float = 5.0) -> dict[str, Any]:  # noqa: ASYNC109  # fmt: skip
    """Run one QMP command and return its ``return`` value; ``BivyError`` on any failure."""

    async def talk() -> dict[str, Any]:
        reader, writer = await asyncio.open_unix_connection(socket_path)
        try:
            await reader.readline()  # greeting

            async def call(name: str, args: dict[str, Any] | None) -> dict[str, Any]:
                message: dict[str, Any] = {"execute": name}
                if args:
                    message["arguments"] = args
                writer.write(json.dumps(message).encode() + b"\n")
                await writer.drain()
                while True:
                    line = await reader.readline()
                    if not line:
                        if name == "quit":
                            return {}
                        raise ConnectionError("QMP closed the connection")
                    answer = json.loads(line)
                    if "event" in answer:
                        continue
                    if "error" in answer:
                        raise BivyError(
                            f"QMP {name} failed: {answer['error'].get('desc', '')}", provider=KIND
                        )
                    result = answer.get("return", {})
                    return result if isinstance(result, dict) else {"value": result}

            await call("qmp_capabilities", None)
            return await call(command, arguments)
        finally:
            writer.close()
            with contextlib.suppress(OSError, ConnectionError):
                await writer.wait_closed()

    try:
        return await asyncio.wait_for(talk(), timeout)
    except (OSError, ConnectionError, ValueError, TimeoutError) as exc:
        raise BivyError(f"QMP {command} failed: {type(exc).__name__}", provider=KIND) from None


async def stop(files: VmFiles, qmp_socket: str, timeout: float = 10.0) -> None:  # noqa: ASYNC109
    """Stop QEMU: QMP ``quit``, then SIGTERM, then SIGKILL; returns once it is gone."""
    pid = running_pid(files)
    if pid is None:
        return
    with contextlib.suppress(BivyError):
        await qmp(qmp_socket, "quit", timeout=timeout / 2)
    if await _gone(files, timeout / 2):
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pid = running_pid(files)
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        if await _gone(files, timeout / 2):
            return
    raise BivyError(f"QEMU (pid {pid}) does not stop", provider=KIND)


async def _gone(files: VmFiles, timeout: float) -> bool:  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if running_pid(files) is None:
            return True
        await asyncio.sleep(0.1)
    return running_pid(files) is None
