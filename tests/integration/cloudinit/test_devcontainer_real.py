"""The VM's devcontainer step (cloudinit/scripts/devcontainer-up.sh) with the real, pinned
@devcontainers/cli against a real Docker engine: no stub for `devcontainer` or `docker`.

Covers issue 11 §5: the CLI accepts our mounts and the hooks stay unchangeable from inside (1);
the workspace belongs to whatever user the devcontainer runs as, root included (3); Compose
works (5); the workspace trust question is pre-answered (8); the terminal and a restart go
through the CLI (9: remoteEnv, postStartCommand); host networking is refused before anything of
the repository runs (11). Claude Code is installed from npm by the VM's agent-install script
(once per session, in ``claude_image``) and answers ``claude --version`` as the remote user.
"""

from __future__ import annotations

import contextlib
import json
import os
import pty
import select
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.cloudinit.devcontainer_env import (
    API_KEY,
    VmWorkspace,
    claude_image,
    devcontainer_cli,
    ensure_default_image,
    vm_workspace,
)
from tests.support.docker_engine import DockerEngine

__all__ = ["claude_image", "devcontainer_cli", "vm_workspace"]


def _assert_up(vm: VmWorkspace, result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, f"{result.stderr}\n--- log ---\n{vm.log()[-6000:]}"
    status = vm.status()
    assert status["phase"] == "starting", status


def _assert_hooks_unchangeable(vm: VmWorkspace, user: str) -> None:
    listing = vm.exec(user, "ls", "/bivy/hook").stdout.split()
    assert {"agent-hook", "agent-hook.js"} <= set(listing)
    for attempt in (
        "echo x >> /bivy/hook/agent-hook",
        "rm -f /bivy/hook/agent-hook.js",
        "touch /bivy/hook/new",
    ):
        result = vm.exec(user, "sh", "-c", attempt, check=False)
        assert result.returncode != 0, f"{user} could: {attempt}"
    assert "agent-hook" in vm.exec(user, "cat", "/bivy/hook/agent-hook").stdout
    # Immutable, and a container's root cannot lift that (no CAP_LINUX_IMMUTABLE).
    assert "i" in vm.exec(user, "lsattr", "/bivy/hook/agent-hook").stdout.split()[0]
    assert vm.exec(user, "chattr", "-i", "/bivy/hook/agent-hook", check=False).returncode != 0


def test_non_root_user_with_another_uid(
    vm_workspace: VmWorkspace, claude_image: str, docker_engine: DockerEngine
) -> None:
    vm = vm_workspace
    vm.write(
        ".devcontainer/Dockerfile",
        f"FROM {claude_image}\nRUN useradd -m -u 1001 -s /bin/bash coder\n",
    )
    vm.write(
        ".devcontainer/devcontainer.json",
        json.dumps(
            {
                "build": {"dockerfile": "Dockerfile"},
                "remoteUser": "coder",
                "remoteEnv": {"BIVY_TEST_REMOTE": "from-remote-env"},
                # Runs as coder in the workspace: it must be writable by uid 1001 by then.
                "postCreateCommand": "touch created-by-$(id -un) && git status --short",
                "postStartCommand": "date +%s%N >> /tmp/starts",
                # Runs on the VM as root: at the first start only, never on a restart (the
                # agent may have edited this file since).
                "initializeCommand": "echo once >> .initialized",
            }
        ),
    )
    vm.write("README.md", "hello\n")
    vm.commit()
    _assert_up(vm, vm.up())
    container = vm.container()
    assert container["BIVY_REMOTE_USER"] == "coder"
    assert container["BIVY_DEVCONTAINER_OVERRIDE"] == ""
    # §5.3: the workspace is the container user's; the lifecycle commands ran after that.
    assert (vm.repo / "created-by-coder").exists(), vm.log()[-3000:]
    assert vm.exec("coder", "id", "-u").stdout.strip() == "1001"
    assert vm.exec("coder", "stat", "-c", "%u", ".").stdout.strip() == "1001"
    assert vm.exec("coder", "git", "status", "--short").returncode == 0
    assert vm.exec("coder", "sh", "-c", "echo x > new-file && rm new-file").returncode == 0
    # §5.1: the CLI took the mounts; the hooks are there and cannot be changed, even by root.
    _assert_hooks_unchangeable(vm, "coder")
    _assert_hooks_unchangeable(vm, "root")
    assert vm.exec("coder", "sh", "-c", "touch /bivy/claude/x /bivy/state/x").returncode == 0
    # Claude Code answers as the remote user, with the persistent config dir.
    version = vm.exec("coder", "claude", "--version")
    assert "Claude Code" in version.stdout
    # §5.8: the workspace trust question is answered for the repository folder.
    claude_state = json.loads((vm.state / "claude" / ".claude.json").read_text())
    project = claude_state["projects"][container["BIVY_REMOTE_WORKSPACE"]]
    assert project["hasTrustDialogAccepted"] is True
    settings = json.loads((vm.state / "claude" / "settings.json").read_text())
    assert "/bivy/hook/agent-hook Stop" in json.dumps(settings["hooks"]["Stop"])
    assert (vm.state / "claude").stat().st_uid == 1001
    steps = vm.status()["steps"]
    assert isinstance(steps, dict) and {"devcontainer", "agent_install", "user_commands"} <= set(
        steps
    )
    # §5.9: the terminal goes through `devcontainer exec` (remoteEnv applies, the agent's key is
    # there, it starts in the repository folder, as the remote user) ...
    output = _terminal_says(
        vm, "echo MARK:$BIVY_TEST_REMOTE:${ANTHROPIC_API_KEY#sk-ant-}:$(pwd):$(id -un)"
    )
    workspace = container["BIVY_REMOTE_WORKSPACE"]
    assert f"MARK:from-remote-env:{API_KEY[7:]}:{workspace}:coder" in output
    # ... and a restart runs postStartCommand again, as `devcontainer up` would.
    assert len(vm.exec("coder", "cat", "/tmp/starts").stdout.split()) == 1
    docker_engine.docker("stop", "-t", "1", container["BIVY_CONTAINER_ID"])
    restart = vm.run("--start")
    assert restart.returncode == 0, restart.stderr
    assert len(vm.exec("coder", "cat", "/tmp/starts").stdout.split()) == 2, (
        vm.state / "log" / "devcontainer-start.log"
    ).read_text()
    assert (vm.repo / ".initialized").read_text() == "once\n"


def _terminal_says(vm: VmWorkspace, command: str, timeout: float = 60) -> str:
    """Runs the web terminal's per-client script (ttyd-session) in a pty, types ``command``."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: what ttyd runs for each client
        # ttyd gives its clients TERM=xterm-256color
        os.execve(
            "/bin/bash",
            ["bash", str(vm.lib / "ttyd-session")],
            {**vm.env, "TERM": "xterm-256color"},
        )
    output = b""
    typed = False
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 1.0)
            if ready:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:
                    break
                if not chunk:
                    break
                output += chunk
            if not typed and b"$" in output:
                os.write(fd, command.encode() + b"\r")
                typed = True
            if typed and b"MARK:" in output.split(command.encode())[-1]:
                time.sleep(0.5)
                with_more = select.select([fd], [], [], 0.5)[0]
                if with_more:
                    output += os.read(fd, 65536)
                break
    finally:
        os.write(fd, b"\x02d") if typed else None  # detach from tmux (prefix C-b, d)
        time.sleep(0.5)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 9)
        os.waitpid(pid, 0)
        os.close(fd)
    text = output.decode(errors="replace")
    return text.split(command)[-1] if command in text else text


def test_root_devcontainer_can_use_git(vm_workspace: VmWorkspace, claude_image: str) -> None:
    vm = vm_workspace
    vm.write(
        ".devcontainer.json",
        json.dumps(
            {
                "image": claude_image,
                "remoteUser": "root",
                # Fails with "dubious ownership" on a workspace owned by uid 1000 (§5.3).
                "postCreateCommand": "git status --short && git log --oneline -1",
            }
        ),
    )
    vm.write("README.md", "hello\n")
    vm.commit()
    _assert_up(vm, vm.up())
    assert vm.container()["BIVY_REMOTE_USER"] == "root"
    assert vm.exec("root", "git", "status", "--short").returncode == 0
    assert vm.exec("root", "stat", "-c", "%u", ".").stdout.strip() == "0"
    _assert_hooks_unchangeable(vm, "root")
    assert "Claude Code" in vm.exec("root", "claude", "--version").stdout


def test_compose_devcontainer(vm_workspace: VmWorkspace, claude_image: str) -> None:
    vm = vm_workspace
    vm.write(
        ".devcontainer/compose.yml",
        "services:\n"
        "  app:\n"
        f"    image: {claude_image}\n"
        "    command: sleep infinity\n"
        "    volumes:\n"
        "      - ..:/workspaces/r:cached\n"
        "  sidecar:\n"
        f"    image: {claude_image}\n"
        "    command: sleep infinity\n",
    )
    vm.write(
        ".devcontainer/devcontainer.json",
        json.dumps(
            {
                "dockerComposeFile": "compose.yml",
                "service": "app",
                "workspaceFolder": "/workspaces/r",
                "remoteUser": "node",
                "postCreateCommand": "touch compose-created && git status --short",
            }
        ),
    )
    vm.write("README.md", "hello\n")
    vm.commit()
    _assert_up(vm, vm.up())
    assert (vm.repo / "compose-created").exists()
    assert vm.exec("node", "git", "status", "--short").returncode == 0
    _assert_hooks_unchangeable(vm, "node")
    assert "Claude Code" in vm.exec("node", "claude", "--version").stdout


def test_without_a_devcontainer_the_default_is_used(
    vm_workspace: VmWorkspace, claude_image: str, docker_engine: DockerEngine
) -> None:
    vm = vm_workspace
    ensure_default_image(docker_engine, claude_image)
    vm.write("README.md", "hello\n")
    vm.commit()
    _assert_up(vm, vm.up())
    container = vm.container()
    assert container["BIVY_REMOTE_USER"] == "node"
    assert container["BIVY_DEVCONTAINER_OVERRIDE"] == str(vm.lib / "devcontainer.json")
    # The default's onCreateCommand ran (apt inside the container) and git works.
    assert vm.exec("node", "sh", "-c", "command -v rg jq").returncode == 0
    assert vm.exec("node", "git", "status", "--short").returncode == 0
    default = json.loads((vm.lib / "devcontainer.json").read_text())
    assert "features" not in default and "ghcr.io" not in json.dumps(default)


@pytest.mark.parametrize(
    "config",
    [
        {"runArgs": ["--network=host"]},
        {"runArgs": ["--net", "host"]},
        {"build": {"dockerfile": "Dockerfile", "options": ["--network=host"]}},
    ],
)
def test_host_networking_is_refused_before_anything_runs(
    vm_workspace: VmWorkspace, claude_image: str, config: dict[str, object]
) -> None:
    vm = vm_workspace
    vm.write(".devcontainer/Dockerfile", f"FROM {claude_image}\n")
    vm.write(
        ".devcontainer/devcontainer.json",
        json.dumps({"image": claude_image, "initializeCommand": "touch ran", **config}),
    )
    vm.commit()
    result = vm.up()
    assert result.returncode == 1
    status = vm.status()
    assert status["phase"] == "failed"
    assert "refused" in str(status["error"]) and "host networking" in str(status["error"])
    assert not (vm.repo / "ran").exists()
    assert vm.engine.docker("ps", "-aq").stdout.strip() == ""


def test_compose_host_network_is_refused(vm_workspace: VmWorkspace, claude_image: str) -> None:
    vm = vm_workspace
    vm.write(
        ".devcontainer/compose.yml",
        f"services:\n  app:\n    image: {claude_image}\n    network_mode: host\n"
        "    command: sleep infinity\n",
    )
    vm.write(
        ".devcontainer/devcontainer.json",
        json.dumps({"dockerComposeFile": "compose.yml", "service": "app"}),
    )
    vm.commit()
    assert vm.up().returncode == 1
    assert "network_mode: host" in str(vm.status()["error"])


def test_host_network_the_static_check_cannot_see_is_refused_after_up(
    vm_workspace: VmWorkspace, claude_image: str
) -> None:
    # The network comes from the CLI's environment (${localEnv:...}): only Docker knows.
    vm = vm_workspace
    vm.write(
        ".devcontainer/devcontainer.json",
        json.dumps(
            {
                "image": claude_image,
                "runArgs": ["--network=${localEnv:BIVY_TEST_NET}"],
                "postCreateCommand": "touch ran",
            }
        ),
    )
    vm.commit()
    vm.env["BIVY_TEST_NET"] = "host"
    assert vm.up().returncode == 1
    status = vm.status()
    assert status["phase"] == "failed"
    assert "host networking" in str(status["error"])
    assert not (vm.repo / "ran").exists()  # the lifecycle commands never ran
    assert not (vm.state / "container.env").exists()  # `bivy exec` finds no container
    assert vm.engine.docker("ps", "-aq").stdout.strip() == ""  # and the container is gone


def test_the_whole_bootstrap_reaches_ready(
    vm_workspace: VmWorkspace, claude_image: str, tmp_path: Path
) -> None:
    """bootstrap.sh from clone to a terminal that answers: real git, docker, devcontainer CLI,
    ttyd and curl; only systemctl (this machine's services) and chown to the VM's user ``dev``
    are stand-ins, and every tool is already installed (a baked image: no apt)."""
    from tests.support.sshd import free_port, ttyd_binary

    vm = vm_workspace
    origin = tmp_path / "origin"
    origin.mkdir()
    (origin / ".devcontainer.json").write_text(
        json.dumps({"image": claude_image, "remoteUser": "node", "postCreateCommand": "git status"})
    )
    (origin / "README.md").write_text("hello\n")
    git = ["git", "-C", str(origin), "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run(["git", "init", "-q", "-b", "main", str(origin)], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "init"], check=True)
    vm.repo.rmdir()
    with (vm.root / "etc" / "workspace.env").open("a") as handle:
        handle.write(f"BIVY_REPO_URL={origin}\n")
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    ttyd_pids = tmp_path / "ttyd.pids"
    (stubs / "systemctl").write_text(
        "#!/bin/bash\n"
        # devcontainer-up starts the service early, the bootstrap makes sure: one ttyd.
        'case "$*" in "start --no-block bivy-ttyd.service"|'
        '"enable --now --no-reload bivy-ttyd.service")\n'
        f'  [ -s "{ttyd_pids}" ] && exit 0\n'
        f'  setsid bash "$BIVY_LIB_DIR/ttyd-run" >"{tmp_path}/ttyd.log" 2>&1 &\n'
        f'  echo $! >> "{ttyd_pids}" ;;\n'
        "esac\n"
    )
    (stubs / "chown").write_text(
        '#!/bin/bash\ncase " $* " in *" dev:dev "*) exit 0 ;; esac\nexec /bin/chown "$@"\n'
    )
    for stub in stubs.iterdir():
        stub.chmod(0o755)
    ttyd = ttyd_binary()
    port = free_port()
    vm.env["PATH"] = f"{stubs}:{ttyd.parent}:{vm.env['PATH']}"
    vm.env.pop("BIVY_SYSTEMCTL")  # the stub above, for devcontainer-up's early start too
    vm.env["BIVY_TTYD_PORT"] = str(port)
    try:
        result = subprocess.run(
            ["bash", str(vm.lib / "bootstrap")], env=vm.env,
            capture_output=True, text=True, timeout=900, check=False,
        )  # fmt: skip
        logs = "\n".join(
            f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}"
            for log in sorted((vm.state / "log").glob("*.log"))
        )
        assert result.returncode == 0, logs
        status = vm.status()
        assert status["phase"] == "ready", status
        timings = status["timings"]
        assert isinstance(timings, dict)
        phases = ["booting", "installing", "cloning", "building", "starting", "ready"]
        assert sorted(timings, key=lambda phase: timings[phase]) == phases
        steps = status["steps"]
        assert isinstance(steps, dict)
        assert {"packages", "node", "clone", "devcontainer", "agent_install", "ttyd"} <= set(steps)
        assert vm.exec("node", "git", "status", "--short").returncode == 0
        assert "Claude Code" in vm.exec("node", "claude", "--version").stdout
    finally:
        for pid in ttyd_pids.read_text().split() if ttyd_pids.exists() else []:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(int(pid), 15)


def test_a_broken_devcontainer_fails_with_the_clis_words(vm_workspace: VmWorkspace) -> None:
    vm = vm_workspace
    vm.write(".devcontainer/devcontainer.json", '{"build": {"dockerfile": "Missing"}}')
    vm.commit()
    result = vm.up()
    assert result.returncode == 1
    status = vm.status()
    assert status["phase"] == "failed"
    assert status["error"] == "building the devcontainer failed"
    assert "Missing" in str(status["log_tail"])  # the CLI's own message, for `bivy wait`


def test_without_tmux_in_the_container_the_hosts_tmux_holds_the_session(
    vm_workspace: VmWorkspace, claude_image: str, tmp_path: Path
) -> None:
    # An image with no tmux and no package manager to get one: the terminal falls back to a
    # tmux session on the VM around `devcontainer exec` (still remoteEnv, the key, the folder).
    vm = vm_workspace
    vm.write(
        ".devcontainer/Dockerfile",
        f"FROM {claude_image}\nRUN rm -f /usr/bin/tmux /usr/bin/apt-get /usr/bin/apt\n",
    )
    vm.write(
        ".devcontainer/devcontainer.json",
        json.dumps(
            {
                "build": {"dockerfile": "Dockerfile"},
                "remoteUser": "node",
                "remoteEnv": {"BIVY_TEST_REMOTE": "fallback"},
            }
        ),
    )
    vm.commit()
    _assert_up(vm, vm.up())
    assert "tmux is not available" in (vm.state / "log" / "agent-install.log").read_text()
    tmux_dir = tmp_path / "tmux"
    tmux_dir.mkdir()
    vm.env["TMUX_TMPDIR"] = str(tmux_dir)  # this test's own tmux server on the host
    try:
        output = _terminal_says(vm, "echo MARK:$BIVY_TEST_REMOTE:$(id -un):$(pwd)")
        assert "MARK:fallback:node:/workspaces/r" in output
        sessions = subprocess.run(
            ["tmux", "list-sessions", "-F", "#{session_name}"],
            env={**os.environ, "TMUX_TMPDIR": str(tmux_dir)}, capture_output=True, text=True,
        )  # fmt: skip
        assert sessions.stdout.split() == ["agent"]
    finally:
        subprocess.run(
            ["tmux", "kill-server"], env={**os.environ, "TMUX_TMPDIR": str(tmux_dir)},
            capture_output=True, check=False,
        )  # fmt: skip
