"""Codex CLI as a workspace's agent, through the VM's real devcontainer step: the rendered
devcontainer-up (``--agent codex``) with the pinned @devcontainers/cli and a real Docker engine.

The agent is installed from npm inside the container and answers ``codex --version`` as the
remote user; its managed hooks and notify line are in place; it is logged in from
OPENAI_API_KEY into its persistent config dir; its adapter, run inside the container on the
documented payloads, reports each state into the VM's agent.json; the adapter cannot be changed
from inside.
"""

from __future__ import annotations

import json
import tomllib

import pytest

from app.domain import AgentReport, AgentState, WorkspaceSpec
from tests.integration.cloudinit.devcontainer_env import (
    VmWorkspace,
    devcontainer_cli,
    vm_workspace,
)
from tests.support.docker_engine import DockerEngine
from tests.unit.cloudinit.vmtree import render_tree

__all__ = ["devcontainer_cli", "vm_workspace"]

KEY = "sk-proj-test-0123456789abcdef"


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_codex_in_a_real_devcontainer(
    vm_workspace: VmWorkspace, docker_engine: DockerEngine
) -> None:
    vm = vm_workspace
    # The VM's files for a Codex workspace (the fixture rendered Claude's).
    spec = WorkspaceSpec(name="w", repo_url="https://github.com/o/r.git", agent="codex")
    render_tree(spec, vm.root, agent_env={"OPENAI_API_KEY": KEY})
    with (vm.root / "etc" / "workspace.env").open("a") as handle:
        handle.write(f"BIVY_REPO_DIR={vm.repo}\n")
    vm.write(".devcontainer/devcontainer.json", json.dumps({"image": docker_engine.base_image}))
    vm.write("README.md", "hello\n")
    vm.commit()
    result = vm.up()
    assert result.returncode == 0, f"{result.stderr}\n--- log ---\n{vm.log()[-6000:]}"
    assert vm.status()["phase"] == "starting"
    user = vm.container()["BIVY_REMOTE_USER"]

    # Installed from npm by agent-install; found by a login shell as the remote user.
    version = vm.exec(user, "sh", "-lc", "codex --version")
    assert version.stdout.startswith("codex-cli "), version.stdout
    assert "CODEX_HOME=/bivy/codex" in vm.exec(user, "cat", "/etc/profile.d/bivy.sh").stdout
    # Hooks: managed (trusted by policy) in /etc/codex, notify in the persistent config.
    requirements = tomllib.loads(vm.exec(user, "cat", "/etc/codex/requirements.toml").stdout)
    assert set(requirements["hooks"]) == {
        "SessionStart", "UserPromptSubmit", "PreToolUse", "PostToolUse", "PermissionRequest",
        "Stop",
    }  # fmt: skip
    config = tomllib.loads((vm.state / "codex" / "config.toml").read_text())
    assert config["notify"] == ["node", "/bivy/hook/agents/codex/hook.js", "notify"]
    # Logged in from OPENAI_API_KEY: the key is in the persistent dir, owned by the user.
    auth = (vm.state / "codex" / "auth.json").read_text()
    assert KEY in auth
    uid = vm.exec(user, "id", "-u").stdout.strip()
    assert str((vm.state / "codex" / "auth.json").stat().st_uid) == uid

    # The adapter, as Codex runs it inside the container, reports each state.
    def fire(event: str, **fields: object) -> AgentReport:
        payload = json.dumps({"session_id": "s", "cwd": "/workspaces/r", "model": "m",
                              "hook_event_name": event, "turn_id": "t", **fields})  # fmt: skip
        vm.exec(
            user, "sh", "-c", f"echo '{payload}' | node /bivy/hook/agents/codex/hook.js {event}"
        )
        return AgentReport.model_validate_json((vm.state / "agent" / "agent.json").read_text())

    assert fire("UserPromptSubmit", prompt="go").state is AgentState.WORKING
    waiting = fire("PermissionRequest", tool_name="Bash", tool_input={"command": "ls"})
    assert waiting.state is AgentState.WAITING
    assert fire("Stop", last_assistant_message="done").state is AgentState.IDLE

    # The adapter is the host's: nobody in the container can change it.
    for who in (user, "root"):
        attempt = vm.exec(who, "sh", "-c", "echo x >> /bivy/hook/agents/codex/hook.js", check=False)
        assert attempt.returncode != 0


#: Per agent: the documented payloads for working, waiting and idle, as (event, payload).
HOOK_EVENTS = {
    "gemini": [
        ("BeforeAgent", {"hook_event_name": "BeforeAgent", "prompt": "go"}),
        ("Notification", {"hook_event_name": "Notification", "notification_type":
                          "ToolPermission", "message": "Allow?", "details": {}}),
        ("AfterAgent", {"hook_event_name": "AfterAgent", "prompt": "go", "prompt_response": "ok",
                        "stop_hook_active": False}),
    ],
    "copilot": [
        ("userPromptSubmitted", {"sessionId": "s", "timestamp": 1, "cwd": "/w", "prompt": "go"}),
        ("notification", {"sessionId": "s", "timestamp": 1, "cwd": "/w", "hook_event_name":
                          "Notification", "message": "Allow?", "notification_type":
                          "permission_prompt"}),
        ("agentStop", {"sessionId": "s", "timestamp": 1, "cwd": "/w", "transcriptPath": "/t",
                       "stopReason": "end_turn", "stop_hook_active": False}),
    ],
    "opencode": [
        ("session.status", {"type": "session.status",
                            "properties": {"sessionID": "s", "status": {"type": "busy"}}}),
        ("permission.asked", {"type": "permission.asked", "properties": {
            "id": "p", "sessionID": "s", "permission": "bash", "patterns": [], "metadata": {},
            "always": []}}),
        ("session.idle", {"type": "session.idle", "properties": {"sessionID": "s"}}),
    ],
}  # fmt: skip

#: OpenCode loads the plugin as an ES module and hands it each bus event.
OPENCODE_DRIVER = (
    "import(process.argv[1]).then(async (m) => { const h = await m.BivyActivity({});"
    " await h.event({ event: JSON.parse(process.argv[2]) }); })"
)


@pytest.mark.slow
@pytest.mark.timeout(1500)
@pytest.mark.parametrize("name", list(HOOK_EVENTS))
def test_other_agents_in_a_real_devcontainer(
    name: str, vm_workspace: VmWorkspace, docker_engine: DockerEngine
) -> None:
    from app.agents import AGENTS

    agent = AGENTS[name]
    vm = vm_workspace
    spec = WorkspaceSpec(name="w", repo_url="https://github.com/o/r.git", agent=name)
    render_tree(spec, vm.root, agent_env={agent.credentials[0].env: KEY})
    with (vm.root / "etc" / "workspace.env").open("a") as handle:
        handle.write(f"BIVY_REPO_DIR={vm.repo}\n")
    vm.write(".devcontainer/devcontainer.json", json.dumps({"image": docker_engine.base_image}))
    vm.write("README.md", "hello\n")
    vm.commit()
    node = docker_engine.docker(
        "run", "--rm", docker_engine.base_image, "node", "-p", "process.versions.node"
    ).stdout.strip()
    result = vm.up()
    if int(node.split(".")[0]) < agent.node_min:
        # The test image's node is too old for this agent: the install says so and stops.
        assert result.returncode != 0
        assert f"{agent.display_name} needs node {agent.node_min} or later" in vm.log()
        assert "this devcontainer has node v" + node in vm.log()
        assert vm.status()["phase"] == "failed"
        return
    assert result.returncode == 0, f"{result.stderr}\n--- log ---\n{vm.log()[-6000:]}"
    user = vm.container()["BIVY_REMOTE_USER"]
    version = vm.exec(user, "sh", "-lc", " ".join(agent.version_command))
    assert any(ch.isdigit() for ch in version.stdout), version.stdout
    profile = vm.exec(user, "cat", "/etc/profile.d/bivy.sh").stdout
    for key, value in agent.config_env.items():
        assert f"{key}={value}" in profile
    # the hook files are in the persistent dir (bind-mounted from the VM's state dir)
    for hook in agent.hook_configs:
        relative = hook.target.removeprefix(agent.config_dir + "/")
        assert (vm.state / name / relative).is_file(), relative
        assert vm.exec(user, "test", "-r", hook.target).returncode == 0
    states = []
    for event, payload in HOOK_EVENTS[name]:
        text = json.dumps(payload)
        if name == "opencode":
            # OpenCode runs it with Bun; node needs the .mjs name to load it as a module.
            plugin = agent.hook_configs[0].target
            vm.exec(user, "cp", plugin, "/tmp/bivy-activity.mjs")
            vm.exec(user, "node", "-e", OPENCODE_DRIVER, "/tmp/bivy-activity.mjs", text)
        else:
            script = f"/bivy/hook/agents/{name}/hook.js"
            vm.exec(user, "sh", "-c", f"echo '{text}' | node {script} {event}")
        report = AgentReport.model_validate_json((vm.state / "agent" / "agent.json").read_text())
        states.append(report.state)
    assert states == [AgentState.WORKING, AgentState.WAITING, AgentState.IDLE]
