"""The create dialog's repository field: a URL, or a git checkout on this computer.

A folder ("Choose folder…" or typed) gets quick checks as the user types (absolute, exists, the
top of a git checkout) and git's full verdict off the UI thread once the text settles (a
commit exists; on which branch; uncommitted changes). "Include uncommitted changes" applies to a
folder only: the app sends the checkout to the VM as a git bundle (app/services/repo_bundle.py).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from PySide6.QtCore import QObject, QTimer, Signal
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import (
    QCheckBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QWidget,
)

from app.domain.validation import validate_local_repo_path, validate_repo_url
from app.errors import BivyError, InvalidInput
from app.services.repo_bundle import LocalRepo, inspect_local_repo, looks_like_url


def local_path(text: str) -> str | None:
    """The folder ``text`` names (``~`` expanded), or None when it is a URL (or empty)."""
    text = text.strip()
    if not text or looks_like_url(text):
        return None
    return os.path.expanduser(text)


def inspect_checkout_top(path: str) -> LocalRepo:
    """``inspect_local_repo``, refusing a folder inside a checkout (the field names the top)."""
    repo = inspect_local_repo(path)
    if str(repo.path) != os.path.realpath(path):
        raise InvalidInput(f"{path} is inside the checkout {repo.path}: choose its top folder")
    return repo


def repo_problem(url: str) -> str | None:
    """Why ``url`` cannot be used, or None (the quick checks, shown as the user types)."""
    path = local_path(url)
    if path is None:
        try:
            validate_repo_url(url)
        except ValueError as exc:
            return str(exc)
        return None
    if not os.path.isabs(path):
        return "give a URL, or the full path of a git checkout on this computer"
    if not os.path.isdir(path):
        return f"there is no folder {path}"
    if not os.path.exists(os.path.join(path, ".git")):
        return f"{path} is not the top folder of a git checkout"
    try:
        validate_local_repo_path(path)
    except ValueError as exc:
        return str(exc)
    return None


class RepoField(QObject):
    """The repository widgets and their checks.

    Signals:
        checked(): git's verdict on a folder arrived (validate the form again).
    Attributes:
        edit: the text field; choose_folder_button; include_uncommitted: the checkbox;
        local_state: "(on BRANCH; uncommitted changes)" for a checked folder.
        row / options_row: the layouts the form shows (field + button; checkbox + state).
        local_repo: the checked folder, None for a URL or until git answered.
        inspect_task: the running full check, if any.
    """

    checked = Signal()

    def __init__(self, parent: QWidget) -> None:
        super().__init__(parent)
        self._parent = parent
        self.edit = QLineEdit()
        self.edit.setPlaceholderText(
            "https://github.com/owner/repo.git, git@github.com:owner/repo.git, or a folder"
        )
        self.edit.setToolTip(
            "The git repository to clone (https or ssh URL), or a git checkout on this "
            "computer: it is sent to the VM with its local branches, tags and unpushed commits "
            "(no git token goes to the VM)"
        )
        self.choose_folder_button = QPushButton("Choose folder…")
        self.choose_folder_button.setToolTip("Use a git checkout on this computer")
        self.choose_folder_button.clicked.connect(self.choose_folder)
        self.include_uncommitted = QCheckBox("Include uncommitted changes")
        self.include_uncommitted.setToolTip(
            "Also send the checkout's uncommitted changes and untracked (not ignored) files; "
            "they stay uncommitted on the VM. Your folder is not changed."
        )
        self.include_uncommitted.setEnabled(False)
        self.local_state = QLabel()
        self.local_state.setForegroundRole(QPalette.ColorRole.PlaceholderText)
        self.local_state.hide()
        self.row = QHBoxLayout()
        self.row.addWidget(self.edit, 1)
        self.row.addWidget(self.choose_folder_button)
        self.options_row = QHBoxLayout()
        self.options_row.addWidget(self.include_uncommitted)
        self.options_row.addWidget(self.local_state, 1)
        self.local_repo: LocalRepo | None = None
        self._local_problem: str | None = None
        self.inspect_task: asyncio.Task[None] | None = None
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(300)
        self._timer.timeout.connect(self._inspect_later)
        self.edit.textChanged.connect(self._changed)

    def text(self) -> str:
        return self.edit.text().strip()

    def is_local(self) -> bool:
        return local_path(self.text()) is not None

    def problem(self) -> str | None:
        """Why the field cannot be used (quick checks, then git's verdict on a folder)."""
        text = self.text()
        if not text:
            return None
        return repo_problem(text) or (self._local_problem if self.is_local() else None)

    def values(self) -> tuple[str, bool]:
        """``(repo_url, include_uncommitted)`` for the spec (a folder as its real path)."""
        path = local_path(self.text())
        if path is None:
            return self.text(), False
        return os.path.realpath(path), self.include_uncommitted.isChecked()

    def choose_folder(self) -> None:
        """Pick a git checkout on this computer."""
        start = local_path(self.text()) or str(Path.home())
        folder = QFileDialog.getExistingDirectory(self._parent, "Choose a git checkout", start)
        if folder:
            self.edit.setText(folder)

    def stop(self) -> None:
        self._timer.stop()
        if self.inspect_task is not None and not self.inspect_task.done():
            self.inspect_task.cancel()

    def _changed(self, text: str) -> None:
        self.local_repo = None
        self._local_problem = None
        self.local_state.hide()
        local = self.is_local()
        self.include_uncommitted.setEnabled(local)
        if local and not repo_problem(text.strip()):
            self._timer.start()

    def _inspect_later(self) -> None:
        if self.inspect_task is not None and not self.inspect_task.done():
            self.inspect_task.cancel()
        self.inspect_task = asyncio.ensure_future(self._inspect(self.text()))

    async def _inspect(self, text: str) -> None:
        path = local_path(text)
        if path is None:
            return
        problem: str | None = None
        repo: LocalRepo | None = None
        try:
            repo = await asyncio.to_thread(inspect_checkout_top, path)
        except BivyError as exc:
            problem = exc.message
        if self.text() != text:
            return  # typed on meanwhile: a newer check follows
        self.local_repo = repo
        self._local_problem = problem
        if repo is not None:
            where = f"on {repo.branch}" if repo.branch else "detached HEAD"
            changes = "uncommitted changes" if repo.dirty else "no uncommitted changes"
            self.local_state.setText(f"({where}; {changes})")
            self.local_state.show()
        self.checked.emit()
