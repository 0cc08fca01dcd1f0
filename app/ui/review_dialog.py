"""Review before merge (issue 15): a session's diff stat and the button that gets its branch out.

``ReviewDialog`` shows what a session changed against its base — its commits, then the files
with their +/- line counts, committed and uncommitted apart — and offers "Push branch" (a
repository cloned by URL: pushed with the user's git token, used once on the VM) or "Bring
branch home" (a repository from this computer: fetched into the checkout as ``bivy/<session>``).
Uncommitted changes must be committed first: the dialog asks for a commit message, or the user
commits from the session's terminal. Progress and the result (or the error) stay in the dialog.

``ReviewActions`` puts "Review & push…" into the window (toolbar and shortcut) for the selected
workspace's selected session; the work itself is ``app.services.review.ReviewService``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QBrush, QFont, QKeySequence
from PySide6.QtWidgets import (
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QToolBar,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)
from shiboken6 import isValid

from app.domain import Workspace
from app.domain.validation import is_local_repo
from app.errors import BivyError
from app.services.review import DiffStat, FileChange, MissingGitToken, PushResult, SessionDiff
from app.settings import SecretKeys
from app.ui.icons import ICON_PROPERTY, icon
from app.ui.secret_field import SecretField
from app.ui.theme import is_dark, tone

if TYPE_CHECKING:
    from app.ui.shell import Shell

__all__ = ["ReviewActions", "ReviewDialog"]

#: Loads the session's diff; pushes (commit message or None, progress callback, the git token
#: the user typed or None, whether to keep it in the keychain); says whether a token is known.
DiffLoader = Callable[[], Awaitable[SessionDiff]]
Progress = Callable[[str, float | None], None]
Pusher = Callable[[str | None, Progress, str | None, bool], Awaitable[PushResult]]
TokenCheck = Callable[[], Awaitable[bool]]

_ADDED = ("#1a7f37", "#56d364")  # on a light base, on a dark base


def _added_colour(widget: QWidget) -> Any:
    from PySide6.QtGui import QColor

    light, dark = _ADDED
    return QColor(dark if is_dark(widget.palette()) else light)


class ReviewDialog(QDialog):
    """The review of one session (see the module docstring).

    Attributes:
        diff: the diff shown (None until loaded); push_result: the last push's result;
        error: the last error shown ("" when none); task: the running load or push, if any.
    """

    def __init__(
        self,
        ws: Workspace,
        session: str,
        load: DiffLoader,
        push: Pusher,
        parent: QWidget | None = None,
        *,
        has_token: TokenCheck | None = None,
    ) -> None:
        super().__init__(parent)
        self.ws = ws
        self.session = session
        self._load = load
        self._push = push
        self._has_token = has_token
        self.home = is_local_repo(ws.repo_url)
        self.diff: SessionDiff | None = None
        self.push_result: PushResult | None = None
        self.error = ""
        self.task: asyncio.Task[None] | None = None
        self.setWindowTitle(f"Review session {session} of {ws.name}")
        self.setWindowIcon(icon("review", self.palette()))
        self.resize(720, 560)

        self.header = QLabel("Reading the session's changes…")
        self.header.setWordWrap(True)
        self.header.setTextFormat(Qt.TextFormat.PlainText)
        font = QFont(self.header.font())
        font.setBold(True)
        self.header.setFont(font)
        self.destination = QLabel(self._destination_text())
        self.destination.setWordWrap(True)
        self.destination.setTextFormat(Qt.TextFormat.PlainText)

        self.tree = QTreeWidget()
        self.tree.setColumnCount(3)
        self.tree.setHeaderLabels(["File", "Added", "Removed"])
        self.tree.setRootIsDecorated(True)
        self.tree.setUniformRowHeights(True)
        self.tree.setAlternatingRowColors(True)
        header = self.tree.header()
        header.setStretchLastSection(False)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for column in (1, 2):
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.ResizeToContents)

        self.commit_note = QLabel(
            "The session has uncommitted changes. Bivy commits all of them (new files too) "
            "before it pushes, with this message — or commit them from the session's terminal "
            "and refresh."
        )
        self.commit_note.setWordWrap(True)
        self.message = QLineEdit()
        self.message.setPlaceholderText("Commit message for the uncommitted changes")
        self.message.textChanged.connect(self._update_buttons)
        self.commit_box = QWidget()
        commit_layout = QVBoxLayout(self.commit_box)
        commit_layout.setContentsMargins(0, 0, 0, 0)
        commit_layout.addWidget(self.commit_note)
        commit_layout.addWidget(self.message)
        self.commit_box.hide()

        self.token = SecretField()
        self.token.setPlaceholderText("a token with write access to the repository")
        self.token.textChanged.connect(self._update_buttons)
        self.remember = QCheckBox("Keep it in the keychain for the next pushes")
        self.remember.setChecked(True)
        self.token_box = QWidget()
        token_layout = QFormLayout(self.token_box)
        token_layout.setContentsMargins(0, 0, 0, 0)
        token_layout.addRow("Git token", self.token)
        token_layout.addRow("", self.remember)
        self.token_box.hide()

        self.progress = QProgressBar()
        self.progress.setTextVisible(False)
        self.progress.setMaximumHeight(8)
        self.progress.hide()
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.status.setTextFormat(Qt.TextFormat.PlainText)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.status.hide()

        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        self.buttons.rejected.connect(self.reject)
        self.refresh_button = QPushButton(icon("refresh", self.palette()), "Refresh")
        self.refresh_button.clicked.connect(self.reload)
        self.push_button = QPushButton(
            icon("review", self.palette()), "Bring branch home" if self.home else "Push branch"
        )
        self.push_button.setDefault(True)
        self.push_button.clicked.connect(self.start_push)
        self.buttons.addButton(self.refresh_button, QDialogButtonBox.ButtonRole.ResetRole)
        self.buttons.addButton(self.push_button, QDialogButtonBox.ButtonRole.ActionRole)

        layout = QVBoxLayout(self)
        layout.addWidget(self.header)
        layout.addWidget(self.destination)
        layout.addWidget(self.tree, 1)
        layout.addWidget(self.commit_box)
        layout.addWidget(self.token_box)
        status_row = QHBoxLayout()
        status_row.addWidget(self.status, 1)
        layout.addLayout(status_row)
        layout.addWidget(self.progress)
        layout.addWidget(self.buttons)
        self._update_buttons()

    # -- loading --------------------------------------------------------------------------

    def _destination_text(self, branch: str = "") -> str:
        what = f"{branch} is" if branch else "the branch is"
        if self.home:
            return (
                f"Bring home: {what} fetched into {self.ws.repo_url} as bivy/"
                f"{self.session}. Your checked-out branch and your files stay as they are."
            )
        return (
            f"Push: {what} pushed to {self.ws.repo_url} (same branch name) with your git "
            "token from the keychain, used once on the VM and never stored there."
        )

    def showEvent(self, event: Any) -> None:
        super().showEvent(event)
        if self.diff is None and self.task is None:
            self.reload()

    def reload(self) -> None:
        """Read the session's diff again (the button, and after a push)."""
        if self.task is not None:
            return
        self._busy("Reading the session's changes…", None)
        self.task = asyncio.ensure_future(self._reload())

    async def _reload(self) -> None:
        try:
            diff = await self._load()
        except BivyError as exc:
            self._done()
            self._show(exc.one_line(), error=True)
            return
        if not isValid(self):
            return
        if not self.home and self._has_token is not None and not self.token_box.isVisible():
            with contextlib.suppress(BivyError):
                self.token_box.setVisible(not await self._has_token())
            if not isValid(self):
                return
        self._done()
        self.show_diff(diff)
        if self.push_result is not None:  # the push's result stays in view
            self._show(self.push_result.summary(), error=False)
        else:
            self.status.hide()

    def show_diff(self, diff: SessionDiff) -> None:
        """Fill the dialog from ``diff``."""
        self.diff = diff
        commits = len(diff.commits)
        if diff.base == diff.base_commit or not diff.base:
            since = f"its base {diff.base_commit[:10]}"
        else:
            name = diff.base.removeprefix("refs/remotes/").removeprefix("refs/heads/")
            since = f"{name[:12] if len(name) >= 40 else name} ({diff.base_commit[:10]})"
        self.header.setText(
            f"{diff.branch}: {commits} commit{'s' if commits != 1 else ''} since {since} · "
            f"{diff.committed.summary()}"
        )
        self.destination.setText(self._destination_text(diff.branch))
        self.tree.clear()
        if diff.commits:
            group = self._group(f"Commits ({commits})", "")
            for commit in diff.commits:
                item = QTreeWidgetItem([f"{commit.id}  {commit.subject}", "", ""])
                item.setToolTip(0, commit.subject)
                group.addChild(item)
            group.setExpanded(commits <= 8)
        self._add_stat("Committed", diff.committed, expanded=True)
        if diff.uncommitted.files:
            self._add_stat("Uncommitted (in no commit yet)", diff.uncommitted, expanded=True)
        self.commit_box.setVisible(diff.has_uncommitted)
        self._update_buttons()

    def _group(self, title: str, tip: str) -> QTreeWidgetItem:
        group = QTreeWidgetItem([title, "", ""])
        font = QFont(group.font(0))
        font.setBold(True)
        for column in range(3):
            group.setFont(column, font)
        group.setToolTip(0, tip)
        group.setFirstColumnSpanned(False)
        self.tree.addTopLevelItem(group)
        return group

    def _add_stat(self, title: str, stat: DiffStat, *, expanded: bool) -> None:
        count = len(stat.files)
        group = self._group(
            f"{title} — {count} file{'s' if count != 1 else ''}" if count else f"{title} — none",
            stat.summary(),
        )
        if count:
            self._counts(group, f"+{stat.insertions}", f"−{stat.deletions}")
        for change in stat.files:
            group.addChild(self._file_item(change))
        group.setExpanded(expanded)

    def _counts(self, item: QTreeWidgetItem, added: str, removed: str) -> None:
        item.setText(1, added)
        item.setText(2, removed)
        item.setForeground(1, QBrush(_added_colour(self)))
        item.setForeground(2, QBrush(tone("error", self.palette())))
        for column in (1, 2):
            item.setTextAlignment(column, Qt.AlignmentFlag.AlignRight)

    def _file_item(self, change: FileChange) -> QTreeWidgetItem:
        name = f"{change.old_path} → {change.path}" if change.old_path else change.path
        what = {"A": "new", "D": "deleted", "R": "renamed", "C": "copied", "T": "type changed"}
        label = "new, untracked" if change.untracked else what.get(change.status, "")
        item = QTreeWidgetItem([f"{name}  ({label})" if label else name, "", ""])
        item.setToolTip(0, name)
        if change.binary:
            item.setText(1, "binary")
            item.setTextAlignment(1, Qt.AlignmentFlag.AlignRight)
        else:  # a zero stays blank: the eye goes to what changed
            self._counts(
                item,
                f"+{change.insertions}" if change.insertions else "",
                f"−{change.deletions}" if change.deletions else "",
            )
        return item

    # -- pushing --------------------------------------------------------------------------

    def problem(self) -> str:
        """Why the push cannot start now ("" when it can)."""
        if self.diff is None:
            return "The session's changes are not read yet."
        if self.diff.has_uncommitted and not self.message.text().strip():
            return "Write a commit message for the uncommitted changes first."
        if self.token_box.isVisible() and not self.token.text().strip():
            return "Give a git token with write access to the repository first."
        return ""

    def _update_buttons(self, *_: object) -> None:
        problem = self.problem()
        idle = self.task is None
        self.push_button.setEnabled(idle and not problem)
        self.push_button.setToolTip(problem)
        self.refresh_button.setEnabled(idle)
        self.message.setEnabled(idle)
        self.token.setEnabled(idle)

    def start_push(self) -> None:
        problem = self.problem()
        if problem:
            self._show(problem, error=True)
            return
        if self.task is not None:
            return
        assert self.diff is not None
        message = self.message.text().strip() if self.diff.has_uncommitted else None
        verb = "Bringing the branch home" if self.home else "Pushing the branch"
        self._busy(f"{verb}…", None)
        token = self.token.text().strip() if self.token_box.isVisible() else None
        self.task = asyncio.ensure_future(self._run_push(message, token or None))

    async def _run_push(self, message: str | None, token: str | None) -> None:
        try:
            result = await self._push(message, self._progress, token, self.remember.isChecked())
        except BivyError as exc:
            if isValid(self):
                self._done()
                if isinstance(exc, MissingGitToken):
                    self.token_box.show()
                    self.token.setFocus()
                    self._update_buttons()
                self._show(exc.one_line(), error=True)
            return
        if not isValid(self):
            return
        self.push_result = result
        self._done()
        self.message.clear()
        self.token.clear()
        if self.remember.isChecked():
            self.token_box.hide()
        self._show(result.summary(), error=False)
        self.reload()  # what is left (a commit made for the push is now committed)

    def _progress(self, detail: str, fraction: float | None) -> None:
        if isValid(self):
            self._busy(f"{detail}…", fraction)

    # -- state ----------------------------------------------------------------------------

    def _busy(self, text: str, fraction: float | None) -> None:
        self.progress.show()
        if fraction is None:
            self.progress.setRange(0, 0)
        else:
            self.progress.setRange(0, 100)
            self.progress.setValue(round(fraction * 100))
        self.status.setStyleSheet("")
        self.status.setText(text)
        self.status.show()
        self._update_buttons()

    def _done(self) -> None:
        self.task = None
        self.progress.hide()
        self._update_buttons()

    def _show(self, text: str, *, error: bool) -> None:
        self.error = text if error else ""
        colour = tone("error", self.palette()) if error else _added_colour(self)
        mark = "✗" if error else "✓"
        self.status.setStyleSheet(f"color: {colour.name()};")
        self.status.setText(f"{mark} {text}")
        self.status.show()


class ReviewActions:
    """ "Review & push…" in the window for the selected workspace's selected session.

    ``service``: a ``ReviewService``-like object (``diff``, ``push``); default: one over the
    shell's keychain, made on first use.
    """

    def __init__(self, shell: Shell, service: Any = None) -> None:
        self.shell = shell
        self._service = service
        window = shell.window
        self.action = QAction("Review && push…", window)
        self.action.setProperty(ICON_PROPERTY, "review")
        self.action.setIcon(icon("review", window.palette()))
        self.action.setShortcut(QKeySequence("Ctrl+Shift+R"))
        tip = "Review the selected session's changes and push its branch (Ctrl+Shift+R)"
        self.action.setToolTip(tip)
        self.action.setStatusTip(tip)
        self.action.triggered.connect(self.review_selected)
        window.addAction(self.action)
        toolbar = window.findChild(QToolBar, "actions")
        anchor = getattr(window, "act_terminal", None)
        if isinstance(toolbar, QToolBar):
            if isinstance(anchor, QAction) and anchor in toolbar.actions():
                toolbar.insertAction(anchor, self.action)
            else:
                toolbar.addAction(self.action)
        extras = getattr(window, "extra_context_actions", None)
        if isinstance(extras, list):  # the workspace row's context menu
            extras.append(self.action)
        table = getattr(window, "table", None)
        if table is not None and table.selectionModel() is not None:
            table.selectionModel().selectionChanged.connect(self._selection_changed)
        self._selection_changed()

    def _selection_changed(self, *_: object) -> None:
        """Enabled for a ready workspace (its VM answers over SSH), like Open terminal."""
        from app.ui.models import is_ready

        ws = self.shell.window.selected()
        self.action.setEnabled(ws is not None and is_ready(ws) and not ws.unrecorded)

    def service(self) -> Any:
        """The injected service, else a new ``ReviewService`` (one per dialog: its SSH
        connections close with the dialog)."""
        if self._service is not None:
            return self._service
        from app.services.review import ReviewService

        return ReviewService(self.shell.secrets)

    def review_selected(self) -> ReviewDialog | None:
        window = self.shell.window
        ws = window.selected()
        if ws is None:
            window.show_error("Select a workspace first")
            return None
        detail = getattr(window, "detail", None)
        sessions = getattr(detail, "sessions", None)
        current = sessions.current() if sessions is not None else None
        return self.review(ws, current or "main")

    def review(self, ws: Workspace, session: str) -> ReviewDialog:
        service = self.service()

        async def load() -> SessionDiff:
            diff: SessionDiff = await service.diff(ws.name, session)
            return diff

        async def push(
            message: str | None, progress: Progress, token: str | None, remember: bool
        ) -> PushResult:
            result: PushResult = await service.push(
                ws.name, session, commit_message=message, progress=progress, token=token
            )
            if token and remember:  # it worked: kept for the next pushes (and clones)
                await self.shell.secrets.aset(SecretKeys.GIT_TOKEN, token)
            return result

        async def has_token() -> bool:
            return bool(await service.git_token())

        dialog = ReviewDialog(ws, session, load, push, self.shell.window, has_token=has_token)
        if service is not self._service:
            dialog.finished.connect(lambda *_: asyncio.ensure_future(service.aclose()))
        self.shell._keep(dialog)
        dialog.open()
        return dialog
