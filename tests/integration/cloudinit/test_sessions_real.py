"""The VM's session command (cloudinit/scripts/session.sh, issue 15) against a real git repository
in a real devcontainer: the pinned @devcontainers/cli and a private Docker engine, no stand-in
for git, docker, tmux or the devcontainer CLI.

Two sessions next to main: each gets its worktree inside the repository folder (made inside the
container as the remote user, so the paths are the container's), its branch, its tmux session
started with the agent and the first prompt (one argument, whatever it holds), its own agent
state dir; the worktree is usable as the remote user; the web terminal opens a session by name;
`ls --json` joins each session with its agent's state; `rm` refuses unsaved work without --force.
"""

from __future__ import annotations

import contextlib
import json
import os
import pty
import select
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.cloudinit import render_cloud_config
from app.domain import SessionReport, WorkspaceSpec
from tests.integration.cloudinit import devcontainer_env
from tests.integration.cloudinit.devcontainer_env import API_KEY, VmWorkspace, devcontainer_cli
from tests.support.docker_engine import DockerEngine
from tests.unit.cloudinit.vmtree import inputs_for, materialize

__all__ = ["devcontainer_cli"]

PROMPT = "Fix the 'README' \"now\": $HOME `id` ; echo no && true\nsecond line"


class SessionVm(VmWorkspace):
    """VmWorkspace, with the VM's files from the plain cloud-config (no size limit applied)."""

    def __init__(self, root: Path, engine: DockerEngine, cli_bin: Path) -> None:
        spec = WorkspaceSpec(name="w", repo_url="https://github.com/o/r.git")
        cloud_config = render_cloud_config(inputs_for(spec))
        self.root = root
        self.engine = engine
        self.state = root / "state"
        self.lib = root / "lib"
        self.repo = root / "workspaces" / "r"
        self.repo.mkdir(parents=True)
        env = materialize(cloud_config, root)
        with (root / "etc" / "workspace.env").open("a") as handle:
            handle.write(f"BIVY_REPO_DIR={self.repo}\n")
        self.env = engine.env(env)
        self.env["PATH"] = f"{cli_bin}:{self.env['PATH']}"
        self.env.pop("BIVY_DEVCONTAINER", None)

    def session(
        self, *args: str, stdin: str | None = None, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(self.lib / "session"), *args],
            env=self.env, input=stdin if stdin is not None else "", capture_output=True,
            text=True, timeout=timeout, check=False,
        )  # fmt: skip

    def sessions(self) -> dict[str, SessionReport]:
        result = self.session("ls", "--json")
        assert result.returncode == 0, result.stderr
        return {r["name"]: SessionReport.model_validate(r) for r in json.loads(result.stdout)}

    def cleanup(self) -> None:
        super().cleanup()
        subprocess.run(["chattr", "-R", "-i", str(self.lib / "hook")], check=False)


@pytest.fixture(scope="module")
def claude_image(docker_engine: DockerEngine, tmp_path_factory: pytest.TempPathFactory) -> str:
    """devcontainer_env's image (Claude Code installed by agent-install), rendered without the
    provider's size limit (the sessions' scripts are what this module tests, not the fit)."""
    original = devcontainer_env.render_tree

    def render(spec: WorkspaceSpec, root: Path, **overrides: object) -> dict[str, str]:
        return materialize(render_cloud_config(inputs_for(spec, **overrides)), root)

    devcontainer_env.render_tree = render  # type: ignore[assignment]
    try:
        return devcontainer_env.claude_image.__wrapped__(docker_engine, tmp_path_factory)  # type: ignore[attr-defined, no-any-return]
    finally:
        devcontainer_env.render_tree = original


@pytest.fixture
def session_vm(
    tmp_path: Path, docker_engine: DockerEngine, devcontainer_cli: Path, claude_image: str
) -> Iterator[SessionVm]:
    vm = SessionVm(tmp_path / "vm", docker_engine, devcontainer_cli)
    try:
        vm.write(
            ".devcontainer.json",
            json.dumps({"image": claude_image, "remoteUser": "node", "containerEnv": {"X": "1"}}),
        )
        vm.write("README.md", "hello\n")
        vm.commit()
        result = vm.up()
        assert result.returncode == 0, f"{result.stderr}\n--- log ---\n{vm.log()[-6000:]}"
        yield vm
    finally:
        vm.cleanup()


#: A stand-in for the agent in the container: records its argument and environment, then
#: waits (the real agents need a model to talk to).
FAKE_AGENT = """#!/bin/sh
printf "%s" "${1:-}" > /tmp/prompt-$BIVY_SESSION
echo "$BIVY_AGENT_STATE_DIR|$(pwd)|$(id -un)|${ANTHROPIC_API_KEY:-}" > /tmp/env-$BIVY_SESSION
exec sleep 600
"""


def _install_fake_agent(vm: SessionVm) -> None:
    cid = vm.container()["BIVY_CONTAINER_ID"]
    vm.engine.docker(
        "exec", "-i", "-u", "root", cid, "sh", "-c",
        "cat > /usr/local/bin/fake-agent && chmod 0755 /usr/local/bin/fake-agent",
        input=FAKE_AGENT.encode(),
    )  # fmt: skip


def _payload(prompt: str | None) -> str:
    """What the app sends for a session of the workspace's own agent, its start command the
    stand-in's (``fake-agent PROMPT``, as ``claude PROMPT``)."""
    agent = {
        "name": "claude",
        "binary": "fake-agent",
        "command": ["fake-agent", "{prompt}"],
        "config_dir": "/bivy/claude",
        "config_env": {"CLAUDE_CONFIG_DIR": "/bivy/claude"},
        "env_login": "",
        "files": [],
    }
    return json.dumps({"prompt": prompt, "agent": agent})


def _wait_for(vm: SessionVm, user: str, path: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = vm.exec(user, "cat", path, check=False)
        if result.returncode == 0 and result.stdout:
            return result.stdout
        time.sleep(0.5)
    raise AssertionError(f"{path} never appeared; session log:\n{_log(vm)}")


def _log(vm: SessionVm) -> str:
    path = vm.state / "log" / "session.log"
    return path.read_text(errors="replace")[-4000:] if path.exists() else "(no session log)"


@pytest.mark.timeout(1500)
def test_two_sessions_with_their_worktrees_branches_terminals_and_states(
    session_vm: SessionVm,
) -> None:
    vm = session_vm
    workspace = vm.container()["BIVY_REMOTE_WORKSPACE"]
    _install_fake_agent(vm)

    # A session a restore brought back (backup.sh makes it on this host, with this host's
    # paths, before the container runs): a worktree on its branch and its record.
    git = ["git", "-C", str(vm.repo), "-c", "safe.directory=*", "-c", "user.name=t"]
    subprocess.run([*git, "worktree", "add", "-q", "-b", "bivy/old", ".bivy/worktrees/old"],
                   check=True, capture_output=True)  # fmt: skip
    (vm.repo / ".git" / "info" / "exclude").write_text("/.bivy/\n")
    (vm.repo / ".bivy" / "worktrees" / "old" / "restored.txt").write_text("unsaved\n")
    subprocess.run(["chown", "-R", "1000:1000", str(vm.repo)], check=True)
    (vm.state / "sessions").mkdir()
    (vm.state / "sessions" / "old.json").write_text(
        json.dumps({"name": "old", "agent": "claude", "branch": "bivy/old", "base": "",
                    "worktree": "/elsewhere", "created_at": "2026-12-01T00:00:00Z"})
    )  # fmt: skip

    # main: what the bootstrap makes (nothing on stdin): the repository folder on its branch;
    # it also adopts the restored session: links repaired for the container's paths.
    result = vm.session("new", "main", "--agent", "claude")
    assert result.returncode == 0, result.stderr + _log(vm)
    assert vm.session("new", "main", "--agent", "claude").returncode == 0  # idempotent
    main = vm.sessions()["main"]
    assert (main.agent, main.branch, main.worktree) == ("claude", "main", workspace)
    old = vm.sessions()["old"]
    assert old.worktree == f"{workspace}/.bivy/worktrees/old"
    assert (old.state.value, old.event) == ("idle", "SessionRestored")
    assert old.message.startswith("restored from the backup")
    status = vm.exec("node", "git", "-C", old.worktree, "status", "--porcelain", "--branch")
    assert status.stdout.splitlines() == ["## bivy/old", "?? restored.txt"]
    output = _terminal(vm, ["old"], "echo MARK:$BIVY_SESSION:$(pwd)")
    assert f"MARK:old:{old.worktree}" in output, output[-2000:]
    assert vm.session("rm", "old", "--force").returncode == 0
    # That terminal started the tmux server: main's terminal still has the agent's key.
    _assert_main_terminal(vm, workspace)
    vm.exec("node", "tmux", "kill-server", check=False)  # the next one: by `session new`

    # Two more: one on bivy/<name> with a first prompt, one on a branch the user named.
    result = vm.session("new", "feature", "--agent", "claude", stdin=_payload(PROMPT))
    assert result.returncode == 0, result.stderr + _log(vm)
    result = vm.session(
        "new", "fix", "--agent", "claude", "--branch", "fix/readme", stdin=_payload(None)
    )
    assert result.returncode == 0, result.stderr + _log(vm)
    again = vm.session("new", "fix", "--agent", "claude", stdin=_payload(None))
    assert again.returncode != 0 and "already" in again.stderr

    sessions = vm.sessions()
    assert list(sessions) == ["main", "feature", "fix"]
    feature, fix = sessions["feature"], sessions["fix"]
    assert feature.branch == "bivy/feature" and fix.branch == "fix/readme"
    head = vm.exec("node", "git", "rev-parse", "HEAD").stdout.strip()
    assert feature.base == head and fix.base == head
    assert feature.worktree == f"{workspace}/.bivy/worktrees/feature"
    assert fix.worktree == f"{workspace}/.bivy/worktrees/fix"

    # The worktrees: container paths, the remote user's, on their branches, out of git's sight.
    listing = vm.exec("node", "git", "worktree", "list", "--porcelain").stdout
    assert f"worktree {feature.worktree}\nHEAD {head}\nbranch refs/heads/bivy/feature" in listing
    assert f"worktree {fix.worktree}\nHEAD {head}\nbranch refs/heads/fix/readme" in listing
    assert (vm.repo / ".bivy" / "worktrees" / "feature" / "README.md").read_text() == "hello\n"
    assert (vm.repo / ".bivy" / "worktrees" / "feature").stat().st_uid == 1000
    assert vm.exec("node", "git", "status", "--porcelain").stdout == ""  # .bivy/ excluded
    usable = vm.exec(
        "node", "sh", "-c",
        f"cd {feature.worktree} && echo change >> README.md && git add README.md && "
        "git -c user.name=a -c user.email=a@example.org commit -qm agent && git log --oneline -1",
    )  # fmt: skip
    assert "agent" in usable.stdout
    assert vm.exec("node", "git", "log", "--oneline", "-1", "bivy/feature").stdout == usable.stdout
    assert (vm.repo / "README.md").read_text() == "hello\n"  # main's folder untouched

    # The agent started in its own tmux session, in the worktree, as the remote user, with the
    # workspace agent's credentials, its own state dir, and the prompt as one argument.
    assert _wait_for(vm, "node", "/tmp/prompt-feature") == PROMPT
    state_dir, cwd, user, key = _wait_for(vm, "node", "/tmp/env-feature").strip().split("|")
    assert (state_dir, cwd, user, key) == ("/bivy/state/feature", feature.worktree, "node", API_KEY)
    assert _wait_for(vm, "node", "/tmp/env-fix").startswith("/bivy/state/fix|")
    assert vm.exec("node", "cat", "/tmp/prompt-fix").stdout == ""  # no prompt: the agent alone
    tmux = vm.exec("node", "tmux", "list-sessions", "-F", "#S").stdout.split()
    assert {"bivy-feature", "bivy-fix"} <= set(tmux)
    assert not (vm.state / "agent" / "feature" / "prompt").exists()  # read once, then gone

    # Each session's agent reports into its own agent.json (the Claude hook, run in the
    # container with the session's state dir), which `ls` joins.
    hook = "BIVY_AGENT_STATE_DIR=/bivy/state/feature /bivy/hook/agent-hook UserPromptSubmit"
    vm.exec("node", "sh", "-c", f"echo '{{}}' | {hook}")
    sessions = vm.sessions()
    assert sessions["feature"].state.value == "working"
    assert sessions["fix"].state.value == "idle"
    report = json.loads((vm.state / "agent" / "feature" / "agent.json").read_text())
    assert report["event"] == "UserPromptSubmit"
    assert not (vm.state / "agent" / "agent.json").exists() or (
        json.loads((vm.state / "agent" / "agent.json").read_text())["event"] != "UserPromptSubmit"
    )

    _assert_main_terminal(vm, workspace)  # a server `session new` started: the same

    # The web terminal: ?arg=fix opens that session; its tmux session, once gone, comes back
    # as a shell in the worktree with the session's environment.
    vm.exec("node", "tmux", "kill-session", "-t", "bivy-fix")
    output = _terminal(vm, ["fix"], "echo MARK:$BIVY_SESSION:$BIVY_AGENT_STATE_DIR:$(pwd):$X")
    assert f"MARK:fix:/bivy/state/fix:{fix.worktree}:1" in output, output[-2000:]
    assert "no session called nope" in _terminal(vm, ["nope"], "")
    assert "no session called x;y" in _terminal(vm, ["x;y"], "")

    # rm: refuses uncommitted work, then unpushed commits; --force removes it all.
    vm.exec("node", "sh", "-c", f"echo wip > {feature.worktree}/wip.txt")
    refused = vm.session("rm", "feature")
    assert refused.returncode != 0 and "uncommitted" in refused.stderr
    vm.exec("node", "rm", f"{feature.worktree}/wip.txt")
    refused = vm.session("rm", "feature")
    assert refused.returncode != 0 and "not pushed" in refused.stderr
    removed = vm.session("rm", "feature", "--force")
    assert removed.returncode == 0, removed.stderr
    assert list(vm.sessions()) == ["main", "fix"]
    assert not (vm.repo / ".bivy" / "worktrees" / "feature").exists()
    assert vm.exec("node", "git", "branch", "--list", "bivy/feature").stdout == ""
    assert "bivy-feature" not in vm.exec("node", "tmux", "list-sessions", "-F", "#S").stdout
    assert not (vm.state / "agent" / "feature").exists()
    # A session with nothing new goes without --force; a branch the user named stays.
    assert vm.session("rm", "fix").returncode == 0
    assert "fix/readme" in vm.exec("node", "git", "branch", "--list", "fix/readme").stdout
    assert vm.session("rm", "main").returncode != 0


def _assert_main_terminal(vm: SessionVm, workspace: str) -> None:
    """main's terminal (no ?arg): the repository folder, the agent's key, main's state dir."""
    output = _terminal(
        vm, [], "echo MARK:${ANTHROPIC_API_KEY#sk-ant-}:${BIVY_AGENT_STATE_DIR:-}:$(pwd)"
    )
    assert f"MARK:{API_KEY[7:]}::{workspace}" in output, output[-2000:]


def _terminal(vm: SessionVm, args: list[str], command: str, timeout: float = 30) -> str:
    """ttyd-session with ttyd's URL arguments, in a pty, as ttyd runs it for a client."""
    pid, fd = pty.fork()
    if pid == 0:
        os.execve(
            "/bin/bash",
            ["bash", str(vm.lib / "ttyd-session"), *args],
            {**vm.env, "TERM": "xterm-256color"},
        )
    output = b""
    typed = not command
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
            if command and typed and b"MARK:" in output.split(command.encode())[-1]:
                time.sleep(0.5)
                if select.select([fd], [], [], 0.5)[0]:
                    output += os.read(fd, 65536)
                break
    finally:
        os.write(fd, b"\x02d")  # detach from tmux (prefix C-b, d)
        time.sleep(0.5)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 9)
        os.waitpid(pid, 0)
        os.close(fd)
    return output.decode(errors="replace")


CODEX_KEY = "sk-proj-test-session-0123456789abcdef"


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_a_session_with_another_agent_than_the_workspaces(session_vm: SessionVm) -> None:
    """Codex next to the workspace's Claude Code: the app's description (its install, hooks,
    login) and its credential from this computer, all on `session new`'s stdin; npm installs it
    in the running container; its config dir persists on the host; it runs in its own tmux
    session with its credential; its hook reports into the session's own agent.json."""
    from app.agents import get_agent
    from app.cloudinit import render_session_agent
    from app.domain import AgentReport, AgentState

    vm = session_vm
    # A Codex session a backup brought back: its worktree and record, no Codex in this VM.
    git = ["git", "-C", str(vm.repo), "-c", "safe.directory=*"]
    subprocess.run([*git, "worktree", "add", "-q", "-b", "bivy/old", ".bivy/worktrees/old"],
                   check=True, capture_output=True)  # fmt: skip
    (vm.repo / ".git" / "info" / "exclude").write_text("/.bivy/\n")
    (vm.repo / ".bivy" / "worktrees" / "old" / "wip.txt").write_text("unsaved\n")
    subprocess.run(["chown", "-R", "1000:1000", str(vm.repo)], check=True)
    (vm.state / "sessions").mkdir()
    (vm.state / "sessions" / "old.json").write_text(
        json.dumps({"name": "old", "agent": "codex", "branch": "bivy/old", "base": "",
                    "worktree": "/elsewhere", "created_at": "2026-12-01T00:00:00Z"})
    )  # fmt: skip
    assert vm.session("new", "main", "--agent", "claude").returncode == 0
    old = vm.sessions()["old"]
    assert old.event == "SessionRestored" and "codex is not installed" in old.message
    description = {**render_session_agent(get_agent("codex")),
                   "credentials": {"OPENAI_API_KEY": CODEX_KEY}}  # fmt: skip
    payload = json.dumps({"prompt": None, "agent": description})
    refused = vm.session("new", "old", "--agent", "claude", stdin=payload)
    assert refused.returncode != 0 and "runs codex" in refused.stderr
    # Started again from the app: Codex is set up, the worktree stays as it was.
    result = vm.session("new", "old", "--agent", "codex", stdin=payload, timeout=900)
    assert result.returncode == 0, result.stderr + _log(vm)
    old = vm.sessions()["old"]
    assert old.event != "SessionRestored" and old.branch == "bivy/old"
    assert (vm.repo / ".bivy" / "worktrees" / "old" / "wip.txt").read_text() == "unsaved\n"
    tmux = vm.exec("node", "tmux", "list-sessions", "-F", "#S").stdout.split()
    assert "bivy-old" in tmux
    again = vm.session("new", "old", "--agent", "codex", stdin=payload)
    assert again.returncode != 0 and "already" in again.stderr
    result = vm.session("new", "review", "--agent", "codex", stdin=payload, timeout=900)
    assert result.returncode == 0, result.stderr + _log(vm)
    review = vm.sessions()["review"]
    assert (review.agent, review.branch) == ("codex", "bivy/review")

    # Installed in the container, found by a login shell as the remote user.
    assert vm.exec("node", "sh", "-lc", "codex --version").stdout.startswith("codex-cli ")
    # Its config dir is on the host under the state mount, linked where Codex looks.
    host_dir = vm.state / "agent" / ".agents" / "codex"
    assert vm.exec("node", "readlink", "/bivy/codex").stdout.strip() == "/bivy/state/.agents/codex"
    assert (host_dir / "config.toml").read_text().count("/bivy/hook/agents/codex/hook.js") >= 1
    assert "hooks" in vm.exec("node", "cat", "/etc/codex/requirements.toml").stdout
    assert CODEX_KEY in (host_dir / "auth.json").read_text()  # logged in from the key
    # Its credential: root-only on the host, the remote user's only in the container.
    host_env = vm.root / "etc" / "agents" / "codex.env"
    assert host_env.read_text() == f"OPENAI_API_KEY={CODEX_KEY}\n"
    assert host_env.stat().st_mode & 0o077 == 0
    listing = vm.exec("root", "stat", "-c", "%U %a", "/etc/bivy-agent-codex.env").stdout.split()
    assert listing == ["node", "600"]
    assert CODEX_KEY not in result.stdout + result.stderr + _log(vm)
    # Its terminal runs Codex (the TUI) with the key and the session's state dir.
    deadline = time.monotonic() + 60
    environ = ""
    while time.monotonic() < deadline and "OPENAI_API_KEY" not in environ:
        time.sleep(1)
        environ = vm.exec(
            "node", "sh", "-c",
            "for p in $(pgrep -u node -f codex); do tr '\\0' '\\n' < /proc/$p/environ; done",
            check=False,
        ).stdout  # fmt: skip
    assert f"OPENAI_API_KEY={CODEX_KEY}" in environ.splitlines(), _log(vm)
    assert "BIVY_AGENT_STATE_DIR=/bivy/state/review" in environ.splitlines()
    assert "CODEX_HOME=/bivy/codex" in environ.splitlines()
    # The adapter, run as Codex runs it with the session's environment, writes its agent.json.
    event = json.dumps({"session_id": "s", "hook_event_name": "UserPromptSubmit", "prompt": "go"})
    vm.exec(
        "node", "sh", "-c",
        f"echo '{event}' | BIVY_AGENT_STATE_DIR=/bivy/state/review "
        "node /bivy/hook/agents/codex/hook.js UserPromptSubmit",
    )  # fmt: skip
    report = AgentReport.model_validate_json(
        (vm.state / "agent" / "review" / "agent.json").read_text()
    )
    assert report.state is AgentState.WORKING
    assert vm.sessions()["review"].state is AgentState.WORKING
    assert vm.sessions()["main"].state is not AgentState.WORKING
    # A second session of the same agent needs nothing sent again.
    again = vm.session("new", "review-2", "--agent", "codex")
    assert again.returncode == 0, again.stderr + _log(vm)
    launcher = vm.lib / "hook" / "sessions" / "review-2.sh"
    assert "CODEX_HOME=/bivy/codex" in launcher.read_text()
    assert "/etc/bivy-agent-codex.env" in launcher.read_text()


@pytest.mark.timeout(1500)
def test_without_tmux_in_the_image_the_hosts_tmux_runs_the_session(
    session_vm: SessionVm, tmp_path: Path
) -> None:
    """An image without tmux: the session's tmux session is the host's (as main's terminal
    falls back to), running `devcontainer exec` into the container; rm ends it."""
    vm = session_vm
    vm.env["TMUX_TMPDIR"] = str(tmp_path / "tmux")  # a private server on this machine
    (tmp_path / "tmux").mkdir()
    cid = vm.container()["BIVY_CONTAINER_ID"]
    vm.engine.docker("exec", "-u", "root", cid, "sh", "-c", "rm -f $(command -v tmux)")
    assert vm.engine.docker("exec", cid, "sh", "-c", "command -v tmux", check=False).returncode
    try:
        _install_fake_agent(vm)
        assert vm.session("new", "main", "--agent", "claude").returncode == 0
        result = vm.session("new", "s1", "--agent", "claude", stdin=_payload("hello"))
        assert result.returncode == 0, result.stderr + _log(vm)
        host_tmux = ["tmux", "list-sessions", "-F", "#S"]
        listed = subprocess.run(host_tmux, env=vm.env, capture_output=True, text=True, check=False)
        assert "bivy-s1" in listed.stdout.split(), listed.stderr
        assert _wait_for(vm, "node", "/tmp/prompt-s1") == "hello"
        state_dir, cwd, user, _ = _wait_for(vm, "node", "/tmp/env-s1").strip().split("|")
        worktree = vm.sessions()["s1"].worktree
        assert (state_dir, cwd, user) == ("/bivy/state/s1", worktree, "node")
        assert vm.session("rm", "s1", "--force").returncode == 0
        listed = subprocess.run(host_tmux, env=vm.env, capture_output=True, text=True, check=False)
        assert "bivy-s1" not in listed.stdout.split()
    finally:
        subprocess.run(["tmux", "kill-server"], env=vm.env, capture_output=True, check=False)
