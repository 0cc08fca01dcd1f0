"""A repository on this computer, shipped to the VM as a git bundle over SSH (issue 11 §2).

The VM never clones a local checkout by URL and never gets a git token for it: the app bundles
HEAD, every local branch and tag (``git bundle``), and, when asked, the uncommitted work as the
ref ``refs/bivy/uncommitted`` — a commit whose tree is the work tree including untracked files
that are not ignored, with HEAD as its parent. That commit is built with a temporary index and a
temporary object directory, so the user's index, work tree, refs and object store stay exactly as
they were. The bundle is uploaded with SFTP as ``dev`` to ``~/bivy-incoming/repo.bundle``; the
file ``repo.bundle.sha256`` (hex digest, one line) is written last and atomically: its presence
tells the VM's bootstrap the bundle is complete (notes/CONTRACTS.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import asyncssh

from app.domain import WorkspaceSpec
from app.domain.validation import is_local_repo, validate_local_repo_path
from app.errors import ActionFailed, HostKeyMismatch, InvalidInput, SSHError
from app.services.tunnels import SSHTarget, Tunnel, TunnelService

__all__ = [
    "BUNDLE_NAME",
    "INCOMING_DIR",
    "UNCOMMITTED_REF",
    "Bundle",
    "BundleJob",
    "LocalRepo",
    "inspect_local_repo",
    "looks_like_url",
    "make_bundle",
    "prepare_local_repo",
    "resolve_repo_source",
    "send_repository",
    "upload_bundle",
]

log = logging.getLogger(__name__)

#: Where the bundle goes on the VM, relative to dev's home (SFTP starts there).
INCOMING_DIR = "bivy-incoming"
BUNDLE_NAME = "repo.bundle"
#: The ref carrying the uncommitted work (parent: HEAD).
UNCOMMITTED_REF = "refs/bivy/uncommitted"

#: Variables that would point git at another repository, index or object store than asked.
_GIT_ENV_DROP = (
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_COMMON_DIR",
    "GIT_NAMESPACE",
    "GIT_CEILING_DIRECTORIES",
)
_SCP_LIKE_RE = re.compile(r"^[A-Za-z0-9._-]+@[A-Za-z0-9._-]+:")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class LocalRepo:
    """A git work tree on this computer, as inspected before a create.

    Attributes:
        path: the work tree's top-level folder (absolute).
        head: HEAD's commit id; branch: its branch (None when HEAD is detached).
        dirty: the work tree has changes or untracked (not ignored) files that a plain bundle
            would leave behind.
    """

    path: Path
    head: str
    branch: str | None
    dirty: bool


@dataclass(frozen=True)
class Bundle:
    """A bundle file ready to upload.

    Attributes:
        path: the file (in a temporary folder the caller removes).
        size: bytes; sha256: hex digest of the file.
        uncommitted: it carries ``refs/bivy/uncommitted``.
    """

    path: Path
    size: int
    sha256: str
    uncommitted: bool


def looks_like_url(value: str) -> bool:
    """True for ``scheme://…`` and scp-like ``user@host:path``; anything else is a path."""
    return "://" in value or bool(_SCP_LIKE_RE.match(value))


def _git_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _GIT_ENV_DROP}
    env.update({"GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C", "GIT_OPTIONAL_LOCKS": "0"})
    env.update(extra or {})
    return env


def _git_binary() -> str:
    git = shutil.which("git")
    if git is None:
        raise InvalidInput(
            "git is not installed on this computer, so a local repository cannot be sent",
            hint="Install git, or give the repository's URL instead of its folder",
        )
    return git


def _git(
    cwd: Path,
    *args: str,
    env: Mapping[str, str] | None = None,
    input: bytes | None = None,
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [_git_binary(), *args],
        cwd=cwd,
        env=_git_env(env),
        input=input,
        capture_output=True,
        check=False,
    )


def _checked(result: subprocess.CompletedProcess[bytes], what: str) -> str:
    if result.returncode != 0:
        message = result.stderr.decode("utf-8", "replace").strip().splitlines()
        reason = message[-1] if message else f"exit status {result.returncode}"
        raise ActionFailed(f"{what} failed: {reason[:300]}")
    return result.stdout.decode("utf-8", "replace").strip()


def resolve_repo_source(value: str, cwd: Path | None = None) -> str:
    """What ``--repo`` (or the dialog's field) means: a URL unchanged, or a checkout's folder.

    A path (relative ones from ``cwd``) must be a git work tree with at least one commit; the
    result is its top-level folder as an absolute path. Raises ``InvalidInput`` saying why not.
    """
    value = value.strip()
    if looks_like_url(value):
        return value
    return str(inspect_local_repo(Path(value) if cwd is None else cwd / value).path)


def inspect_local_repo(path: Path | str) -> LocalRepo:
    """Check that ``path`` is a git work tree with a commit and describe it (runs git)."""
    folder = Path(os.path.expanduser(str(path))).absolute()
    if not folder.is_dir():
        raise InvalidInput(
            f"{folder} is not a folder" if folder.exists() else f"there is no folder {folder}",
            hint="Give a repository URL, or the folder of a git checkout on this computer",
        )
    inside = _git(folder, "rev-parse", "--is-inside-work-tree")
    if inside.returncode != 0 or inside.stdout.strip() != b"true":
        raise InvalidInput(
            f"{folder} is not a git checkout (no work tree)",
            hint="Run `git init` and commit there, or give the repository's URL",
        )
    top = Path(_checked(_git(folder, "rev-parse", "--show-toplevel"), "git rev-parse"))
    head = _git(top, "rev-parse", "--verify", "-q", "HEAD^{commit}")
    if head.returncode != 0:
        raise InvalidInput(
            f"the git checkout {top} has no commit yet",
            hint="Commit something first (`git commit`): a bundle needs at least one commit",
        )
    shallow = _git(top, "rev-parse", "--is-shallow-repository")
    if shallow.stdout.strip() == b"true":
        # A bundle of it would name commits it does not hold: the VM could not clone it.
        raise InvalidInput(
            f"the git checkout {top} is a shallow clone (part of its history is missing)",
            hint="Fetch the whole history first (`git fetch --unshallow`), or give its URL",
        )
    try:
        validate_local_repo_path(str(top))
    except ValueError as exc:
        raise InvalidInput(f"{top}: {exc}") from None
    if not is_local_repo(str(top)):
        raise InvalidInput(f"{top} is not an absolute path")
    branch = _git(top, "symbolic-ref", "-q", "--short", "HEAD")
    status = _checked(
        _git(top, "status", "--porcelain", "--untracked-files=normal", "--ignore-submodules=none"),
        "git status",
    )
    return LocalRepo(
        path=top,
        head=head.stdout.decode().strip(),
        branch=(branch.stdout.decode().strip() or None) if branch.returncode == 0 else None,
        dirty=bool(status),
    )


def _objects_dir(top: Path) -> Path:
    objects = Path(_checked(_git(top, "rev-parse", "--git-path", "objects"), "git rev-parse"))
    return objects if objects.is_absolute() else (top / objects).resolve()


def _uncommitted_commit(repo: LocalRepo, work: Path) -> tuple[str, Path]:
    """Build the uncommitted-work commit with a temporary index and object directory.

    Returns the commit id and the object directory holding the new objects.
    """
    objects = work / "objects"
    objects.mkdir()
    env = {
        "GIT_INDEX_FILE": str(work / "index"),
        "GIT_OBJECT_DIRECTORY": str(objects),
        "GIT_ALTERNATE_OBJECT_DIRECTORIES": str(_objects_dir(repo.path)),
        "GIT_AUTHOR_NAME": "Bivy",
        "GIT_AUTHOR_EMAIL": "bivy@localhost",
        "GIT_COMMITTER_NAME": "Bivy",
        "GIT_COMMITTER_EMAIL": "bivy@localhost",
    }
    _checked(_git(repo.path, "read-tree", repo.head, env=env), "git read-tree")
    _checked(_git(repo.path, "add", "-A", "--", ".", env=env), "git add (temporary index)")
    tree = _checked(_git(repo.path, "write-tree", env=env), "git write-tree")
    commit = _checked(
        _git(
            repo.path,
            "commit-tree",
            tree,
            "-p",
            repo.head,
            "-m",
            "bivy: uncommitted changes",
            env=env,
        ),
        "git commit-tree",
    )
    return commit, objects


def make_bundle(repo: LocalRepo, directory: Path, *, include_uncommitted: bool) -> Bundle:
    """Write ``directory/repo.bundle``: HEAD, local branches and tags (+ uncommitted work).

    ``include_uncommitted`` adds ``refs/bivy/uncommitted`` only when the work tree is dirty (a
    clean tree has nothing to carry). Nothing in the user's repository is written.
    """
    target = directory / BUNDLE_NAME
    uncommitted = include_uncommitted and repo.dirty
    if not uncommitted:
        _checked(
            _git(repo.path, "bundle", "create", "-q", str(target), "HEAD", "--branches", "--tags"),
            "git bundle create",
        )
    else:
        work = directory / "work"
        work.mkdir()
        commit, objects = _uncommitted_commit(repo, work)
        # A scratch repository borrows the user's objects (and the new ones) through
        # alternates and holds copies of the refs, so the user's refs are never touched.
        scratch = work / "scratch.git"
        _checked(_git(work, "init", "-q", "--bare", str(scratch)), "git init")
        (scratch / "objects" / "info" / "alternates").write_text(
            f"{_objects_dir(repo.path)}\n{objects}\n", encoding="utf-8"
        )
        refs = _checked(
            _git(
                repo.path,
                "for-each-ref",
                "--format=%(objectname) %(refname)",
                "refs/heads",
                "refs/tags",
            ),
            "git for-each-ref",
        )
        updates = [
            f"create {ref} {sha}" for sha, ref in (ln.split(" ", 1) for ln in refs.splitlines())
        ]
        updates.append(f"create {UNCOMMITTED_REF} {commit}")
        stdin = ("\n".join(updates) + "\n").encode()
        _checked(_git(scratch, "update-ref", "--stdin", input=stdin), "git update-ref")
        if repo.branch:
            _checked(
                _git(scratch, "symbolic-ref", "HEAD", f"refs/heads/{repo.branch}"),
                "git symbolic-ref",
            )
        else:
            _checked(_git(scratch, "update-ref", "--no-deref", "HEAD", repo.head), "git update-ref")
        _checked(
            _git(
                scratch,
                "bundle",
                "create",
                "-q",
                str(target),
                "HEAD",
                "--branches",
                "--tags",
                UNCOMMITTED_REF,
            ),
            "git bundle create",
        )
        shutil.rmtree(work, ignore_errors=True)
    digest = hashlib.sha256()
    size = 0
    with target.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return Bundle(path=target, size=size, sha256=digest.hexdigest(), uncommitted=uncommitted)


ProgressHandler = Callable[[int, int], None]


async def upload_bundle(
    conn: asyncssh.SSHClientConnection,
    bundle: Bundle,
    *,
    incoming_dir: str = INCOMING_DIR,
    on_progress: ProgressHandler | None = None,
) -> None:
    """Upload ``bundle`` with SFTP, then write its ``.sha256`` last, atomically.

    A ``.sha256`` left by an earlier attempt is removed first, so the VM never pairs an old
    digest with a half-written bundle. ``on_progress(bytes_sent, total)`` follows the upload.
    """
    remote = f"{incoming_dir}/{BUNDLE_NAME}"
    digest_path = f"{remote}.sha256"
    partial = f"{digest_path}.tmp"

    def progress(_src: bytes, _dst: bytes, sent: int, total: int) -> None:
        if on_progress is not None:
            on_progress(sent, total)

    try:
        async with conn.start_sftp_client() as sftp:
            await sftp.makedirs(incoming_dir, exist_ok=True)
            await sftp.chmod(incoming_dir, 0o700)
            for stale in (digest_path, partial):
                if await sftp.exists(stale):
                    await sftp.remove(stale)
            await sftp.put(str(bundle.path), remote, progress_handler=progress)
            async with sftp.open(partial, "w") as handle:
                await handle.write(bundle.sha256 + "\n")
            if await sftp.exists(digest_path):
                await sftp.remove(digest_path)
            try:
                await sftp.posix_rename(partial, digest_path)
            except asyncssh.SFTPOpUnsupported:
                await sftp.rename(partial, digest_path)
    except (asyncssh.Error, OSError) as exc:
        reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None)
        raise SSHError(
            f"sending the repository bundle failed: {reason or type(exc).__name__}"
        ) from None
    log.info("repository bundle sent (%d bytes)", bundle.size)


class BundleJob:
    """Makes the bundle in a thread (while the VM boots) in a temporary folder it removes.

    Use as ``job = BundleJob(repo, include_uncommitted); job.start(); await job.result()`` and
    always ``await job.aclose()``: it waits for git to finish, then deletes the folder.
    """

    def __init__(self, repo: LocalRepo, *, include_uncommitted: bool) -> None:
        self.repo = repo
        self.include_uncommitted = include_uncommitted
        self._directory: Path | None = None
        self._future: asyncio.Future[Bundle] | None = None

    def start(self) -> None:
        if self._future is not None:
            return
        self._directory = Path(tempfile.mkdtemp(prefix="bivy-bundle-"))
        self._future = asyncio.get_running_loop().run_in_executor(
            None,
            lambda: make_bundle(
                self.repo, self._directory_path(), include_uncommitted=self.include_uncommitted
            ),
        )

    def _directory_path(self) -> Path:
        assert self._directory is not None
        return self._directory

    async def result(self) -> Bundle:
        self.start()
        assert self._future is not None
        return await asyncio.shield(self._future)

    async def aclose(self) -> None:
        """Wait (up to a minute) for a running git, then delete the temporary folder."""
        future, self._future = self._future, None
        if future is not None and not future.done():
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait({future}, timeout=60)
        if future is not None and future.done() and not future.cancelled():
            future.exception()  # retrieved, so asyncio does not log it as never retrieved
        directory, self._directory = self._directory, None
        if directory is not None:
            await asyncio.to_thread(shutil.rmtree, directory, True)


def _has_branch(repo: LocalRepo, branch: str) -> bool:
    result = _git(repo.path, "show-ref", "--verify", "-q", f"refs/heads/{branch}")
    return result.returncode == 0


async def prepare_local_repo(spec: WorkspaceSpec) -> tuple[WorkspaceSpec, BundleJob | None]:
    """For a local checkout: check it, pin the branch, and a (not yet started) bundle job.

    The branch checked out on the VM is the one given, else the checkout's current branch (so
    the VM works where the user does); with uncommitted work it must be the current one, since
    the changes are relative to HEAD. A URL gives ``(spec, None)``.
    """
    if not is_local_repo(spec.repo_url):
        return spec, None
    repo = await asyncio.to_thread(inspect_local_repo, spec.repo_url)
    branch = spec.branch or repo.branch
    if spec.branch and not await asyncio.to_thread(_has_branch, repo, spec.branch):
        raise InvalidInput(
            f"the checkout {repo.path} has no local branch {spec.branch!r}",
            hint="Only local branches are sent; check it out or create it first",
        )
    if spec.include_uncommitted and repo.dirty and spec.branch and spec.branch != repo.branch:
        raise InvalidInput(
            f"uncommitted changes are on {repo.branch or 'a detached HEAD'}, not on "
            f"{spec.branch!r}",
            hint="Leave out the branch, or switch to it before sending uncommitted changes",
        )
    spec = spec.model_copy(update={"repo_url": str(repo.path), "branch": branch})
    return spec, BundleJob(repo, include_uncommitted=spec.include_uncommitted)


SendProgress = Callable[[str, float], None]


def _percent_reporter(detail: str, report: SendProgress) -> ProgressHandler:
    """A progress handler that reports each whole percent once."""
    shown = -1

    def sent(done: int, total: int) -> None:
        nonlocal shown
        percent = int(100 * done / total) if total else 100
        if percent != shown:
            shown = percent
            report(detail, percent / 100)

    return sent


_T = TypeVar("_T")


async def send_when_sshd_answers(
    target: SSHTarget,
    client_key: str,
    send: Callable[[Tunnel], Awaitable[_T]],
    *,
    what: str,
    waiting: str,
    timeout: float,  # noqa: ASYNC109 - a deadline for the whole retry loop
    on_progress: SendProgress | None,
    retry_interval: float,
    sleep: Callable[[float], Awaitable[None]],
    clock: Callable[[], float],
) -> _T:
    """Wait for the VM's sshd (pinned host key), then ``send`` over the tunnel; retried until
    ``timeout`` while sshd does not answer or the connection drops (a host key mismatch is never
    retried). ``what`` names the cargo in messages ("the repository"), ``waiting`` is the first
    progress detail. Cancellable at any await."""
    deadline = clock() + timeout
    tunnels = TunnelService(client_key=client_key, connect_timeout=15.0)
    last_error: SSHError | None = None
    try:
        if on_progress is not None:
            on_progress(waiting, 0.0)
        while True:
            try:
                return await send(await tunnels.open(target))
            except HostKeyMismatch:
                raise
            except SSHError as exc:
                last_error = exc
                await tunnels.close_all()
                if clock() + retry_interval > deadline:
                    raise SSHError(
                        f"{what} could not be sent to workspace {target.workspace!r} "
                        f"within {timeout:g} s: {exc.message}",
                        hint="The VM's SSH server did not answer; check the VM in the "
                        "provider's console",
                    ) from None
                log.info("%s not sent yet (%s); retrying", what, exc.message)
                await sleep(retry_interval)
    finally:
        await tunnels.close_all()
        if last_error is not None:
            log.debug("last SSH error while sending %s: %s", what, last_error.message)


async def send_repository(
    job: BundleJob,
    target: SSHTarget,
    client_key: str,
    *,
    timeout: float = 1200.0,  # noqa: ASYNC109 - a deadline for the whole retry loop
    incoming_dir: str = INCOMING_DIR,
    on_progress: SendProgress | None = None,
    retry_interval: float = 3.0,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> Bundle:
    """Wait for the VM's sshd (pinned host key), then upload the bundle; retried until
    ``timeout`` while sshd does not answer or the connection drops. Cancellable at any await.

    ``on_progress(detail, fraction_of_this_step)`` reports what happens.
    """

    def report(detail: str, fraction: float) -> None:
        if on_progress is not None:
            on_progress(detail, fraction)

    async def send(tunnel: Tunnel) -> Bundle:
        bundle = await job.result()
        detail = f"Sending the repository ({bundle.size / 1e6:.1f} MB)"
        report(detail, 0.0)
        await upload_bundle(
            await tunnel.connection(),
            bundle,
            incoming_dir=incoming_dir,
            on_progress=_percent_reporter(detail, report),
        )
        report("Repository sent", 1.0)
        return bundle

    return await send_when_sshd_answers(
        target,
        client_key,
        send,
        what="the repository",
        waiting="Waiting for the VM's SSH server",
        timeout=timeout,
        on_progress=on_progress,
        retry_interval=retry_interval,
        sleep=sleep,
        clock=clock,
    )
