#!/usr/bin/python3
"""Prepares the agent's persistent CLAUDE_CONFIG_DIR: our hooks merged into settings.json.

Usage: claude-config CONFIG_DIR HOOKS_JSON AGENT_ENV [WORKSPACE]. Existing settings (restored from
a backup or written by the user) are kept; Bivy's hook entries are replaced, never duplicated.
With an API key, .claude.json records it as approved and onboarding as done, and the repository
folder inside the container (WORKSPACE) as trusted, so the first start does not stop at a
question nobody sees.
"""

import json
import os
import sys

MARK = "{{ container_hook_dir }}/"


def load(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def save(path: str, data: dict) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2)
        handle.write("\n")
    os.replace(tmp, path)


def agent_env(path: str) -> dict:
    env = {}
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            key, sep, value = line.rstrip("\n").partition("=")
            if sep:
                env[key] = value
    return env


def main(config_dir: str, hooks_path: str, env_path: str, workspace: str = "") -> int:
    settings_path = os.path.join(config_dir, "settings.json")
    settings = load(settings_path)
    ours = load(hooks_path)["hooks"]
    hooks = settings.get("hooks")
    if not isinstance(hooks, dict):
        hooks = {}
    for event, entries in list(hooks.items()):
        if isinstance(entries, list):
            hooks[event] = [e for e in entries if MARK not in json.dumps(e)]
    for event, entries in ours.items():
        hooks[event] = [*hooks.get(event, []), *entries]
    settings["hooks"] = hooks
    save(settings_path, settings)

    key = agent_env(env_path).get("ANTHROPIC_API_KEY", "")
    state_path = os.path.join(config_dir, ".claude.json")
    state = load(state_path)
    state["hasCompletedOnboarding"] = True
    if key:
        responses = state.setdefault("customApiKeyResponses", {})
        approved = responses.setdefault("approved", [])
        if key[-20:] not in approved:
            approved.append(key[-20:])
    if workspace:
        projects = state.get("projects")
        projects = projects if isinstance(projects, dict) else {}
        project = projects.get(workspace)
        project = project if isinstance(project, dict) else {}
        project["hasTrustDialogAccepted"] = True
        projects[workspace] = project
        state["projects"] = projects
    save(state_path, state)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:5]))
