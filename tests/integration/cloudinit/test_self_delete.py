"""The idle monitor deletes the VM through the provider's script against the Hetzner emulator."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from app.domain import WorkspaceSpec
from tests.emulators.hetzner import HetznerEmulator
from tests.unit.cloudinit.vmtree import render_tree

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")


def _vm(tmp_path: Path, base_url: str, token: str) -> dict[str, str]:
    spec = WorkspaceSpec(name="w", repo_url="https://github.com/o/r.git")
    env = render_tree(
        spec, tmp_path, self_delete_env={"HCLOUD_TOKEN": token, "BIVY_API_URL": base_url}
    )
    (tmp_path / "state" / "deadline").write_text("1000\n")
    env.update(BIVY_NOW="2000", BIVY_SS_CMD="true", BIVY_PS_CMD="true")
    return env


def test_lifetime_delete_reaches_the_api(tmp_path: Path) -> None:
    emu = HetznerEmulator(token="t0k")
    server_id = emu.add_server("bivy-w", {"managed-by": "bivy"})
    with emu.serve() as base_url:
        env = _vm(tmp_path, base_url, "t0k")
        env["BIVY_METADATA_URL"] = emu.metadata_url(base_url, server_id)
        result = subprocess.run(
            ["bash", str(tmp_path / "lib" / "idle-monitor")],
            env=env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        assert emu.server_status(server_id) in ("deleting", None)
    status = json.loads((tmp_path / "state" / "status.json").read_text())
    assert status["phase"] == "deleting"
    assert "maximum lifetime" in status["detail"]


def test_refused_delete_retries_then_powers_off(tmp_path: Path) -> None:
    emu = HetznerEmulator(token="t0k")
    server_id = emu.add_server("bivy-w", {"managed-by": "bivy"})
    marker = tmp_path / "powered-off"
    with emu.serve() as base_url:
        env = _vm(tmp_path, base_url, "wrong-token")
        env.update(
            BIVY_METADATA_URL=emu.metadata_url(base_url, server_id),
            BIVY_DELETE_ATTEMPTS="2",
            BIVY_DELETE_RETRY_SECONDS="0",
            BIVY_POWEROFF_CMD=f"touch {marker}",
        )
        result = subprocess.run(
            ["bash", str(tmp_path / "lib" / "idle-monitor"), "--lifetime"],
            env=env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert result.returncode == 1
        assert emu.server_status(server_id) not in ("deleting", None)
    assert marker.exists()
    status = json.loads((tmp_path / "state" / "status.json").read_text())
    assert status["phase"] == "failed"
    assert "HTTP 401" in status["error"]
    assert "wrong-token" not in json.dumps(status)
