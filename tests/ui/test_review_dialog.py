"""The review dialog (issue 15, review before merge): the diff stat as a readable list with +/-
counts, committed and uncommitted apart; the push button with its progress and a clear result
or error; the commit message uncommitted work needs; "Review & push…" in the window.

The service behind it (``ReviewService``: the VM's script over SSH) is tested end to end in
tests/integration/test_review_remote.py; here it is a stand-in with the service's own types.
With ``BIVY_UI_SCREENSHOTS=DIR`` the test also saves its screenshots there (to look at).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtWidgets import QApplication, QTreeWidgetItem
from pytestqt.qtbot import QtBot

from app.domain import Workspace
from app.errors import ActionFailed
from app.services.review import (
    Commit,
    DiffStat,
    FileChange,
    MissingGitToken,
    PushResult,
    PushTarget,
    SessionDiff,
    UncommittedWork,
)
from app.settings import SecretStore
from app.ui.main_window import MainWindow
from app.ui.review_dialog import ReviewActions, ReviewDialog
from tests.support.waits import WAIT_MS
from tests.ui.factories import EVERY_STATE, NOW, with_sessions, workspace

pytestmark = pytest.mark.usefixtures("qloop")

HEAD = "4f1c2ab9e07d3c55a1f0e6b2d9c8a7f6e5d4c3b2"
BASE = "9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b"


def make_diff(*, uncommitted: bool = True) -> SessionDiff:
    committed = DiffStat(
        (
            FileChange("src/review.py", "A", 120, 0),
            FileChange("src/app.py", "M", 14, 6),
            FileChange("docs/usage.md", "R", 3, 1, old_path="docs/old-usage.md"),
            FileChange("assets/logo.png", "A", None, None),
            FileChange("legacy.py", "D", 0, 42),
        )
    )
    dirty = DiffStat(
        (
            FileChange("src/app.py", "M", 2, 1),
            FileChange("notes/todo.md", "A", 5, 0, untracked=True),
        )
        if uncommitted
        else ()
    )
    return SessionDiff(
        workspace="api",
        session="review",
        branch="bivy/review",
        base=BASE,
        base_commit=BASE,
        head=HEAD,
        worktree="/workspaces/api/.bivy/worktrees/review",
        commits=(
            Commit("4f1c2ab", "Review dialog: diff stat and push"),
            Commit("77e0d1c", "Tests for the review service"),
        ),
        committed=committed,
        uncommitted=dirty,
    )


class FakeService:
    """``ReviewService``'s surface: records the calls, answers from a script."""

    def __init__(self, diffs: list[SessionDiff], push_error: Exception | None = None) -> None:
        self.diffs = diffs
        self.push_error = push_error
        self.loads = 0
        self.pushes: list[dict[str, Any]] = []
        self.release = asyncio.Event()

    async def git_token(self) -> str | None:
        return "ghp_known"

    async def diff(self, workspace: str, session: str) -> SessionDiff:
        self.loads += 1
        return self.diffs[min(self.loads, len(self.diffs)) - 1]

    async def push(
        self,
        workspace: str,
        session: str,
        *,
        commit_message: str | None,
        progress: Any,
        token: str | None = None,
    ) -> PushResult:
        record = {"workspace": workspace, "session": session, "msg": commit_message}
        if token is not None:
            record["token"] = token
        self.pushes.append(record)
        progress("Pushing session review to https://github.com/acme/api.git", None)
        await self.release.wait()
        if self.push_error is not None:
            raise self.push_error
        return PushResult(
            workspace=workspace,
            session=session,
            branch="bivy/review",
            commit=HEAD,
            committed=commit_message is not None,
            target=PushTarget.REMOTE,
            remote="https://github.com/acme/api.git",
            outcome="[new branch]",
        )


def api_workspace(repo_url: str = "https://github.com/acme/api.git") -> Workspace:
    ws = with_sessions(workspace("api"), *EVERY_STATE)
    return ws.model_copy(update={"repo_url": repo_url})


def open_dialog(
    qtbot: QtBot, service: FakeService, ws: Workspace | None = None, *, token_known: bool = True
) -> ReviewDialog:
    ws = ws or api_workspace()

    async def has_token() -> bool:  # a token used for a push was kept (remember is on)
        return token_known or any("token" in push for push in service.pushes)

    dialog = ReviewDialog(
        ws,
        "review",
        lambda: service.diff(ws.name, "review"),
        lambda message, progress, token, _remember: service.push(
            ws.name, "review", commit_message=message, progress=progress, token=token
        ),
        has_token=has_token,
    )
    qtbot.addWidget(dialog)
    dialog.resize(760, 600)
    dialog.show()
    qtbot.waitUntil(lambda: dialog.diff is not None and dialog.task is None, timeout=WAIT_MS)
    return dialog


def rows(item: QTreeWidgetItem) -> list[tuple[str, str, str]]:
    return [
        (item.child(i).text(0), item.child(i).text(1), item.child(i).text(2))
        for i in range(item.childCount())
    ]


def screenshot(widget: Any, name: str, tmp_path: Path) -> Path:
    folder = Path(os.environ.get("BIVY_UI_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    QApplication.processEvents()
    path = folder / name
    assert widget.grab().save(str(path))
    return path


def test_diff_stat_reads_as_a_list_with_counts(qtbot: QtBot, tmp_path: Path) -> None:
    service = FakeService([make_diff()])
    dialog = open_dialog(qtbot, service)
    assert dialog.header.text() == (
        "bivy/review: 2 commits since its base 9a8b7c6d5e · "
        "5 files changed, 137 insertions(+), 49 deletions(-)"
    )
    tree = dialog.tree
    titles = [tree.topLevelItem(i).text(0) for i in range(tree.topLevelItemCount())]
    assert titles == [
        "Commits (2)",
        "Committed — 5 files",
        "Uncommitted (in no commit yet) — 2 files",
    ]
    assert rows(tree.topLevelItem(0))[0][0] == "4f1c2ab  Review dialog: diff stat and push"
    committed = tree.topLevelItem(1)
    assert (committed.text(1), committed.text(2)) == ("+137", "−49")
    assert rows(committed) == [
        ("src/review.py  (new)", "+120", ""),
        ("src/app.py", "+14", "−6"),
        ("docs/old-usage.md → docs/usage.md  (renamed)", "+3", "−1"),
        ("assets/logo.png  (new)", "binary", ""),
        ("legacy.py  (deleted)", "", "−42"),
    ]
    assert rows(tree.topLevelItem(2)) == [
        ("src/app.py", "+2", "−1"),
        ("notes/todo.md  (new, untracked)", "+5", ""),
    ]
    # added reads green-ish and removed red-ish in this palette
    added = committed.child(0).foreground(1).color()
    removed = committed.child(0).foreground(2).color()
    assert added.green() > added.red() and removed.red() > removed.green()
    assert dialog.destination.text() == (
        "Push: bivy/review is pushed to https://github.com/acme/api.git (same branch name) "
        "with your git token from the keychain, used once on the VM and never stored there."
    )
    screenshot(dialog, "review-dialog.png", tmp_path)


def test_uncommitted_work_needs_a_message_then_pushes_with_progress_and_result(
    qtbot: QtBot, tmp_path: Path
) -> None:
    service = FakeService([make_diff(), make_diff(uncommitted=False)])
    dialog = open_dialog(qtbot, service)
    assert dialog.commit_box.isVisible()
    assert not dialog.push_button.isEnabled()
    assert dialog.push_button.toolTip() == (
        "Write a commit message for the uncommitted changes first."
    )
    qtbot.keyClicks(dialog.message, "Review: last touches")
    assert dialog.push_button.isEnabled() and dialog.push_button.text() == "Push branch"
    dialog.push_button.click()
    qtbot.waitUntil(lambda: bool(service.pushes), timeout=WAIT_MS)
    assert service.pushes == [
        {"workspace": "api", "session": "review", "msg": "Review: last touches"}
    ]
    # while it runs: progress, the step, nothing clickable twice
    qtbot.waitUntil(lambda: "Pushing session review" in dialog.status.text(), timeout=WAIT_MS)
    assert dialog.progress.isVisible() and not dialog.push_button.isEnabled()
    assert not dialog.refresh_button.isEnabled()
    screenshot(dialog, "review-dialog-pushing.png", tmp_path)
    service.release.set()
    qtbot.waitUntil(lambda: service.loads == 2 and dialog.task is None, timeout=WAIT_MS)
    assert dialog.status.text() == (
        "✓ Committed the uncommitted changes, then pushed bivy/review (4f1c2ab9e0) to "
        "https://github.com/acme/api.git [new branch]."
    )
    assert dialog.error == "" and not dialog.progress.isVisible()
    assert not dialog.commit_box.isVisible()  # the reloaded diff has nothing uncommitted
    assert dialog.tree.topLevelItemCount() == 2
    screenshot(dialog, "review-dialog-pushed.png", tmp_path)


def test_a_failed_push_says_why_and_can_be_retried(qtbot: QtBot, tmp_path: Path) -> None:
    service = FakeService(
        [make_diff(uncommitted=False)],
        push_error=ActionFailed(
            "push of session review failed: pushing bivy/review to https://github.com/acme/"
            "api.git failed; remote: Permission to acme/api.git denied"
        ),
    )
    dialog = open_dialog(qtbot, service)
    assert not dialog.commit_box.isVisible() and dialog.push_button.isEnabled()
    service.release.set()
    dialog.push_button.click()
    qtbot.waitUntil(lambda: bool(dialog.error), timeout=WAIT_MS)
    assert dialog.status.text().startswith("✗ push of session review failed:")
    assert "Permission to acme/api.git denied" in dialog.error
    assert dialog.push_button.isEnabled() and dialog.refresh_button.isEnabled()
    screenshot(dialog, "review-dialog-failed.png", tmp_path)


def test_uncommitted_refusal_from_the_vm_is_shown(qtbot: QtBot) -> None:
    service = FakeService(
        [make_diff(uncommitted=False)],
        push_error=UncommittedWork("session review has uncommitted changes in 1 file(s)"),
    )
    dialog = open_dialog(qtbot, service)
    service.release.set()
    dialog.push_button.click()
    qtbot.waitUntil(lambda: bool(dialog.error), timeout=WAIT_MS)
    assert "Give a commit message to commit them first" in dialog.error


def test_a_local_checkout_is_brought_home(qtbot: QtBot, tmp_path: Path) -> None:
    checkout = tmp_path / "src" / "api"
    checkout.mkdir(parents=True)
    service = FakeService([make_diff(uncommitted=False)])
    dialog = open_dialog(qtbot, service, api_workspace(str(checkout)))
    assert dialog.push_button.text() == "Bring branch home"
    assert dialog.destination.text() == (
        f"Bring home: bivy/review is fetched into {checkout} as bivy/review. Your "
        "checked-out branch and your files stay as they are."
    )


def test_review_action_opens_the_selected_session(qtbot: QtBot, tmp_path: Path) -> None:
    window = MainWindow(now=lambda: NOW)
    qtbot.addWidget(window)
    window.resize(1400, 700)
    window.show()
    kept: list[Any] = []

    class Shell:
        pass

    shell: Any = Shell()
    shell.window, shell.secrets, shell._keep = window, SecretStore(), kept.append
    service = FakeService([make_diff()])
    actions = ReviewActions(shell, service)
    assert actions.action in window.actions()
    assert actions.action.shortcut().toString() == "Ctrl+Shift+R"
    assert actions.review_selected() is None  # nothing selected: says so
    assert not actions.action.isEnabled()
    assert actions.action in window.extra_context_actions  # the row's context menu
    window.model.set_workspaces([api_workspace()])
    window.select("hetzner", "api")
    assert actions.action.isEnabled()  # a ready workspace
    screenshot(window, "review-action-window.png", tmp_path)
    dialog = actions.review_selected()
    assert dialog is not None and kept == [dialog]
    assert dialog.session in {"main", "review"}
    qtbot.waitUntil(lambda: dialog.diff is not None, timeout=WAIT_MS)
    dialog.close()


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_counts_read_in_light_and_dark_themes(qtbot: QtBot, theme: str, tmp_path: Path) -> None:
    from app.ui.theme import contrast_ratio, dark_palette, light_palette

    service = FakeService([make_diff()])
    ws = api_workspace()
    dialog = ReviewDialog(
        ws,
        "review",
        lambda: service.diff(ws.name, "review"),
        lambda message, progress, token, _remember: service.push(
            ws.name, "review", commit_message=message, progress=progress, token=token
        ),
    )
    dialog.setPalette(dark_palette() if theme == "dark" else light_palette())
    qtbot.addWidget(dialog)
    dialog.resize(760, 600)
    dialog.show()
    qtbot.waitUntil(lambda: dialog.diff is not None and dialog.task is None, timeout=WAIT_MS)
    base = dialog.tree.palette().base().color()
    committed = dialog.tree.topLevelItem(1)
    for column in (1, 2):
        assert contrast_ratio(committed.foreground(column).color(), base) >= 3.0
    screenshot(dialog, f"review-dialog-{theme}.png", tmp_path)


def test_without_a_token_the_dialog_asks_for_one(qtbot: QtBot, tmp_path: Path) -> None:
    service = FakeService([make_diff(uncommitted=False)])
    dialog = open_dialog(qtbot, service, token_known=False)
    assert dialog.token_box.isVisible() and dialog.remember.isChecked()
    assert not dialog.push_button.isEnabled()
    assert "git token" in dialog.push_button.toolTip()
    screenshot(dialog, "review-dialog-token.png", tmp_path)
    qtbot.keyClicks(dialog.token, "ghp_typed0123")
    assert dialog.token.echoMode() == dialog.token.EchoMode.Password
    service.release.set()
    dialog.push_button.click()
    qtbot.waitUntil(lambda: dialog.push_result is not None and not dialog.task, timeout=WAIT_MS)
    assert service.pushes[0]["token"] == "ghp_typed0123"
    assert dialog.token.text() == "" and not dialog.token_box.isVisible()


def test_a_missing_token_reported_by_the_service_opens_the_field(qtbot: QtBot) -> None:
    service = FakeService(
        [make_diff(uncommitted=False)],
        push_error=MissingGitToken("no git token is set, so Bivy cannot push for you"),
    )
    dialog = open_dialog(qtbot, service)  # the check said there was one (then it went)
    assert not dialog.token_box.isVisible()
    service.release.set()
    dialog.push_button.click()
    qtbot.waitUntil(lambda: bool(dialog.error), timeout=WAIT_MS)
    assert dialog.token_box.isVisible() and not dialog.push_button.isEnabled()
    assert "no git token is set" in dialog.error
