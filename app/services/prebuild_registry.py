"""The local prebuild registry: ``<config dir>/prebuilds.json``, what Bivy knows of each
prebuild image beyond its labels (the repository URL or path, the branch, the commit built).

Written atomically under ``prebuilds.json.lock`` from read to rename (like the workspace
registry), so the window and the CLI never lose each other's change. It holds no secret.
"""

from __future__ import annotations

import asyncio
import json
import threading
from datetime import datetime
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError

from app.domain import ImageStatus, Price, utcnow
from app.errors import InvalidInput
from app.settings import atomic_write_text, config_dir, file_lock, move_aside

__all__ = ["PREBUILDS_SCHEMA_VERSION", "PrebuildRecord", "PrebuildRegistry", "prebuilds_path"]

PREBUILDS_SCHEMA_VERSION = 1


def prebuilds_path() -> Path:
    return config_dir() / "prebuilds.json"


class PrebuildRecord(BaseModel):
    """One prebuild: a provider image of a VM that has the repository's tools, checkout,
    devcontainer image and agent on board.

    Attributes:
        id: the provider's image id (``CreateServerRequest.image``).
        account / provider / region: where it lives ("" region: usable in every region).
        repo: the repository URL, or the absolute path of a local checkout.
        branch: the branch built (None: the repository's default).
        agent: the agent installed; repo_key: ``prebuild_hash.repo_key(repo, branch)``.
        config_hash: the devcontainer config hash the VM built (``prebuild.json``).
        commit: the commit the checkout was at.
        agent_version / bivy_version: what the VM reported in ``prebuild.json``.
        name: the image's name at the provider.
        size_gb / monthly_price: from the provider's listing (None when unknown).
        created_at: when the image was made; stale: a VM created from it had to rebuild its
            devcontainer (its configuration changed since), or the local checkout's config
            hash differs now; status: the image's state at the provider.
        unrecorded: listed by the provider (Bivy's labels) but not in this registry (another
            installation made it, or the registry was lost): repo and branch are unknown.
        build_timings / build_steps: the builder's status.json ``timings`` (phase → epoch
            seconds it began) and ``steps`` (bootstrap step → seconds): what a cold start of
            this repository costs, for comparison with a start from the prebuild.
    """

    id: str
    account: str
    provider: str
    region: str = ""
    repo: str = ""
    branch: str | None = None
    agent: str = "claude"
    repo_key: str = ""
    config_hash: str = ""
    commit: str = ""
    agent_version: str = ""
    bivy_version: str = ""
    name: str = ""
    size_gb: float | None = None
    monthly_price: Price | None = None
    created_at: datetime = Field(default_factory=utcnow)
    stale: bool = False
    status: ImageStatus = ImageStatus.AVAILABLE
    unrecorded: bool = False
    build_timings: dict[str, float] = Field(default_factory=dict)
    build_steps: dict[str, float] = Field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str]:
        """Registry key: an image id is unique within its account."""
        return (self.account, self.id)


class _File(BaseModel):
    schema_version: int = PREBUILDS_SCHEMA_VERSION
    prebuilds: list[PrebuildRecord] = Field(default_factory=list)


class PrebuildRegistry:
    """Read and write the prebuild records (thread- and process-safe; ``a*`` twins run in a
    thread)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or prebuilds_path()
        self._lock = threading.RLock()

    def _read(self) -> dict[tuple[str, str], PrebuildRecord]:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise InvalidInput(
                f"cannot read the prebuild registry {self.path}: "
                f"{exc.strerror or type(exc).__name__}",
                hint="Fix its permissions; Bivy will not write over a file it cannot read",
            ) from None
        try:
            raw = json.loads(data.decode("utf-8"))
            document = _File.model_validate(raw)
        except (UnicodeDecodeError, ValueError, ValidationError) as exc:
            # Kept aside whole (never deleted); the images stay listed from the provider.
            notice = move_aside(self.path, type(exc).__name__)
            if not notice.kept_at:
                raise InvalidInput(notice.text, hint="Bivy will not write over it") from None
            return {}
        if document.schema_version > PREBUILDS_SCHEMA_VERSION:
            raise InvalidInput(
                f"the prebuild registry {self.path} was written by a newer Bivy",
                hint="Upgrade Bivy",
            )
        return {r.key: r for r in document.prebuilds}

    def _write(self, records: dict[tuple[str, str], PrebuildRecord]) -> None:
        document = _File(prebuilds=sorted(records.values(), key=lambda r: (r.created_at, r.id)))
        atomic_write_text(self.path, document.model_dump_json(indent=2) + "\n")

    def all(self) -> list[PrebuildRecord]:
        """Every record, oldest first."""
        with self._lock:
            return sorted(self._read().values(), key=lambda r: (r.created_at, r.id))

    def get(self, account: str, image_id: str) -> PrebuildRecord | None:
        with self._lock:
            return self._read().get((account, image_id))

    def find(self, image_id: str) -> list[PrebuildRecord]:
        """Records of ``image_id`` in any account."""
        return [r for r in self.all() if r.id == image_id]

    def put(self, record: PrebuildRecord) -> None:
        with self._lock, file_lock(self.path):
            records = self._read()
            records[record.key] = record
            self._write(records)

    def update(self, account: str, image_id: str, **changes: object) -> PrebuildRecord | None:
        with self._lock, file_lock(self.path):
            records = self._read()
            current = records.get((account, image_id))
            if current is None:
                return None
            updated = PrebuildRecord.model_validate({**current.model_dump(), **changes})
            records[updated.key] = updated
            self._write(records)
            return updated

    def remove(self, account: str, image_id: str) -> bool:
        with self._lock, file_lock(self.path):
            records = self._read()
            if records.pop((account, image_id), None) is None:
                return False
            self._write(records)
            return True

    async def aall(self) -> list[PrebuildRecord]:
        return await asyncio.to_thread(self.all)

    async def aput(self, record: PrebuildRecord) -> None:
        await asyncio.to_thread(self.put, record)

    async def aupdate(
        self, account: str, image_id: str, **changes: object
    ) -> PrebuildRecord | None:
        return await asyncio.to_thread(lambda: self.update(account, image_id, **changes))

    async def aremove(self, account: str, image_id: str) -> bool:
        return await asyncio.to_thread(self.remove, account, image_id)
