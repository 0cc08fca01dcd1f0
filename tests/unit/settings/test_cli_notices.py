"""The real CLI with a broken settings or registry file: one line says where the original is
kept, and nothing is lost or overwritten (issue 13)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from app.services.registry import registry_path
from app.settings import settings_path

ROOT = Path(__file__).resolve().parents[3]


def bivy(*args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring",
    }
    return subprocess.run(
        [sys.executable, "-m", "app", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_broken_settings_file_is_kept_and_named_in_one_line() -> None:
    settings_path().parent.mkdir(parents=True)
    settings_path().write_bytes(b"{broken")
    first = bivy("ls")
    assert first.returncode != 0
    lines = [line for line in first.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("bivy: ")
    (kept,) = settings_path().parent.glob("settings.json.corrupt-*")
    assert f"kept as {kept}" in lines[0]
    assert kept.read_bytes() == b"{broken"
    # The next run starts afresh; the kept file stays as it was.
    assert bivy("ls").returncode == 0
    assert kept.read_bytes() == b"{broken"


def test_a_bad_registry_record_is_named_in_one_line_and_kept() -> None:
    registry_path().parent.mkdir(parents=True)
    document = {
        "schema_version": 1,
        "workspaces": [{"name": "a", "account": "h", "provider": "hetzner"}, {"name": "b"}],
    }
    registry_path().write_text(json.dumps(document))
    result = bivy("ls")
    assert result.returncode == 0, result.stderr
    notices = [line for line in result.stderr.splitlines() if "workspaces.json" in line]
    assert len(notices) == 1 and "record 2 (b): account: Field required" in notices[0]
    (kept,) = registry_path().parent.glob("workspaces.json.corrupt-*")
    assert json.loads(kept.read_text()) == document
    assert [w["name"] for w in json.loads(registry_path().read_text())["workspaces"]] == ["a"]
