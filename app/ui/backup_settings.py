"""The Backups section of the settings dialog: storage preset, bucket, keys (masked), Check."""

# Keys go to the keychain only when the dialog is saved, and a stored key is never read back into
# a field: it shows as "stored in keychain" and typing replaces it. Check runs the real storage
# check (list, write and delete a probe object) off the UI thread's critical path, with the
# values as typed — stored keys fill in what was left empty.

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from app.errors import BivyError
from app.services.backup import (
    ENV_ACCESS_KEY,
    ENV_SECRET_KEY,
    PRESETS,
    CheckResult,
    S3Credentials,
    StoragePreset,
    check_storage,
    preset_for,
    validate_backup_settings,
)
from app.settings import BackupSettings, SecretKeys, SecretStore
from app.ui.secret_field import SecretField

#: Checks settings + keys against the storage (``check_storage`` by default; tests inject one).
Checker = Callable[[BackupSettings, S3Credentials], Awaitable[CheckResult]]

_OK = "color: #1b7f3b;"
_BAD = "color: #b00020;"


class BackupSettingsWidget(QWidget):
    """The backup settings form.

    Signals:
        checked(ok, message): a Check finished (``ok`` False with the error's text).
    Attributes:
        fields: enabled, preset, account, region, endpoint, bucket, prefix, interval,
            include_uncommitted, access_key, secret_key, check_button, result.
        tasks: the running load/check tasks.
    """

    checked = Signal(bool, str)

    def __init__(
        self,
        config: BackupSettings,
        secrets: SecretStore,
        *,
        checker: Checker | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.secrets = secrets
        self.checker: Checker = checker or _default_checker
        self.tasks: set[asyncio.Task[Any]] = set()
        self._building = True

        self.enabled = QCheckBox("Back up the agent's history of every new workspace")
        self.enabled.setChecked(config.enabled)
        self.preset = QComboBox()
        for preset in PRESETS:
            self.preset.addItem(preset.label, preset.id)
        self.account = QLineEdit()
        self.account.setPlaceholderText("Cloudflare account id (32 hex characters)")
        self.region = QComboBox()
        self.region.setEditable(True)
        self.endpoint = QLineEdit()
        self.endpoint.setPlaceholderText("https://s3.example.com")
        self.bucket = QLineEdit(config.bucket)
        self.bucket.setPlaceholderText("an existing bucket, e.g. my-bivy-backups")
        self.prefix = QLineEdit(config.prefix)
        self.prefix.setToolTip("Each workspace's repository is <prefix>/<workspace name>")
        self.interval = QSpinBox()
        self.interval.setRange(1, 24 * 60)
        self.interval.setSuffix(" min")
        self.interval.setValue(config.interval_minutes)
        self.include_uncommitted = QCheckBox(
            "Also back up uncommitted changes and untracked files (not ignored ones)"
        )
        self.include_uncommitted.setChecked(config.include_uncommitted)
        self.access_key = SecretField()
        self.secret_key = SecretField()
        self.hint = QLabel()
        self.hint.setWordWrap(True)
        self.hint.setStyleSheet("color: palette(mid);")
        self.check_button = QPushButton("Check")
        self.check_button.setToolTip("List, write and delete a test object in the bucket")
        self.result = QLabel()
        self.result.setWordWrap(True)

        form = QFormLayout()
        form.addRow(self.enabled)
        form.addRow("Storage", self.preset)
        form.addRow("Account id", self.account)
        form.addRow("Region", self.region)
        form.addRow("Endpoint", self.endpoint)
        form.addRow("Bucket", self.bucket)
        form.addRow("Prefix", self.prefix)
        form.addRow("Every", self.interval)
        form.addRow(self.include_uncommitted)
        form.addRow("Access key id", self.access_key)
        form.addRow("Secret access key", self.secret_key)
        self._form = form
        check_row = QHBoxLayout()
        check_row.addWidget(self.check_button)
        check_row.addWidget(self.result, 1)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.hint)
        layout.addLayout(check_row)
        note = QLabel(
            "Backups are encrypted by restic on the VM with a password per workspace that "
            "only this computer's keychain holds. Deleting a workspace keeps its backups; "
            "use “Delete workspace and its backups” to remove them."
        )
        note.setWordWrap(True)
        layout.addWidget(note)
        layout.addStretch(1)

        saved = preset_for(config.endpoint) if config.endpoint else PRESETS[1]
        self.preset.setCurrentIndex(PRESETS.index(saved))
        self._fill_regions(saved, config.region)
        self.endpoint.setText(config.endpoint)
        if saved.needs_account and config.endpoint:
            self.account.setText(config.endpoint.split("//", 1)[-1].split(".", 1)[0])
        self._preset_changed(rebuild=False)
        self._building = False
        if not config.endpoint:
            # A first visit shows the default preset's endpoint, not an empty read-only field.
            self._update_endpoint()

        self.preset.currentIndexChanged.connect(lambda _: self._preset_changed())
        self.region.currentTextChanged.connect(lambda _: self._update_endpoint())
        self.account.textChanged.connect(lambda _: self._update_endpoint())
        self.check_button.clicked.connect(self.start_check)

    # -- presets --------------------------------------------------------------------------

    def current_preset(self) -> StoragePreset:
        return next(p for p in PRESETS if p.id == self.preset.currentData())

    def _fill_regions(self, preset: StoragePreset, region: str = "") -> None:
        self.region.blockSignals(True)
        self.region.clear()
        self.region.addItems(list(preset.regions))
        self.region.setCurrentText(region or preset.default_region)
        self.region.blockSignals(False)

    def _preset_changed(self, *, rebuild: bool = True) -> None:
        preset = self.current_preset()
        if rebuild:
            self._fill_regions(preset)
        self._form.setRowVisible(self.account, preset.needs_account)
        self.endpoint.setReadOnly(bool(preset.endpoint))
        self.hint.setText(preset.hint)
        if rebuild:
            self._update_endpoint()

    def _update_endpoint(self) -> None:
        if self._building:
            return
        preset = self.current_preset()
        if not preset.endpoint:
            return  # custom: the user types it
        account = self.account.text().strip()
        if preset.needs_account and not account:
            self.endpoint.clear()
            return
        self.endpoint.setText(preset.endpoint_for(self.region.currentText().strip(), account))

    # -- values ---------------------------------------------------------------------------

    def values(self) -> BackupSettings:
        """The settings as entered (not validated)."""
        return BackupSettings(
            enabled=self.enabled.isChecked(),
            endpoint=self.endpoint.text().strip(),
            bucket=self.bucket.text().strip(),
            region=self.region.currentText().strip(),
            prefix=self.prefix.text().strip().strip("/"),
            interval_minutes=self.interval.value(),
            include_uncommitted=self.include_uncommitted.isChecked(),
        )

    def validate(self) -> None:
        """Raise ``InvalidInput`` when backups are on and the settings are not usable."""
        config = self.values()
        if config.enabled:
            validate_backup_settings(config)

    def secrets_to_store(self) -> dict[str, str]:
        """The keys typed in this session, by keychain name (empty fields keep what is stored)."""
        typed = {
            SecretKeys.BACKUP_ACCESS_KEY: self.access_key.text().strip(),
            SecretKeys.BACKUP_SECRET_KEY: self.secret_key.text().strip(),
        }
        return {key: value for key, value in typed.items() if value}

    async def credentials(self) -> S3Credentials:
        """Typed keys, else stored ones (env first, as the service does)."""
        access = self.access_key.text().strip()
        secret = self.secret_key.text().strip()
        env_access = os.environ.get(ENV_ACCESS_KEY, "").strip()
        env_secret = os.environ.get(ENV_SECRET_KEY, "").strip()
        if not access:
            access = env_access or await self.secrets.aget(SecretKeys.BACKUP_ACCESS_KEY) or ""
        if not secret:
            secret = env_secret or await self.secrets.aget(SecretKeys.BACKUP_SECRET_KEY) or ""
        return S3Credentials(access, secret)

    # -- async work -----------------------------------------------------------------------

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def load(self) -> None:
        """Show which keys are stored (never their values)."""
        env = bool(os.environ.get(ENV_ACCESS_KEY) and os.environ.get(ENV_SECRET_KEY))
        self.access_key.set_stored(
            await self.secrets.aget(SecretKeys.BACKUP_ACCESS_KEY) is not None,
            ENV_ACCESS_KEY if env else None,
        )
        self.secret_key.set_stored(
            await self.secrets.aget(SecretKeys.BACKUP_SECRET_KEY) is not None,
            ENV_SECRET_KEY if env else None,
        )

    def start_check(self) -> asyncio.Task[Any]:
        return self._spawn(self.check())

    async def check(self) -> bool:
        """Run the storage check with the values as entered and show the outcome."""
        self.check_button.setEnabled(False)
        self.result.setStyleSheet("")
        self.result.setText("Checking…")
        try:
            config = self.values()
            validate_backup_settings(config)
            result = await self.checker(config, await self.credentials())
        except BivyError as exc:
            self._show(False, exc.one_line())
            return False
        except Exception as exc:  # an unexpected failure still ends the check visibly
            self._show(False, f"Unexpected error: {type(exc).__name__}")
            return False
        finally:
            self.check_button.setEnabled(True)
        self._show(True, f"✓ {result.message}")
        return True

    def _show(self, ok: bool, text: str) -> None:
        self.result.setStyleSheet(_OK if ok else _BAD)
        self.result.setText(text)
        self.checked.emit(ok, text)

    def cancel(self) -> None:
        for task in list(self.tasks):
            task.cancel()


async def _default_checker(config: BackupSettings, credentials: S3Credentials) -> CheckResult:
    return await check_storage(config, credentials)
