"""What the window tells the user about files and the keychain it could not use, and the one
process that runs the guardian (issue 13).

- A settings or registry file that was moved aside (``app.settings.files``) or could not be read
  gets a dialog naming where the original is kept.
- A missing or locked keychain gets a dialog at start (reading it on a desktop session lets the
  OS ask for the unlock password first), instead of errors only in the status bar.
- Only the process holding ``data_dir()/guardian.lock`` deletes overdue VMs: two windows (or a
  window started twice by a race) never delete or warn twice. The OS drops the lock when that
  process ends, however it ends, and the next refresh elsewhere takes it over.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from PySide6.QtCore import QObject, Qt
from PySide6.QtWidgets import QMessageBox, QWidget

from app.errors import SecretStoreError
from app.settings import HeldLock, SecretKeys, SecretStore, data_dir, take_notices, try_hold
from app.settings.secrets import LOCKED_HINT

#: The hints only keychain errors carry: how a failure reported by a controller is recognised.
_KEYCHAIN_HINTS = (SecretStoreError.default_hint, LOCKED_HINT)
#: A keychain dialog is shown again after this long at the earliest (seconds).
KEYCHAIN_DIALOG_GAP = 600.0

log = logging.getLogger(__name__)


def guardian_lock_path() -> Path:
    """The lock file whose holder runs the guardian: ``data_dir()/guardian.lock``."""
    return data_dir() / "guardian.lock"


async def keychain_problem(secrets: SecretStore) -> SecretStoreError | None:
    """Why the keychain cannot be used now (missing or locked), or None when it works."""
    try:
        await secrets.aget(SecretKeys.SSH_PRIVATE_KEY)
    except SecretStoreError as exc:
        return exc
    return None


class Recovery(QObject):
    """The notices, the keychain check and the guardian lock of one window.

    Attributes:
        shown: (title, text) of every notice shown, in order (for the log and tests).
        boxes: the notice dialogs still open.
    """

    def __init__(self, parent_window: QWidget, secrets: SecretStore) -> None:
        super().__init__(parent_window)
        self.window = parent_window
        self.secrets = secrets
        self.shown: list[tuple[str, str]] = []
        self.boxes: list[QMessageBox] = []
        self.pending: list[tuple[str, str]] = []
        self._guardian: HeldLock | None = None
        self._guardian_elsewhere = False
        self._keychain_task: asyncio.Task[None] | None = None
        self._keychain_shown_at: float | None = None

    def add(self, title: str, text: str) -> None:
        """Queue a notice for the next ``show_pending`` (e.g. before the window exists)."""
        self.pending.append((title, text))

    def show_pending(self) -> None:
        """Show queued notices and those of files moved aside in this process since last time."""
        notices, self.pending = self.pending, []
        for notice in take_notices():
            notices.append(("A file of Bivy's could not be used", notice.text))
        for title, text in notices:
            self.show(title, text)

    def show(self, title: str, text: str) -> QMessageBox:
        """A warning dialog that does not block the window (the user closes it)."""
        log.warning("%s: %s", title, text)
        box = QMessageBox(QMessageBox.Icon.Warning, title, text, QMessageBox.StandardButton.Ok)
        box.setParent(self.window, Qt.WindowType.Dialog)
        box.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        self.boxes.append(box)
        box.destroyed.connect(lambda *_: self.boxes.remove(box) if box in self.boxes else None)
        box.setWindowModality(Qt.WindowModality.NonModal)
        self.shown.append((title, text))
        box.show()
        return box

    def check_keychain(self) -> None:
        """Start the keychain check; a problem becomes a dialog."""
        if self._keychain_task is None:
            self._keychain_task = asyncio.ensure_future(self._check_keychain())

    async def _check_keychain(self) -> None:
        problem = await keychain_problem(self.secrets)
        if problem is not None:
            self._keychain_dialog(problem.one_line(), locked=problem.hint == LOCKED_HINT)

    def on_failure(self, message: str, hint: str) -> None:
        """A controller's failure: a keychain one (missing, locked) also gets the dialog, at
        most once every ``KEYCHAIN_DIALOG_GAP`` seconds (the status bar says it every time)."""
        if hint not in _KEYCHAIN_HINTS:
            return
        shown = self._keychain_shown_at
        if shown is not None and time.monotonic() - shown < KEYCHAIN_DIALOG_GAP:
            return
        text = " ".join(part.rstrip(".") + "." for part in (message, hint) if part)
        self._keychain_dialog(text, locked=hint == LOCKED_HINT)

    def _keychain_dialog(self, text: str, *, locked: bool) -> None:
        self._keychain_shown_at = time.monotonic()
        self.show(
            "The keychain is locked" if locked else "No keychain",
            f"{text} Until then Bivy cannot read your accounts' tokens or reach your "
            "workspaces; nothing is written anywhere else instead.",
        )

    def may_guard(self) -> bool:
        """Whether this process runs the guardian (it holds the lock, or takes it now)."""
        if self._guardian is None:
            try:
                self._guardian = try_hold(guardian_lock_path())
            except OSError as exc:
                log.warning("cannot take the guardian lock: %s", exc)
                return False
            elsewhere = self._guardian is None
            if elsewhere != self._guardian_elsewhere:
                log.info(
                    "another Bivy process runs the guardian; this one leaves it alone"
                    if elsewhere
                    else "this process runs the guardian"
                )
                self._guardian_elsewhere = elsewhere
        return self._guardian is not None

    async def close(self) -> None:
        """Release the guardian lock, stop the keychain check, close the dialogs."""
        if self._guardian is not None:
            self._guardian.release()
            self._guardian = None
        task, self._keychain_task = self._keychain_task, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        for box in list(self.boxes):
            box.close()
