"""The idle monitor with several sessions (issue 15), run for real in bash against a fake clock
(as tests/integration/cloudinit/test_idle_monitor.py does): the VM is idle only when every
session's agent is; a working session keeps it, whichever session it is."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from app.cloudinit import render_cloud_config
from app.domain import WorkspaceSpec
from tests.integration.cloudinit import test_idle_monitor
from tests.integration.cloudinit.test_idle_monitor import T0, WINDOW, Vm
from tests.unit.cloudinit.vmtree import inputs_for, materialize


@pytest.fixture
def vm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Vm:
    """test_idle_monitor's VM, its files from the plain cloud-config (the scripts are under
    test here, not the provider's size limit)."""

    def render(spec: WorkspaceSpec, root: Path) -> dict[str, str]:
        return materialize(render_cloud_config(inputs_for(spec)), root)

    monkeypatch.setattr(test_idle_monitor, "render_tree", render)
    return Vm(tmp_path)


def _session(vm: Vm, name: str) -> None:
    sessions = vm.state / "sessions"
    sessions.mkdir(exist_ok=True)
    record = {"name": name, "agent": "claude", "branch": f"bivy/{name}", "base": "x",
              "worktree": f"/workspaces/r/.bivy/worktrees/{name}", "created_at": ""}  # fmt: skip
    (sessions / f"{name}.json").write_text(json.dumps(record))


def _agent(vm: Vm, name: str, state: str, at: int, background: int = 0) -> Path:
    stamp = datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    record = {"state": state, "event": "x", "background_tasks": background, "updated_at": stamp}
    directory = vm.state / "agent" / ("" if name == "main" else name)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "agent.json"
    path.write_text(json.dumps(record))
    return path


def test_one_working_session_keeps_the_vm_and_all_idle_deletes_it(vm: Vm) -> None:
    for name in ("main", "feature", "review"):
        _session(vm, name)
    _agent(vm, "main", "idle", T0 - 60)
    _agent(vm, "feature", "working", T0 - 60)
    _agent(vm, "review", "idle", T0 - 60)
    assert vm.decide() == "active agent working in session feature"
    # main's own activity is named as before
    _agent(vm, "main", "working", T0 - 30)
    assert vm.decide() == "active agent working"
    # every session idle: the idle clock runs, and after the window the VM goes
    _agent(vm, "main", "idle", T0)
    _agent(vm, "feature", "idle", T0)
    assert vm.decide() == f"idle {WINDOW}"
    vm.now += WINDOW - 60
    _agent(vm, "review", "working", vm.now - 10)  # a late turn of another session
    assert vm.decide() == "active agent working in session review"
    _agent(vm, "review", "idle", vm.now)
    assert vm.decide() == f"idle {WINDOW}"
    vm.now += WINDOW
    assert vm.decide() == "delete idle"


def test_background_tasks_of_a_session_and_stale_work(vm: Vm) -> None:
    _session(vm, "main")
    _session(vm, "feature")
    _agent(vm, "main", "idle", T0 - 60)
    _agent(vm, "feature", "idle", T0 - 60, background=2)
    assert vm.decide() == "active agent has 2 background task(s) in session feature"
    # a working state older than the window is a crashed agent, not work (as for main)
    _agent(vm, "feature", "working", T0 - WINDOW - 1)
    assert vm.decide() == f"idle {WINDOW}"


def test_the_full_run_deletes_only_when_all_sessions_are_idle(vm: Vm) -> None:
    deleted = vm.root / "deleted-by-test"
    script = vm.lib / "self-delete"
    script.write_text(f"#!/bin/sh\necho gone > {deleted}\n")
    script.chmod(0o755)
    _session(vm, "main")
    _session(vm, "feature")
    _agent(vm, "main", "idle", T0)
    _agent(vm, "feature", "working", T0)
    vm.now = T0 + WINDOW + 10  # feature's working is stale by now: both idle
    assert vm.run().returncode == 0
    vm.now += WINDOW
    _agent(vm, "feature", "working", vm.now - 5)
    assert vm.run().returncode == 0
    assert not deleted.exists()
    status = json.loads((vm.state / "status.json").read_text())
    assert status.get("idle_deadline") is None
    _agent(vm, "feature", "idle", vm.now)
    assert vm.run().returncode == 0  # idle again: the clock starts over
    vm.now += WINDOW
    result = vm.run()
    assert result.returncode == 0, result.stderr
    assert deleted.read_text() == "gone\n"


@pytest.mark.parametrize("kind", ["fifo", "link"])
def test_a_sessions_agent_json_cannot_stall_or_fool_the_monitor(vm: Vm, kind: str) -> None:
    _session(vm, "main")
    _session(vm, "feature")
    _agent(vm, "main", "idle", T0 - 60)
    path = _agent(vm, "feature", "idle", T0 - 60)
    path.unlink()
    if kind == "fifo":
        os.mkfifo(path)
    else:  # a link to a file that says "working"
        target = vm.root / "elsewhere.json"
        stamp = datetime.fromtimestamp(T0 - 5, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        target.write_text(json.dumps({"state": "working", "updated_at": stamp}))
        path.symlink_to(target)
    assert vm.decide() == f"idle {WINDOW}"
