"""The status read's third record (issue 15): the VM's ``session ls --json`` — run for real on a
rendered VM tree — parsed into ``StatusSnapshot.sessions``, and the per-session events."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path

from app.cloudinit import render_cloud_config
from app.domain import AgentState, SessionReport, WorkspaceSpec
from app.services.status import (
    StatusEvent,
    StatusEventKind,
    StatusService,
    StatusSnapshot,
    parse_files,
    parse_sessions,
)
from app.services.tunnels import TunnelService
from tests.unit.cloudinit.vmtree import inputs_for, materialize

NOW = datetime(2026, 12, 2, 3, 0, tzinfo=UTC)


def _vm(root: Path) -> dict[str, str]:
    spec = WorkspaceSpec(name="w", repo_url="https://github.com/o/r.git")
    return materialize(render_cloud_config(inputs_for(spec)), root)


def _session(root: Path, name: str, agent: str = "claude", **record: object) -> None:
    sessions = root / "state" / "sessions"
    sessions.mkdir(parents=True, exist_ok=True)
    created = f"2026-12-02T02:0{len(list(sessions.iterdir()))}:00Z"
    entry = {"name": name, "agent": agent, "branch": f"bivy/{name}", "base": "abc",
             "worktree": f"/workspaces/r/.bivy/worktrees/{name}", "created_at": created,
             **record}  # fmt: skip
    (sessions / f"{name}.json").write_text(json.dumps(entry))


def _state(root: Path, name: str, state: str, message: str = "") -> Path:
    directory = root / "state" / "agent" / ("" if name == "main" else name)
    directory.mkdir(parents=True, exist_ok=True)
    record = {
        "state": state,
        "event": "x",
        "message": message,
        "updated_at": "2026-12-02T02:59:00Z",
    }
    path = directory / "agent.json"
    path.write_text(json.dumps(record))
    return path


def _read(root: Path, env: dict[str, str]) -> str:
    svc = StatusService(
        TunnelService(),
        status_path=str(root / "state" / "status.json"),
        agent_path=str(root / "state" / "agent" / "agent.json"),
        session_command=str(root / "lib" / "session"),
    )
    done = subprocess.run(
        ["sh", "-c", svc.read_command()], env=env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_read_returns_the_vms_sessions_joined_with_their_agents(tmp_path: Path) -> None:
    env = _vm(tmp_path)
    _session(tmp_path, "main", branch="main", worktree="/workspaces/r")
    _session(tmp_path, "feature", agent="codex")
    _session(tmp_path, "broken", failed=True, message="the terminal did not start")
    _state(tmp_path, "main", "waiting", "Allow Bash?")
    _state(tmp_path, "feature", "working")
    out = _read(tmp_path, env)
    _status, agent = parse_files(out)
    assert agent is not None and agent.state == AgentState.WAITING  # main's, as before
    sessions = parse_sessions(out)
    assert [s.name for s in sessions] == ["main", "feature", "broken"]
    main, feature, broken = sessions
    assert (main.branch, main.worktree, main.state) == ("main", "/workspaces/r", AgentState.WAITING)
    assert main.message == "Allow Bash?"
    assert (feature.agent, feature.state) == ("codex", AgentState.WORKING)
    assert feature.updated_at == datetime(2026, 12, 2, 2, 59, tzinfo=UTC)
    assert broken.failed and broken.message == "the terminal did not start"
    assert broken.state == AgentState.UNKNOWN  # its agent never wrote anything


def test_a_planted_fifo_or_link_in_a_sessions_agent_json_does_not_hang_or_leak(
    tmp_path: Path,
) -> None:
    env = _vm(tmp_path)
    _session(tmp_path, "main")
    _session(tmp_path, "feature")
    _session(tmp_path, "other")
    os.mkfifo(tmp_path / "state" / "agent" / "agent.json")
    directory = tmp_path / "state" / "agent" / "feature"
    directory.mkdir(parents=True)
    secret = tmp_path / "secret.json"
    secret.write_text(json.dumps({"state": "working", "message": "root's secret"}))
    (directory / "agent.json").symlink_to(secret)
    _state(tmp_path, "other", "idle")
    sessions = {s.name: s for s in parse_sessions(_read(tmp_path, env))}
    assert sessions["main"].state == AgentState.UNKNOWN
    assert sessions["feature"].state == AgentState.UNKNOWN
    assert "secret" not in sessions["feature"].message
    assert sessions["other"].state == AgentState.IDLE


def test_no_session_command_or_no_sessions_yet_is_an_empty_list(tmp_path: Path) -> None:
    env = _vm(tmp_path)
    assert parse_sessions(_read(tmp_path, env)) == ()  # before the bootstrap made main
    (tmp_path / "lib" / "session").unlink()  # a VM from before sessions
    out = _read(tmp_path, env)
    assert parse_sessions(out) == ()
    assert out.count("\x1e") == 3
    assert parse_sessions("{}\x1e{}\x1enot json\x1e") == ()
    assert parse_sessions('{}\x1e{}\x1e[{"name": "a"}, {"nope": 1}, 3]\x1e')[0].name == "a"


def _snap(*sessions: tuple[str, str], status: bool = True) -> StatusSnapshot:
    text = json.dumps({"phase": "ready"}) if status else ""
    parsed, agent = parse_files(f"{text}\x1e\x1e")
    reports = tuple(SessionReport(name=n, state=AgentState(s)) for n, s in sessions)
    return StatusSnapshot("demo", parsed, agent, NOW, reports)


def test_session_events() -> None:
    svc = StatusService(TunnelService(), clock=lambda: NOW)
    events: list[StatusEvent] = []
    svc.add_listener(events.append)

    def seen() -> list[tuple[StatusEventKind, str, AgentState | None]]:
        found = [
            (e.kind, e.session.name if e.session else "", e.previous_agent)
            for e in events
            if e.kind.value.startswith("session-")
        ]
        events.clear()
        return found

    first = _snap(("main", "idle"), ("feature", "working"))
    svc._emit_changes(None, first)
    assert seen() == [
        (StatusEventKind.SESSION_ADDED, "main", None),
        (StatusEventKind.SESSION_ADDED, "feature", None),
    ]
    svc._emit_changes(first, first)
    assert seen() == []
    second = _snap(("main", "idle"), ("feature", "waiting"), ("review", "waiting"))
    svc._emit_changes(first, second)
    assert seen() == [
        (StatusEventKind.SESSION_CHANGED, "feature", AgentState.WORKING),
        (StatusEventKind.SESSION_WAITING, "feature", AgentState.WORKING),
        (StatusEventKind.SESSION_ADDED, "review", None),
        (StatusEventKind.SESSION_WAITING, "review", None),
    ]
    svc._emit_changes(second, second)  # still waiting: no second notification
    assert seen() == []
    third = _snap(("main", "working"), ("review", "waiting"))
    svc._emit_changes(second, third)
    assert seen() == [
        (StatusEventKind.SESSION_CHANGED, "main", AgentState.IDLE),
        (StatusEventKind.SESSION_REMOVED, "feature", None),
    ]
    # A read where the VM said nothing at all does not remove every session.
    svc._emit_changes(third, _snap(status=False))
    assert seen() == []
