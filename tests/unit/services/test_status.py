"""StatusService parsing and change detection (pure logic; SSH is in tests/integration)."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

from app.domain import AgentState, Phase
from app.services.status import (
    StatusEvent,
    StatusEventKind,
    StatusService,
    StatusSnapshot,
    parse_files,
)
from app.services.tunnels import TunnelService

NOW = datetime(2026, 11, 27, 3, 0, tzinfo=UTC)


def output(status: dict[str, object] | None, agent: dict[str, object] | None) -> str:
    def text(value: dict[str, object] | None) -> str:
        return json.dumps(value) if value is not None else ""

    return f"{text(status)}\x1e{text(agent)}\x1e"


def snapshot(status: dict[str, object] | None, agent: dict[str, object] | None) -> StatusSnapshot:
    parsed_status, parsed_agent = parse_files(output(status, agent))
    return StatusSnapshot("demo", parsed_status, parsed_agent, NOW)


def test_parse_both_files() -> None:
    status, agent = parse_files(
        output(
            {"phase": "cloning", "progress": 0.3, "updated_at": "2026-11-27T02:59:00Z"},
            {"state": "working", "background_tasks": 2},
        )
    )
    assert status is not None and status.phase == Phase.CLONING
    assert status.updated_at == datetime(2026, 11, 27, 2, 59, tzinfo=UTC)
    assert agent is not None and agent.state == AgentState.WORKING
    assert agent.background_tasks == 2


def test_missing_or_broken_files_give_none() -> None:
    assert parse_files(output(None, None)) == (None, None)
    assert parse_files("") == (None, None)
    status, agent = parse_files('{"phase": "rea\x1e{"state": "idle"}\x1e')
    assert status is None
    assert agent is not None and agent.state == AgentState.IDLE


def test_unknown_values_map_to_unknown() -> None:
    status, agent = parse_files(output({"phase": "teleporting"}, {"state": "dreaming"}))
    assert status is not None and status.phase == Phase.UNKNOWN
    assert agent is not None and agent.state == AgentState.UNKNOWN


def test_read_command_quotes_paths() -> None:
    svc = StatusService(TunnelService(), status_path="/tmp/a b/s.json", agent_path="/x;rm -rf /")
    command = svc.read_command()
    assert "'/tmp/a b/s.json'" in command
    assert "'/x;rm -rf /'" in command


def test_countdowns() -> None:
    snap = snapshot(
        {
            "phase": "ready",
            "idle_deadline": "2026-11-27T03:12:00Z",
            "lifetime_deadline": "2026-11-27T14:00:00Z",
        },
        None,
    )
    assert snap.idle_remaining(NOW) == timedelta(minutes=12)
    assert snap.lifetime_remaining(NOW) == timedelta(hours=11)
    assert snap.idle_remaining(NOW + timedelta(hours=1)) == timedelta(0)
    assert snapshot({"phase": "ready"}, None).idle_remaining(NOW) is None


def test_change_events() -> None:
    svc = StatusService(TunnelService(), clock=lambda: NOW, warn_before=timedelta(minutes=10))
    events: list[StatusEvent] = []
    svc.add_listener(events.append)

    def kinds() -> list[StatusEventKind]:
        found = [e.kind for e in events if e.kind != StatusEventKind.UPDATED]
        events.clear()
        return found

    first = snapshot({"phase": "building"}, {"state": "working"})
    svc._emit_changes(None, first)
    assert kinds() == [StatusEventKind.PHASE_CHANGED, StatusEventKind.AGENT_CHANGED]

    svc._emit_changes(first, first)  # nothing changed: only UPDATED
    assert kinds() == []

    ready = snapshot({"phase": "ready"}, {"state": "waiting", "message": "Allow Bash?"})
    svc._emit_changes(first, ready)
    found = list(events)
    assert kinds() == [
        StatusEventKind.PHASE_CHANGED,
        StatusEventKind.AGENT_CHANGED,
        StatusEventKind.AGENT_WAITING,
    ]
    assert found[1].previous_phase == Phase.BUILDING
    assert found[-1].previous_agent == AgentState.WORKING
    assert found[-1].snapshot is not None and found[-1].snapshot.agent is not None
    assert found[-1].snapshot.agent.message == "Allow Bash?"

    svc._emit_changes(ready, ready)  # still waiting: no second notification
    assert kinds() == []


def test_expiry_warning_once_per_deadline() -> None:
    svc = StatusService(TunnelService(), clock=lambda: NOW, warn_before=timedelta(minutes=10))
    events: list[StatusEvent] = []
    svc.add_listener(events.append)
    far = snapshot({"phase": "ready", "idle_deadline": "2026-11-27T03:30:00Z"}, None)
    svc._emit_changes(None, far)
    assert not [e for e in events if e.kind == StatusEventKind.EXPIRY_WARNING]
    near = snapshot({"phase": "ready", "idle_deadline": "2026-11-27T03:05:00Z"}, None)
    svc._emit_changes(far, near)
    warnings = [e for e in events if e.kind == StatusEventKind.EXPIRY_WARNING]
    assert len(warnings) == 1
    assert warnings[0].reason == "idle"
    assert warnings[0].deadline == datetime(2026, 11, 27, 3, 5, tzinfo=UTC)
    svc._emit_changes(near, near)  # the same deadline is not announced twice
    assert len([e for e in events if e.kind == StatusEventKind.EXPIRY_WARNING]) == 1


def test_listener_errors_do_not_break_others() -> None:
    svc = StatusService(TunnelService())
    seen: list[StatusEvent] = []

    def broken(event: StatusEvent) -> None:
        raise RuntimeError("listener bug")

    svc.add_listener(broken)
    svc.add_listener(seen.append)
    svc._emit_changes(None, snapshot({"phase": "ready"}, None))
    assert [e.kind for e in seen] == [StatusEventKind.UPDATED, StatusEventKind.PHASE_CHANGED]


def test_read_command_survives_a_planted_fifo_or_huge_file(tmp_path: Path) -> None:
    """The agent file is writable from the container: a FIFO must not hang the read."""
    status_file = tmp_path / "status.json"
    status_file.write_text(json.dumps({"phase": "ready", "progress": 1.0}))
    fifo = tmp_path / "agent.json"
    os.mkfifo(fifo)
    svc = StatusService(TunnelService(), status_path=str(status_file), agent_path=str(fifo))
    done = subprocess.run(
        ["sh", "-c", svc.read_command()], capture_output=True, text=True, timeout=10
    )
    status, agent = parse_files(done.stdout)
    assert status is not None and status.phase == Phase.READY
    assert agent is None

    fifo.unlink()
    fifo.write_text("x" * 1_000_000)
    done = subprocess.run(
        ["sh", "-c", svc.read_command()], capture_output=True, text=True, timeout=10
    )
    assert len(done.stdout) < 70_000
