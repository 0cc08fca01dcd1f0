"""The VM's status writer: atomic, merged, typed values, and no lost update between writers."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from app.domain import Phase, StatusReport, WorkspaceSpec
from tests.unit.cloudinit.vmtree import render_tree


def _writer(tmp_path: Path) -> tuple[list[str], dict[str, str]]:
    env = render_tree(WorkspaceSpec(name="w", repo_url="https://github.com/o/r.git"), tmp_path)
    return ["python3", str(tmp_path / "lib" / "status")], env


def test_values_are_typed_and_read_by_the_app(tmp_path: Path) -> None:
    cmd, env = _writer(tmp_path)
    log = tmp_path / "build.log"
    log.write_text("".join(f"line {i}\n" for i in range(100)))
    env["BIVY_NOW"] = "1800000000"
    subprocess.run(
        [*cmd, "phase=failed", "detail=it broke", "progress=0.5", "idle_since=@1800000000",
         "error=x=y", f"log_tail=<{log}", "backup_error="],
        env=env, check=True,
    )  # fmt: skip
    report = StatusReport.model_validate_json((tmp_path / "state" / "status.json").read_text())
    assert report.phase is Phase.FAILED
    assert report.progress == 0.5
    assert report.error == "x=y"
    assert report.idle_since is not None and report.idle_since.timestamp() == 1800000000
    assert report.log_tail is not None and report.log_tail.splitlines()[-1] == "line 99"
    assert len(report.log_tail.splitlines()) == 40
    assert report.backup_error is None
    assert report.updated_at is not None


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    cmd, env = _writer(tmp_path)
    runs = [subprocess.Popen([*cmd, f"key{i}=v{i}"], env=env) for i in range(16)]
    assert [run.wait(timeout=30) for run in runs] == [0] * 16
    status = json.loads((tmp_path / "state" / "status.json").read_text())
    assert {f"key{i}" for i in range(16)} <= set(status)
    assert status["phase"] == "booting"  # the initial file's fields survive the merges
    assert [p.name for p in (tmp_path / "state").iterdir() if p.name.startswith(".status.")] == [
        ".status.lock"
    ]
