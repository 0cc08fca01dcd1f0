"""Gemini CLI (Google): activity through Gemini CLI hooks."""

from __future__ import annotations

from app.agents.base import Agent, Credential, HookConfig

AGENT = Agent(
    name="gemini",
    display_name="Gemini CLI",
    npm_package="@google/gemini-cli",
    binary="gemini",
    version_command=("gemini", "--version"),
    credentials=(Credential("GEMINI_API_KEY", "gemini/api-key", "Gemini API key"),),
    credential_advice=(
        "Create the key in Google AI Studio for a project used only by Bivy, and restrict it "
        "to the Generative Language API (API restrictions in the Cloud console), so it cannot "
        "call any other Google Cloud service."
    ),
    login_hint="run `gemini` in the terminal and choose Login with Google",
    # GEMINI_CLI_HOME replaces the home directory: the config is $GEMINI_CLI_HOME/.gemini.
    config_dir="/bivy/gemini",
    config_env={"GEMINI_CLI_HOME": "/bivy/gemini"},
    activity_mechanism="Gemini CLI hooks",
    hook_adapter="agents/gemini/hook.js",
    hook_configs=(
        HookConfig("agents/gemini/settings.json", "/bivy/gemini/.gemini/settings.json", "json"),
    ),
    docs_url="https://geminicli.com/docs/hooks/reference",
    # package.json engines: node >= 20; on node 18 the bundle fails to load (SyntaxError).
    node_min=20,
    # `gemini -i PROMPT`: execute the prompt and continue interactively (CLI reference).
    prompt_args=("-i", "{prompt}"),
)
