"""cloudinit/agents/agent-config.py: puts an agent's hook files in place, keeping the user's own
settings (real files in a temporary dir; `docker` is a recording script on PATH)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from app.agents import AGENTS
from app.paths import cloudinit_path

SCRIPT = cloudinit_path("agents", "agent-config.py")
HOOK = "node /bivy/hook/agents/{name}/hook.js"


def run(tmp_path: Path, agent: str, *extra: str, env: dict[str, str] | None = None) -> Path:
    """Renders the agent's hook configs into tmp_path/lib with a manifest, runs the script."""
    a = AGENTS[agent]
    lib = tmp_path / "lib"
    lib.mkdir(exist_ok=True)
    manifest = []
    for i, hook in enumerate(a.hook_configs):
        source = lib / f"{i}-{hook.path().name}"
        hook_js = f"/bivy/hook/agents/{agent}/hook.js"
        source.write_text(hook.render(HOOK.format(name=agent), hook_js=hook_js))
        manifest.append({"source": str(source), "target": hook.target, "merge": hook.merge})
    (lib / "configs.json").write_text(json.dumps(manifest))
    host = tmp_path / "host"
    host.mkdir(exist_ok=True)
    result = subprocess.run(
        [sys.executable, str(SCRIPT), str(lib / "configs.json"), str(host), a.config_dir, *extra],
        capture_output=True, text=True, check=False, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return host


def test_gemini_settings_keep_the_users_keys_and_hooks(tmp_path: Path) -> None:
    settings = tmp_path / "host" / ".gemini" / "settings.json"
    settings.parent.mkdir(parents=True)
    mine = {"type": "command", "command": "~/log.sh"}
    settings.write_text(
        json.dumps(
            {
                "theme": "Dracula",
                "security": {"auth": {"selectedType": "gemini-api-key"}},
                "hooks": {"BeforeTool": [{"hooks": [mine]}]},
            }
        )
    )
    run(tmp_path, "gemini")
    run(tmp_path, "gemini")  # twice: Bivy's entries are replaced, not repeated
    data = json.loads(settings.read_text())
    assert data["theme"] == "Dracula"
    # the VM is the one repository's: no folder-trust question stops the agent
    assert data["security"] == {
        "auth": {"selectedType": "gemini-api-key"},
        "folderTrust": {"enabled": False},
    }
    before_tool = data["hooks"]["BeforeTool"]
    assert before_tool[0] == {"hooks": [mine]}
    assert len(before_tool) == 2
    assert before_tool[1]["hooks"][0]["command"] == (
        "node /bivy/hook/agents/gemini/hook.js BeforeTool"
    )
    assert set(data["hooks"]) >= {"BeforeAgent", "AfterAgent", "Notification", "SessionStart"}


def test_codex_notify_goes_first_and_replaces_an_old_one(tmp_path: Path) -> None:
    config = tmp_path / "host" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text('model = "gpt-5"\nnotify = ["old"]\n\n[projects."/w"]\ntrust_level = "x"\n')
    docker_log = tmp_path / "docker.log"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    docker = bin_dir / "docker"
    docker.write_text(f'#!/bin/sh\necho "$@" >>{docker_log}\ncat >>{docker_log}\n')
    docker.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    run(tmp_path, "codex", "c0ffee", env=env)
    data = tomllib.loads(config.read_text())
    assert data["notify"] == ["node", "/bivy/hook/agents/codex/hook.js", "notify"]
    assert data["model"] == "gpt-5" and data["projects"]["/w"]["trust_level"] == "x"
    # the managed hooks go to the container's /etc/codex, as root
    log = docker_log.read_text()
    assert log.startswith("exec -i -u root c0ffee sh -c ")
    assert log.splitlines()[0].endswith(" sh /etc/codex/requirements.toml")
    requirements = tomllib.loads(log.split("\n", 1)[1])
    stop = requirements["hooks"]["Stop"][0]["hooks"][0]
    assert stop["command"] == "node /bivy/hook/agents/codex/hook.js Stop"


def test_a_broken_toml_config_is_left_alone(tmp_path: Path) -> None:
    config = tmp_path / "host" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text("this is = = not toml\n")
    a = AGENTS["codex"]
    lib = tmp_path / "lib"
    lib.mkdir()
    hook = a.hook_configs[1]
    (lib / "c.toml").write_text(hook.render("x", hook_js="/h.js"))
    (lib / "m.json").write_text(
        json.dumps([{"source": str(lib / "c.toml"), "target": hook.target, "merge": "toml"}])
    )
    result = subprocess.run(
        [sys.executable, str(SCRIPT), str(lib / "m.json"), str(config.parent), a.config_dir],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode != 0 and "does not parse" in result.stderr
    assert config.read_text() == "this is = = not toml\n"


@pytest.mark.parametrize("agent", ["copilot", "opencode"])
def test_files_bivy_owns_are_written_whole(tmp_path: Path, agent: str) -> None:
    host = run(tmp_path, agent)
    (hook,) = AGENTS[agent].hook_configs
    written = host / hook.target.removeprefix(AGENTS[agent].config_dir + "/")
    assert written.read_text() == hook.render(HOOK.format(name=agent))


@pytest.mark.parametrize("link", ["file", "dir"])
def test_a_symlink_in_the_config_dir_is_not_followed(tmp_path: Path, link: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "bivy.json").write_text("{}")
    host = tmp_path / "host"
    host.mkdir()
    if link == "file":
        (host / "hooks").mkdir()
        (host / "hooks" / "bivy.json").symlink_to(outside / "bivy.json")
    else:
        (host / "hooks").symlink_to(outside)
    a = AGENTS["copilot"]
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "h.json").write_text(a.hook_configs[0].render("x"))
    (lib / "m.json").write_text(
        json.dumps([{"source": str(lib / "h.json"), "target": a.hook_configs[0].target}])
    )
    result = subprocess.run(
        [sys.executable, str(SCRIPT), str(lib / "m.json"), str(tmp_path / "host"), a.config_dir],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode != 0 and "symlink" in result.stderr
    assert (outside / "bivy.json").read_text() == "{}"
    assert [p.name for p in outside.iterdir()] == ["bivy.json"]
