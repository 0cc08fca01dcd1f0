"""Codex CLI (OpenAI): activity through Codex hooks, with ``notify`` for the end of a turn."""

from __future__ import annotations

from app.agents.base import Agent, Credential, HookConfig

#: The keychain key of the OpenAI API key (OpenCode can use it too).
OPENAI_API_KEY = "openai/api-key"

AGENT = Agent(
    name="codex",
    display_name="Codex CLI",
    npm_package="@openai/codex",
    binary="codex",
    version_command=("codex", "--version"),
    credentials=(Credential("OPENAI_API_KEY", OPENAI_API_KEY, "OpenAI API key"),),
    credential_advice=(
        "Create the key in a dedicated OpenAI project with a monthly budget, as a restricted "
        "key whose only write permission is the Responses API (what Codex needs); never an "
        "admin key."
    ),
    login_hint="run `codex login` in the terminal (Sign in with ChatGPT, or --with-api-key)",
    config_dir="/bivy/codex",
    config_env={"CODEX_HOME": "/bivy/codex"},
    activity_mechanism="Codex hooks and notify",
    hook_adapter="agents/codex/hook.js",
    hook_configs=(
        HookConfig("agents/codex/requirements.toml", "/etc/codex/requirements.toml"),
        HookConfig("agents/codex/config.toml", "/bivy/codex/config.toml", merge="toml"),
    ),
    docs_url="https://developers.openai.com/codex/hooks",
    # Codex keeps its login in $CODEX_HOME/auth.json; an API key goes in through stdin.
    env_login=(
        'if [ -n "${OPENAI_API_KEY:-}" ]; then '
        "printenv OPENAI_API_KEY | codex login --with-api-key; fi"
    ),
)
