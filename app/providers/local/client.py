"""The local provider's "API": one folder per VM under ``<data_dir>/local/vms/<id>/``.

A folder holds ``vm.json`` (``VmState``), the qcow2 overlay ``disk.qcow2``, the NoCloud seed
``seed.iso``, QEMU's ``qemu.pid``, its QMP socket ``qmp.sock``, the serial console
``console.log``, QEMU's own log ``qemu.log`` (which records why it shut down) and the output of
its start ``qemu-start.log``. Everything ``list/get/delete`` need survives an app restart.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from app.errors import BivyError, NotFound
from app.providers.local.models import KIND, VmState

_VM_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
#: ``sun_path`` holds 108 bytes on Linux and 104 on macOS; longer socket paths go to a short
#: per-user folder under the temp dir instead.
MAX_SOCKET_PATH = 100


@dataclass(frozen=True)
class VmFiles:
    """The paths of one VM's folder."""

    root: Path

    @property
    def state(self) -> Path:
        return self.root / "vm.json"

    @property
    def disk(self) -> Path:
        return self.root / "disk.qcow2"

    @property
    def seed(self) -> Path:
        return self.root / "seed.iso"

    @property
    def pidfile(self) -> Path:
        return self.root / "qemu.pid"

    @property
    def console(self) -> Path:
        return self.root / "console.log"

    @property
    def qemu_log(self) -> Path:
        return self.root / "qemu.log"

    @property
    def start_log(self) -> Path:
        return self.root / "qemu-start.log"

    def default_qmp_socket(self) -> Path:
        inside = self.root / "qmp.sock"
        if len(str(inside)) <= MAX_SOCKET_PATH:
            return inside
        short = Path(tempfile.gettempdir()) / f"bivy-{os.getuid()}"
        short.mkdir(mode=0o700, exist_ok=True)
        return short / f"{self.root.name}.qmp"


class VmStore:
    """The VM folders under ``root`` (``<data_dir>/local/vms``)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def files(self, vm_id: str) -> VmFiles:
        if not _VM_ID.match(vm_id):
            raise NotFound(f"there is no local VM {vm_id!r}", provider=KIND)
        return VmFiles(self.root / vm_id)

    def ids(self) -> list[str]:
        try:
            entries = sorted(self.root.iterdir())
        except FileNotFoundError:
            return []
        return [e.name for e in entries if e.is_dir() and _VM_ID.match(e.name)]

    def make(self, vm_id: str) -> VmFiles:
        files = self.files(vm_id)
        self.root.mkdir(parents=True, exist_ok=True)
        files.root.mkdir(mode=0o700)
        return files

    def read(self, vm_id: str) -> VmState:
        """The VM's state; ``NotFound`` when its folder or ``vm.json`` is gone or unreadable."""
        files = self.files(vm_id)
        try:
            return VmState.model_validate_json(files.state.read_bytes())
        except FileNotFoundError:
            raise NotFound(f"there is no local VM {vm_id!r}", provider=KIND) from None
        except (OSError, ValidationError, ValueError):
            raise NotFound(
                f"the local VM {vm_id!r} has an unreadable vm.json", provider=KIND
            ) from None

    def write(self, state: VmState) -> None:
        files = self.files(state.id)
        tmp = files.root / ".vm.json.tmp"
        try:
            tmp.write_text(state.model_dump_json(indent=2) + "\n", encoding="utf-8")
            os.replace(tmp, files.state)
        except OSError as exc:
            raise BivyError(
                f"cannot write {files.state}: {exc.strerror or type(exc).__name__}",
                hint="Check the free space of the data folder",
                provider=KIND,
            ) from None

    def remove(self, vm_id: str, qmp_socket: str = "") -> None:
        """Delete the VM's folder (disk, seed, logs) and a QMP socket kept outside it."""
        files = self.files(vm_id)
        if qmp_socket:
            with contextlib.suppress(OSError):
                Path(qmp_socket).unlink(missing_ok=True)
        try:
            shutil.rmtree(files.root)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise BivyError(
                f"cannot delete {files.root}: {exc.strerror or type(exc).__name__}",
                provider=KIND,
            ) from None

    def tail(self, path: Path, size: int = 4096) -> str:
        """The last ``size`` bytes of a log as text ("" when there is none)."""
        with contextlib.suppress(OSError), path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - size))
            return handle.read().decode(errors="replace")
        return ""


def iter_lines(text: str) -> Iterator[str]:
    yield from (line.strip() for line in text.splitlines() if line.strip())
