"""A git checkout like a user's (unpushed branches, tags, every kind of uncommitted change),
and the VM's side of a bundle (clone, apply the uncommitted ref) replayed with real git.

The VM side (``cloudinit/scripts/bootstrap.sh``, notes/CONTRACTS.md) clones from the bundle,
checks out the bundle's HEAD branch, and applies ``git diff --binary HEAD refs/bivy/uncommitted``
with ``git apply`` so the changes stay uncommitted. ``clone_like_the_vm`` does the same here.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

UNCOMMITTED_REF = "refs/bivy/uncommitted"

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Test",
    "GIT_AUTHOR_EMAIL": "test@example.invalid",
    "GIT_COMMITTER_NAME": "Test",
    "GIT_COMMITTER_EMAIL": "test@example.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_OPTIONAL_LOCKS": "0",  # so `git status` here never rewrites the index itself
}


def git(cwd: Path, *args: str, input: bytes | None = None) -> str:
    result = subprocess.run(
        ["git", *args],
        cwd=cwd,
        env={**os.environ, **GIT_ENV},
        input=input,
        capture_output=True,
        check=True,
    )
    return result.stdout.decode()


def snapshot(repo: Path) -> dict[str, object]:
    """Everything a bundle must leave untouched: index bytes, refs, objects, status."""
    git_dir = repo / ".git"
    objects = sorted(
        str(p.relative_to(git_dir / "objects"))
        for p in (git_dir / "objects").rglob("*")
        if p.is_file()
    )
    return {
        "index": hashlib.sha256((git_dir / "index").read_bytes()).hexdigest(),
        "refs": git(repo, "for-each-ref", "--format=%(objectname) %(refname)"),
        "head": (git_dir / "HEAD").read_text(),
        "objects": objects,
        "status": git(repo, "status", "--porcelain", "--untracked-files=all"),
    }


def make_repo(path: Path) -> Path:
    """A checkout with unpushed branches/tags and every kind of uncommitted change."""
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    (path / ".gitignore").write_text("build/\n*.log\n")
    (path / "README.md").write_text("hello\n")
    (path / "gone.txt").write_text("to be deleted\n")
    (path / "data.bin").write_bytes(bytes(range(256)) * 4)
    (path / "src").mkdir()
    (path / "src" / "app.py").write_text("print('v1')\n")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "first")
    git(path, "tag", "-a", "v1", "-m", "release 1")
    git(path, "checkout", "-q", "-b", "feature")
    (path / "src" / "feature.py").write_text("FEATURE = True\n")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "feature work (never pushed)")
    git(path, "tag", "light")
    # uncommitted: a staged change, an unstaged change, a deletion, binary, untracked, ignored
    (path / "README.md").write_text("hello\nstaged line\n")
    git(path, "add", "README.md")
    (path / "src" / "app.py").write_text("print('v2, not committed')\n")
    (path / "gone.txt").unlink()
    (path / "data.bin").write_bytes(bytes(reversed(range(256))) * 4)
    (path / "notes.txt").write_text("untracked but not ignored\n")
    (path / "tool.sh").write_text("#!/bin/sh\necho tool\n")
    (path / "tool.sh").chmod(0o755)
    (path / "build").mkdir()
    (path / "build" / "out.o").write_text("ignored\n")
    (path / "debug.log").write_text("ignored too\n")
    return path


def clone_like_the_vm(bundle: Path, target: Path, branch: str | None = None) -> None:
    """What the bootstrap does with ``repo.bundle`` (notes/CONTRACTS.md)."""
    args = ["clone", "-q", *(["--branch", branch] if branch else []), str(bundle), str(target)]
    git(target.parent, *args)
    heads = git(target, "bundle", "list-heads", str(bundle))
    if UNCOMMITTED_REF in heads:
        git(target, "fetch", "-q", str(bundle), f"{UNCOMMITTED_REF}:{UNCOMMITTED_REF}")
        diff = subprocess.run(
            ["git", "diff", "--binary", "HEAD", UNCOMMITTED_REF],
            cwd=target,
            capture_output=True,
            check=True,
        ).stdout
        git(target, "apply", input=diff)
        git(target, "update-ref", "-d", UNCOMMITTED_REF)


def tree_files(root: Path) -> dict[str, tuple[bytes, bool]]:
    """Relative path → (content, executable) for every file outside .git."""
    files = {}
    for path in root.rglob("*"):
        if ".git" in path.relative_to(root).parts or not path.is_file():
            continue
        files[str(path.relative_to(root))] = (path.read_bytes(), os.access(path, os.X_OK))
    return files
