"""The local workspace registry: what Bivy knows of each workspace beyond the provider's labels."""

# Kept in ``data_dir()/workspaces.json``, written atomically. The provider's labels stay the source
# of truth for which servers exist; this file adds what labels cannot hold (the repository URL,
# the VM's pinned host key). It never holds a secret: the ttyd password is in the keychain.

from __future__ import annotations

import asyncio
import json
import threading
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, ValidationError, field_validator

from app.domain import DEFAULT_IDLE_MINUTES, DEFAULT_MAX_HOURS, utcnow
from app.errors import BivyError, InvalidInput, NotFound
from app.settings import atomic_write_text, data_dir, file_lock, move_aside
from app.settings.files import report

__all__ = [
    "REGISTRY_SCHEMA_VERSION",
    "RecordState",
    "Registry",
    "WorkspaceRecord",
    "registry_path",
]

REGISTRY_SCHEMA_VERSION = 1

#: ``creating``: written before the provider is asked (write-ahead), the server may or may not
#: exist yet; ``ready``: the server id is known; ``deleting``: the user asked for its deletion.
RecordState = Literal["creating", "ready", "deleting"]


def registry_path() -> Path:
    return data_dir() / "workspaces.json"


class WorkspaceRecord(BaseModel):
    """One workspace as Bivy created it.

    Attributes:
        name: the workspace name (unique in the registry).
        account: the settings account id that pays for it.
        provider: the provider kind.
        server_id: the provider's server id ("" until the create call answered).
        repo_url, branch: what is cloned on the VM.
        region, size: where and what it runs on.
        idle_minutes, max_hours: its idle and lifetime limits.
        created_at: when Bivy asked for it (UTC).
        host_public_key: the VM's pinned ed25519 host key (public half only).
        ipv4: the server's public address, once known.
        ssh_port: the port sshd answers on at ``ipv4`` (22 except for local VMs).
        state: ``creating`` until the provider's answer is recorded (a crash in between leaves
            it so, and the next listing adopts the server or forgets the record), then
            ``ready``; ``deleting`` once a delete began (forgotten when the server is gone).
        ssh_key_fingerprint: the SHA256 fingerprint of the install's SSH key the VM trusts.
        prebuild: the prebuild image id the VM was created from, if any.
    """

    name: str
    account: str
    provider: str
    server_id: str = ""
    repo_url: str = ""
    branch: str | None = None
    region: str = ""
    size: str = ""
    idle_minutes: int = DEFAULT_IDLE_MINUTES
    max_hours: int = DEFAULT_MAX_HOURS
    created_at: datetime = Field(default_factory=utcnow)
    host_public_key: str = ""
    ipv4: str | None = None
    ssh_port: int = Field(default=22, ge=1, le=65535)
    state: RecordState = "ready"
    ssh_key_fingerprint: str = ""
    #: The prebuild image the VM was created from ("" for none; issue 14).
    prebuild: str = ""

    @property
    def pending(self) -> bool:
        """Written ahead of the provider's create call and not confirmed yet."""
        return self.state == "creating"

    @field_validator("host_public_key")
    @classmethod
    def _public_only(cls, value: str) -> str:
        # A guard against ever writing the private half to this plain file.
        if "PRIVATE KEY" in value or (value and not value.startswith("ssh-")):
            raise ValueError("host_public_key must be an OpenSSH public key line")
        return value.strip()


class _RegistryFile(BaseModel):
    schema_version: int = REGISTRY_SCHEMA_VERSION
    workspaces: list[WorkspaceRecord] = Field(default_factory=list)


class Registry:
    """Read and write the workspace records (thread- and process-safe; async twins run in a
    thread). Every change holds ``workspaces.json.lock`` from its read to its rename.

    Attributes:
        path: the JSON file (``data_dir()/workspaces.json`` unless given).
    """

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or registry_path()
        self._lock = threading.RLock()

    def _read(self, *, for_write: bool = False) -> dict[str, WorkspaceRecord]:
        """The valid records. A file that is not a registry at all is moved aside (kept); one
        with bad records is kept aside whole and rewritten with the good ones, so a bad record
        hides only itself. Either way a notice says where the original went."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise InvalidInput(
                f"cannot read the workspace registry {self.path}: "
                f"{exc.strerror or type(exc).__name__}",
                hint="Fix its permissions; Bivy will not write over a file it cannot read",
            ) from None
        try:
            raw = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            return self._quarantine(data, {}, type(exc).__name__, for_write=for_write)
        if not isinstance(raw, dict) or not isinstance(raw.get("workspaces", []), list):
            return self._quarantine(data, {}, "not a registry document", for_write=for_write)
        version = raw.get("schema_version", REGISTRY_SCHEMA_VERSION)
        if isinstance(version, bool) or not isinstance(version, int):
            return self._quarantine(data, {}, "schema_version is not a number", for_write=for_write)
        if version > REGISTRY_SCHEMA_VERSION:
            raise InvalidInput(
                f"the workspace registry {self.path} was written by a newer Bivy",
                hint="Upgrade Bivy",
            )
        records: dict[str, WorkspaceRecord] = {}
        problems: list[str] = []
        for index, item in enumerate(raw.get("workspaces", [])):
            name = item.get("name") if isinstance(item, dict) else None
            label = f"record {index + 1}" + (f" ({name})" if isinstance(name, str) else "")
            try:
                record = WorkspaceRecord.model_validate(item)
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first.get("loc", ()))
                problems.append(f"{label}: {where}: {first['msg']}" if where else label)
                continue
            if record.name in records:
                problems.append(f"{label}: a second record of the same name")
                continue
            records[record.name] = record
        if problems:
            return self._quarantine(data, records, "; ".join(problems), for_write=for_write)
        return records

    def _quarantine(
        self,
        data: bytes,
        good: dict[str, WorkspaceRecord],
        why: str,
        *,
        for_write: bool,
    ) -> dict[str, WorkspaceRecord]:
        """Keep the broken file aside whole, write back what was good, and say so."""
        try:
            with file_lock(self.path):
                try:
                    unchanged = self.path.read_bytes() == data
                except FileNotFoundError:
                    unchanged = False
                except OSError:
                    unchanged = True  # moving it aside then tells what is wrong
                if not unchanged:  # another process fixed or rewrote it meanwhile
                    return self._read(for_write=for_write)
                notice = move_aside(self.path, why)
                if notice.kept_at and good:
                    try:
                        self._write(good)
                    except BivyError as exc:
                        raise InvalidInput(
                            f"{notice.text}, but its readable records could not be written "
                            f"back: {exc.message}",
                            hint="Free some space, then copy the kept file back",
                        ) from None
        except InvalidInput:
            raise
        except BivyError as exc:  # the lock cannot be had: the file stays as it is
            notice = report(self.path, f"{self.path} could not be used ({why}): {exc.message}")
        if not notice.kept_at and for_write:
            raise InvalidInput(notice.text, hint="Bivy will not write over it")
        return good

    def _write(self, records: dict[str, WorkspaceRecord]) -> None:
        document = _RegistryFile(workspaces=sorted(records.values(), key=lambda r: r.name))
        atomic_write_text(self.path, document.model_dump_json(indent=2) + "\n")

    def all(self) -> list[WorkspaceRecord]:
        """Every record, by name."""
        with self._lock:
            return sorted(self._read().values(), key=lambda r: r.name)

    def get(self, name: str) -> WorkspaceRecord | None:
        with self._lock:
            return self._read().get(name)

    def put(self, record: WorkspaceRecord) -> None:
        """Add or replace the record of ``record.name``."""
        with self._lock, file_lock(self.path):
            records = self._read(for_write=True)
            records[record.name] = record
            self._write(records)

    def update(self, name: str, **changes: object) -> WorkspaceRecord | None:
        """Change fields of an existing record; returns it, or None when there is none."""
        with self._lock, file_lock(self.path):
            records = self._read(for_write=True)
            current = records.get(name)
            if current is None:
                return None
            updated = WorkspaceRecord.model_validate({**current.model_dump(), **changes})
            records[name] = updated
            self._write(records)
            return updated

    def remove(self, name: str) -> bool:
        """Forget ``name``; returns whether there was a record."""
        with self._lock, file_lock(self.path):
            records = self._read(for_write=True)
            if records.pop(name, None) is None:
                return False
            self._write(records)
            return True

    async def aall(self) -> list[WorkspaceRecord]:
        return await asyncio.to_thread(self.all)

    async def aget(self, name: str) -> WorkspaceRecord | None:
        return await asyncio.to_thread(self.get, name)

    async def arequire(self, name: str) -> WorkspaceRecord:
        """The record of ``name``; ``NotFound`` (saying so) when this installation has none."""
        record = await self.aget(name)
        if record is None:
            raise NotFound(
                f"no workspace named {name!r} was created by this installation of Bivy",
                hint="`bivy ls` lists the workspaces",
            )
        return record

    async def aput(self, record: WorkspaceRecord) -> None:
        await asyncio.to_thread(self.put, record)

    async def aupdate(self, name: str, **changes: object) -> WorkspaceRecord | None:
        return await asyncio.to_thread(lambda: self.update(name, **changes))

    async def aremove(self, name: str) -> bool:
        return await asyncio.to_thread(self.remove, name)
