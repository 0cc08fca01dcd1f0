"""The bootstrap end to end: a real git clone, recorded stand-ins for the system tools.

apt-get, systemctl, docker, devcontainer, chown and the ttyd readiness probe are small scripts that
log their arguments (this machine has no Docker engine and must not change its services); git,
python3 and the status writer are real. The test checks the phases, the devcontainer call, the
hooks in the agent's config dir, and that the one-time git token is gone afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from app.domain import WorkspaceSpec
from tests.unit.cloudinit.vmtree import render_tree

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")

UP_RESULT = {
    "outcome": "success",
    "containerId": "c0ffee",
    "remoteUser": "node",
    "remoteWorkspaceFolder": "/workspaces/r",
}


def _stub(bin_dir: Path, name: str, body: str) -> None:
    path = bin_dir / name
    path.write_text(f'#!/bin/bash\necho "{name} $*" >> "$STUB_LOG"\n{body}\n')
    path.chmod(0o755)


def _make_vm(tmp_path: Path, devcontainer_exit: int = 0) -> tuple[dict[str, str], Path]:
    origin = tmp_path / "origin"
    subprocess.run(["git", "init", "-q", "-b", "main", str(origin)], check=True)
    (origin / "README.md").write_text("hello\n")
    git = ["git", "-C", str(origin), "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "init"], check=True)
    subprocess.run([*git, "branch", "feat/$(x)"], check=True)

    spec = WorkspaceSpec(name="w", repo_url="https://github.com/o/r.git", branch="feat/$(x)")
    env = render_tree(spec, tmp_path / "vm", git_token="ghp_once")
    with (tmp_path / "vm" / "etc" / "workspace.env").open("a") as handle:
        handle.write(f"BIVY_REPO_URL={origin}\nBIVY_REPO_DIR={tmp_path / 'workspaces' / 'r'}\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("apt-get", "systemctl", "chown", "ttyd", "tmux", "jq"):
        _stub(bin_dir, tool, "exit 0")
    _stub(bin_dir, "curl", "exit 0")
    _stub(bin_dir, "docker", 'case "$*" in *"id -u"*) echo 1000 ;; esac')
    up = json.dumps(UP_RESULT)
    _stub(bin_dir, "devcontainer", f"echo 'building…' >&2\necho '{up}'\nexit {devcontainer_exit}")
    log = tmp_path / "stub.log"
    env.update(PATH=f"{bin_dir}:{os.environ['PATH']}", STUB_LOG=str(log), GIT_CONFIG_NOSYSTEM="1")
    return env, log


def _run(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(tmp_path / "vm" / "lib" / "bootstrap")],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_bootstrap_reaches_ready(tmp_path: Path) -> None:
    env, log = _make_vm(tmp_path)
    result = _run(tmp_path, env)
    state = tmp_path / "vm" / "state"
    bootstrap_log = (state / "log" / "bootstrap.log").read_text()
    assert result.returncode == 0, bootstrap_log
    status = json.loads((state / "status.json").read_text())
    assert status["phase"] == "ready" and status["progress"] == 1
    assert status["lifetime_deadline"]
    clone = tmp_path / "workspaces" / "r"
    assert (clone / "README.md").read_text() == "hello\n"
    head = subprocess.run(
        ["git", "-C", str(clone), "branch", "--show-current"], capture_output=True, text=True
    )
    assert head.stdout.strip() == "feat/$(x)"
    assert not (tmp_path / "vm" / "etc" / "git-token").exists()
    assert "ghp_once" not in (clone / ".git" / "config").read_text()
    calls = log.read_text()
    assert "claude-code:1.0" in calls
    assert "--override-config" in calls  # the repo has no devcontainer.json: ours is used
    assert f"source={state / 'claude'},target=/bivy/claude" in calls
    # The hook scripts are the host's: the container runs them but cannot change them.
    assert "target=/bivy/hook,readonly" in calls
    assert (state / "claude").stat().st_mode & 0o777 == 0o700
    # The metadata guard is started first (its stand-in logs in call order).
    assert calls.index("systemctl start bivy-metadata-guard.service") < calls.index("devcontainer")
    assert "systemctl enable --now bivy-ttyd.service" in calls
    # Every tool was present (as on a baked image): nothing installed on the host.
    assert not [line for line in calls.splitlines() if line.startswith("apt-get ")]
    container = (state / "container.env").read_text()
    assert "BIVY_CONTAINER_ID=c0ffee" in container
    settings = json.loads((state / "claude" / "settings.json").read_text())
    assert "/bivy/hook/agent-hook Stop" in json.dumps(settings["hooks"]["Stop"])
    claude_state = json.loads((state / "claude" / ".claude.json").read_text())
    assert claude_state["customApiKeyResponses"]["approved"] == ["0123456789abcdefghij"]
    assert (state / "agent.json").is_symlink()


def test_rerunning_the_hook_merge_keeps_user_settings(tmp_path: Path) -> None:
    env, _ = _make_vm(tmp_path)
    claude = tmp_path / "vm" / "state" / "claude"
    claude.mkdir(parents=True)
    (claude / "settings.json").write_text(
        json.dumps(
            {
                "model": "opus",
                "hooks": {"Stop": [{"hooks": [{"type": "command", "command": "say done"}]}]},
            }
        )
    )
    assert _run(tmp_path, env).returncode == 0
    settings = json.loads((claude / "settings.json").read_text())
    assert settings["model"] == "opus"
    commands = [h["command"] for entry in settings["hooks"]["Stop"] for h in entry["hooks"]]
    assert commands == ["say done", "/bivy/hook/agent-hook Stop"]


def test_a_failed_build_reports_the_reason_and_log(tmp_path: Path) -> None:
    env, _ = _make_vm(tmp_path, devcontainer_exit=1)
    result = _run(tmp_path, env)
    assert result.returncode == 1
    status = json.loads((tmp_path / "vm" / "state" / "status.json").read_text())
    assert status["phase"] == "failed"
    assert status["error"] == "building the devcontainer failed"
    assert "building…" in status["log_tail"]


def test_a_failed_clone_forgets_the_token(tmp_path: Path) -> None:
    env, _ = _make_vm(tmp_path)
    with (tmp_path / "vm" / "etc" / "workspace.env").open("a") as handle:
        handle.write(f"BIVY_REPO_URL={tmp_path / 'missing'}\n")
    assert _run(tmp_path, env).returncode == 1
    status = json.loads((tmp_path / "vm" / "state" / "status.json").read_text())
    assert status["phase"] == "failed" and status["error"] == "cloning the repository failed"
    assert not (tmp_path / "vm" / "etc" / "git-token").exists()


def test_askpass_answers_from_the_token_file(tmp_path: Path) -> None:
    env, _ = _make_vm(tmp_path)
    askpass = tmp_path / "vm" / "lib" / "git-askpass"
    env["BIVY_GIT_TOKEN_FILE"] = str(tmp_path / "vm" / "etc" / "git-token")
    user = subprocess.run(
        [str(askpass), "Username for 'https://github.com': "],
        env=env,
        capture_output=True,
        text=True,
    )
    password = subprocess.run(
        [str(askpass), "Password for 'https://x@github.com': "],
        env=env,
        capture_output=True,
        text=True,
    )
    assert user.stdout == "x-access-token\n"
    assert password.stdout == "ghp_once"


def test_missing_tools_are_installed_from_apt_in_one_go(tmp_path: Path) -> None:
    env, log = _make_vm(tmp_path)
    # A PATH without tmux, ttyd, jq and docker (as on a fresh Ubuntu image); everything else real.
    missing = {"tmux", "ttyd", "jq", "docker"}
    bare = tmp_path / "bare-bin"
    bare.mkdir()
    for directory in ("/usr/local/bin", "/usr/bin", "/bin"):
        for tool in Path(directory).iterdir():
            if tool.name not in missing and not (bare / tool.name).exists():
                (bare / tool.name).symlink_to(tool)
    stubs = tmp_path / "bin"
    for name in missing - {"docker"}:
        (stubs / name).unlink()
    docker = stubs / "docker"
    docker.rename(tmp_path / "docker-later")
    # apt-get "installs" docker: from then on the stub is on the PATH.
    _stub(
        stubs,
        "apt-get",
        f'case "$*" in *install*) cp {tmp_path / "docker-later"} {stubs}/docker ;; esac',
    )
    env["PATH"] = f"{stubs}:{bare}"
    result = _run(tmp_path, env)
    state = tmp_path / "vm" / "state"
    assert result.returncode == 0, (state / "log" / "bootstrap.log").read_text()
    installs = [line for line in log.read_text().splitlines() if line.startswith("apt-get ")]
    assert installs[0] == "apt-get update -q"
    assert installs[1].startswith("apt-get install -y -q --no-install-recommends ")
    assert set(installs[1].split()[5:]) == {"tmux", "ttyd", "jq", "docker.io", "docker-buildx"}
    assert len(installs) == 2
    calls = log.read_text()
    assert "systemctl mask ttyd.service" in calls  # Ubuntu's own ttyd service must not take 7681
    assert calls.index("systemctl mask ttyd.service") < calls.index("apt-get install")
