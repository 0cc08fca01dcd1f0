"""Settings that cannot be used are kept, never overwritten; writers in two processes wait."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from app.errors import InvalidInput
from app.settings import (
    Account,
    Settings,
    SettingsChanged,
    file_lock,
    load_settings,
    save_settings,
    settings_path,
    take_notices,
)

ROOT = Path(__file__).resolve().parents[3]


def test_a_file_that_cannot_be_read_is_left_alone_and_never_written_over() -> None:
    settings_path().mkdir(parents=True)  # a directory where the file should be: EISDIR
    with pytest.raises(InvalidInput, match="cannot read settings file") as info:
        load_settings()
    assert "will not write over" in info.value.one_line()
    with pytest.raises(InvalidInput, match="will not write over"):
        save_settings(Settings())
    assert settings_path().is_dir()


def test_a_newer_file_is_neither_moved_nor_overwritten() -> None:
    settings_path().parent.mkdir(parents=True)
    newer = json.dumps({"schema_version": 99, "accounts": [{"id": "x"}]}).encode()
    settings_path().write_bytes(newer)
    with pytest.raises(InvalidInput, match="newer Bivy"):
        load_settings()
    with pytest.raises(InvalidInput, match="not writing over it"):
        save_settings(Settings())
    assert settings_path().read_bytes() == newer
    assert sorted(p.name for p in settings_path().parent.iterdir()) == [
        "settings.json",
        "settings.json.lock",
    ]


def test_a_file_broken_after_loading_is_moved_aside_before_a_save() -> None:
    save_settings(Settings(accounts=[Account(id="hetzner", provider="hetzner")]))
    settings = load_settings()
    settings_path().write_bytes(b"{half a file")
    take_notices()
    save_settings(settings)
    (notice,) = take_notices()
    assert Path(notice.kept_at).read_bytes() == b"{half a file"
    assert load_settings() == settings


_HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from app.settings import file_lock, settings_path
    with file_lock(settings_path()):
        print("held", flush=True)
        time.sleep(float(sys.argv[1]))
        settings_path().write_text('{"notifications": false}')
    print("released", flush=True)
    """
)


def test_a_save_waits_for_another_process_holding_the_lock() -> None:
    """Another process holds settings.json.lock for 1.5 s: this save waits, then wins."""
    settings_path().parent.mkdir(parents=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, "1.5"],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        started = time.monotonic()
        save_settings(Settings(refresh_seconds=60))
        waited = time.monotonic() - started
        _out, err = holder.communicate(timeout=30)
    finally:
        if holder.poll() is None:
            holder.kill()
    assert holder.returncode == 0, err
    assert waited >= 1.0, f"the save did not wait for the other process ({waited:.2f} s)"
    # Written after the other process was done: its write is replaced, not interleaved.
    assert load_settings() == Settings(refresh_seconds=60)


def test_the_lock_is_reentrant_in_one_thread() -> None:
    with file_lock(settings_path()), file_lock(settings_path()):
        save_settings(Settings())
    assert load_settings() == Settings()


def test_a_save_from_a_stale_copy_keeps_the_other_processs_change() -> None:
    opened = Settings(accounts=[Account(id="hetzner", provider="hetzner")])
    save_settings(opened)
    # Another process (`bivy login digitalocean`) adds an account meanwhile.
    elsewhere = opened.model_copy(deep=True)
    elsewhere.accounts.append(Account(id="digitalocean", provider="digitalocean"))
    save_settings(elsewhere)
    edited = opened.model_copy(update={"refresh_seconds": 60})
    with pytest.raises(SettingsChanged, match="changed by another Bivy process") as info:
        save_settings(edited, expected=opened)
    assert "open it again" in info.value.one_line()
    assert load_settings() == elsewhere
    # Started from what is on disk now, the same edit goes through.
    save_settings(elsewhere.model_copy(update={"refresh_seconds": 60}), expected=elsewhere)
    assert load_settings().refresh_seconds == 60
    assert [a.id for a in load_settings().accounts] == ["hetzner", "digitalocean"]


def test_a_broken_file_that_cannot_be_moved_is_left_and_never_written_over(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from app.settings import files

    settings_path().parent.mkdir(parents=True)
    settings_path().write_bytes(b"{broken")

    def refuse(src: object, dst: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(files.os, "replace", refuse)
    with pytest.raises(InvalidInput, match="JSONDecodeError") as info:
        load_settings()
    assert "will not write over it" in info.value.one_line()
    with pytest.raises(InvalidInput, match="could not be moved aside"):
        save_settings(Settings())
    assert settings_path().read_bytes() == b"{broken"
