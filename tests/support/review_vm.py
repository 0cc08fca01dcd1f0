"""A VM's repository with a session for the review tests (``session-review``): the rendered VM
tree (BIVY_*_DIR), the repository folder (main) and session s1's worktree with commits and every
kind of uncommitted change, owned by a non-root uid as the devcontainer user's files are.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from app.cloudinit import render_cloud_config
from app.domain import WorkspaceSpec
from tests.support.local_repo import GIT_ENV, git
from tests.unit.cloudinit.vmtree import inputs_for, materialize

OWNER = 61234  # the devcontainer user's uid on the VM host (not root, not anyone here)


def install_review_script(lib: Path) -> Path:
    """``session-review`` at its VM path, rendered exactly as the app sends it."""
    from app.services.review import review_script

    target = lib / "session-review"
    target.write_text(review_script())
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


def write_file(path: Path, text: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)


def make_home_repo(path: Path) -> Path:
    """The repository's first commit (a user's checkout, or the VM's own repository)."""
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    write_file(path / "README.md", "hello\n")
    write_file(path / "src" / "app.py", "print('v1')\n")
    write_file(path / "old_name.txt", "one\ntwo\nthree\nfour\nfive\n")
    write_file(path / "gone.txt", "bye\n")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "first")
    return path


def make_vm(
    root: Path,
    *,
    owner: int = OWNER,
    source: Path | None = None,
    repo_url: str = "https://example.invalid/o/project.git",
) -> Vm:
    """A rendered VM tree, its repository (main) and session s1's worktree with work in it.

    ``source``: the repository arrived from this checkout (cloned as the bootstrap clones a
    bundle: local branches, no remote left); else it is made here.
    """
    spec = WorkspaceSpec(name="w", repo_url=repo_url)
    env = materialize(render_cloud_config(inputs_for(spec)), root)
    install_review_script(root / "lib")
    repo = root / "workspaces" / "project"
    if source is None:
        make_home_repo(repo)
    else:
        repo.parent.mkdir(parents=True)
        git(repo.parent, "clone", "-q", "-b", "main", str(source), str(repo))
        git(repo, "remote", "remove", "origin")
    base = git(repo, "rev-parse", "HEAD").strip()
    with (repo / ".git" / "info" / "exclude").open("a") as exclude:
        exclude.write(".bivy/\n")
    worktree = repo / ".bivy" / "worktrees" / "s1"
    git(repo, "worktree", "add", "-q", "-b", "bivy/s1", str(worktree), base)
    # committed on the session's branch: a change, a new file, a rename, a deletion, binary
    write_file(worktree / "src" / "app.py", "print('v2')\nprint('more')\n")
    write_file(worktree / "src" / "new.py", "A = 1\nB = 2\nC = 3\n")
    git(worktree, "mv", "old_name.txt", "new_name.txt")
    git(worktree, "rm", "-q", "gone.txt")
    write_file(worktree / "logo.bin", bytes(range(256)) * 8)
    git(worktree, "add", "-A")
    git(worktree, "commit", "-q", "-m", "agent: feature")
    write_file(worktree / "README.md", "hello\nworld\n")
    git(worktree, "add", "-A")
    git(worktree, "commit", "-q", "-m", "agent: readme")
    # uncommitted: staged, unstaged, untracked (and an ignored file that must not show)
    write_file(worktree / ".gitignore", "*.log\n")
    git(worktree, "add", ".gitignore")
    write_file(worktree / "src" / "app.py", "print('v3')\nprint('more')\n")
    write_file(worktree / "notes" / "todo.md", "- one\n- two\n")
    write_file(worktree / "debug.log", "ignored\n")
    # main meanwhile moves on (the diff is against the merge base)
    write_file(repo / "README.md", "hello from main\n")
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
    return git(cwd, *args) if os.geteuid() != 0 else as_owner(cwd, "git", *args)


def as_owner(cwd: Path, *argv: str) -> str:
    done = subprocess.run(
        ["setpriv", f"--reuid={OWNER}", f"--regid={OWNER}", "--clear-groups", *argv],
        cwd=cwd,
        env={**os.environ, **GIT_ENV, "HOME": "/nonexistent"},
        capture_output=True,
        check=True,
    )
    return done.stdout.decode()


def refs_of(bare: Path) -> str:
    return git(bare, "for-each-ref", "--format=%(objectname) %(refname)")


def root_owned(tree: Path) -> list[Path]:
    return [p for p in [tree, *tree.rglob("*")] if p.lstat().st_uid == 0]


def files_containing(needle: bytes, *roots: Path) -> list[Path]:
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
