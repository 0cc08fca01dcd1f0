"""The VM's status writer: atomic, merged, typed values, and no lost update between writers."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

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


@pytest.mark.slow  # 80 processes (~12 s on 2 cores)
def test_backup_writes_through_the_same_lock(tmp_path: Path) -> None:
    # The backup's status updates and the other writers' merges run at once: every field
    # stays (with its own lock, the backup once lost 35 of 80 concurrent writes).
    from app.cloudinit import BackupInputs

    spec = WorkspaceSpec(name="w", repo_url="https://github.com/o/r.git")
    backup = BackupInputs(repository="s3:http://127.0.0.1:9/b/p", password="")  # unconfigured
    env = render_tree(spec, tmp_path, backup=backup)
    state = tmp_path / "state"
    (state / "backup").mkdir()
    (state / "backup" / "restore-done").touch()
    writer = ["python3", str(tmp_path / "lib" / "status")]
    runs = []
    for i in range(40):
        runs.append(subprocess.Popen([*writer, f"key{i}=v{i}"], env=env))
        runs.append(
            subprocess.Popen(
                [str(tmp_path / "lib" / "backup"), "run"], env=env, stderr=subprocess.DEVNULL
            )
        )
    codes = [run.wait(timeout=60) for run in runs]
    assert codes == [0, 1] * 40  # each backup fails (not configured) and says so in status.json
    status = json.loads((state / "status.json").read_text())
    assert {f"key{i}" for i in range(40)} <= set(status)
    assert status["phase"] == "booting"
    assert str(status["backup_error"]).startswith("backup failed: backup is not configured")
    assert sorted(p.name for p in state.iterdir() if p.name.startswith(".status")) == [
        ".status.lock"
    ]


def test_phase_timings_and_step_durations(tmp_path: Path) -> None:
    # For `bivy wait` and the boot benchmark: when each phase began (first time only) and how
    # long each bootstrap step took.
    cmd, env = _writer(tmp_path)
    status_path = tmp_path / "state" / "status.json"
    for now, args in (
        ("1800000000", ["phase=installing"]),
        ("1800000005.5", ["steps.packages=42", "steps.node=17.25"]),
        ("1800000010", ["phase=cloning", "detail=x"]),
        ("1800000020", ["phase=cloning", "detail=y"]),
        ("1800000030", ["steps.clone=3", "timings.booting=1799999900"]),
    ):
        subprocess.run([*cmd, *args], env={**env, "BIVY_NOW": now}, check=True)
    status = json.loads(status_path.read_text())
    assert status["timings"] == {
        "booting": 1799999900.0,
        "installing": 1800000000.0,
        "cloning": 1800000010.0,
    }
    assert status["steps"] == {"packages": 42.0, "node": 17.2, "clone": 3.0}
    assert status["phase"] == "cloning" and status["detail"] == "y"
    StatusReport.model_validate_json(status_path.read_text())
