"""The agent plug-ins: what each one declares, and that its files exist and parse."""

from __future__ import annotations

import itertools
import json
import tomllib

import pytest

from app.agents import (
    ACTIVITY_STATES,
    AGENTS,
    DEFAULT_AGENT,
    Agent,
    Credential,
    UnknownAgent,
    get_agent,
)
from app.paths import cloudinit_path
from app.settings.secrets import SecretKeys

PACKAGES = {
    "claude": "@anthropic-ai/claude-code",
    "codex": "@openai/codex",
    "gemini": "@google/gemini-cli",
    "opencode": "opencode-ai",
    "copilot": "@github/copilot",
}


def test_the_five_agents_in_order_with_their_npm_packages() -> None:
    assert list(AGENTS) == list(PACKAGES)
    assert {n: a.npm_package for n, a in AGENTS.items()} == PACKAGES
    assert DEFAULT_AGENT == "claude"


def test_lookup_is_case_insensitive_and_unknown_names_say_what_to_run() -> None:
    assert get_agent(" Codex ") is AGENTS["codex"]
    with pytest.raises(UnknownAgent) as caught:
        get_agent("cursor")
    assert "'cursor'" in caught.value.one_line()
    assert "bivy agents" in caught.value.one_line()


@pytest.mark.parametrize("agent", AGENTS.values(), ids=list(AGENTS))
def test_each_agent_is_complete(agent: Agent) -> None:
    assert agent.version_command == (agent.binary, "--version")
    assert agent.install_command == ("npm", "install", "-g", agent.npm_package)
    assert agent.credentials
    assert agent.credential_advice and agent.login_hint and agent.docs_url.startswith("https://")
    assert agent.activity <= ACTIVITY_STATES
    # every path the agent writes to is inside its own persistent config dir (or /etc/codex)
    for value in agent.config_env.values():
        assert value == agent.config_dir or value.startswith(agent.config_dir + "/")
    for hook in agent.hook_configs:
        assert hook.path().is_file(), hook.template
        assert hook.target.startswith((agent.config_dir + "/", "/etc/codex/"))
        assert hook.merge in ("replace", "json", "toml")
    assert agent.hook_adapter and cloudinit_path(*agent.hook_adapter.split("/")).is_file()


def test_config_dirs_do_not_overlap() -> None:
    dirs = sorted(a.config_dir for a in AGENTS.values())
    for first, second in itertools.pairwise(dirs):
        assert not second.startswith(first + "/")
    assert len(set(dirs)) == len(dirs)


def test_claude_matches_the_existing_wiring() -> None:
    claude = AGENTS["claude"]
    assert claude.config_env == {"CLAUDE_CONFIG_DIR": "/bivy/claude"}
    assert [c.key for c in claude.credentials] == [
        SecretKeys.ANTHROPIC_API_KEY,
        SecretKeys.CLAUDE_OAUTH_TOKEN,
    ]
    assert claude.credential_envs == ("ANTHROPIC_API_KEY", "CLAUDE_CODE_OAUTH_TOKEN")
    assert claude.hook_configs[0].template == "claude-hooks.json"


def test_reports_activity_needs_a_working_signal() -> None:
    base = AGENTS["gemini"]
    turn_end_only = Agent(**{**base.__dict__, "name": "x", "activity": frozenset({"idle"})})
    assert base.reports_activity
    assert not turn_end_only.reports_activity
    with pytest.raises(ValueError, match="unknown activity"):
        Agent(**{**base.__dict__, "activity": frozenset({"busy"})})
    with pytest.raises(ValueError, match="config_dir"):
        Agent(**{**base.__dict__, "config_dir": "/home/dev/.gemini"})


HOOK = "/bivy/hook/agents/NAME/hook.js"


def _events_in(agent: Agent) -> dict[str, str]:
    """Each hook config rendered with a marker command, as event -> command."""
    found: dict[str, str] = {}
    for hook in agent.hook_configs:
        text = hook.render(f"node {HOOK}", hook_js=HOOK)
        assert "{{" not in text
        if hook.template.endswith(".json"):
            hooks = json.loads(text)["hooks"]
            for event, entries in hooks.items():
                for entry in entries:
                    for handler in entry.get("hooks", [entry]):
                        found[event] = handler.get("command") or handler.get("bash")
        elif hook.template.endswith(".toml"):
            data = tomllib.loads(text)
            for event, groups in data.get("hooks", {}).items():
                for group in groups:
                    for handler in group["hooks"]:
                        assert handler["type"] == "command"
                        found[event] = handler["command"]
            if "notify" in data:
                found["notify"] = " ".join(data["notify"])
    return found


def test_codex_hooks_are_managed_and_notify_is_wired() -> None:
    events = _events_in(AGENTS["codex"])
    assert set(events) == {
        "SessionStart", "UserPromptSubmit", "PreToolUse", "PostToolUse",
        "PermissionRequest", "Stop", "notify",
    }  # fmt: skip
    for event, command in events.items():
        assert command == f"node {HOOK} {event}" or command == f"node {HOOK} notify"
    assert AGENTS["codex"].hook_configs[0].target == "/etc/codex/requirements.toml"


def test_gemini_settings_name_the_documented_events_with_millisecond_timeouts() -> None:
    agent = AGENTS["gemini"]
    assert set(_events_in(agent)) == {
        "SessionStart", "BeforeAgent", "BeforeTool", "AfterTool", "Notification",
        "AfterAgent", "SessionEnd",
    }  # fmt: skip
    settings = json.loads(agent.hook_configs[0].render("h"))
    for entries in settings["hooks"].values():
        assert all(h["timeout"] >= 1000 for e in entries for h in e["hooks"])
    assert agent.hook_configs[0].target == "/bivy/gemini/.gemini/settings.json"


def test_copilot_hooks_file_is_version_1_with_camel_case_events() -> None:
    agent = AGENTS["copilot"]
    data = json.loads(agent.hook_configs[0].render("h"))
    assert data["version"] == 1
    assert {"userPromptSubmitted", "preToolUse", "notification", "agentStop"} <= set(data["hooks"])
    for event, entries in data["hooks"].items():
        assert entries == [{"type": "command", "bash": f"h {event}", "timeoutSec": 10}]


def test_opencode_plugin_lands_in_the_global_plugin_dir() -> None:
    agent = AGENTS["opencode"]
    (plugin,) = agent.hook_configs
    assert plugin.target == agent.config_env["OPENCODE_CONFIG_DIR"] + "/plugins/bivy-activity.js"
    text = plugin.render("unused")
    # OpenCode calls every export of a plugin module as a plugin: only the plugin is exported.
    assert [line for line in text.splitlines() if line.startswith("export")] == [
        "export const BivyActivity = async () => ({"
    ]


def test_credentials_are_frozen_values() -> None:
    cred = Credential("X_KEY", "x/key", "X key")
    with pytest.raises(AttributeError):
        cred.env = "Y"  # type: ignore[misc]
