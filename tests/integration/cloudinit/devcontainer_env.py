"""Fixtures for running the VM's devcontainer step with the real, pinned devcontainer CLI against
a real Docker engine (tests.support.docker_engine): no stub for `devcontainer` or `docker`.

- ``devcontainer_cli``: ``@devcontainers/cli`` at the version the VM installs, from npm into the
  test cache (``cache_dir()``), once; its ``bin`` directory.
- ``claude_image``: ``bivy-test/claude:latest`` = the offline base image with Claude Code installed
  by the VM's own ``agent-install`` script (npm, ~1 min, once per session and cached in the engine).
- ``VmWorkspace``: a rendered VM tree (tests.unit.cloudinit.vmtree) with a git repository owned by
  uid 1000 as the bootstrap leaves it, and ``up()`` running ``devcontainer-up`` for real.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.cloudinit import DEVCONTAINER_CLI
from app.domain import WorkspaceSpec
from tests.support.docker_engine import DockerEngine, cache_dir, file_lock
from tests.unit.cloudinit.vmtree import render_tree

CLAUDE_IMAGE = "bivy-test/claude:latest"
#: The default devcontainer.json's image; a local tag is never pulled, so offline it is the base.
DEFAULT_IMAGE = "mcr.microsoft.com/devcontainers/javascript-node:22-bookworm"
API_KEY = "sk-ant-test-0123456789abcdefghij"  # what vmtree renders


def install_devcontainer_cli() -> Path:
    """The pinned devcontainer CLI's executable (npm install into the test cache on first use)."""
    version = DEVCONTAINER_CLI.rsplit("@", 1)[1]
    prefix = cache_dir() / f"devcontainer-cli-{version}"
    binary = prefix / "node_modules" / ".bin" / "devcontainer"
    with file_lock(cache_dir() / "devcontainer-cli.lock"):
        if not binary.exists():
            npm = shutil.which("npm")
            if npm is None:
                pytest.fail("npm is needed to install the devcontainer CLI (apt: nodejs npm)")
            subprocess.run(
                [npm, "install", "--prefix", str(prefix), "--no-fund", "--no-audit",
                 DEVCONTAINER_CLI],
                check=True, capture_output=True, timeout=600,
            )  # fmt: skip
    result = subprocess.run([str(binary), "--version"], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == version
    return binary


@pytest.fixture(scope="session")
def devcontainer_cli() -> Path:
    """The pinned devcontainer CLI's bin dir."""
    return install_devcontainer_cli().parent


@pytest.fixture(scope="session")
def claude_image(docker_engine: DockerEngine, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The base image plus Claude Code, installed by the VM's agent-install script for real."""
    if docker_engine.docker("image", "inspect", CLAUDE_IMAGE, check=False).returncode == 0:
        return CLAUDE_IMAGE
    tree = tmp_path_factory.mktemp("agent-install")
    render_tree(WorkspaceSpec(name="w", repo_url="https://github.com/o/r.git"), tree)
    script = (tree / "lib" / "agent-install").read_bytes()
    name = "bivy-test-claude-install"
    docker_engine.docker("rm", "-f", name, check=False)
    docker_engine.docker("run", "-d", "--name", name, docker_engine.base_image, "sleep", "900")
    try:
        # As devcontainer-up runs it: copied in, then run from the file.
        run = 'f=$(mktemp) && cat >"$f" && sh "$f" </dev/null; rc=$?; rm -f "$f"; exit $rc'
        result = docker_engine.docker(
            "exec", "-i", "-u", "root", name, "sh", "-c", run, input=script, timeout=900,
            check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        version = docker_engine.docker("exec", "-u", "node", name, "claude", "--version")
        assert "Claude Code" in version.stdout, version.stdout
        docker_engine.docker("commit", name, CLAUDE_IMAGE)
    finally:
        docker_engine.docker("rm", "-f", name, check=False)
    return CLAUDE_IMAGE


class VmWorkspace:
    """A VM's files under a temp dir, a repository in it, and the devcontainer step run for real."""

    def __init__(self, root: Path, engine: DockerEngine, cli_bin: Path) -> None:
        self.root = root
        self.engine = engine
        self.env = render_tree(WorkspaceSpec(name="w", repo_url="https://github.com/o/r.git"), root)
        self.state = root / "state"
        self.lib = root / "lib"
        self.repo = root / "workspaces" / "r"
        self.repo.mkdir(parents=True)
        with (root / "etc" / "workspace.env").open("a") as handle:
            handle.write(f"BIVY_REPO_DIR={self.repo}\n")
        self.env = engine.env(self.env)
        self.env["PATH"] = f"{cli_bin}:{self.env['PATH']}"
        self.env.pop("BIVY_DEVCONTAINER", None)
        # devcontainer-up starts the web terminal's service early: not this machine's systemd.
        self.env["BIVY_SYSTEMCTL"] = "true"

    def write(self, relative: str, text: str) -> None:
        path = self.repo / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    def commit(self) -> None:
        git = ["git", "-C", str(self.repo), "-c", "user.name=t", "-c", "user.email=t@example.org"]
        subprocess.run(["git", "init", "-q", "-b", "main", str(self.repo)], check=True)
        subprocess.run([*git, "add", "-A"], check=True)
        subprocess.run([*git, "commit", "-q", "-m", "init"], check=True)
        # As the bootstrap leaves it: cloned by root, handed to the VM's user dev (uid 1000).
        subprocess.run(["chown", "-R", "1000:1000", str(self.repo)], check=True)

    def run(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(self.lib / "devcontainer-up"), *args],
            env=self.env, capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip

    def up(self) -> subprocess.CompletedProcess[str]:
        (self.state / "agent").mkdir(parents=True, exist_ok=True)
        return self.run()

    def status(self) -> dict[str, object]:
        data: dict[str, object] = json.loads((self.state / "status.json").read_text())
        return data

    def log(self) -> str:
        path = self.state / "log" / "devcontainer.log"
        return path.read_text(errors="replace") if path.exists() else "(no log)"

    def container(self) -> dict[str, str]:
        values = {}
        for line in (self.state / "container.env").read_text().splitlines():
            key, _, value = line.partition("=")
            values[key] = value.strip("'")
        return values

    def exec(
        self, user: str, *command: str, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        cid = self.container()["BIVY_CONTAINER_ID"]
        workdir = self.container()["BIVY_REMOTE_WORKSPACE"]
        return self.engine.docker("exec", "-u", user, "-w", workdir, cid, *command, check=check)

    def cleanup(self) -> None:
        ids = self.engine.docker(
            "ps", "-aq", "--filter", f"label=devcontainer.local_folder={self.repo}", check=False
        ).stdout.split()
        projects = set()
        for cid in ids:
            label = self.engine.docker(
                "inspect", "-f", '{{ index .Config.Labels "com.docker.compose.project" }}', cid,
                check=False,
            ).stdout.strip()  # fmt: skip
            if label and label != "<no value>":
                projects.add(label)
        for project in projects:
            ids += self.engine.docker(
                "ps", "-aq", "--filter", f"label=com.docker.compose.project={project}", check=False
            ).stdout.split()
        if ids:
            self.engine.docker("rm", "-f", "-v", *set(ids), check=False)
        # The hook files are immutable (chattr +i): clear that so the temp dir can go.
        subprocess.run(["chattr", "-R", "-i", str(self.lib / "hook")], check=False)


@pytest.fixture
def vm_workspace(
    tmp_path: Path, docker_engine: DockerEngine, devcontainer_cli: Path
) -> Iterator[VmWorkspace]:
    workspace = VmWorkspace(tmp_path / "vm", docker_engine, devcontainer_cli)
    try:
        yield workspace
    finally:
        workspace.cleanup()


def ensure_default_image(engine: DockerEngine, source: str) -> None:
    """Tag the default devcontainer.json's image locally (offline: the CLI never pulls it)."""
    engine.docker("tag", source, DEFAULT_IMAGE)


def run_env(workspace: VmWorkspace) -> dict[str, str]:
    return dict(workspace.env, HOME=os.environ.get("HOME", "/tmp"))
