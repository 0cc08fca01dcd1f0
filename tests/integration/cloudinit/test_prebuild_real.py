"""Prebuilds on the VM side (issue 14) with the real bootstrap, the pinned devcontainer CLI, a
real Docker engine, git, ttyd and curl: a builder VM's bootstrap in prebuild mode ends in
``prebuilt`` (the agent installed in the devcontainer, no credential, no terminal), the real seal
cleans it, and a workspace "booted from the image" (the same disk, cloud-init's files written
again in workspace mode) skips what is there: the clone is updated, the devcontainer with its
agent is started again (or replaced when its config changed: ``prebuild_stale``), and the
terminal answers. Only systemctl (it starts ttyd-run directly), chown to the VM's user ``dev``,
and the seal's cloud-init/journal/apt/fstrim/systemd-run calls are stand-ins."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from app.domain import WorkspaceSpec
from app.services.prebuild_hash import devcontainer_config_hash
from tests.integration.cloudinit.devcontainer_env import (
    API_KEY,
    VmWorkspace,
    claude_image,
    devcontainer_cli,
    vm_workspace,
)
from tests.support.docker_engine import DockerEngine
from tests.unit.cloudinit.vmtree import render_tree

__all__ = ["claude_image", "devcontainer_cli", "vm_workspace"]

GIT = ["-c", "user.name=t", "-c", "user.email=t@example.org"]
SEAL_STUBS = ("cloud-init", "journalctl", "fstrim", "apt-get", "systemd-run")
#: Lifecycle commands that leave a trace in the container: onCreate belongs to the prebuild,
#: postCreate to each workspace (the CLI's --prebuild stops after updateContentCommand).
LIFECYCLE = {
    "onCreateCommand": "echo once >> $HOME/on-create",
    "postCreateCommand": "echo post >> $HOME/post-create",
}


@dataclass
class Machine:
    vm: VmWorkspace
    origin: Path
    tmp: Path
    stubs: Path
    ttyd_pids: Path

    def render(self, mode: str) -> None:
        """cloud-init's files for this boot (a new VM from the image gets the workspace's)."""
        spec = WorkspaceSpec(name="w", repo_url="https://github.com/o/r.git")
        env = render_tree(spec, self.vm.root, mode=mode)
        with (self.vm.root / "etc" / "workspace.env").open("a") as handle:
            handle.write(f"BIVY_REPO_DIR={self.vm.repo}\nBIVY_REPO_URL={self.origin}\n")
        from tests.support.sshd import free_port, ttyd_binary

        path = f"{self.stubs}:{ttyd_binary().parent}:{self.vm.env['PATH']}"
        self.vm.env = self.vm.engine.env(env)
        self.vm.env.update(PATH=path, BIVY_TTYD_PORT=str(free_port()))

    def bootstrap(self) -> dict[str, object]:
        result = subprocess.run(
            ["bash", str(self.vm.lib / "bootstrap")], env=self.vm.env,
            capture_output=True, text=True, timeout=1200, check=False,
        )  # fmt: skip
        logs = "\n".join(
            f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}"
            for log in sorted((self.vm.state / "log").glob("*.log"))
        )
        assert result.returncode == 0, logs
        return self.vm.status()

    def seal(self) -> None:
        root = self.tmp / "sys"
        (root / "etc").mkdir(parents=True, exist_ok=True)
        result = subprocess.run(
            ["bash", str(self.vm.lib / "prebuild-seal")],
            env={**self.vm.env, "BIVY_SEAL_ROOT": str(root)},
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert result.stdout == "sealed\n"
        assert [p.name for p in self.vm.state.iterdir()] == ["prebuild.json"]

    def commit(self, relative: str, text: str) -> str:
        (self.origin / relative).write_text(text)
        subprocess.run(["git", "-C", str(self.origin), *GIT, "add", "-A"], check=True)
        subprocess.run(["git", "-C", str(self.origin), *GIT, "commit", "-q", "-m", relative],
                       check=True)  # fmt: skip
        return self.head()

    def head(self) -> str:
        head = ["git", "-C", str(self.origin), "rev-parse", "HEAD"]
        return subprocess.run(head, capture_output=True, text=True, check=True).stdout.strip()

    def in_container(self, *command: str, user: str = "node") -> str:
        return self.vm.exec(user, *command, check=False).stdout

    def calls(self) -> str:
        log = self.tmp / "calls.log"
        return log.read_text() if log.exists() else ""


@pytest.fixture
def machine(vm_workspace: VmWorkspace, tmp_path: Path) -> Iterator[Machine]:
    vm = vm_workspace
    origin = tmp_path / "origin"
    subprocess.run(["git", "init", "-q", "-b", "main", str(origin)], check=True)
    vm.repo.rmdir()
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    pids = tmp_path / "ttyd.pids"
    calls = tmp_path / "calls.log"
    (stubs / "systemctl").write_text(
        f'#!/bin/bash\necho "systemctl $*" >> "{calls}"\n'
        'case "$*" in "start --no-block bivy-ttyd.service"|'
        '"enable --now --no-reload bivy-ttyd.service")\n'
        f'  [ -s "{pids}" ] && exit 0\n'
        f'  setsid bash "$BIVY_LIB_DIR/ttyd-run" >"{tmp_path}/ttyd.log" 2>&1 &\n'
        f'  echo $! >> "{pids}" ;;\n'
        "esac\n"
    )
    (stubs / "chown").write_text(
        '#!/bin/bash\ncase " $* " in *" dev:dev "*) exit 0 ;; esac\nexec /bin/chown "$@"\n'
    )
    for name in SEAL_STUBS:
        (stubs / name).write_text(f'#!/bin/bash\necho "{name} $*" >> "{calls}"\n')
    for stub in stubs.iterdir():
        stub.chmod(0o755)
    machine = Machine(vm, origin, tmp_path, stubs, pids)
    try:
        yield machine
    finally:
        for pid in pids.read_text().split() if pids.exists() else []:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(int(pid), 15)


def _container_running(engine: DockerEngine, cid: str) -> str:
    return engine.docker("inspect", "-f", "{{.State.Running}}", cid, check=False).stdout.strip()


def test_a_workspace_from_a_prebuild_reuses_its_devcontainer_and_agent(
    machine: Machine, docker_engine: DockerEngine
) -> None:
    # The base image has no Claude Code: the prebuild installs it (npm) into the container.
    config = {"image": docker_engine.base_image, "remoteUser": "node", **LIFECYCLE}
    machine.commit(".devcontainer.json", json.dumps(config))
    built_commit = machine.commit("README.md", "hello\n")

    machine.render("prebuild")
    started = time.monotonic()
    status = machine.bootstrap()
    prebuild_seconds = time.monotonic() - started
    assert status["phase"] == "prebuilt", status
    record = json.loads((machine.vm.state / "prebuild.json").read_text())
    # The VM's hash is the app's (notes/CONTRACTS2.md), computed on the same checkout.
    assert record["config_hash"] == devcontainer_config_hash(machine.origin)
    assert record["commit"] == built_commit and record["branch"] == "main"
    assert record["agent"] == "claude" and "Claude Code" in record["agent_version"]
    cid = record["container_id"]
    assert machine.vm.container()["BIVY_CONTAINER_ID"] == cid
    assert "Claude Code" in machine.in_container("claude", "--version")
    assert machine.in_container("cat", "/home/node/on-create") == "once\n"
    assert machine.in_container("ls", "/home/node").split().count("post-create") == 0
    # No credential and no terminal on a builder.
    assert machine.in_container("cat", "/etc/bivy-agent.env", user="root") == ""
    assert "bivy-ttyd" not in machine.calls()
    assert API_KEY not in (machine.vm.root / "etc" / "agent.env").read_text()
    prebuild_steps = status["steps"]

    machine.seal()
    assert _container_running(docker_engine, cid) == "false"
    assert "cloud-init clean --logs --seed" in machine.calls()

    # A new VM from the image: cloud-init writes the workspace's files; the repository moved on.
    latest = machine.commit("README.md", "newer\n")
    machine.render("workspace")
    started = time.monotonic()
    status = machine.bootstrap()
    workspace_seconds = time.monotonic() - started
    assert status["phase"] == "ready", status
    assert status["from_prebuild"] is True and status["prebuild_stale"] is False
    assert machine.vm.container()["BIVY_CONTAINER_ID"] == cid  # the same container, started
    # ... with `docker start`, not the CLI's `up` (slow to start under emulation).
    devcontainer_log = (machine.vm.state / "log" / "devcontainer.log").read_text()
    assert f"started the prebuild's devcontainer {cid} again" in devcontainer_log
    assert not (machine.vm.state / "devcontainer-up.json").exists()
    assert _container_running(docker_engine, cid) == "true"
    assert (machine.vm.repo / "README.md").read_text() == "newer\n"
    head = subprocess.run(["git", "-c", f"safe.directory={machine.vm.repo}", "-C",
                           str(machine.vm.repo), "rev-parse", "HEAD"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    assert head == latest
    install_log = (machine.vm.state / "log" / "agent-install.log").read_text()
    assert "already installed" in install_log
    # onCreate ran once (in the prebuild); postCreate now, for this workspace.
    assert machine.in_container("cat", "/home/node/on-create") == "once\n"
    assert machine.in_container("cat", "/home/node/post-create") == "post\n"
    # This VM's credential reached the container; the terminal answered (phase ready).
    agent_env = machine.in_container("cat", "/etc/bivy-agent.env", user="root")
    assert API_KEY in agent_env
    steps = status["steps"]
    print(f"\nprebuild {prebuild_seconds:.0f}s steps {prebuild_steps}")
    print(f"from prebuild {workspace_seconds:.0f}s steps {steps}")
    assert isinstance(steps, dict) and isinstance(prebuild_steps, dict)
    assert steps["agent_install"] < prebuild_steps["agent_install"]


def test_a_changed_devcontainer_config_rebuilds_and_says_the_prebuild_is_stale(
    machine: Machine, claude_image: str, docker_engine: DockerEngine
) -> None:
    config = {"image": claude_image, "remoteUser": "node", **LIFECYCLE}
    machine.commit(".devcontainer.json", json.dumps(config))
    machine.render("prebuild")
    assert machine.bootstrap()["phase"] == "prebuilt"
    old = json.loads((machine.vm.state / "prebuild.json").read_text())["container_id"]
    machine.seal()

    config["containerEnv"] = {"BIVY_TEST_CHANGED": "yes"}
    machine.commit(".devcontainer.json", json.dumps(config))
    machine.render("workspace")
    status = machine.bootstrap()
    assert status["phase"] == "ready", status
    assert status["from_prebuild"] is True and status["prebuild_stale"] is True
    new = machine.vm.container()["BIVY_CONTAINER_ID"]
    assert new != old
    # The prebuild's container is gone (its image stays as build cache); the new one has the
    # new config and ran its own onCreate and postCreate.
    assert docker_engine.docker("inspect", old, check=False).returncode != 0
    assert machine.in_container("printenv", "BIVY_TEST_CHANGED") == "yes\n"
    assert machine.in_container("cat", "/home/node/on-create") == "once\n"
    assert machine.in_container("cat", "/home/node/post-create") == "post\n"
    assert (
        "config changed since the prebuild"
        in (machine.vm.state / "log" / "devcontainer.log").read_text()
    )


def test_a_prebuild_rebuilt_on_its_own_image_builds_on_it(
    machine: Machine, claude_image: str
) -> None:
    # "Rebuild" may boot the builder from the previous prebuild's image: the clone is updated,
    # the devcontainer reused, and the CLI's --prebuild reruns updateContentCommand.
    config = {
        "image": claude_image,
        "remoteUser": "node",
        "updateContentCommand": "echo update >> $HOME/update-content",
        **LIFECYCLE,
    }
    machine.commit(".devcontainer.json", json.dumps(config))
    machine.render("prebuild")
    assert machine.bootstrap()["phase"] == "prebuilt"
    first = json.loads((machine.vm.state / "prebuild.json").read_text())
    machine.seal()

    latest = machine.commit("README.md", "newer\n")
    machine.render("prebuild")
    status = machine.bootstrap()
    assert status["phase"] == "prebuilt" and status["from_prebuild"] is True
    second = json.loads((machine.vm.state / "prebuild.json").read_text())
    assert second["commit"] == latest != first["commit"]
    assert second["container_id"] == first["container_id"]
    assert second["config_hash"] == first["config_hash"]
    assert machine.in_container("cat", "/home/node/update-content") == "update\nupdate\n"
    assert machine.in_container("cat", "/home/node/on-create") == "once\n"
    assert "post-create" not in machine.in_container("ls", "/home/node").split()
