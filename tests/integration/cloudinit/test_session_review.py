"""The VM's ``session-review`` (review before merge) run for real in bash against real git
repositories laid out as on a VM: the repository folder with a session worktree (commits and
every kind of uncommitted change), pushes to a bare repository served by ``git http-backend``
over TLS behind basic auth that checks the token, and bundles.

What it proves: the diff stat (committed vs uncommitted, renames, binary, untracked) is right;
push refuses uncommitted work unless given a message, then commits it (as the files' owner, or
inside the devcontainer) and pushes with the token from stdin; the token works, and afterwards
it is nowhere on disk, nor in the repository, nor in RAM files; a hostile repository config
(fsmonitor, url rewrites, hooks, credential helper) written by the agent never runs or steers
anything.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.services.review import DiffStat, parse_stat
from tests.support.git_http import GitHttpServer, serve_git_http
from tests.support.local_repo import git
from tests.support.review_vm import (
    OWNER,
    Vm,
    files_containing,
    make_vm,
    owner_git,
    refs_of,
    root_owned,
    snapshot,
    write_file,
)

pytestmark = pytest.mark.needs_root

TOKEN = "ghp_ReviewPushToken0123456789abcdefXYZ"


@pytest.fixture(autouse=True)
def _root_reads_any_repository(monkeypatch: pytest.MonkeyPatch) -> None:
    """The test's own git reads (as root) of the owner's repository: not the script's env."""
    monkeypatch.setenv("GIT_CONFIG_COUNT", "1")
    monkeypatch.setenv("GIT_CONFIG_KEY_0", "safe.directory")
    monkeypatch.setenv("GIT_CONFIG_VALUE_0", "*")


@pytest.fixture
def vm() -> Iterator[Vm]:
    # Not under pytest's 0700 tmp dir: the owner (not root) must reach the repository.
    base = Path(tempfile.mkdtemp(prefix="bivy-review-", dir="/tmp"))
    base.chmod(0o755)
    try:
        yield make_vm(base / "vm")
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def remote(tmp_path: Path) -> Iterator[tuple[GitHttpServer, Path]]:
    served = tmp_path / "served"
    bare = served / "project.git"
    bare.parent.mkdir()
    subprocess.run(["git", "init", "-q", "--bare", str(bare)], check=True)
    with serve_git_http(served, token=TOKEN) as server:
        yield server, bare


def parse_stat_of(part: dict[str, str]) -> DiffStat:
    """One side of the script's raw JSON, parsed the app's way."""
    return parse_stat(
        base64.b64decode(part["numstat"]),
        base64.b64decode(part["name_status"]),
        base64.b64decode(part.get("untracked", "")),
    )


def files_of(part: dict[str, str]) -> dict[str, tuple[str, int | None, int | None]]:
    """path → (status, insertions, deletions) from the script's raw JSON."""
    return {f.path: (f.status, f.insertions, f.deletions) for f in parse_stat_of(part).files}


def test_diff_separates_committed_from_uncommitted(vm: Vm) -> None:
    data = vm.diff()
    assert data["branch"] == "bivy/s1"
    assert data["base_commit"] == vm.base  # the merge base, not main's moved HEAD
    assert data["head"] == git(vm.worktree, "rev-parse", "HEAD").strip()
    committed = files_of(data["committed"])  # type: ignore[arg-type]
    assert committed == {
        "src/app.py": ("M", 2, 1),
        "src/new.py": ("A", 3, 0),
        "new_name.txt": ("R", 0, 0),
        "gone.txt": ("D", 0, 1),
        "logo.bin": ("A", None, None),
        "README.md": ("M", 1, 0),
    }
    uncommitted = files_of(data["uncommitted"])  # type: ignore[arg-type]
    assert uncommitted == {
        ".gitignore": ("A", 1, 0),
        "src/app.py": ("M", 1, 1),
        "notes/todo.md": ("A", 2, 0),
    }
    untracked = {  # staged is not untracked, even if new
        f.path
        for f in parse_stat_of(data["uncommitted"]).files
        if f.untracked  # type: ignore[arg-type]
    }
    assert untracked == {"notes/todo.md"}
    log = base64.b64decode(str(data["log"])).decode()
    assert "agent: feature" in log and "agent: readme" in log and "main moves on" not in log


def test_diff_text_is_git_diff_stat(vm: Vm) -> None:
    done = vm.run("diff", "s1")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert out.startswith("Session s1: branch bivy/s1, 2 commit(s) since ")
    assert "6 files changed" in out
    assert "Uncommitted changes (in no commit yet):" in out
    assert "notes/todo.md" in out and "debug.log" not in out


def test_diff_leaves_no_trace(vm: Vm) -> None:
    before = snapshot(vm.repo)
    vm.diff()
    vm.run("diff", "s1")
    assert snapshot(vm.repo) == before
    assert not root_owned(vm.repo)
    assert not list(Path("/dev/shm").glob("bivy-review.*"))


def test_main_session_base_is_where_its_branch_started(vm: Vm) -> None:
    owner_git(vm.repo, "checkout", "-q", "-b", "scratch")  # not main's own branch
    owner_git(vm.repo, "checkout", "-q", "main")
    data = vm.diff("main")
    assert data["branch"] == "main"
    assert data["base_commit"] == vm.base  # the oldest reflog entry of main
    assert files_of(data["committed"]) == {"README.md": ("M", 1, 1)}  # type: ignore[arg-type]


def test_bad_names_and_missing_sessions(vm: Vm) -> None:
    assert vm.run("diff", "../etc").returncode == 2
    assert vm.run("diff", "Upper").returncode == 2
    missing = vm.run("diff", "nope")
    assert missing.returncode == 1 and "there is no session nope" in missing.stderr
    assert vm.run("frobnicate", "s1").returncode == 2


def test_push_refuses_uncommitted_work_without_a_message(
    vm: Vm, remote: tuple[GitHttpServer, Path]
) -> None:
    server, bare = remote
    done = vm.run(
        "push", "s1", "--remote-url", server.url_for("project.git"),
        stdin=TOKEN + "\n", env={"GIT_SSL_CAINFO": str(server.ca_file)},
    )  # fmt: skip
    assert done.returncode == 3, done.stderr
    assert "uncommitted changes in 3 file(s)" in done.stderr
    assert server.authorized == [] and server.refused == []  # nothing was sent
    assert refs_of(bare) == ""


def test_push_commits_then_pushes_with_the_token_and_forgets_it(
    vm: Vm, remote: tuple[GitHttpServer, Path]
) -> None:
    server, bare = remote
    # The agent owns .git/config: nothing it writes there may run or steer the push.
    marker = vm.root / "pwned"
    hostile = vm.root / "hostile.git"
    subprocess.run(["git", "init", "-q", "--bare", str(hostile)], check=True)
    config = {
        "core.fsmonitor": f"touch {marker}; false",
        "credential.helper": f"!f() {{ cat >{marker}.cred; }}; f",
        f"url.{hostile}.insteadOf": server.url_for(""),
        "core.hooksPath": str(vm.root / "hooks"),
    }
    for key, value in config.items():
        owner_git(vm.repo, "config", key, value)
    hooks = vm.root / "hooks"
    hooks.mkdir()
    hooks.chmod(0o755)
    for hook in ("pre-push", "pre-commit", "reference-transaction", "post-commit"):
        write_file(hooks / hook, f"#!/bin/sh\ntouch {marker}.{hook}\n")
        (hooks / hook).chmod(0o755)

    done = vm.run(
        "push", "s1", "--remote-url", server.url_for("project.git"),
        "--commit-message", "Review: the rest of it", "--author-name", "Ada Lovelace",
        "--author-email", "ada@example.invalid",
        stdin=TOKEN + "\n", env={"GIT_SSL_CAINFO": str(server.ca_file)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    # nothing the agent configured ran (checked before this test's own git reads the config)
    assert not list(vm.root.glob("pwned*"))
    for key in config:
        owner_git(vm.repo, "config", "--unset", key)
    result = json.loads(done.stdout)
    head = git(vm.worktree, "rev-parse", "HEAD").strip()
    assert result["commit"] == head and result["committed"] is True
    assert result["branch"] == "bivy/s1" and result["outcome"] == "[new branch]"
    # the commit is the user's, has every uncommitted change, and the worktree is clean
    assert git(vm.worktree, "log", "-1", "--format=%an <%ae>|%s") == (
        "Ada Lovelace <ada@example.invalid>|Review: the rest of it\n"
    )
    assert git(vm.worktree, "status", "--porcelain") == ""
    assert "notes/todo.md" in git(vm.worktree, "show", "--name-only", "--format=", "HEAD")
    # the token worked: the server saw it, and the branch arrived where it was sent
    assert server.refused and server.authorized
    assert any("git-receive-pack" in line for line in server.authorized)
    assert refs_of(bare) == f"{head} refs/heads/bivy/s1\n"
    assert refs_of(hostile) == ""
    # the commit was made as the files' owner, nothing in the repository belongs to root
    assert not root_owned(vm.repo)
    # `session rm` sees the branch as pushed
    assert git(vm.repo, "rev-parse", "refs/remotes/bivy-pushed/bivy/s1").strip() == head
    # the token is nowhere on disk or in RAM files afterwards
    assert files_containing(TOKEN.encode(), vm.root, Path("/dev/shm"), Path("/run")) == []
    assert TOKEN not in done.stdout + done.stderr


def test_wrong_token_fails_without_showing_it(vm: Vm, remote: tuple[GitHttpServer, Path]) -> None:
    server, bare = remote
    wrong = "ghp_WrongToken0000000000000000000000000"
    owner_git(vm.worktree, "add", "-A")
    owner_git(vm.worktree, "commit", "-q", "-m", "all")
    done = vm.run(
        "push", "s1", "--remote-url", server.url_for("project.git"),
        stdin=wrong + "\n", env={"GIT_SSL_CAINFO": str(server.ca_file)},
    )  # fmt: skip
    assert done.returncode == 1
    assert "pushing bivy/s1 to https://127.0.0.1:" in done.stderr
    assert wrong not in done.stderr + done.stdout
    assert refs_of(bare) == ""
    assert files_containing(wrong.encode(), vm.root, Path("/dev/shm")) == []


def test_push_needs_an_https_remote_and_a_token(vm: Vm) -> None:
    owner_git(vm.worktree, "add", "-A")
    owner_git(vm.worktree, "commit", "-q", "-m", "all")
    ssh = vm.run("push", "s1", "--remote-url", "git@github.com:o/r.git", stdin=TOKEN + "\n")
    assert ssh.returncode == 4 and "https only" in ssh.stderr
    creds = vm.run(
        "push", "s1", "--remote-url", "https://user:secret@example.invalid/r.git", stdin=""
    )
    assert creds.returncode == 1 and "no git token" in creds.stderr
    assert "secret" not in creds.stderr
    none = vm.run("push", "s1", stdin=TOKEN + "\n")  # the repository has no origin
    assert none.returncode == 4 and "no remote" in none.stderr


def test_commit_inside_the_devcontainer_when_there_is_one(vm: Vm, tmp_path: Path) -> None:
    """With container.env, the commit runs through `docker exec` as the container's user in the
    session's container folder (a stand-in docker maps that folder to the worktree here)."""
    calls = tmp_path / "docker-calls"
    docker = tmp_path / "docker"
    docker.write_text(
        "#!/bin/bash\n"
        f'printf "%s\\n" "$*" >>{calls}\n'
        "shift; env=()\n"
        'while [ $# -gt 0 ]; do case "$1" in -i) shift;; -u) shift 2;; -w) dir=$2; shift 2;;\n'
        '  -e) env+=("$2"); shift 2;; *) break;; esac; done\n'
        "shift\n"
        f"dir=${{dir/\\/workspaces\\/project/{vm.repo}}}\n"
        f'cd "$dir" && exec setpriv --reuid={OWNER} --regid={OWNER} --clear-groups '
        'env HOME=/nonexistent "${env[@]}" "$@"\n'
    )
    docker.chmod(0o755)
    (vm.root / "state" / "container.env").write_text(
        "BIVY_CONTAINER_ID=c0ffee\nBIVY_REMOTE_USER=node\n"
        "BIVY_REMOTE_WORKSPACE=/workspaces/project\n"
    )
    done = vm.run(
        "commit", "s1", "--commit-message", "from the review dialog",
        env={"BIVY_DOCKER": str(docker)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["commit"] == git(vm.worktree, "rev-parse", "HEAD").strip()
    call = calls.read_text()
    assert call.startswith("exec -i -u node -w /workspaces/project/.bivy/worktrees/s1 c0ffee sh")
    assert git(vm.worktree, "log", "-1", "--format=%s") == "from the review dialog\n"
    assert git(vm.worktree, "status", "--porcelain") == ""


def test_bundle_goes_to_the_callers_home(vm: Vm, tmp_path: Path) -> None:
    owner_git(vm.worktree, "add", "-A")
    owner_git(vm.worktree, "commit", "-q", "-m", "all")
    done = vm.run("bundle", "s1")  # no SUDO_USER: the state dir
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    bundle = Path(result["path"])
    assert bundle == vm.root / "state" / "outgoing" / "s1.bundle"
    assert (bundle.stat().st_mode & 0o777) == 0o600 and result["size"] == bundle.stat().st_size
    clone = tmp_path / "home-clone"
    heads = subprocess.run(
        ["git", "bundle", "list-heads", str(bundle)], capture_output=True, text=True, check=True
    ).stdout
    assert heads == f"{result['commit']} refs/heads/bivy/s1\n"
    subprocess.run(["git", "clone", "-q", "-b", "bivy/s1", str(bundle), str(clone)], check=True)
    assert (clone / "notes" / "todo.md").read_text() == "- one\n- two\n"


def test_script_passes_shellcheck(vm: Vm) -> None:
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck is needed (apt: shellcheck)"
    done = subprocess.run(
        [shellcheck, "-S", "style", "-x", str(vm.lib / "session-review")],
        capture_output=True,
        text=True,
        check=False,
        cwd=vm.lib,
    )
    assert done.returncode == 0, done.stdout


# -- helpers ---------------------------------------------------------------------------------


def test_environment_has_what_the_vm_has() -> None:
    for tool in ("git", "jq", "setpriv", "base64"):
        assert shutil.which(tool), f"{tool} is needed"
    assert os.geteuid() == 0, "the script runs as root on the VM"


def test_bundle_leaves_out_what_the_caller_has(vm: Vm, tmp_path: Path) -> None:
    owner_git(vm.worktree, "add", "-A")
    owner_git(vm.worktree, "commit", "-q", "-m", "all")
    head = git(vm.worktree, "rev-parse", "HEAD").strip()
    full = json.loads(vm.run("bundle", "s1").stdout)["size"]
    unknown = "0" * 40  # a commit the VM does not have is ignored
    done = vm.run("bundle", "s1", "--have", vm.base, "--have", unknown)
    assert done.returncode == 0, done.stderr
    thin = json.loads(done.stdout)
    assert thin["size"] < full
    verify = subprocess.run(
        ["git", "bundle", "verify", thin["path"]], cwd=vm.repo, capture_output=True, text=True
    )
    assert verify.returncode == 0 and vm.base in verify.stdout + verify.stderr  # a prerequisite
    # The caller has it all already: still a bundle (git refuses empty ones), and tiny.
    same = vm.run("bundle", "s1", "--have", head)
    assert same.returncode == 0, same.stderr
    heads = subprocess.run(
        ["git", "bundle", "list-heads", json.loads(same.stdout)["path"]],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert heads == f"{head} refs/heads/bivy/s1\n"
    assert vm.run("bundle", "s1", "--have", "not-a-sha").returncode == 2


def test_the_session_command_hands_diff_over(vm: Vm) -> None:
    """`session diff` (H5's VM command) runs this script once the app installed it."""
    assert (vm.lib / "session").exists()
    direct = vm.run("diff", "s1")
    handed = subprocess.run(
        ["bash", str(vm.lib / "session"), "diff", "s1"],
        env=vm.env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert handed.returncode == 0, handed.stderr
    assert handed.stdout == direct.stdout
