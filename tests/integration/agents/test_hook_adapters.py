"""Each agent's hook adapter (cloudinit/agents/<agent>/), run by real node on the payloads the
agent documents, writes the agent.json the idle monitor reads (checked with ``AgentReport``).

Payload sources (see docs/agents.md): Codex developers.openai.com/codex/hooks and the
``notify`` section of its config docs; Gemini CLI docs/hooks/reference.md (shipped in the npm
package); OpenCode packages/sdk/js/src/v2/gen/types.gen.ts; Copilot CLI
docs.github.com/en/copilot/reference/hooks-reference (camelCase format).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from app.domain import AgentReport, AgentState
from app.paths import cloudinit_path

#: The venv's node first (.ci/setup --test puts Node.js >= 20 there when the system's is older).
_VENV_NODE = Path(sys.executable).parent / "node"
NODE = str(_VENV_NODE) if _VENV_NODE.exists() else shutil.which("node") or "node"
AGENTS_DIR = cloudinit_path("agents")


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    path = tmp_path / "state"
    path.mkdir()
    return path


def _env(state_dir: Path) -> dict[str, str]:
    return {"PATH": os.environ["PATH"], "BIVY_AGENT_STATE_DIR": str(state_dir)}


def run_hook(
    agent: str, state_dir: Path, *args: str, payload: Any = None, stdout: str = ""
) -> AgentReport | None:
    """Runs cloudinit/agents/<agent>/hook.js ARGS with PAYLOAD on stdin; the resulting report."""
    before = datetime.now(UTC).replace(microsecond=0)
    result = subprocess.run(
        [NODE, str(AGENTS_DIR / agent / "hook.js"), *args],
        input="" if payload is None else json.dumps(payload),
        env=_env(state_dir),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == stdout and result.stderr == ""
    file = state_dir / "agent.json"
    if not file.exists():
        return None
    assert stat.S_IMODE(file.stat().st_mode) == 0o644
    assert [p.name for p in state_dir.iterdir()] == ["agent.json"]  # no temp file left
    report = AgentReport.model_validate_json(file.read_text())
    assert report.updated_at is not None
    assert before - timedelta(seconds=1) <= report.updated_at <= datetime.now(UTC)
    return report


# -- Codex --------------------------------------------------------------------------------------

CODEX_BASE = {
    "session_id": "019a2b3c-0000-7000-8000-000000000001",
    "transcript_path": "/bivy/codex/sessions/2026/12/01/rollout.jsonl",
    "cwd": "/workspaces/r",
    "model": "gpt-5-codex",
    "permission_mode": "default",
}


def codex(state_dir: Path, event: str, **fields: Any) -> AgentReport | None:
    payload = {**CODEX_BASE, "hook_event_name": event, **fields}
    if event not in ("SessionStart",):
        payload["turn_id"] = "turn-1"
    return run_hook("codex", state_dir, event, payload=payload)


def test_codex_turn_with_a_permission_request(state_dir: Path) -> None:
    report = codex(state_dir, "SessionStart", source="startup")
    assert report is not None and report.state is AgentState.IDLE
    report = codex(state_dir, "UserPromptSubmit", prompt="fix the tests")
    assert report is not None and report.state is AgentState.WORKING
    report = codex(
        state_dir, "PreToolUse", tool_name="Bash", tool_use_id="c1", tool_input={"command": "ls"}
    )
    assert report is not None and report.state is AgentState.WORKING
    report = codex(
        state_dir,
        "PermissionRequest",
        tool_name="Bash",
        tool_input={"command": "rm -rf build", "description": "clean"},
    )
    assert report is not None and report.state is AgentState.WAITING
    assert report.message == "Permission requested: Bash"
    report = codex(
        state_dir,
        "PostToolUse",
        tool_name="Bash",
        tool_use_id="c1",
        tool_input={"command": "rm -rf build"},
        tool_response="",
    )
    assert report is not None and report.state is AgentState.WORKING
    report = codex(
        state_dir, "Stop", stop_hook_active=False, last_assistant_message="All tests pass."
    )
    assert report is not None and report.state is AgentState.IDLE
    assert report.message == "All tests pass."


def test_codex_notify_marks_the_end_of_a_turn(state_dir: Path) -> None:
    codex(state_dir, "UserPromptSubmit", prompt="go")
    notification = {
        "type": "agent-turn-complete",
        "thread-id": "019a2b3c",
        "turn-id": "turn-1",
        "cwd": "/workspaces/r",
        "input-messages": ["go"],
        "last-assistant-message": "Done: 3 files changed.",
    }
    report = run_hook("codex", state_dir, "notify", json.dumps(notification))
    assert report is not None and report.state is AgentState.IDLE
    assert report.event == "agent-turn-complete"
    assert report.message == "Done: 3 files changed."
    # another notification type leaves the state alone
    codex(state_dir, "UserPromptSubmit", prompt="again")
    report = run_hook("codex", state_dir, "notify", json.dumps({"type": "approval-requested"}))
    assert report is not None and report.state is AgentState.WORKING


# -- Gemini CLI ---------------------------------------------------------------------------------

GEMINI_BASE = {
    "session_id": "5c1d2e3f",
    "transcript_path": "/bivy/gemini/.gemini/tmp/r/chats/session.json",
    "cwd": "/workspaces/r",
    "timestamp": "2026-12-01T23:00:00.000Z",
}


def gemini(state_dir: Path, event: str, **fields: Any) -> AgentReport | None:
    payload = {**GEMINI_BASE, "hook_event_name": event, **fields}
    return run_hook("gemini", state_dir, event, payload=payload, stdout="{}\n")


def test_gemini_turn_with_a_tool_permission(state_dir: Path) -> None:
    report = gemini(state_dir, "SessionStart", source="startup")
    assert report is not None and report.state is AgentState.IDLE
    report = gemini(state_dir, "BeforeAgent", prompt="fix the tests")
    assert report is not None and report.state is AgentState.WORKING
    report = gemini(
        state_dir,
        "Notification",
        notification_type="ToolPermission",
        message="Allow run_shell_command: npm test?",
        details={"tool_name": "run_shell_command"},
    )
    assert report is not None and report.state is AgentState.WAITING
    assert report.message == "Allow run_shell_command: npm test?"
    report = gemini(
        state_dir, "BeforeTool", tool_name="run_shell_command", tool_input={"command": "npm test"}
    )
    assert report is not None and report.state is AgentState.WORKING
    report = gemini(
        state_dir,
        "AfterTool",
        tool_name="run_shell_command",
        tool_input={"command": "npm test"},
        tool_response={"llmContent": "ok", "returnDisplay": "ok"},
    )
    assert report is not None and report.state is AgentState.WORKING
    report = gemini(
        state_dir,
        "AfterAgent",
        prompt="fix the tests",
        prompt_response="Fixed.",
        stop_hook_active=False,
    )
    assert report is not None and report.state is AgentState.IDLE
    assert report.message == "Fixed."
    report = gemini(state_dir, "SessionEnd", reason="exit")
    assert report is not None and report.state is AgentState.IDLE


def test_gemini_prints_json_even_for_events_it_ignores(state_dir: Path) -> None:
    assert gemini(state_dir, "AfterModel", llm_request={}, llm_response={}) is None
    assert gemini(state_dir, "Notification", notification_type="Other", message="x") is None


# -- Copilot CLI --------------------------------------------------------------------------------

COPILOT_BASE = {"sessionId": "s-1", "timestamp": 1764630000000, "cwd": "/workspaces/r"}


def copilot(state_dir: Path, event: str, **fields: Any) -> AgentReport | None:
    return run_hook("copilot", state_dir, event, payload={**COPILOT_BASE, **fields})


def test_copilot_turn_with_a_permission_prompt(state_dir: Path) -> None:
    report = copilot(state_dir, "sessionStart", source="new", initialPrompt="hi")
    assert report is not None and report.state is AgentState.IDLE
    report = copilot(state_dir, "userPromptSubmitted", prompt="fix the tests")
    assert report is not None and report.state is AgentState.WORKING
    report = copilot(state_dir, "preToolUse", toolName="bash", toolArgs={"command": "ls"})
    assert report is not None and report.state is AgentState.WORKING
    report = copilot(
        state_dir,
        "notification",
        hook_event_name="Notification",
        message="Copilot wants to run: rm -rf build",
        title="Permission needed",
        notification_type="permission_prompt",
    )
    assert report is not None and report.state is AgentState.WAITING
    assert report.message == "Copilot wants to run: rm -rf build"
    report = copilot(
        state_dir,
        "postToolUse",
        toolName="bash",
        toolArgs={"command": "rm -rf build"},
        toolResult={"resultType": "success", "textResultForLlm": ""},
    )
    assert report is not None and report.state is AgentState.WORKING
    report = copilot(
        state_dir,
        "agentStop",
        transcriptPath="/bivy/copilot/session-state/s-1.jsonl",
        stopReason="end_turn",
        stop_hook_active=False,
    )
    assert report is not None and report.state is AgentState.IDLE
    report = copilot(state_dir, "sessionEnd", reason="user_exit")
    assert report is not None and report.state is AgentState.IDLE


def test_copilot_background_notifications_do_not_change_the_state(state_dir: Path) -> None:
    copilot(state_dir, "userPromptSubmitted", prompt="go")
    for kind in ("shell_completed", "agent_completed", "agent_idle"):
        report = copilot(
            state_dir,
            "notification",
            hook_event_name="Notification",
            message="done",
            notification_type=kind,
        )
        assert report is not None and report.state is AgentState.WORKING
    report = copilot(
        state_dir,
        "notification",
        hook_event_name="Notification",
        message="Which database?",
        notification_type="elicitation_dialog",
    )
    assert report is not None and report.state is AgentState.WAITING


# -- robustness (all hook-command adapters) -----------------------------------------------------


@pytest.mark.parametrize("agent", ["codex", "gemini", "copilot"])
def test_garbage_and_an_unwritable_state_dir_never_fail_the_agent(
    agent: str, tmp_path: Path
) -> None:
    out = "{}\n" if agent == "gemini" else ""
    missing = tmp_path / "missing"
    for payload in ("not json", "[1, 2]", ""):
        result = subprocess.run(
            [NODE, str(AGENTS_DIR / agent / "hook.js"), "UserPromptSubmit"],
            input=payload,
            env=_env(missing),
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert (result.returncode, result.stdout, result.stderr) == (0, out, "")
    assert not missing.exists()


# -- OpenCode (a plugin module, not a command) --------------------------------------------------

OPENCODE_DRIVER = """
const { pathToFileURL } = require("node:url");
(async () => {
  const mod = await import(pathToFileURL(process.argv[1]).href);
  const hooks = await mod.BivyActivity({ project: {}, directory: "/workspaces/r",
    worktree: "/workspaces/r", client: {}, $: null });
  const events = JSON.parse(require("node:fs").readFileSync(0, "utf8"));
  for (const event of events) {
    await hooks.event({ event });
    const fs = require("node:fs");
    const file = require("node:path").join(process.env.BIVY_AGENT_STATE_DIR, "agent.json");
    console.log(fs.existsSync(file) ? fs.readFileSync(file, "utf8").trim() : "null");
  }
})();
"""


def opencode(tmp_path: Path, state_dir: Path, events: list[dict[str, Any]]) -> list[Any]:
    # OpenCode loads plugins as ES modules; node needs the .mjs name to do the same here.
    plugin = tmp_path / "bivy-activity.mjs"
    shutil.copyfile(AGENTS_DIR / "opencode" / "bivy-activity.js", plugin)
    result = subprocess.run(
        [NODE, "-e", OPENCODE_DRIVER, str(plugin)],
        input=json.dumps(events),
        env=_env(state_dir),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == len(events)
    return [None if line == "null" else AgentReport.model_validate_json(line) for line in lines]


def _status(kind: str, **extra: Any) -> dict[str, Any]:
    status = {"type": kind, **extra}
    return {"type": "session.status", "properties": {"sessionID": "ses_1", "status": status}}


def test_opencode_plugin_follows_the_session_status(tmp_path: Path, state_dir: Path) -> None:
    permission = {
        "id": "per_1",
        "sessionID": "ses_1",
        "permission": "bash",
        "patterns": ["rm -rf build"],
        "metadata": {},
        "always": ["rm *"],
        "tool": {"messageID": "msg_1", "callID": "call_1"},
    }
    reports = opencode(
        tmp_path,
        state_dir,
        [
            {"type": "server.connected", "properties": {}},
            _status("busy"),
            {"type": "permission.asked", "properties": permission},
            {
                "type": "permission.replied",
                "properties": {"sessionID": "ses_1", "requestID": "per_1", "reply": "once"},
            },
            _status("retry", attempt=1, message="rate limited", next=1764630000000),
            {"type": "question.asked", "properties": {"id": "que_1", "sessionID": "ses_1"}},
            _status("idle"),
            {"type": "session.idle", "properties": {"sessionID": "ses_1"}},
            {
                "type": "session.error",
                "properties": {
                    "sessionID": "ses_1",
                    "error": {"name": "ProviderAuthError", "data": {"message": "bad key"}},
                },
            },
        ],
    )
    states = [r.state if r else None for r in reports]
    assert states == [
        None,
        AgentState.WORKING,
        AgentState.WAITING,
        AgentState.WORKING,
        AgentState.WORKING,
        AgentState.WAITING,
        AgentState.IDLE,
        AgentState.IDLE,
        AgentState.IDLE,
    ]
    assert reports[2] is not None and reports[2].message == "Permission requested: bash"
    assert reports[4] is not None and reports[4].message == "rate limited"
    assert reports[8] is not None and reports[8].message == "bad key"
    assert stat.S_IMODE((state_dir / "agent.json").stat().st_mode) == 0o644


def test_opencode_plugin_survives_an_unwritable_state_dir(tmp_path: Path) -> None:
    reports = opencode(tmp_path, tmp_path / "missing", [_status("busy")])
    assert reports == [None]


def test_node_is_the_one_the_agents_run_with() -> None:
    # The adapters are plain CommonJS/ES modules for node >= 18 (what the npm packages need).
    version = subprocess.run([NODE, "--version"], capture_output=True, text=True, check=True)
    assert int(version.stdout.strip().lstrip("v").split(".")[0]) >= 18, sys.version
