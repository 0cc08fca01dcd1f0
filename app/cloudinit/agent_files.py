"""The VM files of a workspace's agent (app/agents): what the scripts need to know about it, the
hook adapter and hook files of an agent other than Claude Code, and what ``session new`` needs to
run another agent in a session (issue 15)."""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping

import jinja2

from app.agents import Agent
from app.cloudinit.templates import (
    CONTAINER_AGENT_ENV,
    CONTAINER_HOOK_DIR,
    CONTAINER_STATE_DIR,
    ENV_KEY_RE,
    ETC_DIR,
    LIB_DIR,
    STATE_DIR,
    environment,
    strip_comments,
    template_dir,
)
from app.errors import InvalidInput

SAFE_ENV_VALUE = re.compile(r"^[A-Za-z0-9/_.-]+$")


def agent_context(agent: Agent) -> dict[str, object]:
    """What the scripts need to know about the workspace's agent (app/agents)."""
    for key, value in agent.config_env.items():
        if not (ENV_KEY_RE.match(key) and SAFE_ENV_VALUE.match(value)):
            raise InvalidInput(f"The agent {agent.name} has an unusable variable {key}")
    login = ""
    if agent.env_login:
        login = shlex.quote(
            f"set -a; [ -r {CONTAINER_AGENT_ENV} ] && . {CONTAINER_AGENT_ENV}; set +a; "
            + agent.env_login
        )
    return {
        "agent_name": agent.name,
        "agent_display": agent.display_name,
        "agent_package": agent.npm_package,
        "agent_binary": agent.binary,
        "agent_config_dir": agent.config_dir,
        "agent_profile_exports": " ".join(f"{k}={v}" for k, v in agent.config_env.items()),
        "agent_env_login": login,
        "agent_node_min": agent.node_min,
    }


def agent_files(
    agent: Agent, env: jinja2.Environment, context: Mapping[str, object]
) -> list[dict[str, str]]:
    """An agent other than Claude Code: its hook adapter (in the hook dir the container mounts
    read-only), its hook files with a manifest, and agent-config that puts them in place."""
    adapter = agent.hook_adapter.rsplit("/", 1)[-1]
    in_container = f"{CONTAINER_HOOK_DIR}/agents/{agent.name}/{adapter}"
    hook_context = {**context, "hook": f"node {in_container}", "hook_js": in_container}
    files = [
        {"path": f"{LIB_DIR}/hook/agents/agent-state.js", "permissions": "0644",
         "content": env.get_template("agents/agent-state.js").render(context)},
        {"path": f"{LIB_DIR}/hook/agents/{agent.name}/{adapter}", "permissions": "0644",
         "content": env.get_template(agent.hook_adapter).render(context)},
        {"path": f"{LIB_DIR}/agent-config", "permissions": "0755",
         "content": strip_comments(env.get_template("agents/agent-config.py").render(context))},
    ]  # fmt: skip
    manifest = []
    for i, hook in enumerate(agent.hook_configs):
        name = f"{i}-{hook.template.rsplit('/', 1)[-1]}"
        files.append(
            {"path": f"{LIB_DIR}/agents/{agent.name}/{name}", "permissions": "0644",
             "content": env.get_template(hook.template).render(hook_context)}
        )  # fmt: skip
        manifest.append({"source": name, "target": hook.target, "merge": hook.merge})
    files.append(
        {"path": f"{LIB_DIR}/agents/{agent.name}/configs.json", "permissions": "0644",
         "content": json.dumps(manifest, indent=1) + "\n"}
    )  # fmt: skip
    return files


def render_session_agent(agent: Agent) -> dict[str, object]:
    """What the VM's ``session new`` needs to run ``agent`` in a session of a workspace created
    with another agent (issue 15; H5): its files at their VM paths (the hook adapter, the hook
    files with their manifest, ``agent-config``, its own ``agent-install``), the variables that
    point it at its config dir, its login command and its start command (``{prompt}`` stands
    for the first prompt). No secret is part of it."""
    env = environment(template_dir())
    context: dict[str, object] = {
        "state_dir": STATE_DIR,
        "lib_dir": LIB_DIR,
        "etc_dir": ETC_DIR,
        "container_agent_env": CONTAINER_AGENT_ENV,
        "container_state_dir": CONTAINER_STATE_DIR,
        "container_hook_dir": CONTAINER_HOOK_DIR,
        "hook": f"{CONTAINER_HOOK_DIR}/agent-hook",
        **agent_context(agent),
    }
    files: list[dict[str, str]] = []
    if agent.name != "claude":  # Claude's hook, settings and claude-config are on every VM
        files = agent_files(agent, env, context)
    for template, target in (("agent-install.sh", "agent-install"), ("session-setup.sh", "setup")):
        files.append(
            {"path": f"{LIB_DIR}/agents/{agent.name}/{target}", "permissions": "0644",
             "content": strip_comments(env.get_template(f"scripts/{template}").render(context))}
        )  # fmt: skip
    return {
        "name": agent.name,
        "display": agent.display_name,
        "binary": agent.binary,
        "config_dir": agent.config_dir,
        "config_env": dict(agent.config_env),
        "env_login": agent.env_login,
        "command": list(agent.start_command("{prompt}")),
        "files": files,
    }
