"""GitHub Copilot CLI: activity through Copilot CLI hooks."""

from __future__ import annotations

from app.agents.base import Agent, Credential, HookConfig

AGENT = Agent(
    name="copilot",
    display_name="GitHub Copilot CLI",
    npm_package="@github/copilot",
    binary="copilot",
    version_command=("copilot", "--version"),
    credentials=(Credential("GH_TOKEN", "github/copilot-token", "GitHub token for Copilot"),),
    credential_advice=(
        'Use a fine-grained personal access token with only the "Copilot Requests" '
        "permission and no repository access, separate from the git token Bivy clones with."
    ),
    login_hint="run `copilot` in the terminal and use /login",
    config_dir="/bivy/copilot",
    config_env={"COPILOT_HOME": "/bivy/copilot"},
    activity_mechanism="Copilot CLI hooks",
    hook_adapter="agents/copilot/hook.js",
    hook_configs=(HookConfig("agents/copilot/hooks.json", "/bivy/copilot/hooks/bivy.json"),),
    docs_url="https://docs.github.com/en/copilot/reference/hooks-reference",
    # `copilot -i PROMPT`: start interactive mode and run the prompt (`copilot --help`, 1.0.102).
    prompt_args=("-i", "{prompt}"),
)
