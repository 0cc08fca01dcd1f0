"""The settings dialog: accounts (forms from Provider.options), agent credential, SSH key, defaults.

Secrets are written through the SecretStore off the UI thread and never read back into a field:
a stored secret shows as the placeholder "stored in keychain"; typing replaces it.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Awaitable, Callable, Mapping
from decimal import Decimal
from html import escape
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMenu,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from app.agents import AGENTS
from app.providers.base import Provider
from app.settings import Account, SecretKeys, SecretStore, Settings
from app.ui import formatting
from app.ui.backup_settings import BackupSettingsWidget
from app.ui.create_dialog import _CREDENTIALS
from app.ui.secret_field import SecretField

#: Validates an account's options (secrets included) against the provider's API; returns a summary.
Validator = Callable[[str, Mapping[str, str]], Awaitable[str]]


class AccountForm(QWidget):
    """The form of one account, generated from its provider's declared options.

    Signals:
        validateRequested: the user pressed Validate.
    Attributes:
        fields: option key → line edit (``SecretField`` for secret options).
    """

    validateRequested = Signal()

    def __init__(self, provider: type[Provider], account: Account, parent: QWidget | None = None):
        super().__init__(parent)
        self.provider = provider
        self.account = account
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        title = QLabel(f"<b>{provider.display_name}</b> account <code>{account.id}</code>")
        layout.addWidget(title)
        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self.label = QLineEdit(account.label)
        self.label.setPlaceholderText(account.id)
        self.label.setToolTip("What you call this account")
        form.addRow("Name", self.label)
        self.fields: dict[str, QLineEdit] = {}
        for option in provider.options:
            field: QLineEdit
            if option.secret:
                field = SecretField()
            else:
                field = QLineEdit(account.options.get(option.key, option.default))
            field.setToolTip(option.help or option.label)
            field.textChanged.connect(self._check_patterns)
            self.fields[option.key] = field
            label = option.label + ("" if option.required else " (optional)")
            form.addRow(label, field)
            if option.help:
                help_label = QLabel(option.help)
                help_label.setWordWrap(True)
                help_label.setStyleSheet("color: palette(dark);")
                help_label.setAlignment(Qt.AlignmentFlag.AlignLeft)
                form.addRow("", help_label)
        layout.addLayout(form)
        self.problem = QLabel()
        self.problem.setStyleSheet("color: #b00020;")
        self.problem.setWordWrap(True)
        layout.addWidget(self.problem)
        row = QHBoxLayout()
        self.validate_button = QPushButton("Validate")
        self.validate_button.setToolTip("Check the credentials with one cheap API call")
        self.validate_button.clicked.connect(self.validateRequested)
        self.result = QLabel()
        self.result.setWordWrap(True)
        self.result.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        row.addWidget(self.validate_button)
        row.addWidget(self.result, 1)
        layout.addLayout(row)
        if provider.token_guidance:
            guidance = QGroupBox("Least-privilege token")
            glayout = QVBoxLayout(guidance)
            text = QLabel(provider.token_guidance)
            text.setWordWrap(True)
            text.setOpenExternalLinks(True)
            glayout.addWidget(text)
            layout.addWidget(guidance)
        layout.addStretch()
        self._check_patterns()

    def set_stored(self, stored: Mapping[str, bool]) -> None:
        for option in self.provider.options:
            field = self.fields[option.key]
            if isinstance(field, SecretField):
                env = next((name for name in option.env if os.environ.get(name)), None)
                field.set_stored(stored.get(option.key, False), env)

    def _check_patterns(self, *_: object) -> None:
        problems = []
        for option in self.provider.options:
            value = self.fields[option.key].text()
            if value and option.pattern and not re.fullmatch(option.pattern, value):
                problems.append(f"{option.label} does not look right.")
        self.problem.setText(" ".join(problems))
        self.problem.setVisible(bool(problems))

    def entered(self) -> dict[str, str]:
        """The values typed in this session (secret fields only when typed)."""
        return {key: field.text().strip() for key, field in self.fields.items() if field.text()}

    def apply(self) -> None:
        """Copy the non-secret values into the account."""
        self.account.label = self.label.text().strip()
        for option in self.provider.options:
            if not option.secret:
                self.account.options[option.key] = self.fields[option.key].text().strip()


class SettingsDialog(QDialog):
    """Accounts, agent credentials, SSH key, defaults and budget.

    Attributes:
        settings: a working copy; written by ``persist`` (in a thread) before ``accepted``.
        persist: writes the settings file (blocking; None: the caller saves them).
        secrets_to_store: secret key → value typed in this session (written by ``save``).
        tasks: the running validate/load/save tasks.
    """

    def __init__(
        self,
        settings: Settings,
        secrets: SecretStore,
        providers: Mapping[str, type[Provider]],
        validator: Validator,
        *,
        public_key: Callable[[], Awaitable[str]] | None = None,
        persist: Callable[[Settings], None] | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.persist = persist
        self.setWindowTitle("Bivy settings")
        self.setMinimumSize(760, 560)
        self.settings = settings.model_copy(deep=True)
        self.secrets = secrets
        self.providers = providers
        self.validator = validator
        self.public_key_source = public_key
        self.forms: dict[str, AccountForm] = {}
        self.tasks: set[asyncio.Task[Any]] = set()
        self.save_error: str | None = None
        self._removed: dict[str, str] = {}
        self.tabs = QTabWidget()
        self.tabs.addTab(self._accounts_tab(), "Accounts")
        self.tabs.addTab(self._agent_tab(), "Agent")
        self.tabs.addTab(self._ssh_tab(), "SSH key")
        self.tabs.addTab(self._defaults_tab(), "Defaults && budget")
        # Backups (issue 6): the section lives in app/ui/backup_settings.py.
        self.backup = BackupSettingsWidget(self.settings.backup, secrets)
        self.tabs.addTab(self.backup, "Backups")
        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Save | QDialogButtonBox.StandardButton.Cancel
        )
        self.buttons.accepted.connect(self._save_clicked)
        self.buttons.rejected.connect(self.reject)
        self.error = QLabel()
        self.error.setStyleSheet("color: #b00020;")
        self.error.setWordWrap(True)
        self.error.hide()
        layout = QVBoxLayout(self)
        layout.addWidget(self.tabs)
        layout.addWidget(self.error)
        layout.addWidget(self.buttons)
        for account in self.settings.accounts:
            self._add_account_item(account)
        if self.account_list.count():
            self.account_list.setCurrentRow(0)
        self._spawn(self.load())

    # -- tabs -----------------------------------------------------------------------------

    def _accounts_tab(self) -> QWidget:
        page = QWidget()
        layout = QHBoxLayout(page)
        left = QVBoxLayout()
        self.account_list = QListWidget()
        self.account_list.setMaximumWidth(220)
        self.account_list.currentItemChanged.connect(self._account_selected)
        self.add_button = QPushButton("Add account")
        self.add_button.setToolTip("Add a cloud account")
        menu = QMenu(self.add_button)
        for kind, provider in self.providers.items():
            action = menu.addAction(provider.display_name)
            action.setData(kind)
            action.triggered.connect(lambda _=False, k=kind: self.add_account(k))
        self.add_button.setMenu(menu)
        self.remove_button = QPushButton("Remove")
        self.remove_button.setToolTip("Forget this account and its secrets (VMs keep running)")
        self.remove_button.clicked.connect(self.remove_account)
        left.addWidget(self.account_list, 1)
        left.addWidget(self.add_button)
        left.addWidget(self.remove_button)
        self.account_stack = QVBoxLayout()
        self.no_account = QLabel(
            "No account yet. Press <b>Add account</b> and choose your cloud provider; "
            "you need an API token from its console."
        )
        self.no_account.setWordWrap(True)
        self.account_stack.addWidget(self.no_account)
        self.account_stack.addStretch()
        layout.addLayout(left)
        layout.addLayout(self.account_stack, 1)
        return page

    def _agent_tab(self) -> QWidget:
        page = QWidget()
        form = QFormLayout(page)
        intro = QLabel(
            "The agent in each workspace gets one of these (chosen per workspace). They are "
            "kept in the system keychain and written only to a root-only file on the VM."
        )
        intro.setWordWrap(True)
        form.addRow(intro)
        self.api_key = SecretField()
        self.api_key.setToolTip("An Anthropic API key (console.anthropic.com), billed per use")
        self.oauth_token = SecretField()
        self.oauth_token.setToolTip(
            "A long-lived token from “claude setup-token”, for a Claude subscription"
        )
        form.addRow("Anthropic API key", self.api_key)
        form.addRow("Claude Code OAuth token", self.oauth_token)
        # The least-privilege advice comes from the agent plug-ins (app/agents).
        self.agent_advice = QLabel(self._agent_advice_html())
        self.agent_advice.setWordWrap(True)
        self.agent_advice.setTextFormat(Qt.TextFormat.RichText)
        form.addRow(self.agent_advice)
        return page

    @staticmethod
    def _agent_advice_html() -> str:
        claude = AGENTS["claude"]
        others = "".join(
            f"<li><b>{escape(a.display_name)}</b> ({escape(' or '.join(a.credential_envs))}): "
            f"{formatting.code_html(a.credential_advice)}</li>"
            for a in AGENTS.values()
            if a.name != "claude"
        )
        return (
            f"<p><b>Least privilege.</b> {formatting.code_html(claude.credential_advice)}</p>"
            "<p>Other agents read their credential from the environment or the keychain "
            f"(<code>bivy agents</code> shows which are set):</p><ul>{others}</ul>"
        )

    def _ssh_tab(self) -> QWidget:
        page = QWidget()
        layout = QVBoxLayout(page)
        text = QLabel(
            "Bivy generated one SSH key for this computer; its private half stays in the "
            "keychain. Workspaces trust this public key (user <code>dev</code>); "
            "<code>ssh bivy-&lt;name&gt;</code> works from any terminal."
        )
        text.setWordWrap(True)
        self.public_key = QPlainTextEdit()
        self.public_key.setReadOnly(True)
        self.public_key.setMaximumHeight(80)
        self.public_key.setPlaceholderText("Loading…")
        copy = QPushButton("Copy public key")
        copy.setToolTip("Copy the public key to the clipboard")
        copy.clicked.connect(
            lambda: QGuiApplication.clipboard().setText(self.public_key.toPlainText())
        )
        layout.addWidget(text)
        layout.addWidget(self.public_key)
        row = QHBoxLayout()
        row.addWidget(copy)
        row.addStretch()
        layout.addLayout(row)
        layout.addStretch()
        return page

    def _defaults_tab(self) -> QWidget:
        page = QWidget()
        form = QFormLayout(page)
        defaults = self.settings.defaults
        self.default_account = QComboBox()
        self.default_account.setToolTip("The account the create dialog starts with")
        self.default_region = QLineEdit(defaults.region)
        self.default_region.setPlaceholderText("provider default (e.g. fsn1)")
        self.default_size = QLineEdit(defaults.size)
        self.default_size.setPlaceholderText("provider default (e.g. cx23)")
        self.default_idle = QSpinBox()
        self.default_idle.setRange(5, 24 * 60)
        self.default_idle.setSuffix(" min")
        self.default_idle.setValue(defaults.idle_minutes)
        self.default_max = QSpinBox()
        self.default_max.setRange(1, 24 * 7)
        self.default_max.setSuffix(" h")
        self.default_max.setValue(defaults.max_hours)
        self.default_credential = QComboBox()
        for kind, label in _CREDENTIALS:
            self.default_credential.addItem(label, kind)
        self.default_credential.setCurrentIndex(
            max(0, self.default_credential.findData(defaults.agent_credential))
        )
        self.budget = QDoubleSpinBox()
        self.budget.setRange(0, 100000)
        self.budget.setDecimals(2)
        self.budget.setSpecialValueText("no budget")
        self.budget.setPrefix(f"{self.settings.budget_currency} ")
        self.budget.setValue(float(self.settings.monthly_budget or 0))
        self.budget.setToolTip("Bivy warns when this month's spend would exceed it")
        form.addRow("Account", self.default_account)
        form.addRow("Region", self.default_region)
        form.addRow("Size", self.default_size)
        form.addRow("Idle delete after", self.default_idle)
        form.addRow("Maximum lifetime", self.default_max)
        form.addRow("Agent credential", self.default_credential)
        form.addRow("Monthly budget", self.budget)
        self._fill_default_accounts()
        return page

    def _fill_default_accounts(self) -> None:
        current = self.default_account.currentData() or self.settings.defaults.account
        self.default_account.clear()
        self.default_account.addItem("the first account", "")
        for account in self.settings.accounts:
            self.default_account.addItem(account.label or account.id, account.id)
        self.default_account.setCurrentIndex(max(0, self.default_account.findData(current)))

    # -- accounts -------------------------------------------------------------------------

    def _add_account_item(self, account: Account) -> None:
        provider = self.providers.get(account.provider)
        if provider is None:
            return
        form = AccountForm(provider, account)
        form.validateRequested.connect(lambda f=form: self._spawn(self.validate(f)))
        form.hide()
        self.account_stack.insertWidget(0, form)
        self.forms[account.id] = form
        item = QListWidgetItem(f"{account.label or account.id} ({provider.display_name})")
        item.setData(Qt.ItemDataRole.UserRole, account.id)
        self.account_list.addItem(item)

    def add_account(self, kind: str) -> AccountForm:
        """Add a new account of provider ``kind`` and select it."""
        taken = {a.id for a in self.settings.accounts}
        account_id, n = kind, 2
        while account_id in taken:
            account_id, n = f"{kind}-{n}", n + 1
        account = Account(id=account_id, provider=kind)
        self.settings.accounts.append(account)
        self._add_account_item(account)
        self.account_list.setCurrentRow(self.account_list.count() - 1)
        self._fill_default_accounts()
        form = self.forms[account_id]
        form.set_stored({})
        return form

    def remove_account(self) -> None:
        item = self.account_list.currentItem()
        if item is None:
            return
        account_id = str(item.data(Qt.ItemDataRole.UserRole))
        self.settings.accounts = [a for a in self.settings.accounts if a.id != account_id]
        form = self.forms.pop(account_id)
        form.hide()
        form.deleteLater()
        self.account_list.takeItem(self.account_list.row(item))
        self._removed[account_id] = form.provider.kind
        self._fill_default_accounts()

    def _account_selected(self, current: QListWidgetItem | None, _: object = None) -> None:
        selected = current.data(Qt.ItemDataRole.UserRole) if current is not None else None
        for account_id, form in self.forms.items():
            form.setVisible(account_id == selected)
        self.no_account.setVisible(selected is None)
        self.remove_button.setEnabled(selected is not None)

    def current_form(self) -> AccountForm | None:
        item = self.account_list.currentItem()
        return self.forms.get(str(item.data(Qt.ItemDataRole.UserRole))) if item else None

    async def _options_for(self, form: AccountForm) -> dict[str, str]:
        """The options to validate with: what was typed, else what the keychain holds."""
        options = {o.key: form.account.options.get(o.key, o.default) for o in form.provider.options}
        for option in form.provider.options:
            typed = form.fields[option.key].text().strip()
            if typed:
                options[option.key] = typed
            elif option.secret:
                env = next((os.environ[n] for n in option.env if os.environ.get(n)), None)
                stored = env or await self.secrets.aget(
                    SecretKeys.account(form.account.id, option.key)
                )
                if stored:
                    options[option.key] = stored
        return options

    async def validate(self, form: AccountForm) -> None:
        """Call the provider's API with the form's values and show what happened."""
        form.validate_button.setEnabled(False)
        form.result.setStyleSheet("")
        form.result.setText("Checking…")
        try:
            summary = await self.validator(form.provider.kind, await self._options_for(form))
        except Exception as exc:
            from app.errors import BivyError

            text = str(exc) if isinstance(exc, BivyError) else f"Unexpected error: {exc!r}"
            form.result.setStyleSheet("color: #b00020;")
            form.result.setText(text)
        else:
            form.result.setStyleSheet("color: #1b7f3b;")
            form.result.setText(f"✓ {summary}")
        finally:
            form.validate_button.setEnabled(True)

    # -- load and save (secrets off the UI thread) ----------------------------------------

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def load(self) -> None:
        """Find out which secrets are stored (never their values into a field)."""
        try:
            for account_id, form in list(self.forms.items()):
                stored = {}
                for option in form.provider.options:
                    if option.secret:
                        key = SecretKeys.account(account_id, option.key)
                        stored[option.key] = await self.secrets.aget(key) is not None
                form.set_stored(stored)
            self.api_key.set_stored(
                await self.secrets.aget(SecretKeys.ANTHROPIC_API_KEY) is not None,
                "ANTHROPIC_API_KEY" if os.environ.get("ANTHROPIC_API_KEY") else None,
            )
            self.oauth_token.set_stored(
                await self.secrets.aget(SecretKeys.CLAUDE_OAUTH_TOKEN) is not None,
                "CLAUDE_CODE_OAUTH_TOKEN" if os.environ.get("CLAUDE_CODE_OAUTH_TOKEN") else None,
            )
            await self.backup.load()
        except Exception as exc:
            self._show_error(str(exc))
        if self.public_key_source is not None:
            try:
                self.public_key.setPlainText(await self.public_key_source())
            except Exception as exc:
                self.public_key.setPlaceholderText(f"Cannot read the key: {exc}")
        else:
            self.public_key.setPlaceholderText("The key is generated with the first workspace.")

    def _collect(self) -> dict[str, str]:
        for form in self.forms.values():
            form.apply()
        defaults = self.settings.defaults
        defaults.account = str(self.default_account.currentData() or "")
        defaults.region = self.default_region.text().strip()
        defaults.size = self.default_size.text().strip()
        defaults.idle_minutes = self.default_idle.value()
        defaults.max_hours = self.default_max.value()
        defaults.agent_credential = self.default_credential.currentData()
        budget = Decimal(str(self.budget.value())).quantize(Decimal("0.01"))
        self.settings.monthly_budget = budget if budget > 0 else None
        secrets: dict[str, str] = {}
        for account_id, form in self.forms.items():
            for option in form.provider.options:
                value = form.fields[option.key].text().strip()
                if option.secret and value:
                    secrets[SecretKeys.account(account_id, option.key)] = value
        if self.api_key.text().strip():
            secrets[SecretKeys.ANTHROPIC_API_KEY] = self.api_key.text().strip()
        if self.oauth_token.text().strip():
            secrets[SecretKeys.CLAUDE_OAUTH_TOKEN] = self.oauth_token.text().strip()
        self.settings.backup = self.backup.values()
        secrets.update(self.backup.secrets_to_store())
        return secrets

    async def save(self) -> None:
        """Write typed secrets to the keychain and forget removed accounts' secrets."""
        self.backup.validate()
        for key, value in self._collect().items():
            await self.secrets.aset(key, value)
        for account_id, kind in self._removed.items():
            if account_id in self.forms:
                continue  # removed, then added again under the same id
            for option in self.providers[kind].options:
                if option.secret:
                    await self.secrets.adelete(SecretKeys.account(account_id, option.key))

    def _save_clicked(self) -> None:
        self.buttons.setEnabled(False)
        self._spawn(self._save_and_close())

    async def _save_and_close(self) -> None:
        try:
            await self.save()
            if self.persist is not None:
                # A file write (fsync included) is blocking I/O: not on the UI thread. A failure
                # keeps the dialog open with the reason, so nothing typed is lost.
                await asyncio.to_thread(self.persist, self.settings)
        except Exception as exc:
            self._show_error(str(exc))
            self.buttons.setEnabled(True)
            return
        self.accept()

    def _show_error(self, text: str) -> None:
        self.save_error = text
        self.error.setText(text)
        self.error.show()

    def reject(self) -> None:
        self.backup.cancel()
        for task in list(self.tasks):
            task.cancel()
        super().reject()
