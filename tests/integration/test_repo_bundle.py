"""A local checkout shipped as a git bundle: real git, real sshd/SFTP, the VM's clone replayed
(``tests/support/local_repo.py``)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import asyncssh
import pytest

from app.errors import InvalidInput, SSHError
from app.services.repo_bundle import (
    UNCOMMITTED_REF,
    inspect_local_repo,
    make_bundle,
    resolve_repo_source,
    upload_bundle,
)
from tests.support.local_repo import clone_like_the_vm, git, make_repo, snapshot, tree_files
from tests.support.sshd import SshServer, start_sshd


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "project")


def test_inspect_describes_a_checkout_and_refuses_what_is_not_one(
    repo: Path, tmp_path: Path
) -> None:
    info = inspect_local_repo(repo / "src")  # a subfolder names its checkout
    assert info.path == repo
    assert info.branch == "feature"
    assert info.head == git(repo, "rev-parse", "HEAD").strip()
    assert info.dirty

    relative = os.path.relpath(repo, tmp_path)
    assert resolve_repo_source(relative, cwd=tmp_path) == str(repo)
    assert resolve_repo_source("https://example.com/x.git") == "https://example.com/x.git"
    assert resolve_repo_source("git@example.com:o/r.git") == "git@example.com:o/r.git"

    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(InvalidInput, match="not a git checkout"):
        inspect_local_repo(plain)
    with pytest.raises(InvalidInput, match="there is no folder"):
        resolve_repo_source("missing-dir", cwd=tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    git(empty, "init", "-q")
    with pytest.raises(InvalidInput, match="has no commit yet"):
        inspect_local_repo(empty)
    bare = tmp_path / "bare.git"
    git(tmp_path, "init", "-q", "--bare", str(bare))
    with pytest.raises(InvalidInput, match="not a git checkout"):
        inspect_local_repo(bare)
    shallow = tmp_path / "shallow"
    git(tmp_path, "clone", "-q", "--depth", "1", f"file://{repo}", str(shallow))
    with pytest.raises(InvalidInput, match="is a shallow clone") as info:
        inspect_local_repo(shallow)
    assert "--unshallow" in info.value.one_line()
    spaced = tmp_path / "with space"
    spaced.mkdir()
    git(spaced, "init", "-q")
    (spaced / "f").write_text("x")
    git(spaced, "add", "f")
    git(spaced, "commit", "-q", "-m", "x")
    with pytest.raises(InvalidInput, match="folder name"):
        inspect_local_repo(spaced)


def test_bundle_with_uncommitted_work_clones_back_exactly(repo: Path, tmp_path: Path) -> None:
    before = snapshot(repo)
    out = tmp_path / "out"
    out.mkdir()
    bundle = make_bundle(inspect_local_repo(repo), out, include_uncommitted=True)

    # the user's repository is exactly as it was: index, refs, HEAD, objects, status
    assert snapshot(repo) == before
    assert bundle.uncommitted
    assert bundle.size == bundle.path.stat().st_size
    assert bundle.sha256 == hashlib.sha256(bundle.path.read_bytes()).hexdigest()
    assert sorted(p.name for p in out.iterdir()) == ["repo.bundle"]  # scratch work removed

    heads = git(repo, "bundle", "list-heads", str(bundle.path))
    for ref in ("refs/heads/main", "refs/heads/feature", "refs/tags/v1", "refs/tags/light"):
        assert ref in heads
    assert UNCOMMITTED_REF in heads and "HEAD" in heads

    clone = tmp_path / "vm" / "project"
    clone.parent.mkdir()
    clone_like_the_vm(bundle.path, clone)
    assert git(clone, "symbolic-ref", "--short", "HEAD").strip() == "feature"
    assert git(clone, "rev-parse", "HEAD") == git(repo, "rev-parse", "HEAD")
    assert "origin/main" in git(clone, "branch", "-r")
    assert set(git(clone, "tag").split()) == {"v1", "light"}
    # the work tree matches, minus ignored files; the changes are uncommitted on the VM too
    expected = {k: v for k, v in tree_files(repo).items() if not k.startswith("build/")}
    expected.pop("debug.log")
    assert tree_files(clone) == expected
    status = git(clone, "status", "--porcelain", "--untracked-files=all").splitlines()
    assert sorted(line[3:] for line in status) == [
        "README.md",
        "data.bin",
        "gone.txt",
        "notes.txt",
        "src/app.py",
        "tool.sh",
    ]
    assert UNCOMMITTED_REF not in git(clone, "for-each-ref")


def test_bundle_without_uncommitted_work_has_only_commits(repo: Path, tmp_path: Path) -> None:
    before = snapshot(repo)
    bundle = make_bundle(inspect_local_repo(repo), tmp_path, include_uncommitted=False)
    assert snapshot(repo) == before
    assert not bundle.uncommitted
    assert UNCOMMITTED_REF not in git(repo, "bundle", "list-heads", str(bundle.path))
    clone = tmp_path / "clone"
    clone_like_the_vm(bundle.path, clone, branch="main")
    assert git(clone, "status", "--porcelain") == ""
    assert (clone / "README.md").read_text() == "hello\n"
    assert not (clone / "src" / "feature.py").exists()


def test_a_clean_tree_sends_no_uncommitted_ref_and_a_detached_head_clones(
    repo: Path, tmp_path: Path
) -> None:
    git(repo, "stash", "-q", "--include-untracked")
    git(repo, "checkout", "-q", "--detach", "main")
    info = inspect_local_repo(repo)
    assert (info.branch, info.dirty) == (None, False)
    bundle = make_bundle(info, tmp_path, include_uncommitted=True)
    assert not bundle.uncommitted
    clone = tmp_path / "clone"
    clone_like_the_vm(bundle.path, clone)
    assert git(clone, "rev-parse", "HEAD") == git(repo, "rev-parse", "HEAD")

    # detached on a commit no branch points at, with work on top: it comes along too
    (repo / "README.md").write_text("older base\n")
    git(repo, "commit", "-q", "-am", "only reachable from the detached HEAD")
    (repo / "wip.txt").write_text("work in progress\n")
    info = inspect_local_repo(repo)
    assert (info.branch, info.dirty) == (None, True)
    again = tmp_path / "again"
    again.mkdir()
    bundle = make_bundle(info, again, include_uncommitted=True)
    assert bundle.uncommitted
    clone = tmp_path / "clone-2"
    clone_like_the_vm(bundle.path, clone)
    assert git(clone, "rev-parse", "HEAD") == git(repo, "rev-parse", "HEAD")
    assert (clone / "wip.txt").read_text() == "work in progress\n"
    assert (clone / "README.md").read_text() == "older base\n"


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[SshServer]:
    # Ubuntu's and Debian's sshd_config have an sftp subsystem; the bare test config does not.
    server = start_sshd(tmp_path / "sshd", extra_config="Subsystem sftp internal-sftp\n")
    try:
        yield server
    finally:
        server.stop()


async def connect(sshd: SshServer) -> asyncssh.SSHClientConnection:
    return await asyncssh.connect(
        sshd.host,
        sshd.port,
        username=sshd.user,
        client_keys=[asyncssh.import_private_key(sshd.client_private_key)],
        known_hosts=([asyncssh.import_public_key(sshd.host_public_key)], [], []),
        agent_path=None,
        config=None,
    )


async def test_upload_over_sftp_writes_the_digest_last(
    repo: Path, tmp_path: Path, sshd: SshServer
) -> None:
    bundle = make_bundle(inspect_local_repo(repo), tmp_path, include_uncommitted=True)
    incoming = tmp_path / "home-dev" / "bivy-incoming"
    incoming.parent.mkdir()
    # an earlier, interrupted attempt left a digest behind: it must go before the new upload
    incoming.mkdir()
    (incoming / "repo.bundle.sha256").write_text("0" * 64 + "\n")
    seen: list[tuple[int, int, bool]] = []

    def progress(sent: int, total: int) -> None:
        seen.append((sent, total, (incoming / "repo.bundle.sha256").exists()))

    async with await connect(sshd) as conn:
        await upload_bundle(conn, bundle, incoming_dir=str(incoming), on_progress=progress)
    assert seen and seen[-1][:2] == (bundle.size, bundle.size)
    assert not any(digest_present for _, _, digest_present in seen)
    assert (incoming / "repo.bundle").read_bytes() == bundle.path.read_bytes()
    assert (incoming / "repo.bundle.sha256").read_text() == bundle.sha256 + "\n"
    assert sorted(p.name for p in incoming.iterdir()) == ["repo.bundle", "repo.bundle.sha256"]
    assert incoming.stat().st_mode & 0o777 == 0o700
    check = subprocess.run(
        ["sha256sum", "-c", "-"],
        input=f"{bundle.sha256}  repo.bundle\n",
        cwd=incoming,
        text=True,
        capture_output=True,
        check=False,
    )
    assert check.returncode == 0, check.stderr
    clone = tmp_path / "vm-clone"
    clone_like_the_vm(incoming / "repo.bundle", clone)
    assert (clone / "notes.txt").read_text() == "untracked but not ignored\n"


async def test_upload_failure_is_an_ssh_error(repo: Path, tmp_path: Path, sshd: SshServer) -> None:
    bundle = make_bundle(inspect_local_repo(repo), tmp_path, include_uncommitted=False)
    blocker = tmp_path / "file-not-dir"
    blocker.write_text("x")
    async with await connect(sshd) as conn:
        with pytest.raises(SSHError, match="sending the repository bundle failed"):
            await upload_bundle(conn, bundle, incoming_dir=str(blocker / "sub"))


async def test_upload_can_be_cancelled(repo: Path, tmp_path: Path, sshd: SshServer) -> None:
    big = tmp_path / "big"
    big.mkdir()
    bundle = make_bundle(inspect_local_repo(repo), big, include_uncommitted=False)
    # make the file large enough that the upload is still running when cancelled
    with bundle.path.open("ab") as handle:
        handle.write(os.urandom(64 << 20))
    incoming = tmp_path / "incoming"
    started = asyncio.Event()

    def progress(sent: int, total: int) -> None:
        started.set()

    async with await connect(sshd) as conn:
        task = asyncio.create_task(
            upload_bundle(conn, bundle, incoming_dir=str(incoming), on_progress=progress)
        )
        await asyncio.wait_for(started.wait(), 30)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert not (incoming / "repo.bundle.sha256").exists()
