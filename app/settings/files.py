"""Cross-process safety for Bivy's own files: lock files, and broken files moved aside, kept.

Every read-modify-write of ``settings.json`` and ``workspaces.json`` holds ``<file>.lock`` (an OS
advisory lock through ``filelock``: ``fcntl.flock`` on POSIX, ``msvcrt.locking`` on Windows), so
the window and the CLI running at once never lose each other's change; the write itself stays a
temp file + rename. A file Bivy cannot parse is renamed to ``<file>.corrupt-<UTC time>`` (never
deleted, never overwritten) and a one-line notice says where: it is logged (the CLI prints its
warnings on stderr) and queued for the window (``take_notices``).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock, Timeout

from app.domain import utcnow
from app.errors import BivyError

__all__ = [
    "LOCK_TIMEOUT",
    "FileNotice",
    "HeldLock",
    "LockBusy",
    "file_lock",
    "move_aside",
    "report",
    "take_notices",
    "try_hold",
]

log = logging.getLogger(__name__)

#: How long a writer waits for another Bivy process to finish its write (seconds).
LOCK_TIMEOUT = 30.0


class LockBusy(BivyError):
    default_hint = "Another Bivy process is writing the same file; try again in a moment"


@dataclass(frozen=True)
class FileNotice:
    """A file Bivy could not use and what became of it.

    Attributes:
        path: the file as Bivy expected it; kept_at: where the original now is ("" if nowhere
        new); text: one sentence for a dialog or the CLI.
    """

    path: Path
    kept_at: str
    text: str


_notices: list[FileNotice] = []
_notices_lock = threading.Lock()
_locks: dict[str, FileLock] = {}
_locks_lock = threading.Lock()


def _lock_for(path: Path, timeout: float) -> FileLock:
    key = os.path.abspath(str(path)) + ".lock"
    with _locks_lock:
        lock = _locks.get(key)
        if lock is None:
            # thread_local: each thread has its own descriptor, so the lock also keeps this
            # process's threads apart, and a thread may take it again while it holds it.
            lock = FileLock(key, timeout=timeout, thread_local=True)
            _locks[key] = lock
        return lock


@contextmanager
def file_lock(path: Path, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
    """Hold ``<path>.lock`` (blocking up to ``timeout``); ``LockBusy`` when it stays taken."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = _lock_for(path, timeout)
        lock.acquire(timeout=timeout)
    except Timeout:
        raise LockBusy(
            f"{path} stayed locked by another Bivy process for {timeout:.0f} s"
        ) from None
    except OSError as exc:
        # Locking is the first step of every write: say it the way a failed write is said.
        raise BivyError(
            f"cannot write {path}: {exc.strerror or type(exc).__name__}",
            hint="Check the permissions and free space of that folder",
        ) from None
    try:
        yield
    finally:
        lock.release()


class HeldLock:
    """A lock taken without waiting and kept until ``release`` (e.g. for a process's lifetime)."""

    def __init__(self, lock: FileLock) -> None:
        self._lock: FileLock | None = lock

    @property
    def held(self) -> bool:
        return self._lock is not None

    def release(self) -> None:
        if self._lock is not None:
            self._lock.release(force=True)
            self._lock = None


def try_hold(path: Path) -> HeldLock | None:
    """Take ``path`` (a lock file) now if no other process holds it; None when one does.

    The OS drops the lock when the holder exits, even on SIGKILL: a crash never leaves it stuck.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    # A fresh, non-shared object: a second holder in this process is refused like any other.
    lock = FileLock(str(path), timeout=0, thread_local=False)
    try:
        lock.acquire(blocking=False)
    except Timeout:
        return None
    return HeldLock(lock)


def move_aside(path: Path, why: str, *, publish: bool = True) -> FileNotice:
    """Rename the unusable ``path`` to ``<path>.corrupt-<UTC time>``, keep it, and say so.

    When even the rename fails the file stays where it is and the notice says that; callers
    must then not write over it. ``publish``: log the notice and queue it for the window (off
    when the caller raises it as an error instead).
    """
    stamp = utcnow().strftime("%Y%m%dT%H%M%SZ")
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    counter = 1
    while target.exists():
        counter += 1
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{counter}")
    try:
        os.replace(path, target)
    except OSError as exc:
        notice = FileNotice(
            path,
            "",
            f"{path} cannot be used ({why}) and could not be moved aside "
            f"({exc.strerror or type(exc).__name__}); it was left as it is",
        )
    else:
        notice = FileNotice(
            path, str(target), f"{path} could not be used ({why}); it was kept as {target}"
        )
    if publish:
        _publish(notice)
    return notice


def report(path: Path, text: str) -> FileNotice:
    """A notice about ``path`` that moved nothing (e.g. one bad record skipped)."""
    notice = FileNotice(path, "", text)
    _publish(notice)
    return notice


def _publish(notice: FileNotice) -> None:
    log.warning("%s", notice.text)
    with _notices_lock:
        _notices.append(notice)


def take_notices() -> list[FileNotice]:
    """The notices raised in this process since the last call (for the window to show)."""
    with _notices_lock:
        taken = list(_notices)
        _notices.clear()
    return taken
