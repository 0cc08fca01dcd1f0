"""``bivy exec`` through real OpenSSH, sshd, ``sudo -n``, the pinned ``@devcontainers/cli`` and a
real Docker engine: no stub for ``devcontainer`` or ``docker``.

The "VM" keeps its files in a temporary folder: the repository, ``workspace.env`` naming it, and
``container.env`` written from ``devcontainer up``'s JSON by the VM's own ``container-env``
script, as the bootstrap does. ``sudo`` resets the environment, so the only shim is a two-line
``devcontainer`` that points the real CLI at the private engine (``DOCKER_HOST``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from app import cli
from app.cli import remote
from tests.integration.cloudinit.devcontainer_env import install_devcontainer_cli
from tests.integration.test_cli_remote import sshd, vm
from tests.support.docker_engine import DockerEngine
from tests.support.fixtures import REPO_ROOT

__all__ = ["sshd", "vm"]

REMOTE_USER = "coder"


@pytest.fixture(scope="session")
def devcontainer_bin() -> Path:
    """The pinned devcontainer CLI, installed the way the real-devcontainer tests do."""
    return install_devcontainer_cli()


@pytest.fixture
def devcontainer(
    vm: Path,
    tmp_path: Path,
    docker_engine: DockerEngine,
    devcontainer_bin: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[dict[str, str]]:
    """A repository's devcontainer, up for real; the VM's files point ``bivy exec`` at it."""
    repo = tmp_path / "vm" / "workspaces" / "project"
    (repo / ".devcontainer").mkdir(parents=True)
    (repo / ".devcontainer" / "Dockerfile").write_text(
        f"FROM {docker_engine.base_image}\nRUN useradd -m -u 1001 -s /bin/bash {REMOTE_USER}\n"
    )
    (repo / ".devcontainer" / "devcontainer.json").write_text(
        json.dumps(
            {
                "build": {"dockerfile": "Dockerfile"},
                "remoteUser": REMOTE_USER,
                "remoteEnv": {"BIVY_TEST_REMOTE": "from-remote-env"},
            }
        )
    )
    (repo / "README.md").write_text("hello\n")
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run([*git, "init", "-q", "-b", "main"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "init"], check=True)
    subprocess.run(["chown", "-R", "1001:1001", str(repo)], check=True)
    up = subprocess.run(
        [str(devcontainer_bin), "up", "--workspace-folder", str(repo)],
        env=docker_engine.env(),
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    up_json = tmp_path / "vm" / "devcontainer-up.json"
    up_json.write_text(up.stdout)
    try:
        assert up.returncode == 0, up.stderr[-4000:]
        container_env = subprocess.run(
            [sys.executable, str(REPO_ROOT / "cloudinit" / "scripts" / "container-env.py"),
             str(up_json)],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        (vm / "container.env").write_text(container_env)
        etc = tmp_path / "vm" / "etc"
        etc.mkdir()
        (etc / "workspace.env").write_text(f"BIVY_REPO_DIR='{repo}'\n")
        shim = tmp_path / "vm" / "devcontainer"
        shim.write_text(
            f"#!/bin/sh\nDOCKER_HOST='{docker_engine.host}' exec '{devcontainer_bin}' \"$@\"\n"
        )
        shim.chmod(0o755)
        monkeypatch.setattr(remote, "VM_WORKSPACE_ENV", str(etc / "workspace.env"))
        monkeypatch.setattr(remote, "VM_CONTAINER_ENV", str(vm / "container.env"))
        monkeypatch.setattr(remote, "DEVCONTAINER", str(shim))
        values = {}
        for line in container_env.splitlines():
            key, _, value = line.partition("=")
            values[key] = value.strip("'")
        yield values
    finally:
        ids = docker_engine.docker(
            "ps", "-aq", "--filter", f"label=devcontainer.local_folder={repo}", check=False
        ).stdout.split()
        if ids:
            docker_engine.docker("rm", "-f", "-v", *ids, check=False)


@pytest.mark.slow
def test_exec_runs_in_the_devcontainer_as_its_user_in_the_repository(
    devcontainer: dict[str, str], capfd: pytest.CaptureFixture[str]
) -> None:
    workspace = devcontainer["BIVY_REMOTE_WORKSPACE"]
    assert devcontainer["BIVY_REMOTE_USER"] == REMOTE_USER
    probe = "echo MARK:$BIVY_TEST_REMOTE:$(id -un):$(pwd)"
    assert cli.main(["exec", "demo", "--", "sh", "-c", probe]) == 0
    assert f"MARK:from-remote-env:{REMOTE_USER}:{workspace}" in capfd.readouterr().out
    # every word arrives as one argument, whatever it holds, even after the CLI's own parser
    words = ["a b", "$HOME", "it's", "*", "--help", "-x"]
    assert cli.main(["exec", "demo", "--", "printf", "[%s]\\n", *words]) == 0
    assert capfd.readouterr().out.splitlines() == [f"[{w}]" for w in words]
    assert cli.main(["exec", "demo", "--", "git", "log", "--format=%s"]) == 0
    assert capfd.readouterr().out.strip() == "init"
    assert cli.main(["exec", "demo", "--", "sh", "-c", "exit 7"]) == 7
    assert cli.main(["exec", "demo", "--", "no-such-command"]) != 0
