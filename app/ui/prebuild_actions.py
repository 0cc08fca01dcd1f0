"""The window's prebuilds (issue 14): the controller over ``PrebuildService``, the "Prebuild"
actions, and the create dialog's line saying whether a prebuild matches.

``attach(shell)`` builds the ``PrebuildsController`` (builds, deletes and listings run as its
tasks, off the Qt thread's critical path), adds "Prebuild repository…" (Ctrl+Shift+P) with
"Prebuilds…" (Ctrl+Shift+B) to the toolbar and "Prebuild this repository…" to a workspace's
context menu, and records every listing and deletion in the cost ledger (snapshot storage is
billed per GB-month and belongs in the month-to-date total). The dialogs are in
``app/ui/prebuilds_dialog.py``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QObject, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QColor, QKeySequence, QPalette
from PySide6.QtWidgets import QFormLayout, QLabel, QLayout, QMenu, QToolButton, QWidget

from app.domain import ImageStatus, Workspace, WorkspaceSpec
from app.errors import BivyError
from app.services.accounts import provider_class
from app.services.costs import CostService, seen_prebuild
from app.services.prebuild_hash import repo_key
from app.services.prebuilds import BuildProgress, PrebuildRecord, PrebuildService, match_prebuild
from app.settings import Account
from app.ui import formatting
from app.ui.controllers import Controller
from app.ui.icons import ICON_PROPERTY, icon
from app.ui.theme import is_dark, tone

if TYPE_CHECKING:
    from app.ui.create_dialog import CreateDialog
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

log = logging.getLogger(__name__)

#: How often the window lists the prebuilds for the ledger (seconds): snapshot storage costs
#: money whether or not the Prebuilds dialog is open, and one made or deleted elsewhere (the
#: CLI, the console) is noticed at the next listing. The listing rides on a workspace refresh.
LIST_INTERVAL = 900.0


@dataclass(frozen=True)
class BuildRequest:
    """What to prebuild and where.

    Attributes:
        repo: URL or absolute path of a local checkout; branch: None for the default.
        account, region, size: where the builder VM runs (the image is made there).
        agent: the agent installed; include_uncommitted: for a local checkout.
        replaces: the prebuild a "Rebuild" replaces (deleted once the new one is ready).
    """

    repo: str
    account: str
    region: str | None = None
    size: str | None = None
    branch: str | None = None
    agent: str = "claude"
    include_uncommitted: bool = False
    replaces: PrebuildRecord | None = None

    @property
    def key(self) -> str:
        """One build at a time per repository, branch, agent and place."""
        return "\0".join(
            (self.account, self.region or "", repo_key(self.repo, self.branch), self.agent)
        )


@dataclass
class Build:
    """A build the window started: running (``error`` empty) or failed.

    Attributes:
        request: what is built; progress: the last step reported (None before the first);
        error: why it failed ("" while running); started: monotonic seconds.
    """

    request: BuildRequest
    progress: BuildProgress | None = None
    error: str = ""
    started: float = field(default_factory=time.monotonic)

    @property
    def fraction(self) -> float:
        return self.progress.fraction if self.progress is not None else 0.0


class MatchState(StrEnum):
    """What the create dialog says about prebuilds for the chosen repository and place."""

    READY = "ready"
    STALE = "stale"
    BUILDING = "building"
    NONE = "none"
    UNSUPPORTED = "unsupported"


def snapshot_accounts(accounts: list[Account]) -> list[Account]:
    """The accounts whose provider can make images (the only ones with prebuilds)."""
    out = []
    for account in accounts:
        try:
            if provider_class(account.provider).capabilities.snapshots:
                out.append(account)
        except BivyError:
            continue
    return out


class PrebuildsController(Controller):
    """Prebuilds over ``PrebuildService``; the ledger learns every listing and deletion.

    Signals:
        listed(records): a listing finished (``records``: list of ``PrebuildRecord``).
        changed(): a build started, advanced, finished or failed (see ``builds``).
        built(record): a build finished; deleted(record): a prebuild was deleted.
        storage(per_currency): this month's storage cost so far per currency, after a listing.
    Attributes:
        service: the ``PrebuildService``; costs: the ``CostService`` (None: no ledger).
        records: the last listing; builds: key → ``Build`` (running or failed).
    """

    listed = Signal(object)
    changed = Signal()
    built = Signal(object)
    deleted = Signal(object)
    storage = Signal(object)

    def __init__(
        self,
        service: PrebuildService,
        costs: CostService | None = None,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.service = service
        self.costs = costs
        self.records: list[PrebuildRecord] = []
        self.builds: dict[str, Build] = {}
        self.listed_once = False

    def accounts(self) -> list[Account]:
        return snapshot_accounts(self.service.workspaces.accounts())

    # -- listing --------------------------------------------------------------------------

    def start_refresh(self) -> asyncio.Task[Any] | None:
        if self.running("list"):
            return None
        return self.start("list", self._refresh())

    async def _refresh(self) -> list[PrebuildRecord]:
        records = await self.service.list(refresh=True)
        self.records = records
        self.listed_once = True
        self.listed.emit(records)
        if self.costs is not None:
            failed = set(self.service.errors)
            complete = [a.id for a in self.accounts() if a.id not in failed]
            priced = [
                seen_prebuild(_named(r)) for r in records if r.status is not ImageStatus.FAILED
            ]
            await self.costs.observe_images(priced, listed_accounts=complete)
            snapshot = await self.costs.snapshot()
            self.storage.emit(dict(snapshot.storage_month_to_date))
        return records

    # -- builds ---------------------------------------------------------------------------

    def start_build(self, request: BuildRequest) -> asyncio.Task[Any] | None:
        """Build in the background (one at a time per ``request.key``); a failure stays in
        ``builds`` with its message until the same build is started again."""
        name = f"build:{request.key}"
        if self.running(name):
            return None
        self.builds[request.key] = Build(request)
        self.changed.emit()
        task = self.start(name, self._build(request))
        task.add_done_callback(lambda _: self._build_ended(request.key))
        return task

    def _build_ended(self, key: str) -> None:
        # Cancelled, even before it began: its row goes (a failure keeps its row and reason).
        build = self.builds.get(key)
        if build is not None and not build.error and not self.running(f"build:{key}"):
            del self.builds[key]
            self.changed.emit()

    async def _build(self, request: BuildRequest) -> PrebuildRecord | None:
        build = self.builds[request.key]

        def progress(step: BuildProgress) -> None:
            build.progress = step
            self.changed.emit()

        try:
            record = await self.service.build(
                request.repo,
                account=request.account,
                region=request.region,
                size=request.size,
                branch=request.branch,
                agent=request.agent,
                include_uncommitted=request.include_uncommitted,
                progress=progress,
            )
        except BivyError as exc:
            build.error = exc.message + (f" — {exc.hint}" if exc.hint else "")
            self.changed.emit()
            raise
        except asyncio.CancelledError:
            self.builds.pop(request.key, None)
            self.changed.emit()
            raise
        self.builds.pop(request.key, None)
        if self.costs is not None:
            # Counted from its creation even if nobody lists the prebuilds again this month.
            await self.costs.observe_images([seen_prebuild(_named(record))], listed_accounts=())
        self.built.emit(record)
        self.changed.emit()
        old = request.replaces
        if old is not None and old.id != record.id:
            await self._delete(old)  # the rebuild replaces it: no double storage bill
        await self._refresh()
        return record

    def dismiss(self, key: str) -> None:
        """Forget a failed build's row."""
        build = self.builds.get(key)
        if build is not None and build.error:
            del self.builds[key]
            self.changed.emit()

    # -- delete ---------------------------------------------------------------------------

    def start_delete(self, record: PrebuildRecord) -> asyncio.Task[Any] | None:
        name = f"delete:{record.account}:{record.id}"
        if self.running(name):
            return None
        return self.start(name, self._delete_then_list(record))

    async def _delete_then_list(self, record: PrebuildRecord) -> None:
        await self._delete(record)
        await self._refresh()

    async def _delete(self, record: PrebuildRecord) -> None:
        await self.service.delete(record.id, record.account)
        if self.costs is not None:
            # What it cost this month stays in the total; from now on it costs nothing.
            await self.costs.record_image_deleted(record.account, record.provider, record.id)
        self.records = [r for r in self.records if r.key != record.key]
        self.deleted.emit(record)

    def deleting(self, record: PrebuildRecord) -> bool:
        return self.running(f"delete:{record.account}:{record.id}")

    # -- the create dialog's question -----------------------------------------------------

    async def match_state(
        self, spec: WorkspaceSpec, account: str, region: str | None
    ) -> tuple[MatchState, PrebuildRecord | None]:
        """Whether a new workspace of ``spec`` in ``account``/``region`` starts from a
        prebuild: READY (this one), STALE (there is one, but its devcontainer config changed),
        BUILDING, NONE, or UNSUPPORTED (the provider makes no images). Reads the local
        registry and hashes a local checkout in a thread; asks no provider."""
        known = {a.id for a in self.accounts()}
        if account not in known:
            return MatchState.UNSUPPORTED, None
        key = repo_key(spec.repo_url, spec.branch)
        for build in self.builds.values():
            r = build.request
            if (
                not build.error
                and r.account == account
                and repo_key(r.repo, r.branch) == key
                and r.agent == spec.agent
                and (r.region or "") in ("", region or "")
            ):
                return MatchState.BUILDING, None
        records = await self.service.list(refresh=False)
        hit = await asyncio.to_thread(match_prebuild, records, spec, account, region)
        if hit is not None:
            return MatchState.READY, hit
        for record in records:
            if (
                record.account == account
                and record.repo_key == key
                and record.agent == spec.agent
                and record.region in ("", region or "")
                and record.status is ImageStatus.AVAILABLE
            ):
                # Same repository here but not usable: its devcontainer config changed.
                return MatchState.STALE, record
        return MatchState.NONE, None


def _named(record: PrebuildRecord) -> PrebuildRecord:
    # The ledger names a prebuild by its repository; one made elsewhere by its image name.
    return record if record.repo else record.model_copy(update={"repo": record.name or record.id})


# --- the create dialog's line -------------------------------------------------------------

#: "ok" (a usable prebuild) on a light and on a dark base; "warning" and "error" are the
#: window's (app/ui/theme.py).
_OK_TONES = ("#1e7b34", "#74d68e")


def colour(kind: str, palette: QPalette | None = None) -> QColor:
    """ "ok", "warning" or "error" in the variant that reads on ``palette``'s base."""
    if kind == "ok":
        return QColor(_OK_TONES[1] if is_dark(palette) else _OK_TONES[0])
    return tone(kind, palette)


def css(kind: str, palette: QPalette | None = None) -> str:
    return f"color: {colour(kind, palette).name()};"


_HINT_TONE = {MatchState.READY: "ok", MatchState.STALE: "warning"}


class CreateHint(QObject):
    """The line under the create dialog's repository: is there a prebuild for it here?

    Checked again (debounced) whenever the repository, branch, account or region changes.
    Attributes:
        label: the line; task: the running check; state: the last answer.
    """

    def __init__(self, dialog: CreateDialog, controller: PrebuildsController) -> None:
        super().__init__(dialog)
        self.dialog = dialog
        self.controller = controller
        self.state: MatchState | None = None
        self.task: asyncio.Task[None] | None = None
        self.label = QLabel()
        self.label.setObjectName("prebuildState")
        self.label.hide()
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(250)
        self._timer.timeout.connect(self._check)
        form = dialog.form_widget.layout()
        if isinstance(form, QFormLayout):
            form.insertRow(_row_after(form, dialog.repo_field.options_row), "", self.label)
        for signal in (
            dialog.repo.textChanged,
            dialog.branch.textChanged,
            dialog.account.currentIndexChanged,
            dialog.region_combo.currentIndexChanged,
        ):
            signal.connect(self.schedule)
        dialog.repo_field.checked.connect(self.schedule)
        controller.changed.connect(self.schedule)
        controller.listed.connect(self.schedule)

    def schedule(self, *_: object) -> None:
        self._timer.start()

    def _check(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()
        self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        d = self.dialog
        repo, _ = d.repo_field.values()
        account = d.account.currentData()
        region = d.region_combo.currentData()
        if not repo or d.repo_field.problem() or not account:
            self._show(None, None)
            return
        try:
            spec = WorkspaceSpec(
                name="prebuild-check",
                repo_url=repo,
                branch=d.branch.text().strip() or None,
                account=str(account),
                region=region,
            )
            state, record = await self.controller.match_state(spec, str(account), region)
        except (BivyError, ValueError) as exc:
            log.info("no prebuild answer: %s", exc)
            self._show(None, None)
            return
        self._show(state, record)

    def _show(self, state: MatchState | None, record: PrebuildRecord | None) -> None:
        self.state = state
        text = {
            MatchState.READY: "⚡ Prebuild ready — starts in seconds",
            MatchState.STALE: "Prebuild stale — its devcontainer changed; the VM builds it again "
            "(Rebuild it in Prebuilds…)",
            MatchState.BUILDING: "A prebuild of this repository is being built here",
            MatchState.NONE: "No prebuild here — a cold start (Prebuild repository… makes one)",
        }.get(state) if state is not None else None  # fmt: skip
        if text and record is not None and state is MatchState.READY and record.commit:
            text += f" (built at {record.commit[:8]})"
        self.label.setText(text or "")
        kind = _HINT_TONE.get(state) if state is not None else None
        self.label.setStyleSheet(css(kind, self.dialog.palette()) if kind else "")
        self.label.setVisible(bool(text))


def _row_after(form: QFormLayout, field: QWidget | QLayout) -> int:
    """The form row just after the one holding ``field`` (the end when it is not there)."""
    for row in range(form.rowCount()):
        item = form.itemAt(row, QFormLayout.ItemRole.FieldRole)
        if item is not None and field in (item.widget(), item.layout()):
            return row + 1
    return form.rowCount()


def install_create_hint(dialog: CreateDialog) -> CreateHint | None:
    """The prebuild line in a create dialog whose controller has prebuilds attached."""
    controller = getattr(dialog.controller, "prebuilds", None)
    if not isinstance(controller, PrebuildsController):
        return None
    return CreateHint(dialog, controller)


# --- the window's actions -----------------------------------------------------------------


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
