"""What the app sends with ``session new`` (app.cloudinit.render.render_session_agent) and how the
VM's session-data takes it: each agent's description lands where the session command expects
it, its setup script passes shellcheck, and anything outside the allowed places, or a value
that could break out of its quoting, is refused."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from app.agents import AGENTS, get_agent
from app.cloudinit import render_cloud_config, render_session_agent
from app.domain import WorkspaceSpec
from tests.unit.cloudinit.vmtree import inputs_for, materialize

SHELLCHECK = shutil.which("shellcheck") or str(Path(".venv/bin/shellcheck").resolve())


@pytest.fixture
def lib(tmp_path: Path) -> Path:
    spec = WorkspaceSpec(name="w", repo_url="https://github.com/o/r.git")
    materialize(render_cloud_config(inputs_for(spec)), tmp_path / "vm")
    return tmp_path / "vm" / "lib"


def _receive(lib: Path, work: Path, agent: str, payload: Any) -> subprocess.CompletedProcess[str]:
    work.mkdir(exist_ok=True)
    return subprocess.run(
        ["python3", str(lib / "session-data"), "receive", str(lib), str(work), agent],
        input=payload if isinstance(payload, str) else json.dumps(payload),
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip


@pytest.mark.parametrize("name", sorted(AGENTS))
def test_each_agents_description_is_taken_and_its_setup_is_clean(
    name: str, lib: Path, tmp_path: Path
) -> None:
    description = render_session_agent(get_agent(name))
    setup = next(f for f in description["files"] if f["path"].endswith("/setup"))  # type: ignore[attr-defined]
    script = tmp_path / "setup"
    script.write_text(setup["content"])
    check = subprocess.run(
        [SHELLCHECK, "--severity=style", str(script)], capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stdout
    assert "{{" not in setup["content"] and "{%" not in setup["content"]

    payload = {"prompt": "go", "agent": {**description, "credentials": {"K": "v'x\"y"}}}
    work = tmp_path / "work"
    done = _receive(lib, work, name, payload)
    assert done.returncode == 0, done.stderr
    assert (work / "prompt").read_text() == "go"
    assert (work / "credentials.env").read_text() == "K=v'x\"y\n"
    assert (work / "credentials.env").stat().st_mode & 0o077 == 0
    kept = json.loads((work / "agent.json").read_text())
    assert kept["command"] == list(get_agent(name).start_command("{prompt}"))
    assert "credentials" not in kept
    for entry in description["files"]:  # type: ignore[attr-defined]
        target = lib / entry["path"].removeprefix("/usr/local/lib/bivy/")
        assert target.read_text() == entry["content"]

    # The launcher file: the prompt is one argument, the rest is quoted for sh.
    launcher = subprocess.run(
        ["python3", str(lib / "session-data"), "launcher", "s1", "/w/it's", "/bivy/state/s1",
         "/etc/e.env", str(work / "agent.json")],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    prompt = "a 'b' \"c\" $(touch /tmp/pwned) `x`\nline two"
    binary = tmp_path / get_agent(name).binary  # records the arguments it gets
    binary.write_text('#!/bin/sh\nfor a in "$@"; do printf "%s\\0" "$a"; done\n')
    binary.chmod(0o755)
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin"}
    for given, expected in ((prompt, get_agent(name).start_command(prompt)), ("", (name,))):
        started = subprocess.run(
            ["sh", "-c", launcher + '\nbivy_session_start "$1"', "sh", given],
            capture_output=True, text=True, check=True, env=env,
        )  # fmt: skip
        args = started.stdout.split("\0")[:-1]
        assert tuple([binary.name, *args]) == (expected[0], *expected[1:]), started.stdout
    assert f"BIVY_SESSION_DIR={shlex.quote('/w/it' + chr(39) + 's')}" in launcher
    assert not Path("/tmp/pwned").exists()


def test_refused_inputs(lib: Path, tmp_path: Path) -> None:
    good = render_session_agent(get_agent("codex"))
    cases: list[Any] = [
        "not json",
        [1, 2],
        {"agent": {**good, "name": "gemini"}},  # another agent's description
        {"agent": {**good, "files": [{"path": "/etc/bivy/workspace.env", "content": "x"}]}},
        {"agent": {**good, "files": [
            {"path": "/usr/local/lib/bivy/agents/codex/../../bootstrap", "content": "x"}]}},
        {"agent": {**good, "files": [{"path": "/usr/local/lib/bivy/session", "content": "x"}]}},
        {"agent": {**good, "binary": "codex; rm -rf /"}},
        {"agent": {**good, "command": ["sh", "-c", "x"]}},  # not the agent's binary
        {"agent": {**good, "config_env": {"CODEX_HOME": "/x; rm -rf /"}}},
        {"agent": {**good, "config_env": {"A B": "/x"}}},
        {"agent": {**good, "config_dir": "/etc"}},
        {"agent": {**good, "credentials": {"OPENAI_API_KEY": "line\nbreak"}}},
        {"prompt": "x\0y"},
    ]  # fmt: skip
    for i, payload in enumerate(cases):
        done = _receive(lib, tmp_path / f"w{i}", "codex", payload)
        assert done.returncode != 0, payload
        assert done.stderr.startswith("session: "), done.stderr
    assert not (lib / "agents" / "codex").exists()
    assert (lib / "session").read_text() != "x"
