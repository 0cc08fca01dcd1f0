"""Settings: location overrides, schema version and migration, corrupt files, atomic writes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from app.errors import BivyError, InvalidInput
from app.settings import (
    SCHEMA_VERSION,
    Account,
    Settings,
    SettingsMovedAside,
    atomic_write_text,
    config_dir,
    data_dir,
    load_settings,
    save_settings,
    settings_path,
)
from app.settings import model as settings_model


def test_dirs_follow_environment_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BIVY_CONFIG_DIR", str(tmp_path / "c"))
    monkeypatch.setenv("BIVY_DATA_DIR", str(tmp_path / "d"))
    assert config_dir() == tmp_path / "c"
    assert data_dir() == tmp_path / "d"
    assert settings_path() == tmp_path / "c" / "settings.json"


def test_dirs_fall_back_to_platformdirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BIVY_CONFIG_DIR")
    monkeypatch.delenv("BIVY_DATA_DIR")
    home = Path(os.environ["HOME"])
    # conftest points XDG_* into the temp home, so platformdirs lands there (Linux).
    assert config_dir() == home / ".config" / "bivy"
    assert data_dir() == home / ".local" / "share" / "bivy"


def test_missing_file_gives_defaults() -> None:
    settings = load_settings()
    assert settings == Settings()
    assert settings.schema_version == SCHEMA_VERSION
    assert not settings_path().exists()  # loading never writes


def test_round_trip_keeps_every_field() -> None:
    settings = Settings(accounts=[Account(id="hetzner", provider="hetzner", label="Work")])
    settings.defaults.region = "fsn1"
    settings.defaults.idle_minutes = 45
    save_settings(settings)
    loaded = load_settings()
    assert loaded == settings
    raw = json.loads(settings_path().read_text())
    assert raw["schema_version"] == SCHEMA_VERSION
    assert raw["accounts"][0]["id"] == "hetzner"


def test_saved_file_is_private_and_leaves_no_temp_files() -> None:
    save_settings(Settings())
    assert settings_path().stat().st_mode & 0o777 == 0o600
    names = {p.name for p in settings_path().parent.iterdir()}
    assert names - {"settings.json.lock"} == {"settings.json"}  # the lock file stays


def test_file_without_version_is_treated_as_version_1() -> None:
    settings_path().parent.mkdir(parents=True)
    settings_path().write_text(json.dumps({"notifications": False}))
    loaded = load_settings()
    assert loaded.notifications is False
    assert loaded.schema_version == SCHEMA_VERSION


def test_migrations_run_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    # A pretend schema 0 named the refresh interval differently; the migration renames it.
    def from_0(raw: dict[str, object]) -> dict[str, object]:
        raw["refresh_seconds"] = raw.pop("poll_seconds")
        return raw

    monkeypatch.setattr(settings_model, "MIGRATIONS", {0: from_0})
    settings_path().parent.mkdir(parents=True)
    settings_path().write_text(json.dumps({"schema_version": 0, "poll_seconds": 60}))
    loaded = load_settings()
    assert loaded.refresh_seconds == 60
    assert loaded.schema_version == SCHEMA_VERSION


def test_newer_schema_is_refused_clearly() -> None:
    settings_path().parent.mkdir(parents=True)
    settings_path().write_text(json.dumps({"schema_version": SCHEMA_VERSION + 1}))
    with pytest.raises(InvalidInput, match="newer Bivy") as info:
        load_settings()
    assert "Upgrade Bivy" in info.value.one_line()


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"{not json", "JSONDecodeError"),
        (b"\xff\xfe\x00garbage", "UnicodeDecodeError"),
        (b"[1, 2, 3]", "expected a JSON object"),
        (b'{"schema_version": "one"}', "schema_version must be a whole number"),
        (b'{"refresh_seconds": 1}', "refresh_seconds"),
        (b'{"accounts": [{"provider": "hetzner"}]}', "accounts.0.id"),
    ],
)
def test_corrupt_file_is_moved_aside_with_one_clear_error(content: bytes, reason: str) -> None:
    settings_path().parent.mkdir(parents=True)
    settings_path().write_bytes(content)
    with pytest.raises(SettingsMovedAside) as info:
        load_settings()
    line = info.value.one_line()
    assert reason in line
    assert str(settings_path()) in line
    assert "\n" not in line
    kept = Path(info.value.notice.kept_at)
    assert f"kept as {kept}" in line
    assert kept.name.startswith("settings.json.corrupt-")
    assert kept.read_bytes() == content  # kept byte for byte
    assert not settings_path().exists()
    assert load_settings() == Settings()  # the next start begins afresh


def test_atomic_write_keeps_old_file_when_write_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "w" / "f.json"
    atomic_write_text(target, "old")

    def broken_replace(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(settings_model.os, "replace", broken_replace)
    with pytest.raises(BivyError, match="No space left on device"):
        atomic_write_text(target, "new")
    assert target.read_text() == "old"
    assert sorted(p.name for p in target.parent.iterdir()) == ["f.json"]


def test_atomic_write_never_exposes_a_partial_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "w" / "f.json"
    atomic_write_text(target, "old")
    seen: list[str] = []
    real_replace = os.replace

    def spying_replace(src: str, dst: str) -> None:
        # At the moment of the rename the target still holds the complete old text and the
        # temp file the complete new text.
        seen.append(Path(dst).read_text())
        seen.append(Path(src).read_text())
        real_replace(src, dst)

    monkeypatch.setattr(settings_model.os, "replace", spying_replace)
    atomic_write_text(target, "new" * 1000)
    assert seen == ["old", "new" * 1000]
    assert target.read_text() == "new" * 1000


def test_unwritable_folder_gives_bivy_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(BivyError, match="cannot write"):
        atomic_write_text(blocker / "sub" / "x.json", "{}")
