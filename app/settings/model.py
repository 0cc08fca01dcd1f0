"""The settings model, where it lives on disk, and atomic load/save with schema migration.

Secrets never land here: the model has no field for them, and ``save_settings`` is the only
writer. Window geometry is kept apart by the UI (``window.json``).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import platformdirs
from pydantic import BaseModel, Field, ValidationError

from app import APP_ID
from app.domain import DEFAULT_IDLE_MINUTES, DEFAULT_MAX_HOURS, AgentCredentialKind
from app.errors import BivyError, InvalidInput
from app.settings.files import FileNotice, file_lock, move_aside

SCHEMA_VERSION = 1


def config_dir() -> Path:
    """Where settings live: ``$BIVY_CONFIG_DIR`` or the platform's user config dir."""
    override = os.environ.get("BIVY_CONFIG_DIR")
    return Path(override) if override else Path(platformdirs.user_config_dir(APP_ID))


def data_dir() -> Path:
    """Where data lives (cost ledger, known_hosts, keys): ``$BIVY_DATA_DIR`` or platformdirs."""
    override = os.environ.get("BIVY_DATA_DIR")
    return Path(override) if override else Path(platformdirs.user_data_dir(APP_ID))


def settings_path() -> Path:
    return config_dir() / "settings.json"


class Account(BaseModel):
    """One configured cloud account. Secret option values live in the keychain only.

    Attributes:
        id: stable id ("hetzner", "hetzner-2"); keys the secrets in the keychain.
        provider: the provider kind.
        label: what the user calls it.
        options: the non-secret option values, by option key.
    """

    id: str
    provider: str
    label: str = ""
    options: dict[str, str] = Field(default_factory=dict)


class Defaults(BaseModel):
    """What the create dialog and ``bivy create`` start from."""

    account: str = ""
    region: str = ""
    size: str = ""
    idle_minutes: int = Field(default=DEFAULT_IDLE_MINUTES, ge=5, le=24 * 60)
    max_hours: int = Field(default=DEFAULT_MAX_HOURS, ge=1, le=24 * 7)
    agent_credential: AgentCredentialKind = "api_key"


class BackupSettings(BaseModel):
    """S3-compatible storage for the agent's history. Access keys live in the keychain."""

    enabled: bool = False
    endpoint: str = ""
    bucket: str = ""
    region: str = ""
    prefix: str = "bivy"
    interval_minutes: int = Field(default=15, ge=1, le=24 * 60)
    include_uncommitted: bool = True


class Settings(BaseModel):
    """Everything the user configured. ``schema_version`` drives migrations on load."""

    schema_version: int = SCHEMA_VERSION
    accounts: list[Account] = Field(default_factory=list)
    defaults: Defaults = Field(default_factory=Defaults)
    monthly_budget: Decimal | None = None
    budget_currency: str = "EUR"
    backup: BackupSettings = Field(default_factory=BackupSettings)
    notifications: bool = True
    refresh_seconds: int = Field(default=15, ge=5, le=3600)

    def account(self, account_id: str) -> Account | None:
        return next((a for a in self.accounts if a.id == account_id), None)


#: ``MIGRATIONS[n]`` turns a schema-``n`` document into a schema-``n+1`` one. Add one per bump.
MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {}


def _migrate(raw: object, path: Path) -> dict[str, Any]:
    """Bring an older settings document up to ``SCHEMA_VERSION`` through ``MIGRATIONS``."""
    if not isinstance(raw, dict):
        raise InvalidInput(
            f"settings file {path} is not valid: expected a JSON object",
            hint="Fix or remove the file; Bivy will start with defaults",
        )
    version_value = raw.get("schema_version", 1)
    if isinstance(version_value, bool) or not isinstance(version_value, int) or version_value < 0:
        raise InvalidInput(
            f"settings file {path} is not valid: schema_version must be a whole number",
            hint="Fix or remove the file; Bivy will start with defaults",
        )
    version = version_value
    if version > SCHEMA_VERSION:
        raise InvalidInput(
            f"settings file {path} was written by a newer Bivy (schema {version})",
            hint="Upgrade Bivy, or move the file away to start fresh",
        )
    while version < SCHEMA_VERSION:
        step = MIGRATIONS.get(version)
        if step is not None:
            raw = step(dict(raw))
        version += 1
    raw["schema_version"] = SCHEMA_VERSION
    return raw


def _first_error(exc: ValidationError) -> str:
    # Only the location and pydantic's message: the offending input value is left out.
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first.get("loc", ()))
    return f"{where}: {first['msg']}" if where else str(first["msg"])


class SettingsMovedAside(InvalidInput):
    """The settings file could not be used and was renamed (kept) to ``notice.kept_at``."""

    def __init__(self, message: str, notice: FileNotice) -> None:
        super().__init__(
            message,
            hint="Bivy starts with empty settings; copy what you need back from the kept file",
        )
        self.notice = notice


def _parse_settings(data: bytes, path: Path) -> Settings:
    """The settings in ``data``; ``InvalidInput`` naming what is wrong (never the values)."""
    try:
        raw = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInput(
            f"cannot read settings file {path}: {type(exc).__name__}: {exc}"
        ) from None
    try:
        return Settings.model_validate(_migrate(raw, path))
    except ValidationError as exc:
        raise InvalidInput(f"settings file {path} is not valid: {_first_error(exc)}") from None


def _newer_version(data: bytes) -> int | None:
    """The schema version of a document written by a newer Bivy, else None."""
    try:
        raw = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    version = raw.get("schema_version") if isinstance(raw, dict) else None
    if isinstance(version, int) and not isinstance(version, bool) and version > SCHEMA_VERSION:
        return version
    return None


def _read_bytes(path: Path) -> bytes | None:
    """The file's bytes, None when there is none; ``InvalidInput`` when it cannot be read (it
    is then left alone, and ``save_settings`` refuses to write over it)."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise InvalidInput(
            f"cannot read settings file {path}: {exc.strerror or type(exc).__name__}",
            hint="Fix its permissions; Bivy will not write over a file it cannot read",
        ) from None


def load_settings(path: Path | None = None) -> Settings:
    """Read the settings; a missing file gives defaults.

    A file that is not valid settings is moved aside (``settings.json.corrupt-<time>``, kept)
    and ``SettingsMovedAside`` says where, so the next start and the next Save begin afresh
    without destroying it. A file that cannot be read, or was written by a newer Bivy, is left
    in place with an ``InvalidInput``, and ``save_settings`` will not write over it.
    """
    path = path or settings_path()
    data = _read_bytes(path)
    if data is None:
        return Settings()
    try:
        return _parse_settings(data, path)
    except InvalidInput as exc:
        if _newer_version(data) is not None:
            raise
        problem = exc.message
    left = InvalidInput(problem, hint="Fix or remove the file; Bivy will not write over it")
    try:
        with file_lock(path):
            # Another process may have replaced it meanwhile: move only what was judged broken.
            if _read_bytes(path) != data:
                return load_settings(path)
            notice = move_aside(path, problem.split(": ", 1)[-1], publish=False)
    except BivyError:  # the folder cannot be written: nothing can be moved, nothing written
        raise left from None
    if not notice.kept_at:
        raise left
    raise SettingsMovedAside(notice.text, notice)


def atomic_write_text(path: Path, text: str, *, mode: int = 0o600) -> None:
    """Write ``text`` to ``path`` atomically: a temp file beside it, fsync, chmod, rename.

    A reader sees the old content or the new one, never half of it; a failed write leaves the
    old file untouched and no temp file behind.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise BivyError(
            f"cannot write {path}: {exc.strerror or type(exc).__name__}",
            hint="Check the permissions and free space of that folder",
        ) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise BivyError(
                f"cannot write {path}: {exc.strerror or type(exc).__name__}",
                hint="Check the permissions and free space of that folder",
            ) from None
        raise


class SettingsChanged(InvalidInput):
    """The settings file changed (another Bivy process) since the copy being saved was read."""

    default_hint = "Close Settings and open it again: it then starts from the current settings"


def save_settings(
    settings: Settings, path: Path | None = None, *, expected: Settings | None = None
) -> None:
    """Write the settings atomically (temp file + rename), readable by the user only.

    Holds ``settings.json.lock`` so two processes never interleave, and refuses to write over
    a file it cannot read or one written by a newer Bivy; a file that is not valid settings
    (broken since it was loaded) is moved aside first, never overwritten. With ``expected``
    (the settings an edit started from), a file that no longer holds them was changed by
    another process meanwhile (``bivy login`` beside the window): ``SettingsChanged``, and
    the other process's change is kept.
    """
    path = path or settings_path()
    with file_lock(path):
        data = _read_bytes(path)
        if data is not None:
            newer = _newer_version(data)
            if newer is not None:
                raise InvalidInput(
                    f"settings file {path} was written by a newer Bivy (schema {newer}); "
                    "not writing over it",
                    hint="Upgrade Bivy, or move the file away to start fresh",
                )
            try:
                current = _parse_settings(data, path)
            except InvalidInput as exc:
                if not move_aside(path, exc.message.split(": ", 1)[-1]).kept_at:
                    raise InvalidInput(
                        f"{exc.message}; it could not be moved aside, so it is not written over",
                        hint="Fix or remove the file, then save again",
                    ) from None
            else:
                if expected is not None and current != expected:
                    raise SettingsChanged(
                        f"the settings in {path} were changed by another Bivy process since "
                        "they were opened here; not writing over that change"
                    )
        atomic_write_text(path, settings.model_dump_json(indent=2) + "\n")
