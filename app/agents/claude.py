"""Claude Code (Anthropic): the agent Bivy started with; activity through Claude Code hooks."""

from __future__ import annotations

from app.agents.base import Agent, Credential, HookConfig
from app.settings.secrets import SecretKeys

AGENT = Agent(
    name="claude",
    display_name="Claude Code",
    npm_package="@anthropic-ai/claude-code",
    binary="claude",
    version_command=("claude", "--version"),
    credentials=(
        Credential("ANTHROPIC_API_KEY", SecretKeys.ANTHROPIC_API_KEY, "Anthropic API key"),
        Credential(
            "CLAUDE_CODE_OAUTH_TOKEN", SecretKeys.CLAUDE_OAUTH_TOKEN, "Claude Code OAuth token"
        ),
    ),
    credential_advice=(
        "Prefer a long-lived OAuth token from `claude setup-token` (it can only run Claude Code "
        "on your subscription), or an API key from a dedicated Anthropic Console workspace with "
        "a spend limit, so a leaked key cannot reach your other workspaces or run up a bill."
    ),
    login_hint="run `claude` in the terminal and follow /login",
    config_dir="/bivy/claude",
    config_env={"CLAUDE_CONFIG_DIR": "/bivy/claude"},
    activity_mechanism="Claude Code hooks",
    hook_adapter="scripts/agent-hook.sh",
    hook_configs=(HookConfig("claude-hooks.json", "/bivy/claude/settings.json", merge="json"),),
    docs_url="https://code.claude.com/docs/en/hooks",
)
