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
from dataclasses import dataclass
from pathlib import Path

import pytest

from app.cloudinit.render import render_cloud_config
from app.domain import WorkspaceSpec
from tests.support.git_http import GitHttpServer, serve_git_http
from tests.support.local_repo import GIT_ENV, git
from tests.unit.cloudinit.vmtree import inputs_for, materialize

pytestmark = pytest.mark.needs_root

TOKEN = "ghp_ReviewPushToken0123456789abcdefXYZ"
OWNER = 61234  # the devcontainer user's uid on the VM host (not root, not anyone here)


def install_review_script(lib: Path) -> Path:
    """``session-review`` as the cloud-config installs it (rendered, comment lines stripped),
    also where the cloud-config does not carry it (yet)."""
    from app.cloudinit.render import LIB_DIR, _environment, _strip_comments, template_dir

    target = lib / "session-review"
    if not target.exists():
        template = _environment(template_dir()).get_template("scripts/session-review.sh")
        target.write_text(_strip_comments(template.render(lib_dir=LIB_DIR)))
        target.chmod(0o755)
    return target


@dataclass
class Vm:
    root: Path
    env: dict[str, str]
    repo: Path
    worktree: Path
    base: str

    @property
    def lib(self) -> Path:
        return self.root / "lib"

    def run(
        self, *args: str, stdin: str = "", env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(self.lib / "session-review"), *args],
            input=stdin,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def diff(self, session: str = "s1") -> dict[str, object]:
        done = self.run("diff", session, "--json")
        assert done.returncode == 0, done.stderr
        data: dict[str, object] = json.loads(done.stdout)
        return data


def _write(path: Path, text: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)


def make_vm(root: Path, *, owner: int = OWNER) -> Vm:
    """A rendered VM tree, its repository (main) and session s1's worktree with work in it."""
    spec = WorkspaceSpec(name="w", repo_url="https://example.invalid/o/project.git")
    env = materialize(render_cloud_config(inputs_for(spec)), root)
    install_review_script(root / "lib")
    repo = root / "workspaces" / "project"
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    _write(repo / "README.md", "hello\n")
    _write(repo / "src" / "app.py", "print('v1')\n")
    _write(repo / "old_name.txt", "one\ntwo\nthree\nfour\nfive\n")
    _write(repo / "gone.txt", "bye\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "first")
    base = git(repo, "rev-parse", "HEAD").strip()
    with (repo / ".git" / "info" / "exclude").open("a") as exclude:
        exclude.write(".bivy/\n")
    worktree = repo / ".bivy" / "worktrees" / "s1"
    git(repo, "worktree", "add", "-q", "-b", "bivy/s1", str(worktree), base)
    # committed on the session's branch: a change, a new file, a rename, a deletion, binary
    _write(worktree / "src" / "app.py", "print('v2')\nprint('more')\n")
    _write(worktree / "src" / "new.py", "A = 1\nB = 2\nC = 3\n")
    git(worktree, "mv", "old_name.txt", "new_name.txt")
    git(worktree, "rm", "-q", "gone.txt")
    _write(worktree / "logo.bin", bytes(range(256)) * 8)
    git(worktree, "add", "-A")
    git(worktree, "commit", "-q", "-m", "agent: feature")
    _write(worktree / "README.md", "hello\nworld\n")
    git(worktree, "add", "-A")
    git(worktree, "commit", "-q", "-m", "agent: readme")
    # uncommitted: staged, unstaged, untracked (and an ignored file that must not show)
    _write(worktree / ".gitignore", "*.log\n")
    git(worktree, "add", ".gitignore")
    _write(worktree / "src" / "app.py", "print('v3')\nprint('more')\n")
    _write(worktree / "notes" / "todo.md", "- one\n- two\n")
    _write(worktree / "debug.log", "ignored\n")
    # main meanwhile moves on (the diff is against the merge base)
    _write(repo / "README.md", "hello from main\n")
    git(repo, "commit", "-q", "-am", "main moves on")
    sessions = root / "state" / "sessions"
    sessions.mkdir(parents=True)
    (sessions / "s1.json").write_text(
        json.dumps(
            {
                "name": "s1",
                "agent": "claude",
                "branch": "bivy/s1",
                "base": base,
                "worktree": "/workspaces/project/.bivy/worktrees/s1",
                "created_at": "2026-12-02T01:00:00Z",
            }
        )
    )
    with (root / "etc" / "workspace.env").open("a") as env_file:
        env_file.write(f"BIVY_REPO_DIR={repo}\n")
    subprocess.run(["chown", "-R", f"{owner}:{owner}", str(repo)], check=True)
    return Vm(root=root, env=env, repo=repo, worktree=worktree, base=base)


def owner_git(cwd: Path, *args: str) -> str:
    """git as the files' owner (as the agent in the container would run it)."""
    return git(cwd, *args) if os.geteuid() != 0 else _as_owner(cwd, "git", *args)


def _as_owner(cwd: Path, *argv: str) -> str:
    done = subprocess.run(
        ["setpriv", f"--reuid={OWNER}", f"--regid={OWNER}", "--clear-groups", *argv],
        cwd=cwd,
        env={**os.environ, **GIT_ENV, "HOME": "/nonexistent"},
        capture_output=True,
        check=True,
    )
    return done.stdout.decode()


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


def files_of(part: dict[str, str]) -> dict[str, tuple[str, int | None, int | None]]:
    """path → (status, insertions, deletions) from the script's raw JSON (parsed the app's way)."""
    from app.services.review import parse_stat

    stat = parse_stat(
        base64.b64decode(part["numstat"]),
        base64.b64decode(part["name_status"]),
        base64.b64decode(part.get("untracked", "")),
    )
    return {f.path: (f.status, f.insertions, f.deletions) for f in stat.files}


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
    assert not _root_owned(vm.repo)
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
    assert _refs(bare) == ""


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
        _write(hooks / hook, f"#!/bin/sh\ntouch {marker}.{hook}\n")
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
    assert _refs(bare) == f"{head} refs/heads/bivy/s1\n"
    assert _refs(hostile) == ""
    # the commit was made as the files' owner, nothing in the repository belongs to root
    assert not _root_owned(vm.repo)
    # `session rm` sees the branch as pushed
    assert git(vm.repo, "rev-parse", "refs/remotes/bivy-pushed/bivy/s1").strip() == head
    # the token is nowhere on disk or in RAM files afterwards
    assert _files_containing(TOKEN.encode(), vm.root, Path("/dev/shm"), Path("/run")) == []
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
    assert _refs(bare) == ""
    assert _files_containing(wrong.encode(), vm.root, Path("/dev/shm")) == []


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


def _refs(bare: Path) -> str:
    return git(bare, "for-each-ref", "--format=%(objectname) %(refname)")


def _root_owned(tree: Path) -> list[Path]:
    return [p for p in [tree, *tree.rglob("*")] if p.lstat().st_uid == 0]


def _files_containing(needle: bytes, *roots: Path) -> list[Path]:
    found = []
    for root in roots:
        for folder, _dirs, names in os.walk(root, onerror=lambda _exc: None):
            for name in names:
                path = Path(folder) / name
                try:
                    if path.is_file() and not path.is_symlink() and needle in path.read_bytes():
                        found.append(path)
                except OSError:
                    continue
    return found


def snapshot(repo: Path) -> dict[str, object]:
    """Refs, index bytes and loose objects of the repository and its worktrees."""
    git_dir = repo / ".git"
    return {
        "files": sorted(
            (str(p.relative_to(git_dir)), p.stat().st_mtime_ns, p.stat().st_size)
            for p in git_dir.rglob("*")
            if p.is_file()
        ),
        "status": git(repo / ".bivy" / "worktrees" / "s1", "status", "--porcelain"),
    }


def test_environment_has_what_the_vm_has() -> None:
    for tool in ("git", "jq", "setpriv", "base64"):
        assert shutil.which(tool), f"{tool} is needed"
    assert os.geteuid() == 0, "the script runs as root on the VM"
