"""Review before merge (issue 15): what a session changed, and getting its branch out of the VM.

Over the workspace's SSH connection (pinned host key) the app runs the VM's
``sudo -n /usr/local/lib/bivy/session-review`` (``cloudinit/scripts/session-review.sh``):

- ``diff``: the session's changes against its base — committed (``base...HEAD``) and, apart,
  the uncommitted ones (untracked files included) — as raw ``git diff --numstat -z`` /
  ``--name-status -z`` data that :func:`parse_stat` turns into :class:`DiffStat`.
- ``push`` (a repository cloned by URL): the VM pushes the session's branch to the repository
  with the user's git token from the keychain, sent on the command's stdin and used once by the
  VM (RAM file, deleted at once, askpass reads it through an inherited fd): never on its disk,
  in a command line or a log. Only https remotes.
- bring home (a repository that came from this computer as a git bundle): the VM bundles the
  branch, the app downloads it over SFTP, deletes it on the VM, and fetches it into the user's
  checkout as ``bivy/<session>`` — the checked-out branch, the index and the work tree are never
  touched.

Uncommitted work: ``push`` refuses it (:class:`UncommittedWork`) unless a commit message is
given; then the VM commits all of it first (in the devcontainer, as its user, with the user's
git identity from this computer when there is one).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import asyncssh

from app.cloudinit import LIB_DIR
from app.domain.validation import is_local_repo
from app.errors import ActionFailed, InvalidInput, SSHError
from app.services.registry import Registry, WorkspaceRecord
from app.services.repo_bundle import inspect_local_repo
from app.services.review_diff import (
    Commit,
    DiffStat,
    FileChange,
    SessionDiff,
    parse_diff,
    parse_stat,
)
from app.services.tunnels import SSHTarget, Tunnel, TunnelService
from app.settings import SecretKeys, SecretStore

__all__ = [
    "GIT_TOKEN_ENV",
    "REVIEW_COMMAND",
    "SESSION_NAME_RE",
    "Commit",
    "DiffStat",
    "FileChange",
    "GitIdentity",
    "MissingGitToken",
    "PushResult",
    "PushTarget",
    "ReviewService",
    "SessionDiff",
    "UncommittedWork",
    "local_git_identity",
    "parse_diff",
    "parse_stat",
    "review_script",
]

log = logging.getLogger(__name__)

#: The VM's review command (``session diff|push`` there hand over to it). The app installs it
#: (its own version) on first use in each workspace instead of shipping it in the user data.
REVIEW_COMMAND = f"{LIB_DIR}/session-review"
#: Puts stdin at $1 (mode 0755) unless a file with sha256 $2 is there already; run as root.
_INSTALL = (
    'set -e; [ -d "${1%/*}" ] || exit 3; '
    'if [ -f "$1" ] && [ "$(sha256sum <"$1" | cut -c1-64)" = "$2" ]; then exit 0; fi; '
    'tmp=$(mktemp "$1.XXXXXX"); cat >"$tmp"; '
    '[ "$(sha256sum <"$tmp" | cut -c1-64)" = "$2" ] || { rm -f "$tmp"; exit 4; }; '
    'chmod 0755 "$tmp"; mv -f "$tmp" "$1"'
)
#: A session's name (notes/CONTRACTS2.md).
SESSION_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,29}$")
#: The script's exit statuses with a meaning of their own.
EXIT_UNCOMMITTED = 3
EXIT_NO_REMOTE = 4
#: Branches brought home land under this prefix in the user's checkout.
HOME_BRANCH_PREFIX = "bivy/"

ProgressCallback = Callable[[str, float | None], None]


@functools.lru_cache(maxsize=1)
def review_script() -> str:
    """``cloudinit/scripts/session-review.sh`` rendered as the cloud-config would install it.

    The app installs it on the VM at :data:`REVIEW_COMMAND` on first use (over SSH, checked by
    its sha256): it then needs no room in the user data (Hetzner's 32 KiB are taken), and every
    VM, also one made by an older Bivy, runs the script of this app. It uses the VM's lib.sh
    and git-askpass.
    """
    from app.cloudinit.templates import environment as _environment
    from app.cloudinit.templates import strip_comments as _strip_comments
    from app.cloudinit.templates import template_dir

    template = _environment(template_dir()).get_template("scripts/session-review.sh")
    return _strip_comments(template.render(lib_dir=LIB_DIR))


#: A git token here wins over the keychain's (as the agents' credentials do).
GIT_TOKEN_ENV = "BIVY_GIT_TOKEN"


class MissingGitToken(InvalidInput):
    """No git token is set (environment or keychain) for a push by URL."""

    default_hint = (
        f"Give a token with write access to the repository (the review dialog asks for one; "
        f"or set ${GIT_TOKEN_ENV})"
    )


class UncommittedWork(ActionFailed):
    """The session has uncommitted changes and no commit message was given."""

    default_hint = "Give a commit message to commit them first, or commit from its terminal"


# -- push / bring home -------------------------------------------------------------------------


class PushTarget(StrEnum):
    """Where a session's branch went."""

    REMOTE = "remote"  # pushed to the repository's https remote
    HOME = "home"  # fetched into the user's checkout on this computer


@dataclass(frozen=True)
class PushResult:
    """What a push did.

    Attributes:
        branch: the session's branch on the VM; commit: what was pushed; committed: the
            uncommitted work was committed first.
        target: where it went; remote: the remote URL (no credentials) for REMOTE;
        outcome: git's word for a push (``[new branch]``, ``[up to date]``, ``a..b``).
        local_repo / local_branch: the checkout and branch it was fetched into, for HOME.
    """

    workspace: str
    session: str
    branch: str
    commit: str
    committed: bool
    target: PushTarget
    remote: str | None = None
    outcome: str = ""
    local_repo: str | None = None
    local_branch: str | None = None

    def summary(self) -> str:
        """One sentence for the user."""
        first = "Committed the uncommitted changes, then " if self.committed else ""
        if self.target == PushTarget.HOME:
            text = (
                f"fetched {self.branch} ({self.commit[:10]}) into {self.local_repo} as branch "
                f"{self.local_branch}; your checked-out branch and files were not touched"
            )
        elif "up to date" in self.outcome:
            text = f"already up to date: {self.branch} ({self.commit[:10]}) at {self.remote}"
        else:
            text = f"pushed {self.branch} ({self.commit[:10]}) to {self.remote}"
            if self.outcome:
                text += f" {self.outcome}"
        text = first + text
        return text[0].upper() + text[1:] + "."


@dataclass(frozen=True)
class GitIdentity:
    """Who a commit made on the user's behalf is by."""

    name: str
    email: str


def local_git_identity(repo: str | None = None) -> GitIdentity | None:
    """The user's git identity on this computer (the checkout's config, else the global one);
    None when git or either value is missing. Blocking: call in a thread."""
    git = shutil.which("git")
    if git is None:
        return None
    cwd = repo if repo and os.path.isdir(repo) else None
    values = []
    for key in ("user.name", "user.email"):
        done = subprocess.run(
            [git, "config", "--get", key],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=False,
        )
        values.append(done.stdout.strip())
    name, email = values
    return GitIdentity(name, email) if name and email else None


def _redact(text: str, secret: str | None) -> str:
    return text.replace(secret, "***") if secret else text


def _last_lines(text: str, count: int = 4) -> str:
    lines = [ln.removeprefix("session-review: ") for ln in text.strip().splitlines() if ln]
    return "; ".join(lines[-count:])[:600]


@dataclass
class _Home:
    """A bring-home in progress: the temporary folder on this computer."""

    directory: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="bivy-home-")))

    def close(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


class ReviewService:
    """Diff and push of a workspace's sessions (see the module docstring).

    ``tunnels``: the app's tunnel service (its connections are reused); without one the service
    makes its own and ``aclose`` closes it. ``command``: the VM's review command, installed
    (:func:`review_script`) before its first use in a workspace. ``sudo``: the prefix that
    makes the command root.
    """

    def __init__(
        self,
        secrets: SecretStore,
        tunnels: TunnelService | None = None,
        *,
        registry: Registry | None = None,
        command: str = REVIEW_COMMAND,
        sudo: tuple[str, ...] = ("sudo", "-n"),
        timeout: float = 900.0,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self._secrets = secrets
        self._environ = environ
        self._own_tunnels = tunnels is None
        self._tunnels = tunnels or TunnelService(secrets, connect_timeout=15.0)
        self._registry = registry or Registry()
        self._command = command
        self._sudo = sudo
        self._timeout = timeout
        self._installed: set[tuple[str, str]] = set()  # (workspace, host key): up to date

    async def aclose(self) -> None:
        if self._own_tunnels:
            await self._tunnels.close_all()

    async def _record(self, workspace: str) -> WorkspaceRecord:
        return await self._registry.arequire(workspace)

    async def _tunnel(self, record: WorkspaceRecord) -> Tunnel:
        return await self._tunnels.open(SSHTarget.from_record(record))

    def _line(self, verb: str, session: str, *args: str) -> str:
        return shlex.join([*self._sudo, self._command, verb, session, *args])

    async def _install(self, record: WorkspaceRecord, tunnel: Tunnel) -> None:
        """The VM's review command is this app's version (installed when it is not)."""
        key = (record.name, record.host_public_key)
        if key in self._installed:
            return
        script = review_script()
        digest = hashlib.sha256(script.encode()).hexdigest()
        line = shlex.join([*self._sudo, "sh", "-c", _INSTALL, "install", self._command, digest])
        result = await tunnel.run(line, input=script, limit=60.0)
        if result.exit_status != 0:
            reason = _last_lines(result.stderr) or f"exit status {result.exit_status}"
            raise ActionFailed(
                f"could not put the review command on workspace {record.name!r}: {reason}",
                hint="The VM may not be a Bivy VM set up by this version; recreate it",
            )
        self._installed.add(key)

    @staticmethod
    def _check_session(session: str) -> None:
        if not SESSION_NAME_RE.match(session):
            raise InvalidInput(
                f"{session!r} is not a session name",
                hint="Session names are lower-case letters, digits and dashes (up to 30)",
            )

    async def _run(
        self,
        record: WorkspaceRecord,
        verb: str,
        session: str,
        *args: str,
        secret: str | None = None,
    ) -> str:
        tunnel = await self._tunnel(record)
        await self._install(record, tunnel)
        stdin = f"{secret}\n" if secret else ""
        result = await tunnel.run(
            self._line(verb, session, *args), input=stdin, limit=self._timeout
        )
        if result.exit_status == 0:
            return result.stdout
        reason = _redact(_last_lines(result.stderr), secret) or f"exit status {result.exit_status}"
        if result.exit_status == EXIT_UNCOMMITTED:
            raise UncommittedWork(reason)
        if result.exit_status == EXIT_NO_REMOTE:
            raise InvalidInput(reason, hint="Bivy pushes to the repository's https URL")
        raise ActionFailed(f"{verb} of session {session} failed: {reason}")

    async def git_token(self) -> str | None:
        """The token a push by URL uses: ``$BIVY_GIT_TOKEN``, else the keychain's."""
        environ = os.environ if self._environ is None else self._environ
        return environ.get(GIT_TOKEN_ENV, "").strip() or await self._secrets.aget(
            SecretKeys.GIT_TOKEN
        )

    async def diff(self, workspace: str, session: str) -> SessionDiff:
        """The session's changes against its base (committed and uncommitted apart)."""
        self._check_session(session)
        record = await self._record(workspace)
        return parse_diff(workspace, await self._run(record, "diff", session, "--json"))

    async def push(
        self,
        workspace: str,
        session: str,
        *,
        commit_message: str | None = None,
        author: GitIdentity | None = None,
        progress: ProgressCallback | None = None,
        token: str | None = None,
    ) -> PushResult:
        """Get the session's branch out of the VM: pushed to the repository's URL, or — for a
        repository from this computer — brought home into the checkout as ``bivy/<session>``.

        ``commit_message``: commit uncommitted work first (else :class:`UncommittedWork`).
        ``author``: the commit's author (default: the user's git identity here, if any).
        ``progress(detail, fraction or None)`` follows the steps. ``token``: the git token
        for a push by URL (default: :meth:`git_token`).
        """
        self._check_session(session)
        if commit_message is not None and not commit_message.strip():
            raise InvalidInput("the commit message is empty")
        record = await self._record(workspace)

        def report(detail: str, fraction: float | None = None) -> None:
            if progress is not None:
                progress(detail, fraction)

        home = is_local_repo(record.repo_url)
        if author is None and commit_message is not None:
            author = await asyncio.to_thread(local_git_identity, record.repo_url if home else None)
        extra: list[str] = []
        if commit_message is not None:
            extra += ["--commit-message", commit_message]
            if author is not None:
                extra += ["--author-name", author.name, "--author-email", author.email]
        if home:
            return await self._bring_home(record, session, extra, report)
        token = (token or "").strip() or await self.git_token()
        if not token:
            raise MissingGitToken("no git token is set, so Bivy cannot push for you")
        if any(ch.isspace() for ch in token):
            raise InvalidInput("the git token contains white space")
        report(f"Pushing session {session} to {record.repo_url}")
        output = await self._run(
            record, "push", session, "--remote-url", record.repo_url, *extra, secret=token
        )
        data = self._json(output)
        report("Pushed", 1.0)
        return PushResult(
            workspace=record.name,
            session=session,
            branch=str(data["branch"]),
            commit=str(data["commit"]),
            committed=bool(data.get("committed")),
            target=PushTarget.REMOTE,
            remote=str(data.get("remote") or ""),
            outcome=str(data.get("outcome") or ""),
        )

    @staticmethod
    def _json(output: str) -> dict[str, Any]:
        try:
            data = json.loads(output)
        except ValueError:
            raise ActionFailed("the VM's answer could not be read") from None
        if not isinstance(data, dict) or "branch" not in data or "commit" not in data:
            raise ActionFailed("the VM's answer could not be read")
        return data

    async def _bring_home(
        self,
        record: WorkspaceRecord,
        session: str,
        extra: list[str],
        report: ProgressCallback,
    ) -> PushResult:
        repo = await asyncio.to_thread(inspect_local_repo, record.repo_url)
        local_branch = f"{HOME_BRANCH_PREFIX}{session}"
        if repo.branch == local_branch:
            raise InvalidInput(
                f"{repo.path} has {local_branch} checked out, so Bivy will not update it",
                hint="Switch to another branch there first",
            )
        report(f"Bundling session {session} on the VM", None)
        haves = await asyncio.to_thread(_local_tips, repo.path)
        have_args = [arg for tip in haves for arg in ("--have", tip)]
        data = self._json(await self._run(record, "bundle", session, *extra, *have_args))
        remote_path = str(data.get("path") or "")
        if not remote_path.startswith("/"):
            raise ActionFailed("the VM did not say where the bundle is")
        size = int(data.get("size") or 0)
        home = _Home()
        try:
            local = home.directory / f"{session}.bundle"
            await self._download(record, remote_path, local, size, report)
            report(f"Fetching into {repo.path} as {local_branch}", None)
            await asyncio.to_thread(
                _fetch_bundle, repo.path, local, str(data["branch"]), local_branch
            )
        finally:
            await asyncio.to_thread(home.close)
        report("Brought home", 1.0)
        return PushResult(
            workspace=record.name,
            session=session,
            branch=str(data["branch"]),
            commit=str(data["commit"]),
            committed=bool(data.get("committed")),
            target=PushTarget.HOME,
            local_repo=str(repo.path),
            local_branch=local_branch,
        )

    async def _download(
        self,
        record: WorkspaceRecord,
        remote_path: str,
        local: Path,
        size: int,
        report: ProgressCallback,
    ) -> None:
        tunnel = await self._tunnel(record)
        detail = f"Downloading the branch ({size / 1e6:.1f} MB)"
        report(detail, 0.0)

        def progress(_src: bytes, _dst: bytes, done: int, total: int) -> None:
            report(detail, done / total if total else 1.0)

        try:
            conn = await tunnel.connection()
            async with conn.start_sftp_client() as sftp:
                try:
                    await sftp.get(remote_path, str(local), progress_handler=progress)
                finally:
                    with contextlib.suppress(asyncssh.Error, OSError):
                        await sftp.remove(remote_path)
        except (asyncssh.Error, OSError) as exc:
            reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None)
            raise SSHError(
                f"downloading the session's branch failed: {reason or type(exc).__name__}"
            ) from None


#: At most this many of the checkout's branch and tag tips are named to the VM.
MAX_HAVES = 100


def _local_tips(repo: Path) -> list[str]:
    """Commits the checkout has (its branch, tag and remote-tracking tips): the VM leaves
    their history out of the bundle."""
    git = shutil.which("git")
    if git is None:
        return []
    done = subprocess.run(
        [git, "rev-list", "--no-walk=unsorted", "--branches", "--tags", "--remotes"],
        cwd=repo,
        env={k: v for k, v in os.environ.items() if not k.startswith("GIT_")},
        capture_output=True,
        text=True,
        check=False,
    )
    tips = [ln for ln in done.stdout.split() if re.fullmatch(r"[0-9a-f]{40,64}", ln)]
    return list(dict.fromkeys(tips))[:MAX_HAVES]


def _fetch_bundle(repo: Path, bundle: Path, branch: str, local_branch: str) -> None:
    """``git fetch`` the bundle's ``branch`` into ``repo`` as ``local_branch`` (fast-forward
    only; the checked-out branch, index and work tree are never touched)."""
    git = shutil.which("git")
    if git is None:
        raise InvalidInput("git is not installed on this computer")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update({"GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"})
    done = subprocess.run(
        [
            git, "fetch", "--no-tags", "--no-recurse-submodules", str(bundle),
            f"refs/heads/{branch}:refs/heads/{local_branch}",
        ],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip
    if done.returncode == 0:
        return
    reason = _last_lines(done.stderr, 2) or f"exit status {done.returncode}"
    if "non-fast-forward" in done.stderr or "rejected" in done.stderr:
        raise ActionFailed(
            f"{local_branch} in {repo} has commits the session's branch does not have",
            hint=f"Rename or delete your branch {local_branch} there, then bring it home again",
        )
    if "checked out" in done.stderr:
        raise InvalidInput(
            f"{local_branch} is checked out in a worktree of {repo}, so Bivy will not update it",
            hint="Switch that worktree to another branch first",
        )
    raise ActionFailed(f"fetching the session's branch into {repo} failed: {reason}")
