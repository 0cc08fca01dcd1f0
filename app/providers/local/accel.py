"""Which accelerator QEMU can really use here: probed by booting a tiny guest, never assumed.

``/dev/kvm`` existing proves little: nested KVM may refuse ``-cpu host`` ("failed to set MSR"),
or run so slowly that a kernel never gets past decompression. So the probe boots a 512-byte
guest that enters long mode, fills 124 MiB of memory, writes a marker to the serial port and
leaves through QEMU's ``isa-debug-exit`` device: first under TCG (emulation, which must work),
then under each hardware candidate (KVM on Linux, HVF on macOS) with a deadline of twice TCG's
time plus a second. The first candidate that finishes in time wins; otherwise TCG, which works
everywhere but is slow, and the user is told so. The verdict is cached per QEMU binary and
version in ``<data_dir>/local/accel.json``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from app.errors import InvalidInput
from app.providers.local.models import KIND, Accel

#: Shown wherever a TCG VM is created or listed (CLI progress, create dialog, settings).
TCG_NOTICE = "slow: no hardware virtualisation (QEMU emulates the CPU, expect long builds)"

PROBE_MARKER = b"BIVY-PROBE-OK"
#: ``isa-debug-exit`` turns the byte 0x31 into QEMU's exit status (0x31 << 1) | 1.
PROBE_EXIT_STATUS = 0x63
#: A hardware accelerator must finish the probe within ``factor * tcg + slack`` seconds (and
#: never later than ``PROBE_TIMEOUT``); TCG itself gets ``TCG_PROBE_TIMEOUT``.
PROBE_TIMEOUT = 10.0
PROBE_FACTOR = 2.0
PROBE_SLACK = 1.0
TCG_PROBE_TIMEOUT = 30.0

# The probe guest, a boot sector (GNU as, ``ld -Ttext 0x7c00 --oformat binary``): from real
# mode it identity-maps the first 128 MiB with 2 MiB pages, enters long mode like a kernel does,
# fills 124 MiB of memory (``rep stosq``), writes "BIVY-PROBE-OK" to COM1 and leaves through
# isa-debug-exit (port 0xf4). The memory fill matters: nested KVM here runs a tiny guest fine
# but takes seconds per hundred MiB touched (a Linux kernel never gets past decompression),
# slower than TCG, so a verdict from a guest that touches no memory would be wrong.
# Source: tests/unit/providers/local/probe_guest.S.
_X86_CODE = bytes.fromhex(
    "fa31c08ed88ec08ed0bc007cfcbf0010b90018f3ab66c70600100320000066c706002003300000bf003066b8"
    "830000006631d2b940006689056689550466050000200083c708e2ee660f0116d87c0f20e06683c8200f22e0"
    "66b8001000000f22d866b9800000c00f32660d000100000f300f20c0660d010000800f22c0ea827c080066b8"
    "10008ec048c7c70000200048c7c10000f80048b85a5a5a5a5a5a5a5af348ab488d353400000066baf803ac84"
    "c07403eeebf866baf400b031eef4ebfd000000000000000000000000009a200000000000009200001700c07c"
    "0000424956592d50524f42452d4f4b0d0a00"
)


def probe_boot_sector() -> bytes:
    """The x86 probe guest: a boot sector (0x55AA-signed) padded to 1 MiB for every BIOS."""
    return (_X86_CODE.ljust(510, b"\0") + b"\x55\xaa").ljust(1 << 20, b"\0")


@dataclass(frozen=True)
class AccelVerdict:
    """The accelerator to use and what the user should know about it.

    Attributes:
        accel: ``kvm``, ``hvf`` or ``tcg``.
        note: "" when hardware virtualisation works, else the slow-mode notice and why.
    """

    accel: Accel
    note: str = ""

    @property
    def slow(self) -> bool:
        return self.accel == "tcg"


def cpu_args(accel: Accel, arch: str) -> list[str]:
    """``-cpu`` for an accelerator: the host's CPU when virtualised, QEMU's ``max`` under TCG."""
    if accel in ("kvm", "hvf"):
        return ["-cpu", "host"]
    return ["-cpu", "max"]


def machine_type(arch: str) -> str:
    return "q35" if arch == "x86_64" else "virt"


def candidates(platform: str | None = None) -> list[Accel]:
    """Hardware accelerators worth probing on this OS (TCG is the fallback, not a candidate)."""
    platform = platform or sys.platform
    if platform.startswith("linux"):
        return ["kvm"] if os.access("/dev/kvm", os.R_OK | os.W_OK) else []
    if platform == "darwin":
        return ["hvf"]
    return []


def probe_command(qemu: Path, accel: Accel, arch: str, image: Path) -> list[str]:
    """The command that boots the probe guest with ``accel``."""
    if arch != "x86_64":
        # No hand-made guest for arm64: check that QEMU starts a virt machine with the
        # accelerator, paused, and quits (weaker than a guest run, but never a false "works").
        return [str(qemu), "-nodefaults", "-no-user-config", "-display", "none",
                "-machine", f"virt,accel={accel}", *cpu_args(accel, arch), "-m", "64",
                "-S", "-monitor", "none", "-serial", "none", "-qmp", "stdio"]  # fmt: skip
    return [str(qemu), "-nodefaults", "-no-user-config", "-display", "none",
            "-machine", f"pc,accel={accel}", *cpu_args(accel, arch), "-m", "160",
            "-drive", f"file={image},format=raw,if=ide,snapshot=on",
            "-serial", "stdio", "-monitor", "none",
            "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"]  # fmt: skip


def run_probe(qemu: Path, accel: Accel, arch: str, timeout: float) -> tuple[str, float]:
    """Boot the probe guest: ("", seconds it took) when it ran, else (why not, seconds)."""
    started = time.monotonic()
    why = _run_probe(qemu, accel, arch, timeout)
    return why, time.monotonic() - started


def _run_probe(qemu: Path, accel: Accel, arch: str, timeout: float) -> str:
    with tempfile.TemporaryDirectory(prefix="bivy-probe-") as tmp:
        image = Path(tmp) / "probe.img"
        image.write_bytes(probe_boot_sector())
        command = probe_command(qemu, accel, arch, image)
        stdin = b'{"execute":"qmp_capabilities"}\n{"execute":"quit"}\n' if arch != "x86_64" else b""
        try:
            done = subprocess.run(
                command, input=stdin, capture_output=True, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired:
            return f"a test guest did not finish within {timeout:.1f} s"
        except OSError as exc:
            return f"QEMU could not be started: {exc.strerror or type(exc).__name__}"
    if arch != "x86_64":
        return "" if done.returncode == 0 else _first_line(done.stderr, done.returncode)
    if PROBE_MARKER in done.stdout and done.returncode == PROBE_EXIT_STATUS:
        return ""
    return _first_line(done.stderr, done.returncode)


def _first_line(stderr: bytes, status: int) -> str:
    lines = [line.strip() for line in stderr.decode(errors="replace").splitlines() if line.strip()]
    return lines[0][:200] if lines else f"QEMU exited with status {status}"


def _version(qemu: Path) -> str:
    try:
        done = subprocess.run(
            [str(qemu), "--version"], capture_output=True, timeout=15, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.decode(errors="replace").splitlines()[0] if done.stdout else ""


def cache_key(qemu: Path, version: str, accels: list[Accel]) -> str:
    real = qemu.resolve()
    try:
        stat = real.stat()
        ident = f"{stat.st_size}:{int(stat.st_mtime)}"
    except OSError:
        ident = "?"
    return f"{real}|{ident}|{version}|{','.join(accels)}"


def detect(
    qemu: Path,
    arch: str,
    cache_file: Path,
    *,
    forced: str = "",
    platform: str | None = None,
    timeout: float = PROBE_TIMEOUT,
) -> AccelVerdict:
    """The accelerator for new VMs: ``forced`` (kvm/hvf/tcg) when set, else the cached or
    freshly probed verdict. ``InvalidInput`` when QEMU cannot run even the TCG probe."""
    forced = forced.strip().lower()
    if forced:
        if forced not in ("kvm", "hvf", "tcg"):
            raise InvalidInput(
                f"unknown accelerator {forced!r}", hint="Use kvm, hvf or tcg", provider=KIND
            )
        accel: Accel = "kvm" if forced == "kvm" else "hvf" if forced == "hvf" else "tcg"
        return AccelVerdict(
            accel, TCG_NOTICE + " (chosen in the settings)" if accel == "tcg" else ""
        )
    accels = candidates(platform)
    key = cache_key(qemu, _version(qemu), accels)
    cache = _read_cache(cache_file)
    hit = cache.get(key)
    if isinstance(hit, dict) and hit.get("accel") in ("kvm", "hvf", "tcg"):
        return AccelVerdict(hit["accel"], str(hit.get("note", "")))
    verdict = _probe(qemu, arch, accels, timeout)
    cache[key] = {"accel": verdict.accel, "note": verdict.note}
    _write_cache(cache_file, cache)
    return verdict


def _probe(qemu: Path, arch: str, accels: list[Accel], timeout: float) -> AccelVerdict:
    why, tcg_seconds = run_probe(qemu, "tcg", arch, TCG_PROBE_TIMEOUT)
    if why:
        raise InvalidInput(
            f"QEMU cannot run a virtual machine here: {why}",
            hint="Check the QEMU installation (`qemu-system-x86_64 --version`)",
            provider=KIND,
        )
    reasons: list[str] = []
    deadline = min(timeout, PROBE_FACTOR * tcg_seconds + PROBE_SLACK)
    for accel in accels:
        why, seconds = run_probe(qemu, accel, arch, max(deadline, 0.5))
        if not why and seconds <= deadline:
            return AccelVerdict(accel)
        if not why:
            why = f"a test guest took {seconds:.1f} s, emulation {tcg_seconds:.1f} s"
        reasons.append(f"{accel.upper()} is not usable: {why}")
    if not reasons:
        reasons.append(
            "no KVM (/dev/kvm) on this computer"
            if sys.platform.startswith("linux")
            else "no hardware accelerator known for this system"
        )
    return AccelVerdict("tcg", f"{TCG_NOTICE}: {'; '.join(reasons)}")


def _read_cache(path: Path) -> dict[str, object]:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return raw if isinstance(raw, dict) else {}


def _write_cache(path: Path, cache: dict[str, object]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        pass  # probing again next time is the only cost
