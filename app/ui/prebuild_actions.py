"""The window's prebuilds (issue 14): the "Prebuild" actions and ``attach(shell)``.

``attach(shell)`` builds the ``PrebuildsController`` (``app/ui/prebuild_controller.py``: builds,
deletes and listings run as its tasks, off the Qt thread's critical path, and every listing and
deletion is recorded in the cost ledger - snapshot storage is billed per GB-month and belongs in
the month-to-date total), adds "Prebuild repository…" (Ctrl+Shift+P) with "Prebuilds…"
(Ctrl+Shift+B) to the toolbar and "Prebuild this repository…" to a workspace's context menu, and
lists the prebuilds now and then for the ledger. The create dialog's line saying whether a
prebuild matches is in ``app/ui/prebuild_hint.py``; the dialogs are in
``app/ui/prebuilds_dialog.py``. The controller's and the line's names are re-exported here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QObject, Qt
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QMenu, QToolButton, QWidget

from app.domain import Workspace
from app.services.prebuilds import PrebuildRecord, PrebuildService
from app.ui import formatting
from app.ui.icons import ICON_PROPERTY, icon
from app.ui.prebuild_controller import (
    Build,
    BuildRequest,
    MatchState,
    PrebuildsController,
    snapshot_accounts,
)
from app.ui.prebuild_hint import CreateHint, colour, css, install_create_hint

if TYPE_CHECKING:
    from app.ui.shell import Shell

__all__ = [
    "Build",
    "BuildRequest",
    "CreateHint",
    "MatchState",
    "PrebuildActions",
    "PrebuildsController",
    "attach",
    "colour",
    "css",
    "install_create_hint",
    "snapshot_accounts",
]

#: How often the window lists the prebuilds for the ledger (seconds): snapshot storage costs
#: money whether or not the Prebuilds dialog is open, and one made or deleted elsewhere (the
#: CLI, the console) is noticed at the next listing. The listing rides on a workspace refresh.
LIST_INTERVAL = 900.0


class PrebuildActions(QObject):
    """The prebuild actions of the window, and the dialogs they open.

    Attributes:
        controller: the ``PrebuildsController``; act_prebuild: "Prebuild repository…";
        act_list: "Prebuilds…"; act_prebuild_selected: the context menu's "Prebuild this
        repository…"; dialog: the Prebuilds dialog while open.
    """

    def __init__(self, shell: Shell, controller: PrebuildsController) -> None:
        super().__init__(shell)
        self.shell = shell
        self.controller = controller
        window = shell.window
        self.act_prebuild = _action(
            window,
            "Prebuild repository…",
            "Build a snapshot with a repository's devcontainer and agent ready, so its "
            "workspaces start in seconds",
            "Ctrl+Shift+P",
            "prebuild",
        )
        self.act_list = _action(
            window,
            "Prebuilds…",
            "Your prebuilds: size, cost per month, state; rebuild or delete them",
            "Ctrl+Shift+B",
            "prebuild",
        )
        self.act_prebuild_selected = _action(
            window,
            "Prebuild this repository…",
            "Prebuild the selected workspace's repository and branch where it runs",
            None,
            "prebuild",
        )
        self.act_prebuild.triggered.connect(lambda: self.open_form(window.selected()))
        self.act_list.triggered.connect(self.open_list)
        self.act_prebuild_selected.triggered.connect(lambda: self.open_form(window.selected()))
        self.dialog: QWidget | None = None
        self._listed_at: float | None = None
        self._add_to_window()
        controller.failed.connect(window.show_error)
        controller.listed.connect(self._note_listed)
        controller.built.connect(self._built)
        if shell.workspaces is not None:
            shell.workspaces.listed.connect(self._workspaces_listed)
        if shell.cost_controller is not None:
            shell.cost_controller.snapshot.connect(self._costs)

    def _built(self, record: PrebuildRecord) -> None:
        self.shell.window.statusBar().showMessage(
            f"Prebuild of {record.repo} is ready: its new workspaces start in seconds", 15000
        )

    def _costs(self, snapshot: object) -> None:
        """The status bar's "This month" says how much of it is prebuild storage."""
        label = getattr(self.shell.window, "month_label", None)
        storage = getattr(snapshot, "storage_month_to_date", None)
        per_month = getattr(snapshot, "storage_per_month", None) or {}
        if label is None or not storage:
            return
        spent = ", ".join(formatting.money(v, c, places=3) for c, v in sorted(storage.items()))
        keep = ", ".join(formatting.money(v, c) for c, v in sorted(per_month.items()))
        label.setToolTip(
            "Spend this month, deleted workspaces included (local ledger); of it, prebuild "
            f"storage: {spent}" + (f" (the prebuilds kept cost {keep} per month)" if keep else "")
        )

    def _note_listed(self, *_: object) -> None:
        self._listed_at = time.monotonic()

    def _workspaces_listed(self, *_: object) -> None:
        """After a workspace refresh, list the prebuilds too when the last listing is old, so
        their storage is in the month-to-date total even if the dialog is never opened."""
        due = self._listed_at is None or time.monotonic() - self._listed_at >= LIST_INTERVAL
        if due and self.controller.accounts() and not self.controller.running("list"):
            self._listed_at = time.monotonic()  # a failing listing is not retried at once
            self.controller.start_refresh()

    def _add_to_window(self) -> None:
        window = self.shell.window
        toolbar = getattr(window, "toolbar", None)
        if toolbar is not None:
            # One button, its icon only (the toolbar is full at 1280 px): a click prebuilds, its
            # menu has both actions with their names; the tooltip names it too.
            menu = QMenu(window)
            menu.addAction(self.act_prebuild)
            menu.addAction(self.act_list)
            button = QToolButton(toolbar)
            button.setDefaultAction(self.act_prebuild)
            button.setMenu(menu)
            button.setPopupMode(QToolButton.ToolButtonPopupMode.MenuButtonPopup)
            button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonIconOnly)
            before = next(
                (a for a in toolbar.actions() if a is getattr(window, "act_refresh", None)), None
            )
            if before is not None:
                self.toolbar_action = toolbar.insertWidget(before, button)
                toolbar.insertSeparator(before)
            else:
                self.toolbar_action = toolbar.addWidget(button)
            self.toolbar_button = button
        window.addAction(self.act_prebuild)  # the shortcuts work wherever the focus is
        window.addAction(self.act_list)
        extras = getattr(window, "extra_context_actions", None)
        if isinstance(extras, list):
            extras.append(self.act_prebuild_selected)
        selection = window.table.selectionModel()
        selection.selectionChanged.connect(self._selection_changed)
        self._selection_changed()

    def _selection_changed(self, *_: object) -> None:
        ws = self.shell.window.selected()
        ok = ws is not None and bool(ws.repo_url) and self._supported(ws.account)
        self.act_prebuild_selected.setEnabled(ok)

    def _supported(self, account: str) -> bool:
        return any(a.id == account for a in self.controller.accounts())

    def open_list(self) -> QWidget:
        """The Prebuilds dialog (one at a time; shown again if open)."""
        from app.ui.prebuilds_dialog import PrebuildsDialog

        if self.dialog is not None:
            self.dialog.show()
            self.dialog.raise_()
            self.dialog.activateWindow()
            return self.dialog
        dialog = PrebuildsDialog(
            self.controller,
            self.shell.window,
            currency=self.shell.settings.budget_currency,
            new_prebuild=lambda: self.open_form(None),
        )
        self.dialog = dialog
        dialog.finished.connect(self._list_closed)
        self._keep(dialog)
        dialog.open()
        return dialog

    def _list_closed(self, *_: object) -> None:
        self.dialog = None

    def open_form(self, ws: Workspace | None) -> QWidget | None:
        """ "Prebuild repository…", filled in from ``ws`` when given."""
        from app.ui.prebuilds_dialog import PrebuildForm

        if not self.controller.accounts():
            self.shell.window.show_error(
                "None of your accounts can make prebuilds",
                "Add a Hetzner, DigitalOcean, Scaleway or OVH account in Settings, or use this "
                "computer (local)",
            )
            return None
        form = PrebuildForm(
            self.shell.workspaces,
            self.shell.settings,
            self.controller,
            self.shell.window,
            workspace=ws,
        )
        form.requested.connect(self._build_requested)
        self._keep(form)
        form.open()
        return form

    def _build_requested(self, request: BuildRequest) -> None:
        self.controller.start_build(request)
        self.open_list()

    def _keep(self, dialog: QWidget) -> None:
        keep = getattr(self.shell, "_keep", None)
        if keep is not None:
            keep(dialog)

    async def cancel_all(self) -> None:
        """Stop every build (each deletes its builder VM) and listing."""
        await self.controller.cancel_all()


def _action(parent: QWidget, text: str, tip: str, shortcut: str | None, name: str) -> QAction:
    action = QAction(text, parent)
    action.setProperty(ICON_PROPERTY, name)  # tinted to the palette with the window's own
    action.setIcon(icon(name, parent.palette()))
    if shortcut is not None:
        action.setShortcut(QKeySequence(shortcut))
        action.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
        tip = f"{tip} ({action.shortcut().toString(QKeySequence.SequenceFormat.NativeText)})"
    action.setToolTip(tip)
    action.setStatusTip(tip)
    return action


def attach(
    shell: Shell, *, service_factory: Callable[[Any], PrebuildService] | None = None
) -> PrebuildActions | None:
    """Add the prebuild actions to ``shell``'s window; None without a workspace service."""
    if shell.workspaces is None:
        return None
    workspaces = shell.workspaces.service
    service = service_factory(workspaces) if service_factory else PrebuildService(workspaces)
    costs = shell.cost_controller.service if shell.cost_controller is not None else None
    controller = PrebuildsController(service, costs, shell)
    shell.workspaces.prebuilds = controller  # the create dialog's line finds it there
    return PrebuildActions(shell, controller)
