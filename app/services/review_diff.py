"""The diff of a session (review before merge, issue 15): what the VM's ``session-review diff
SESSION --json`` answers, read into :class:`SessionDiff` — the session's commits since its base
and two :class:`DiffStat` lists (committed, uncommitted) with +/- line counts per file — and the
readable text the CLI prints. ``app/services/review.py`` runs the command.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from app.errors import ActionFailed

__all__ = ["Commit", "DiffStat", "FileChange", "SessionDiff", "parse_diff", "parse_stat"]


@dataclass(frozen=True)
class FileChange:
    """One file of a diff stat.

    Attributes:
        path: the path now (for a deletion: the path that was); old_path: before a rename/copy.
        status: git's letter (A added, M modified, D deleted, R renamed, C copied, T type).
        insertions / deletions: line counts; None for a binary file.
        untracked: a new file not added to git yet (uncommitted side only).
    """

    path: str
    status: str
    insertions: int | None
    deletions: int | None
    old_path: str | None = None
    untracked: bool = False

    @property
    def binary(self) -> bool:
        return self.insertions is None


@dataclass(frozen=True)
class DiffStat:
    """The files of one side of a session's diff, in git's order."""

    files: tuple[FileChange, ...] = ()

    @property
    def insertions(self) -> int:
        return sum(f.insertions or 0 for f in self.files)

    @property
    def deletions(self) -> int:
        return sum(f.deletions or 0 for f in self.files)

    def summary(self) -> str:
        """``3 files changed, 10 insertions(+), 2 deletions(-)`` (git's wording)."""
        count = len(self.files)
        if not count:
            return "no changes"
        parts = [f"{count} file{'s' if count != 1 else ''} changed"]
        parts.append(f"{self.insertions} insertion{'s' if self.insertions != 1 else ''}(+)")
        parts.append(f"{self.deletions} deletion{'s' if self.deletions != 1 else ''}(-)")
        return ", ".join(parts)


@dataclass(frozen=True)
class Commit:
    """A commit of the session since its base: abbreviated id and subject."""

    id: str
    subject: str


@dataclass(frozen=True)
class SessionDiff:
    """What a session changed against its base.

    Attributes:
        workspace, session: whose; branch: the session's branch on the VM.
        base: what it is compared with (a commit id, an upstream ref, or a description);
        base_commit: the merge base actually used; head: the session's HEAD.
        worktree: its folder in the devcontainer.
        commits: newest first (at most 200); committed / uncommitted: the two diff stats.
    """

    workspace: str
    session: str
    branch: str
    base: str
    base_commit: str
    head: str
    worktree: str
    commits: tuple[Commit, ...]
    committed: DiffStat
    uncommitted: DiffStat

    @property
    def has_uncommitted(self) -> bool:
        return bool(self.uncommitted.files)

    def text(self) -> str:
        """A readable stat for the CLI: the commits, then the two lists with +/- counts."""
        lines = [
            f"Session {self.session} of {self.workspace}: branch {self.branch}, "
            f"{len(self.commits)} commit(s) since {_short(self.base)} "
            f"({self.base_commit[:12]})"
        ]
        lines += [f"  {c.id} {c.subject}" for c in self.commits]
        for title, stat in (("Committed", self.committed), ("Uncommitted", self.uncommitted)):
            if title == "Uncommitted" and not stat.files:
                continue
            lines.append("")
            lines.append(f"{title}: {stat.summary()}")
            lines += [f"  {_file_line(f)}" for f in stat.files]
        return "\n".join(lines)


def _short(base: str) -> str:
    return base[:12] if re.fullmatch(r"[0-9a-f]{40,64}", base) else base


def _file_line(change: FileChange) -> str:
    counts = "binary" if change.binary else f"+{change.insertions} -{change.deletions}"
    label = {"A": "new", "D": "deleted", "R": "renamed", "C": "copied", "T": "type changed"}
    what = label.get(change.status, "")
    if change.untracked:
        what = "new, untracked"
    name = f"{change.old_path} → {change.path}" if change.old_path else change.path
    return f"{counts:>14}  {name}" + (f"  ({what})" if what else "")


def _decode_path(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


def parse_stat(numstat: bytes, name_status: bytes, untracked: bytes = b"") -> DiffStat:
    """A :class:`DiffStat` from ``git diff -z -M --numstat`` and ``--name-status`` (same
    options, so the same files in the same order) and ``ls-files -z --others`` (untracked)."""
    tokens = numstat.split(b"\0")
    entries: list[tuple[str, str, str, str | None]] = []  # ins, del, path, old
    index = 0
    while index < len(tokens):
        token = tokens[index]
        index += 1
        if not token:
            continue
        parts = token.split(b"\t", 2)
        if len(parts) < 3:
            raise ActionFailed("the VM's diff stat could not be read")
        added, deleted, path = parts[0].decode(), parts[1].decode(), parts[2]
        if path:
            entries.append((added, deleted, _decode_path(path), None))
        else:  # a rename or copy: the old and the new path follow
            if index + 1 >= len(tokens):
                raise ActionFailed("the VM's diff stat could not be read")
            old, new = tokens[index], tokens[index + 1]
            index += 2
            entries.append((added, deleted, _decode_path(new), _decode_path(old)))
    statuses: list[str] = []
    status_tokens = name_status.split(b"\0")
    index = 0
    while index < len(status_tokens):
        token = status_tokens[index]
        index += 1
        if not token:
            continue
        letter = token[:1].decode()
        statuses.append(letter)
        index += 2 if letter in ("R", "C") else 1
    new_files = {_decode_path(p) for p in untracked.split(b"\0") if p}

    def count(value: str) -> int | None:
        return None if value == "-" else int(value)

    files = tuple(
        FileChange(
            path=path,
            old_path=old,
            status=statuses[i] if i < len(statuses) else "M",
            insertions=count(added),
            deletions=count(deleted),
            untracked=path in new_files,
        )
        for i, (added, deleted, path, old) in enumerate(entries)
    )
    return DiffStat(files)


def _b64(data: Mapping[str, Any], key: str) -> bytes:
    value = data.get(key) or ""
    try:
        return base64.b64decode(str(value), validate=True)
    except ValueError:
        raise ActionFailed("the VM's diff could not be read") from None


def parse_diff(workspace: str, output: str) -> SessionDiff:
    """The JSON ``session-review diff SESSION --json`` prints, as a :class:`SessionDiff`."""
    try:
        data = json.loads(output)
        committed, uncommitted = data["committed"], data["uncommitted"]
        commits = tuple(
            Commit(id=parts[0], subject=parts[1] if len(parts) > 1 else "")
            for raw in _b64(data, "log").split(b"\0")
            if raw
            for parts in [raw.decode("utf-8", "replace").split("\x1f", 1)]
        )
        return SessionDiff(
            workspace=workspace,
            session=str(data["session"]),
            branch=str(data["branch"]),
            base=str(data["base"]),
            base_commit=str(data["base_commit"]),
            head=str(data["head"]),
            worktree=str(data.get("worktree") or ""),
            commits=commits,
            committed=parse_stat(_b64(committed, "numstat"), _b64(committed, "name_status")),
            uncommitted=parse_stat(
                _b64(uncommitted, "numstat"),
                _b64(uncommitted, "name_status"),
                _b64(uncommitted, "untracked"),
            ),
        )
    except (ValueError, KeyError, TypeError):
        raise ActionFailed("the VM's answer to the diff could not be read") from None
