"""The Prebuilds dialog (issue 14); the "Prebuild repository" form is ``prebuild_form.py``.

The dialog lists every prebuild (one row each: repository, provider and region, size, cost per
month in the account's currency, when it was built, its state) and the builds the window runs
(with their progress, or why they failed). A stale prebuild is rebuilt with one click (the new
one replaces it); "Delete…" asks first. With no prebuild it explains what one is and costs. The
form asks what to prebuild and where. All work runs in ``PrebuildsController``'s tasks
(``app/ui/prebuild_controller.py``); the widgets only show its signals.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import timedelta
from decimal import Decimal

from PySide6.QtCore import Qt
from PySide6.QtGui import QBrush, QFont
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QStackedWidget,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.domain import ImageStatus, utcnow
from app.errors import BivyError
from app.services.accounts import provider_class
from app.services.prebuilds import PrebuildRecord
from app.ui import formatting
from app.ui.prebuild_controller import Build, BuildRequest, PrebuildsController
from app.ui.prebuild_form import PrebuildForm  # re-exported: both dialogs from one place
from app.ui.prebuild_hint import colour, css

__all__ = ["PrebuildForm", "PrebuildsDialog", "ask_delete", "per_month_text"]

#: What a prebuild is and costs, said where the user decides (empty state, form).
WHAT_IT_IS = (
    "A prebuild is a snapshot of a VM that already has your repository cloned, its "
    "devcontainer image built and the agent installed. A new workspace of that repository, "
    "at the same account and region, starts from it in seconds instead of minutes; it only "
    "fetches the latest commits."
)
WHAT_IT_COSTS = (
    "The provider bills the snapshot's storage per GB and month (a few cents per GB) for as "
    "long as you keep it. Each prebuild's size and monthly cost are shown here, and what they "
    "cost is part of the window's “This month” total. Delete a prebuild when you no longer "
    "need it."
)


Confirm = Callable[[QWidget | None, str, str], bool]


def per_month_text(record: PrebuildRecord) -> str:
    price = record.monthly_price
    if price is None:
        return "–"
    if price.monthly == 0:
        return "free"  # e.g. an image on this computer's disk
    places = 3 if Decimal(0) < price.monthly < Decimal("0.1") else 2
    return f"{formatting.money(price.monthly, price.currency, places=places)}/month"


def _provider_name(kind: str) -> str:
    try:
        return provider_class(kind).display_name
    except BivyError:
        return kind


def _where(provider: str, region: str | None) -> str:
    return f"{_provider_name(provider)} · {region or 'any region'}"


def _repo_text(repo: str, branch: str | None) -> str:
    return f"{repo} @ {branch}" if branch else repo


def ask_delete(parent: QWidget | None, title: str, text: str) -> bool:
    """A warning box whose destructive button says what it does; Cancel is the default."""
    box = QMessageBox(QMessageBox.Icon.Warning, title, text, parent=parent)
    delete = box.addButton("Delete prebuild", QMessageBox.ButtonRole.DestructiveRole)
    box.addButton(QMessageBox.StandardButton.Cancel)
    box.setDefaultButton(QMessageBox.StandardButton.Cancel)
    box.exec()
    return box.clickedButton() is delete


class _EmptyState(QWidget):
    """No prebuilds: what they are, what they cost, and the button to make one."""

    def __init__(self, on_new: Callable[[], None], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.addStretch(1)
        title = QLabel("No prebuilds yet")
        font = QFont(title.font())
        font.setPointSizeF(font.pointSizeF() * 1.4)
        font.setBold(True)
        title.setFont(font)
        title.setAlignment(Qt.AlignmentFlag.AlignCenter)
        layout.addWidget(title)
        for text in (WHAT_IT_IS, WHAT_IT_COSTS):
            label = QLabel(text)
            label.setWordWrap(True)
            label.setAlignment(Qt.AlignmentFlag.AlignCenter)
            label.setMinimumWidth(520)
            row = QHBoxLayout()
            row.addStretch()
            row.addWidget(label, 0)
            row.addStretch()
            layout.addSpacing(6)
            layout.addLayout(row)
        self.button = QPushButton("Prebuild a repository…")
        self.button.setMinimumHeight(34)
        self.button.clicked.connect(on_new)
        buttons = QHBoxLayout()
        buttons.addStretch()
        buttons.addWidget(self.button)
        buttons.addStretch()
        layout.addSpacing(12)
        layout.addLayout(buttons)
        layout.addStretch(2)


class PrebuildsDialog(QDialog):
    """Every prebuild and running build; Rebuild, Delete…, Refresh.

    Attributes:
        table: one row per prebuild and per build of this window; rows: what each row shows
            (a ``PrebuildRecord`` or a ``Build``); footer: the totals; stack: empty state or
            table; confirm: asks before a delete (tests inject one).
    """

    HEADERS = ("Repository", "Where", "Size", "Per month", "Built", "State")

    def __init__(
        self,
        controller: PrebuildsController,
        parent: QWidget | None = None,
        *,
        currency: str = "EUR",
        new_prebuild: Callable[[], object] | None = None,
        confirm: Confirm = ask_delete,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Prebuilds")
        self.resize(1060, 420)
        self.controller = controller
        self.currency = currency
        self.confirm = confirm
        self._new_prebuild = new_prebuild
        self.rows: list[PrebuildRecord | Build] = []
        self._storage_mtd: dict[str, Decimal] = {}

        self.table = QTableWidget(0, len(self.HEADERS))
        self.table.setHorizontalHeaderLabels(list(self.HEADERS))
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setAlternatingRowColors(True)
        self.table.setWordWrap(False)
        self.table.setTextElideMode(Qt.TextElideMode.ElideMiddle)  # a repository's name is last
        self.table.verticalHeader().hide()
        self.table.verticalHeader().setDefaultSectionSize(30)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for column, width in ((1, 175), (2, 70), (3, 105), (4, 215), (5, 235)):
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.Interactive)
            header.resizeSection(column, width)
        self.table.itemSelectionChanged.connect(self._selection_changed)
        self.empty = _EmptyState(self.new_prebuild)
        self.stack = QStackedWidget()
        self.stack.addWidget(self.empty)
        self.stack.addWidget(self.table)

        self.loading = QProgressBar()
        self.loading.setRange(0, 0)
        self.loading.setMaximumWidth(90)
        self.loading.setTextVisible(False)
        self.loading.setToolTip("Asking the providers for their images…")
        self.loading.hide()
        self.footer = QLabel()
        self.footer.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.errors = QLabel()
        self.errors.setStyleSheet(css("error", self.palette()))
        self.errors.setWordWrap(True)
        self.errors.hide()

        self.new_button = QPushButton("Prebuild repository…")
        self.new_button.setToolTip("Build a prebuild of another repository")
        self.new_button.clicked.connect(self.new_prebuild)
        self.rebuild_button = QPushButton("Rebuild")
        self.rebuild_button.setToolTip(
            "Build it again from the repository's latest commit; the new prebuild replaces this "
            "one once it is ready"
        )
        self.rebuild_button.clicked.connect(self.rebuild_selected)
        self.delete_button = QPushButton("Delete…")
        self.delete_button.setToolTip("Delete the prebuild's image at the provider")
        self.delete_button.clicked.connect(self.delete_selected)
        self.refresh_button = QPushButton("Refresh")
        self.refresh_button.clicked.connect(self.refresh)
        self.close_button = QPushButton("Close")
        self.close_button.clicked.connect(self.accept)
        buttons = QHBoxLayout()
        for button in (self.new_button, self.rebuild_button, self.delete_button):
            buttons.addWidget(button)
        buttons.addStretch()
        buttons.addWidget(self.loading)
        buttons.addWidget(self.refresh_button)
        buttons.addWidget(self.close_button)

        layout = QVBoxLayout(self)
        layout.addWidget(self.stack, 1)
        layout.addWidget(self.errors)
        layout.addWidget(self.footer)
        layout.addLayout(buttons)

        controller.listed.connect(self._listed)
        controller.changed.connect(self.fill)
        controller.storage.connect(self._storage)
        controller.busy.connect(self._busy)
        self.fill()
        self.refresh()

    # -- data -----------------------------------------------------------------------------

    def refresh(self) -> None:
        self.controller.start_refresh()

    def _busy(self, name: str, on: bool) -> None:
        if name == "list":
            self.loading.setVisible(on)
            self.refresh_button.setEnabled(not on)
            if not on:
                self.fill()
        elif name.startswith("delete:") and not on:
            self.fill()

    def _listed(self, _records: object) -> None:
        self.fill()

    def _storage(self, per_currency: object) -> None:
        self._storage_mtd = dict(per_currency) if isinstance(per_currency, dict) else {}
        self._show_footer()

    def fill(self) -> None:
        """Show the controller's records and builds (building first, then by repository)."""
        selected = self.selected()
        builds = sorted(self.controller.builds.values(), key=lambda b: b.started)
        records = sorted(self.controller.records, key=lambda r: (r.repo or "~", r.created_at))
        self.rows = [*builds, *records]
        self.table.setRowCount(len(self.rows))
        for row, item in enumerate(self.rows):
            if isinstance(item, Build):
                self._fill_build(row, item)
            else:
                self._fill_record(row, item)
        empty = not self.rows and self.controller.listed_once
        self.stack.setCurrentIndex(0 if empty else 1)
        self.rebuild_button.setVisible(not empty)
        self.delete_button.setVisible(not empty)
        self.new_button.setVisible(not empty)  # the empty state has its own button
        self._show_errors()
        self._show_footer()
        if selected is not None:
            for row, item in enumerate(self.rows):
                if _same(item, selected):
                    self.table.selectRow(row)
                    break
        self._selection_changed()

    def _cells(self, row: int, texts: Sequence[str], tips: Sequence[str] = ()) -> None:
        for column, text in enumerate(texts):
            cell = QTableWidgetItem(text)
            if column in (2, 3):
                cell.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            if column < len(tips) and tips[column]:
                cell.setToolTip(tips[column])
            self.table.setItem(row, column, cell)

    def _fill_record(self, row: int, record: PrebuildRecord) -> None:
        repo = _repo_text(record.repo, record.branch) if record.repo else (
            f"(made elsewhere) {record.name or record.id}"
        )  # fmt: skip
        size = f"{record.size_gb:.1f} GB" if record.size_gb is not None else "–"
        now = utcnow()
        built = f"{formatting.local_time(record.created_at)} ({_age(now - record.created_at)})"
        state, kind, tip = _record_state(record, self.controller.deleting(record))
        repo_tip = (
            f"{repo}\nImage {record.id} at account {record.account}"
            + (f", commit {record.commit[:12]}" if record.commit else "")
            + (f", agent {record.agent}" if record.agent else "")
            + ("" if record.repo else ". Another installation made it (or this one lost its "
               "record): its repository is unknown here, so it is not used for new workspaces.")
        )  # fmt: skip
        self._cells(
            row,
            (repo, _where(record.provider, record.region), size, per_month_text(record), built, ""),
            (repo_tip, f"account {record.account}", "", _vat(record), _built_tip(record)),
        )
        self.table.removeCellWidget(row, 5)
        if record.stale and record.repo and not self.controller.deleting(record):
            self.table.setCellWidget(row, 5, self._stale_cell(record, tip))
            return
        cell = QTableWidgetItem(state)
        cell.setToolTip(tip)
        if kind:
            cell.setForeground(QBrush(colour(kind, self.palette())))
        self.table.setItem(row, 5, cell)

    def _stale_cell(self, record: PrebuildRecord, tip: str) -> QWidget:
        """ "stale" and its one-click Rebuild."""
        widget = QWidget()
        widget.setToolTip(tip)
        layout = QHBoxLayout(widget)
        layout.setContentsMargins(4, 0, 4, 0)
        label = QLabel("stale: config changed")
        label.setStyleSheet(css("warning", self.palette()))
        button = QPushButton("Rebuild")
        button.setObjectName("rebuild")
        button.setToolTip("Build it again; the new one replaces this one when ready")
        button.clicked.connect(lambda: self.rebuild(record))
        layout.addWidget(label, 1)
        layout.addWidget(button)
        return widget

    def _fill_build(self, row: int, build: Build) -> None:
        r = build.request
        self._cells(
            row,
            (_repo_text(r.repo, r.branch), _where(self._provider_of(r.account), r.region), "–",
             "–", "now", ""),
            (f"Building at account {r.account}, agent {r.agent}",),
        )  # fmt: skip
        if build.error:
            self.table.removeCellWidget(row, 5)
            cell = QTableWidgetItem(f"failed: {build.error}")
            cell.setToolTip(build.error)
            cell.setForeground(QBrush(colour("error", self.palette())))
            self.table.setItem(row, 5, cell)
            return
        bar = QProgressBar()
        bar.setRange(0, 100)
        bar.setValue(round(build.fraction * 100))
        detail = build.progress.detail if build.progress is not None else "Starting"
        bar.setFormat(f"building {round(build.fraction * 100)}%")
        bar.setToolTip(detail)
        self.table.setCellWidget(row, 5, bar)

    def _provider_of(self, account: str) -> str:
        for a in self.controller.accounts():
            if a.id == account:
                return a.provider
        return account

    def _show_errors(self) -> None:
        errors = getattr(self.controller.service, "errors", {})
        lines = [f"{account}: {exc}" for account, exc in sorted(errors.items())]
        self.errors.setText("Could not list the prebuilds of " + "; ".join(lines) if lines else "")
        self.errors.setVisible(bool(lines))

    def _show_footer(self) -> None:
        records = [r for r in self.controller.records if r.status is not ImageStatus.FAILED]
        if not records:
            self.footer.setText("")
            self.footer.setVisible(False)
            return
        gb = sum(r.size_gb or 0.0 for r in records)
        monthly: dict[str, Decimal] = {}
        for r in records:
            if r.monthly_price is not None:
                c = r.monthly_price.currency
                monthly[c] = monthly.get(c, Decimal(0)) + r.monthly_price.monthly
        parts = [f"{len(records)} prebuild{'s' if len(records) != 1 else ''}", f"{gb:.1f} GB"]
        if monthly:
            parts.append(
                " + ".join(formatting.money(v, c) for c, v in sorted(monthly.items()))
                + " per month"
            )
        mtd = {c: v for c, v in self._storage_mtd.items() if v > 0}
        if mtd:
            parts.append(
                "this month so far "
                + " + ".join(formatting.money(v, c, places=3) for c, v in sorted(mtd.items()))
                + " (in “This month”)"
            )
        self.footer.setText(" · ".join(parts))
        self.footer.setVisible(True)

    # -- actions --------------------------------------------------------------------------

    def selected(self) -> PrebuildRecord | Build | None:
        rows = self.table.selectionModel().selectedRows()
        if not rows or rows[0].row() >= len(self.rows):
            return None
        return self.rows[rows[0].row()]

    def _selection_changed(self) -> None:
        item = self.selected()
        if isinstance(item, Build):
            self.rebuild_button.setEnabled(bool(item.error))
            self.rebuild_button.setText("Try again" if item.error else "Rebuild")
            self.delete_button.setEnabled(True)
            self.delete_button.setText("Dismiss" if item.error else "Cancel build")
            return
        self.rebuild_button.setText("Rebuild")
        self.delete_button.setText("Delete…")
        ok = isinstance(item, PrebuildRecord) and not self.controller.deleting(item)
        self.rebuild_button.setEnabled(ok and bool(item and item.repo) and not self._building(item))
        self.delete_button.setEnabled(ok)

    def _building(self, item: object) -> bool:
        if not isinstance(item, PrebuildRecord):
            return False
        return self.controller.running(f"build:{_request_for(item).key}")

    def new_prebuild(self) -> None:
        if self._new_prebuild is not None:
            self._new_prebuild()

    def rebuild_selected(self) -> None:
        item = self.selected()
        if isinstance(item, Build):
            if item.error:
                self.controller.start_build(item.request)
            return
        if isinstance(item, PrebuildRecord):
            self.rebuild(item)

    def rebuild(self, record: PrebuildRecord) -> None:
        """Build ``record``'s repository again where it is; the new one replaces it."""
        if not record.repo:
            return
        self.controller.start_build(_request_for(record))

    def delete_selected(self) -> None:
        item = self.selected()
        if isinstance(item, Build):
            if item.error:
                self.controller.dismiss(item.request.key)
            else:  # its cleanup deletes the builder VM and any half-made image
                self.controller.cancel(f"build:{item.request.key}")
            return
        if not isinstance(item, PrebuildRecord):
            return
        what = _repo_text(item.repo, item.branch) if item.repo else (item.name or item.id)
        cost = per_month_text(item)
        size = f"{item.size_gb:.1f} GB" if item.size_gb is not None else "its size unknown"
        if not self.confirm(
            self,
            "Delete this prebuild?",
            f"The prebuild of {what} ({size}, {cost}) is deleted at "
            f"{_provider_name(item.provider)} now. New workspaces of this repository then start "
            "cold (minutes) until you prebuild it again. Running workspaces are not affected.",
        ):
            return
        self.controller.start_delete(item)
        self.fill()


def _age(delta: timedelta) -> str:
    """``just now``, ``12 min ago``, ``5 h ago``, ``3 days ago``."""
    seconds = max(0, int(delta.total_seconds()))
    if seconds < 60:
        return "just now"
    if seconds < 3600:
        return f"{seconds // 60} min ago"
    if seconds < 2 * 86400:
        return f"{seconds // 3600} h ago"
    return f"{seconds // 86400} days ago"


def _vat(record: PrebuildRecord) -> str:
    price = record.monthly_price
    if price is None:
        return "The provider has not reported its size yet"
    vat = "VAT included" if price.includes_vat else "excluding VAT"
    return f"Storage billed per GB and month, {vat}; counted in “This month”"


def _built_tip(record: PrebuildRecord) -> str:
    parts = [f"Built {formatting.local_time(record.created_at)}"]
    if record.commit:
        parts.append(f"at commit {record.commit[:12]}")
    if record.agent_version:
        parts.append(f"with {record.agent} {record.agent_version}")
    return " ".join(parts)


def _request_for(record: PrebuildRecord) -> BuildRequest:
    return BuildRequest(
        repo=record.repo,
        account=record.account,
        region=record.region or None,
        branch=record.branch,
        agent=record.agent,
        replaces=record,
    )


def _same(a: PrebuildRecord | Build, b: PrebuildRecord | Build) -> bool:
    if isinstance(a, Build) and isinstance(b, Build):
        return a.request.key == b.request.key
    if isinstance(a, PrebuildRecord) and isinstance(b, PrebuildRecord):
        return a.key == b.key
    return False


def _record_state(record: PrebuildRecord, deleting: bool) -> tuple[str, str, str]:
    """(text, colour kind or "", tooltip) of a prebuild's state cell."""
    if deleting:
        return "deleting…", "", "Its image is being deleted at the provider"
    if record.status is ImageStatus.CREATING:
        return "image being made", "", "The provider is still making the image"
    if record.status is ImageStatus.FAILED:
        return "failed", "error", "The provider could not make the image: delete it"
    if record.status is ImageStatus.UNKNOWN:
        return "unknown", "warning", "The provider reports a state Bivy does not know"
    if record.stale:
        return (
            "stale",
            "warning",
            (
                "The repository's devcontainer configuration changed since it was built: a "
                "workspace made from it has to build the devcontainer again. Rebuild it."
            ),
        )
    if not record.repo:
        return "ready (not used)", "", "Its repository is unknown here"
    return "ready", "ok", "New workspaces of this repository here start from it"
