"""The create dialog: repo, account, region, size with live prices, progress, Cancel at any time.

The repository is a URL or a git checkout on this computer (``app.ui.repo_field``), which the
app sends to the VM as a git bundle, optionally with its uncommitted changes.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Coroutine, Sequence
from typing import Any

from PySide6.QtCore import QTimer, Signal
from PySide6.QtGui import QCloseEvent, QPalette
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLayout,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from app.domain import (
    AgentCredentialKind,
    Region,
    Size,
    Workspace,
    WorkspaceSpec,
    validate_workspace_name,
)
from app.domain.validation import validate_branch
from app.errors import BivyError
from app.services.accounts import needs_no_account, provider_class
from app.services.compare import Catalogue, SizeClass, compare_sizes
from app.settings import Settings
from app.ui import formatting
from app.ui.controllers import WorkspacesController
from app.ui.price_comparison import PriceComparison
from app.ui.repo_field import RepoField, repo_problem

__all__ = ["CreateDialog", "PriceComparison", "branch_problem", "name_from_repo", "repo_problem"]

_CREDENTIALS: list[tuple[AgentCredentialKind, str]] = [
    ("api_key", "Anthropic API key"),
    ("oauth_token", "Claude Code OAuth token (subscription)"),
    ("none", "None — log in inside the terminal"),
]


def branch_problem(branch: str) -> str | None:
    """Why ``branch`` is not a usable branch name, or None."""
    try:
        validate_branch(branch)
    except ValueError as exc:
        return str(exc)
    return None


def name_from_repo(url: str) -> str:
    """A workspace name proposal from the repository's last path segment."""
    tail = url.rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1].removesuffix(".git").lower()
    name = re.sub(r"[^a-z0-9-]+", "-", tail).strip("-")
    name = re.sub(r"^[^a-z]+", "", name)[:40].rstrip("-")
    return name or "workspace"


class CreateDialog(QDialog):
    """Asks what to create, then shows its progress; Cancel cancels the create task.

    Signals:
        created(workspace): the workspace was created and is bootstrapping.
    Attributes:
        controller: the workspaces controller that runs the create.
        create_task: the running create, if any (kept so Cancel can cancel it).
        load_task: the running region/size load, if any.
        compare: the price comparison across accounts (shown with two accounts or more).
        compare_task: the running load of every account's sizes, if any.
        catalogues: account id → its sizes in every region, for the comparison.
    """

    created = Signal(object)

    def __init__(
        self,
        controller: WorkspacesController,
        settings: Settings,
        accounts: Sequence[tuple[str, str]],
        parent: QWidget | None = None,
        *,
        existing_names: Sequence[str] = (),
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("New workspace")
        self.setMinimumWidth(560)
        self.controller = controller
        self.settings = settings
        self.create_task: asyncio.Task[Workspace | None] | None = None
        self.load_task: asyncio.Task[None] | None = None
        self._sizes: list[Size] = []
        self._existing = set(existing_names)
        self._name_edited = False
        self.compare_task: asyncio.Task[None] | None = None
        self.catalogues: dict[str, list[Size]] = {}
        self._catalogue_errors: dict[str, str] = {}
        # (region, size) to select once the account's regions and sizes have loaded.
        self._pending: tuple[str, str] | None = None
        # Prices are compared between cloud accounts; a free one on this computer is no offer.
        self._compared = [a for a, _ in accounts if not self._free(a)]
        self._build(accounts)
        # Issue 14: a line under the repository says whether a prebuild matches.
        from app.ui.prebuild_actions import install_create_hint

        self.prebuild_hint = install_create_hint(self)
        self._validate()
        QTimer.singleShot(0, self._account_changed)
        if len(self._compared) > 1:
            QTimer.singleShot(0, self._load_catalogues)

    # -- construction ---------------------------------------------------------------------

    def _build(self, accounts: Sequence[tuple[str, str]]) -> None:
        defaults = self.settings.defaults
        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self.repo_field = RepoField(self)
        self.repo = self.repo_field.edit
        self.choose_folder_button = self.repo_field.choose_folder_button
        self.include_uncommitted = self.repo_field.include_uncommitted
        self.local_state = self.repo_field.local_state
        self.repo_field.checked.connect(self._validate)
        self.repo_error = QLabel()
        self.repo_error.setWordWrap(True)
        self.repo_error.setStyleSheet("color: #b00020;")
        self.branch = QLineEdit()
        self.branch.setPlaceholderText("default branch")
        self.branch.setToolTip("Leave empty for the repository's default branch")
        self.name = QLineEdit()
        self.name.setToolTip("Lower-case letters, digits and '-'; `ssh bivy-<name>` reaches it")
        self.name.textEdited.connect(self._name_was_edited)
        self.name_error = QLabel()
        self.name_error.setStyleSheet("color: #b00020;")
        self.account = QComboBox()
        for account_id, label in accounts:
            self.account.addItem(label, account_id)
        if defaults.account:
            index = self.account.findData(defaults.account)
            if index >= 0:
                self.account.setCurrentIndex(index)
        self.region_combo = QComboBox()
        self.region_combo.setToolTip("Where the VM runs; sizes and prices depend on it")
        self.size_combo = QComboBox()
        self.size_combo.setToolTip("The server type, with its price in the chosen region")
        self.loading = QProgressBar()
        self.loading.setRange(0, 0)
        self.loading.setMaximumWidth(90)
        self.loading.setTextVisible(False)
        self.loading.setToolTip("Loading live prices from the provider…")
        self.loading.hide()
        size_row = QHBoxLayout()
        size_row.addWidget(self.size_combo, 1)
        size_row.addWidget(self.loading)
        self.price = QLabel("–")
        self.price.setToolTip("Billed per started hour until the VM is deleted")
        self.idle = QSpinBox()
        self.idle.setRange(1, 24 * 60)
        self.idle.setSuffix(" min")
        self.idle.setValue(defaults.idle_minutes)
        self.idle.setToolTip("The VM deletes itself after this long without agent or user activity")
        self.max_hours = QSpinBox()
        self.max_hours.setRange(1, 24 * 7)
        self.max_hours.setSuffix(" h")
        self.max_hours.setValue(defaults.max_hours)
        self.max_hours.setToolTip("Hard limit: the VM is deleted this long after creation")
        self.credential = QComboBox()
        for kind, label in _CREDENTIALS:
            self.credential.addItem(label, kind)
        self.credential.setCurrentIndex(max(0, self.credential.findData(defaults.agent_credential)))
        self.credential.setToolTip("Which credential from the keychain the agent gets")

        form.addRow("Repository", self.repo_field.row)
        form.addRow("", self.repo_error)
        form.addRow("", self.repo_field.options_row)
        form.addRow("Branch", self.branch)
        form.addRow("Name", self.name)
        form.addRow("", self.name_error)
        form.addRow("Account", self.account)
        form.addRow("Region", self.region_combo)
        form.addRow("Size", size_row)
        form.addRow("Price", self.price)
        self.compare = PriceComparison()
        self.compare.picked.connect(self.pick)
        self.compare.setVisible(len(self._compared) > 1)
        form.addRow(self.compare)
        # One line, no wrap (a wrapped label was cut off at the bottom in the form layout).
        self.compare_hint = QLabel("Add a second cloud account in Settings to compare prices.")
        self.compare_hint.setToolTip(
            "With two accounts or more, this dialog shows the chosen size's price at each."
        )
        self.compare_hint.setForegroundRole(QPalette.ColorRole.PlaceholderText)
        self.compare_hint.setVisible(len(self._compared) <= 1)
        form.addRow("", self.compare_hint)
        form.addRow("Idle delete after", self.idle)
        form.addRow("Maximum lifetime", self.max_hours)
        form.addRow("Agent credential", self.credential)
        self.form_widget = QWidget()
        self.form_widget.setLayout(form)
        self.form_widget.setMinimumWidth(560)

        self.step = QLabel()
        self.step.setWordWrap(True)
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.step.hide()
        self.progress.hide()

        self.buttons = QDialogButtonBox()
        self.create_button = QPushButton("Create")
        self.create_button.setDefault(True)
        self.create_button.setToolTip("Create the VM on the chosen account (Ctrl+Return)")
        self.create_button.setShortcut("Ctrl+Return")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Close, or stop a create in progress and delete what it made")
        self.buttons.addButton(self.create_button, QDialogButtonBox.ButtonRole.AcceptRole)
        self.buttons.addButton(self.cancel_button, QDialogButtonBox.ButtonRole.RejectRole)
        self.create_button.clicked.connect(self.start_create)
        self.cancel_button.clicked.connect(self.cancel)

        layout = QVBoxLayout(self)
        # Grow with the content (the comparison arrives after the dialog is shown); with only
        # the default constraint the minimum width set above stops the layout from doing so
        # and the comparison's rows were squeezed under its note.
        layout.setSizeConstraint(QLayout.SizeConstraint.SetMinimumSize)
        layout.addWidget(self.form_widget)
        layout.addWidget(self.step)
        layout.addWidget(self.progress)
        layout.addWidget(self.buttons)

        self.repo.textChanged.connect(self._repo_changed)
        self.name.textChanged.connect(self._validate)
        self.branch.textChanged.connect(self._validate)
        self.account.currentIndexChanged.connect(self._account_changed)
        self.region_combo.currentIndexChanged.connect(self._region_changed)
        self.size_combo.currentIndexChanged.connect(self._show_price)
        self.controller.progress.connect(self._on_progress)
        self.controller.failed.connect(self._on_failed)

    # -- validation as the user types -----------------------------------------------------

    def _name_was_edited(self, _: str) -> None:
        self._name_edited = True

    def _repo_changed(self, text: str) -> None:
        if not self._name_edited:
            self.name.setText(name_from_repo(text) if text.strip() else "")
        local = self.repo_field.is_local()
        self.branch.setPlaceholderText("current branch" if local else "default branch")
        self._validate()

    def _validate(self) -> bool:
        url = self.repo.text().strip()
        problem = self.repo_field.problem()
        branch = self.branch.text().strip()
        if branch and not problem:
            problem = branch_problem(branch)
            problem = f"Branch: {problem}" if problem else None
        self.repo_error.setText(problem or "")
        self.repo_error.setVisible(bool(problem))
        name_problem: str | None = None
        name = self.name.text().strip()
        if name:
            try:
                validate_workspace_name(name)
            except ValueError as exc:
                name_problem = str(exc)
            if name in self._existing:
                name_problem = f"a workspace named {name!r} exists already"
        self.name_error.setText(name_problem or "")
        self.name_error.setVisible(bool(name_problem))
        ok = bool(
            url
            and not problem
            and name
            and not name_problem
            and self.account.currentData()
            and self.size_combo.currentData()
        )
        self.create_button.setEnabled(ok and self.create_task is None)
        return ok

    # -- live regions, sizes and prices ---------------------------------------------------

    def _run_load(self, coro: Coroutine[Any, Any, None]) -> None:
        if self.load_task is not None and not self.load_task.done():
            self.load_task.cancel()
        self.load_task = asyncio.ensure_future(self._loading(coro))

    async def _loading(self, coro: Coroutine[Any, Any, None]) -> None:
        self.loading.show()
        self.size_combo.setEnabled(False)
        try:
            await coro
        finally:
            self.loading.hide()
            self.size_combo.setEnabled(True)
            self._validate()

    def _account_changed(self, *_: object) -> None:
        account = self.account.currentData()
        if account:
            self._run_load(self._load_regions(str(account)))

    async def _load_regions(self, account: str) -> None:
        regions = await self.controller.regions(account) or []
        self._fill_regions(regions)
        await self._load_sizes(account, self.region_combo.currentData())

    def _fill_regions(self, regions: list[Region]) -> None:
        self.region_combo.blockSignals(True)
        self.region_combo.clear()
        for region in regions:
            where = ", ".join(p for p in (region.city, region.country) if p)
            self.region_combo.addItem(f"{region.id} — {where}" if where else region.id, region.id)
        wanted = self._pending[0] if self._pending else self.settings.defaults.region
        index = self.region_combo.findData(wanted) if wanted else -1
        self.region_combo.setCurrentIndex(max(0, index))
        self.region_combo.blockSignals(False)

    def _region_changed(self, *_: object) -> None:
        account = self.account.currentData()
        if account:
            self._run_load(self._load_sizes(str(account), self.region_combo.currentData()))

    async def _load_sizes(self, account: str, region: str | None) -> None:
        sizes = await self.controller.sizes(account, region) or []
        self._sizes = [s for s in sizes if not s.deprecated]
        previous = self.size_combo.currentData() or self.settings.defaults.size
        if self._pending is not None:
            previous, self._pending = self._pending[1], None
        self.size_combo.blockSignals(True)
        self.size_combo.clear()
        for size in sorted(self._sizes, key=lambda s: _hourly(s, region)):
            price = size.price_in(region) if region else None
            label = f"{size.name} — {size.cores} vCPU, {size.memory_gb:g} GB RAM, {size.disk_gb} GB"
            if price is not None:
                label += f" — {formatting.hourly(price.hourly, price.currency)}/h"
            self.size_combo.addItem(label, size.name)
        index = self.size_combo.findData(previous) if previous else -1
        self.size_combo.setCurrentIndex(max(0, index) if self.size_combo.count() else -1)
        self.size_combo.blockSignals(False)
        self._show_price()

    def _show_price(self, *_: object) -> None:
        name = self.size_combo.currentData()
        region = self.region_combo.currentData()
        size = next((s for s in self._sizes if s.name == name), None)
        price = size.price_in(region) if size is not None and region else None
        if price is None:
            self.price.setText("–" if size is None else "not available in this region")
        elif price.hourly == 0 and price.monthly == 0:
            self.price.setText("free")
        else:
            self.price.setText(
                f"{formatting.hourly(price.hourly, price.currency)} per hour · at most "
                f"{formatting.money(price.monthly, price.currency)} per month"
                + (" (VAT incl.)" if price.includes_vat else " (excl. VAT)")
            )
        if size is not None and size.notice:
            # e.g. a local VM without hardware virtualisation: said before Create, not after.
            self.price.setText(f"{self.price.text()}\n{size.notice}")
        self._validate()
        self._show_comparison()

    # -- the same size class at the other accounts ----------------------------------------

    def _account_labels(self) -> dict[str, str]:
        return {
            str(self.account.itemData(i)): self.account.itemText(i)
            for i in range(self.account.count())
        }

    def _load_catalogues(self) -> None:
        if self.compare_task is None or self.compare_task.done():
            self.compare_task = asyncio.ensure_future(self._catalogues())

    async def _catalogues(self) -> None:
        """Every account's sizes in every region, concurrently; an account that fails is
        named under the table instead of interrupting the dialog with an error."""
        accounts = [a for a in self._account_labels() if a in self._compared]
        self.compare.set_loading(True)
        try:
            results = await asyncio.gather(
                *(self.controller.service.sizes(a) for a in accounts), return_exceptions=True
            )
        finally:
            self.compare.set_loading(False)
        for account, result in zip(accounts, results, strict=True):
            if isinstance(result, BivyError):
                self._catalogue_errors[account] = result.message
            elif isinstance(result, BaseException):
                raise result
            else:
                self.catalogues[account] = list(result)
        self._show_comparison()

    def _show_comparison(self) -> None:
        if not self.compare.isVisibleTo(self):
            return
        name = self.size_combo.currentData()
        size = next((s for s in self._sizes if s.name == name), None)
        labels = self._account_labels()
        current = (
            str(self.account.currentData()),
            str(self.region_combo.currentData()),
            str(name),
        )
        missing = [
            f"{labels.get(a, a)}: prices could not be loaded ({error})"
            for a, error in sorted(self._catalogue_errors.items())
        ]
        if size is None:
            self.compare.show_offers(None, "", [], labels, current, missing)
            return
        size_class = SizeClass.of(size)
        catalogues = [
            Catalogue(account=a, provider=self._provider_of(a), sizes=sizes)
            for a, sizes in self.catalogues.items()
        ]
        offers = compare_sizes(catalogues, size_class, architecture=size.architecture)
        self.compare.show_offers(size_class, size.architecture, offers, labels, current, missing)

    def _provider_of(self, account: str) -> str:
        configured = self.settings.account(account)
        return configured.provider if configured else account

    def _free(self, account: str) -> bool:
        try:
            return needs_no_account(provider_class(self._provider_of(account)))
        except BivyError:
            return False

    def pick(self, account: str, region: str, size: str) -> None:
        """Switch the form to ``size`` in ``region`` at ``account`` (a comparison row)."""
        index = self.account.findData(account)
        if index < 0:
            return
        self._pending = (region, size)
        if self.account.currentIndex() != index:
            self.account.setCurrentIndex(index)  # loads its regions, then its sizes
            return
        region_index = self.region_combo.findData(region)
        if region_index >= 0 and self.region_combo.currentIndex() != region_index:
            self.region_combo.setCurrentIndex(region_index)  # loads its sizes
            return
        self._pending = None
        size_index = self.size_combo.findData(size)
        if size_index >= 0:
            self.size_combo.setCurrentIndex(size_index)

    # -- create and cancel ----------------------------------------------------------------

    def spec(self) -> WorkspaceSpec:
        account = str(self.account.currentData())
        configured = self.settings.account(account)
        repo_url, include_uncommitted = self.repo_field.values()
        return WorkspaceSpec(
            name=self.name.text().strip(),
            repo_url=repo_url,
            include_uncommitted=include_uncommitted,
            branch=self.branch.text().strip() or None,
            provider=configured.provider if configured else account,
            account=account,
            region=self.region_combo.currentData(),
            size=self.size_combo.currentData(),
            idle_minutes=self.idle.value(),
            max_hours=self.max_hours.value(),
            agent_credential=self.credential.currentData(),
        )

    def start_create(self) -> None:
        if not self._validate():
            return
        spec = self.spec()
        self._spec_name = spec.name
        self.step.setStyleSheet("")
        self.form_widget.setEnabled(False)
        self.create_button.setEnabled(False)
        self.step.setText("Starting…")
        self.step.show()
        self.progress.setValue(0)
        self.progress.show()
        self.cancel_button.setToolTip("Stop the create and delete anything it created")
        self.create_task = self.controller.start_create(spec)
        self.create_task.add_done_callback(self._create_done)

    def _on_progress(self, name: str, step: str, detail: str, fraction: float) -> None:
        if self.create_task is None or name != getattr(self, "_spec_name", None):
            return
        step = step[:1].upper() + step[1:]
        self.step.setText(f"{step}: {detail}" if detail else step)
        self.progress.setValue(round(fraction * 100))

    def _on_failed(self, message: str, hint: str) -> None:
        # The create's error belongs here, in front of the user, not behind the dialog.
        if self.create_task is not None:
            self._error = message + (f" — {hint}" if hint else "")

    _error = ""

    def _create_done(self, task: asyncio.Task[Workspace | None]) -> None:
        self.create_task = None
        ws = None if task.cancelled() else task.result()
        if ws is not None:
            self.created.emit(ws)
            self.accept()
            return
        # Failed or cancelled: the form comes back as it was, the error is shown by the app.
        self.form_widget.setEnabled(True)
        self.progress.hide()
        if self._cancelled:
            self.step.setStyleSheet("")
            self.step.setText("Cancelled; nothing was left running.")
        else:
            self.step.setStyleSheet("color: #b00020;")
            self.step.setText(f"Not created: {self._error}" if self._error else "")
        self.step.setVisible(bool(self.step.text()))
        self._error = ""
        self._cancelled = False
        self.cancel_button.setEnabled(True)
        self._validate()

    _cancelled = False

    def cancel(self) -> None:
        """Cancel a running create (its cleanup deletes the VM), else close the dialog."""
        if self.create_task is not None and not self.create_task.done():
            self._cancelled = True
            self.step.setText("Cancelling: deleting what was created…")
            self.cancel_button.setEnabled(False)
            self.create_task.cancel()
            return
        self.reject()

    def reject(self) -> None:
        if self.create_task is not None and not self.create_task.done():
            self.cancel()
            return
        self.repo_field.stop()
        for task in (self.load_task, self.compare_task):
            if task is not None and not task.done():
                task.cancel()
        super().reject()

    def closeEvent(self, event: QCloseEvent) -> None:
        if self.create_task is not None and not self.create_task.done():
            self.cancel()
            event.ignore()
            return
        super().closeEvent(event)

    def busy_loading(self) -> bool:
        return self.load_task is not None and not self.load_task.done()


def _hourly(size: Size, region: str | None) -> float:
    price = size.price_in(region) if region else None
    return float(price.hourly) if price else float("inf")
