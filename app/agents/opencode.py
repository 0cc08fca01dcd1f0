"""OpenCode (sst): activity through an OpenCode plugin that listens to the event bus."""

from __future__ import annotations

from app.agents import codex
from app.agents.base import Agent, Credential, HookConfig
from app.settings.secrets import SecretKeys

AGENT = Agent(
    name="opencode",
    display_name="OpenCode",
    npm_package="opencode-ai",
    binary="opencode",
    version_command=("opencode", "--version"),
    # OpenCode talks to many model providers; these are the two whose keys Bivy keeps.
    credentials=(
        Credential("ANTHROPIC_API_KEY", SecretKeys.ANTHROPIC_API_KEY, "Anthropic API key"),
        Credential("OPENAI_API_KEY", codex.OPENAI_API_KEY, "OpenAI API key"),
    ),
    credential_advice=(
        "OpenCode uses your model provider's key: give it one from a dedicated project or "
        "workspace with a spend limit (and, for OpenAI, restricted to the model endpoints)."
    ),
    login_hint="run `opencode auth login` in the terminal",
    config_dir="/bivy/opencode",
    # Config (and plugins) under OPENCODE_CONFIG_DIR; sessions and auth.json under the data dir.
    config_env={
        "OPENCODE_CONFIG_DIR": "/bivy/opencode/config",
        "XDG_DATA_HOME": "/bivy/opencode/data",
    },
    activity_mechanism="OpenCode plugin events",
    hook_adapter="agents/opencode/bivy-activity.js",
    hook_configs=(
        HookConfig(
            "agents/opencode/bivy-activity.js", "/bivy/opencode/config/plugins/bivy-activity.js"
        ),
    ),
    docs_url="https://opencode.ai/docs/plugins",
    # `opencode --prompt PROMPT`: the TUI starts with the prompt (`opencode --help`, 1.18.33).
    prompt_args=("--prompt", "{prompt}"),
)
