"""The create dialog's prebuild line: is there a usable prebuild for this repository here?

``install_create_hint(dialog)`` adds a ``CreateHint`` under the repository field when the dialog's
controller has prebuilds attached; ``colour``/``css`` give the prebuild windows' "ok", "warning"
and "error" tones.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, QTimer
from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QFormLayout, QLabel, QLayout, QWidget

from app.domain import WorkspaceSpec
from app.errors import BivyError
from app.services.prebuilds import PrebuildRecord
from app.ui.prebuild_controller import MatchState, PrebuildsController
from app.ui.theme import is_dark, tone

if TYPE_CHECKING:
    from app.ui.create_dialog import CreateDialog

log = logging.getLogger(__name__)

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
