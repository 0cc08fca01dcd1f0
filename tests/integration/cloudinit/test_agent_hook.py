"""The Claude Code hook script writes agent.json for the documented hook payloads."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from app.domain import AgentReport, AgentState, WorkspaceSpec
from tests.unit.cloudinit.vmtree import render_tree

BASE = {
    "session_id": "abc123",
    "transcript_path": "/bivy/claude/projects/-workspaces-r/abc123.jsonl",
    "cwd": "/workspaces/r",
    "permission_mode": "default",
}


@pytest.fixture
def hook(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    env = render_tree(WorkspaceSpec(name="w", repo_url="https://github.com/o/r.git"), tmp_path)
    state = tmp_path / "state" / "agent"
    env["BIVY_AGENT_STATE_DIR"] = str(state)
    return tmp_path / "lib" / "hook" / "agent-hook", env


def fire(hook: tuple[Path, dict[str, str]], event: str, **fields: object) -> AgentReport:
    script, env = hook
    payload = json.dumps({**BASE, "hook_event_name": event, **fields})
    result = subprocess.run(
        ["sh", str(script), event],
        input=payload,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0 and result.stdout == "", result.stderr
    return AgentReport.model_validate_json(
        Path(env["BIVY_AGENT_STATE_DIR"], "agent.json").read_text()
    )


@pytest.mark.skipif(
    shutil.which("node") is None, reason="needs node (the Claude Code feature brings it)"
)
def test_a_turn_with_a_permission_prompt(hook: tuple[Path, dict[str, str]]) -> None:
    report = fire(hook, "SessionStart", source="startup", model="claude-sonnet-4-5")
    assert report.state is AgentState.IDLE
    report = fire(hook, "UserPromptSubmit", prompt="fix the tests")
    assert report.state is AgentState.WORKING and report.updated_at is not None
    report = fire(hook, "PreToolUse", tool_name="Bash", tool_input={"command": "pytest"})
    assert report.state is AgentState.WORKING
    report = fire(
        hook, "PermissionRequest", tool_name="Bash", tool_input={"command": "rm -rf build"}
    )
    assert report.state is AgentState.WAITING
    assert report.message == "Permission requested: Bash"
    report = fire(
        hook, "PostToolUse", tool_name="Bash", tool_input={}, tool_response={"stdout": ""}
    )
    assert report.state is AgentState.WORKING
    report = fire(hook, "SubagentStop", stop_hook_active=False, agent_id="a1", agent_type="Explore")
    assert report.state is AgentState.WORKING
    report = fire(
        hook, "Stop", stop_hook_active=False, last_assistant_message="All tests pass.",
        background_tasks=[{"id": "b1", "command": "npm run dev"}], session_crons=[],
    )  # fmt: skip
    assert report.state is AgentState.IDLE
    assert report.background_tasks == 1
    assert report.message == "All tests pass."
    report = fire(
        hook,
        "Notification",
        message="Claude is waiting for your input",
        notification_type="idle_prompt",
    )
    assert report.state is AgentState.IDLE and report.background_tasks == 1
    report = fire(
        hook, "Notification", message="Claude needs your permission to use Bash",
        notification_type="permission_prompt",
    )  # fmt: skip
    assert report.state is AgentState.WAITING
    assert report.message == "Claude needs your permission to use Bash"
    report = fire(hook, "SessionEnd", reason="prompt_input_exit")
    assert report.state is AgentState.IDLE and report.background_tasks == 0


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node")
def test_garbage_input_never_breaks_the_agent(hook: tuple[Path, dict[str, str]]) -> None:
    script, env = hook
    result = subprocess.run(
        ["sh", str(script), "Stop"], input=b"not json", env=env, capture_output=True, check=False
    )
    assert result.returncode == 0
    report = AgentReport.model_validate_json(
        Path(env["BIVY_AGENT_STATE_DIR"], "agent.json").read_text()
    )
    assert report.state is AgentState.IDLE and report.background_tasks == 0


def test_without_node_the_event_still_sets_the_state(
    hook: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    script, env = hook
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("dirname", "cat", "date", "chmod", "mv"):
        found = shutil.which(tool)
        assert found
        (bin_dir / tool).symlink_to(found)
    env = {**env, "PATH": str(bin_dir)}
    shell = shutil.which("sh")
    assert shell
    result = subprocess.run(
        [shell, str(script), "PermissionRequest"],
        input=b"{}",
        env=env,
        capture_output=True,
        check=False,
    )
    assert result.returncode == 0
    report = AgentReport.model_validate_json(
        Path(env["BIVY_AGENT_STATE_DIR"], "agent.json").read_text()
    )
    assert report.state is AgentState.WAITING


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node")
def test_the_idle_monitor_reads_what_the_hook_wrote(hook: tuple[Path, dict[str, str]]) -> None:
    script, env = hook
    root = script.parents[2]
    (root / "state" / "status.json").write_text('{"phase": "ready"}')
    (root / "state" / "deadline").write_text("9999999999\n")
    monitor_env = {**env, "BIVY_SS_CMD": "true", "BIVY_PS_CMD": "true"}

    def decide() -> str:
        result = subprocess.run(
            ["bash", str(root / "lib" / "idle-monitor"), "--decide"],
            env=monitor_env, capture_output=True, text=True, check=False,
        )  # fmt: skip
        return result.stdout.strip()

    fire(hook, "UserPromptSubmit", prompt="go")
    assert decide() == "active agent working"
    fire(hook, "PermissionRequest", tool_name="Bash")
    assert decide().startswith("idle")
    fire(hook, "Stop", background_tasks=[{"id": "t"}], stop_hook_active=False)
    assert decide() == "active agent has 1 background task(s)"
