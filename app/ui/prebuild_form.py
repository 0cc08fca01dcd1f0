"""The "Prebuild a repository" form (issue 14): what to prebuild (repository, branch, agent)
and where (account, region, the builder's size), with what it costs said before Build. Regions
and sizes load through ``WorkspacesController`` in tasks; Build emits a ``BuildRequest`` that
``PrebuildsController`` runs (``app/ui/prebuild_controller.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.agents.registry import AGENTS, DEFAULT_AGENT
from app.domain import Region, Size, Workspace
from app.errors import BivyError
from app.services.accounts import provider_class
from app.settings import Settings
from app.ui import formatting
from app.ui.controllers import WorkspacesController
from app.ui.prebuild_controller import BuildRequest, PrebuildsController
from app.ui.prebuild_hint import css
from app.ui.repo_field import RepoField

__all__ = ["PrebuildForm"]


def _provider_name(kind: str) -> str:
    try:
        return provider_class(kind).display_name
    except BivyError:
        return kind


class PrebuildForm(QDialog):
    """ "Prebuild repository": what to prebuild (repository, branch, agent) and where (account,
    region, the builder's size). Build emits ``requested`` and closes.

    Signals:
        requested(BuildRequest)
    """

    requested = Signal(object)

    def __init__(
        self,
        workspaces: WorkspacesController | None,
        settings: Settings,
        controller: PrebuildsController,
        parent: QWidget | None = None,
        *,
        workspace: Workspace | None = None,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Prebuild a repository")
        self.setMinimumWidth(600)
        self.workspaces = workspaces
        self.settings = settings
        self.controller = controller
        self._tasks: list[asyncio.Task[None]] = []
        self._want_region = ""
        self._want_size = settings.defaults.size

        intro = QLabel(
            "Bivy boots a builder VM that clones the repository, builds its devcontainer and "
            "installs the agent (no credentials go on it), snapshots it and deletes it. New "
            "workspaces of the repository at this account and region then start from the "
            "snapshot in seconds."
        )
        intro.setWordWrap(True)
        cost = QLabel(
            "The builder is billed like a workspace while it runs (minutes). The snapshot's "
            "storage is billed per GB and month for as long as you keep it; Prebuilds… shows "
            "its size and monthly cost."
        )
        cost.setWordWrap(True)
        cost.setForegroundRole(QPalette.ColorRole.PlaceholderText)
        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self.repo_field = RepoField(self)
        self.repo = self.repo_field.edit
        self.repo_error = QLabel()
        self.repo_error.setStyleSheet(css("error", self.palette()))
        self.repo_error.setWordWrap(True)
        self.repo_error.hide()
        self.branch = QLineEdit()
        self.branch.setPlaceholderText("default branch")
        self.account = QComboBox()
        for account in controller.accounts():
            kind = _provider_name(account.provider)
            self.account.addItem(f"{account.label or account.id} ({kind})", account.id)
        self.region_combo = QComboBox()
        self.region_combo.setToolTip("Workspaces in this region start from the prebuild")
        self.size_combo = QComboBox()
        self.size_combo.setToolTip(
            "The builder VM's size (it runs only while building; a bigger one builds faster)"
        )
        self.agent = QComboBox()
        for name, agent in AGENTS.items():
            self.agent.addItem(getattr(agent, "display_name", name), name)
        self.agent.setCurrentIndex(max(0, self.agent.findData(DEFAULT_AGENT)))
        self.loading = QProgressBar()
        self.loading.setRange(0, 0)
        self.loading.setMaximumWidth(90)
        self.loading.setTextVisible(False)
        self.loading.hide()
        where = QHBoxLayout()
        where.addWidget(self.region_combo, 1)
        where.addWidget(self.loading)
        form.addRow("Repository", self.repo_field.row)
        form.addRow("", self.repo_error)
        form.addRow("", self.repo_field.options_row)
        form.addRow("Branch", self.branch)
        form.addRow("Agent", self.agent)
        form.addRow("Account", self.account)
        form.addRow("Region", where)
        form.addRow("Builder size", self.size_combo)
        self.buttons = QDialogButtonBox()
        self.build_button = QPushButton("Build prebuild")
        self.build_button.setDefault(True)
        self.buttons.addButton(self.build_button, QDialogButtonBox.ButtonRole.AcceptRole)
        self.buttons.addButton(QDialogButtonBox.StandardButton.Cancel)
        self.build_button.clicked.connect(self.submit)
        self.buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(intro)
        layout.addWidget(cost)
        layout.addSpacing(6)
        layout.addLayout(form)
        layout.addWidget(self.buttons)

        self.repo.textChanged.connect(self._validate)
        self.repo_field.checked.connect(self._validate)
        self.branch.textChanged.connect(self._validate)
        self.account.currentIndexChanged.connect(self._account_changed)
        self.region_combo.currentIndexChanged.connect(self._region_changed)
        if workspace is not None:
            self._prefill(workspace)
        elif settings.defaults.account:
            self.account.setCurrentIndex(max(0, self.account.findData(settings.defaults.account)))
        self._validate()
        self._account_changed()

    def _prefill(self, ws: Workspace) -> None:
        self.repo.setText(ws.repo_url)
        main = next((s for s in ws.sessions if s.name == "main"), None)
        if main is not None:
            if main.branch:
                self.branch.setText(main.branch)
            self.agent.setCurrentIndex(max(0, self.agent.findData(main.agent)))
        self.account.setCurrentIndex(max(0, self.account.findData(ws.account)))
        if ws.server is not None:
            self._want_region = ws.server.region
            self._want_size = ws.server.size or self._want_size

    # -- regions and sizes ----------------------------------------------------------------

    def _account_changed(self, *_: object) -> None:
        account = self.account.currentData()
        if account and self.workspaces is not None:
            self._run(lambda: self._load_regions(str(account)))

    def _region_changed(self, *_: object) -> None:
        account = self.account.currentData()
        if account and self.workspaces is not None:
            region = self.region_combo.currentData()
            self._run(lambda: self._load_sizes(str(account), region))

    def _run(self, load: Callable[[], Coroutine[Any, Any, None]]) -> None:
        for task in self._tasks:
            if not task.done():
                task.cancel()
        # The coroutine is made inside the task: one cancelled before it ran leaves none behind.
        self._tasks = [asyncio.ensure_future(self._loading(load))]

    async def _loading(self, load: Callable[[], Coroutine[Any, Any, None]]) -> None:
        self.loading.show()
        try:
            await load()
        finally:
            self.loading.hide()
            self._validate()

    async def _load_regions(self, account: str) -> None:
        assert self.workspaces is not None
        regions: list[Region] = await self.workspaces.regions(account) or []
        self.region_combo.blockSignals(True)
        self.region_combo.clear()
        for region in regions:
            where = ", ".join(p for p in (region.city, region.country) if p)
            self.region_combo.addItem(f"{region.id} — {where}" if where else region.id, region.id)
        wanted = self._want_region or self.settings.defaults.region
        self.region_combo.setCurrentIndex(
            max(0, self.region_combo.findData(wanted)) if regions else -1
        )
        self.region_combo.blockSignals(False)
        await self._load_sizes(account, self.region_combo.currentData())

    async def _load_sizes(self, account: str, region: str | None) -> None:
        assert self.workspaces is not None
        sizes: list[Size] = await self.workspaces.sizes(account, region) or []
        sizes = [s for s in sizes if not s.deprecated]
        self.size_combo.clear()
        for s in sorted(sizes, key=lambda s: _hourly(s, region)):
            price = s.price_in(region) if region else None
            label = f"{s.name} — {s.cores} vCPU, {s.memory_gb:g} GB RAM"
            if price is not None:
                label += f" — {formatting.hourly(price.hourly, price.currency)}/h while building"
            self.size_combo.addItem(label, s.name)
        index = self.size_combo.findData(self._want_size) if self._want_size else -1
        self.size_combo.setCurrentIndex(max(0, index) if self.size_combo.count() else -1)

    # -- submit ---------------------------------------------------------------------------

    def _validate(self, *_: object) -> bool:
        problem = self.repo_field.problem()
        self.repo_error.setText(problem or "")
        self.repo_error.setVisible(bool(problem))
        ok = bool(self.repo_field.text() and not problem and self.account.currentData())
        self.build_button.setEnabled(ok)
        return ok

    def request(self) -> BuildRequest:
        repo, include_uncommitted = self.repo_field.values()
        return BuildRequest(
            repo=repo,
            account=str(self.account.currentData()),
            region=self.region_combo.currentData() or None,
            size=self.size_combo.currentData() or None,
            branch=self.branch.text().strip() or None,
            agent=str(self.agent.currentData() or DEFAULT_AGENT),
            include_uncommitted=include_uncommitted,
        )

    def submit(self) -> None:
        if not self._validate():
            return
        self.requested.emit(self.request())
        self.accept()

    def done(self, result: int) -> None:
        self.repo_field.stop()
        for task in self._tasks:
            if not task.done():
                task.cancel()
        super().done(result)


def _hourly(size: Size, region: str | None) -> float:
    price = size.price_in(region) if region else None
    return float(price.hourly) if price else float("inf")
