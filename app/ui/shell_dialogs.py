"""The shell's dialogs: create a workspace, settings (read from disk first), and how open
dialogs are kept (a mixin of ``Shell``, kept apart to hold shell.py to one screenful of
wiring)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING

from PySide6.QtWidgets import QWidget

from app.errors import BivyError
from app.providers.base import Provider
from app.services.accounts import effective_accounts, user_accounts
from app.services.refresh import RefreshPolicy, RefreshScheduler
from app.settings import SecretStore, Settings, load_settings, save_settings, settings_path
from app.ui.activity import ActivityFilter
from app.ui.create_dialog import CreateDialog
from app.ui.settings_dialog import SettingsDialog, Validator

if TYPE_CHECKING:
    from app.ui.controllers import WorkspacesController
    from app.ui.main_window import MainWindow
    from app.ui.recovery import Recovery

__all__ = ["ShellDialogs"]


class ShellDialogs:
    """Opens and keeps the shell's dialogs (``Shell`` provides the attributes below)."""

    settings: Settings
    secrets: SecretStore
    providers: Mapping[str, type[Provider]]
    validator: Validator
    public_key: Callable[[], Awaitable[str]] | None
    window: MainWindow
    workspaces: WorkspacesController | None
    recovery: Recovery
    scheduler: RefreshScheduler
    dialogs: list[QWidget]
    _activity: ActivityFilter

    if TYPE_CHECKING:

        def request_refresh(self) -> None: ...

    def account_choices(self) -> list[tuple[str, str]]:
        out = []
        for account in effective_accounts(self.settings):
            provider = self.providers.get(account.provider)
            kind = provider.display_name if provider else account.provider
            out.append((account.id, f"{account.label or account.id} ({kind})"))
        return out

    def open_create_dialog(self) -> CreateDialog | None:
        if self.workspaces is None or not self.account_choices():
            self.open_settings_dialog()
            return None
        dialog = CreateDialog(
            self.workspaces,
            self.settings,
            self.account_choices(),
            self.window,
            existing_names=[ws.name for ws in self.window.model.workspaces()],
        )
        self._keep(dialog)
        dialog.open()
        return dialog

    def open_settings_dialog(self) -> SettingsDialog:
        base = self._settings_from_disk()
        dialog = SettingsDialog(
            base,
            self.secrets,
            self.providers,
            self.validator,
            public_key=self.public_key,
            # Refused (and shown in the dialog) if another process saved meanwhile.
            persist=lambda settings: save_settings(settings, expected=base),
            parent=self.window,
        )
        dialog.accepted.connect(lambda: self._settings_saved(dialog.settings))
        self._keep(dialog)
        dialog.open()
        return dialog

    def _settings_from_disk(self) -> Settings:
        """The settings as saved now (``bivy login`` may have changed them since the window
        read them); the window's copy when there is no file or it cannot be used."""
        if not settings_path().exists():
            return self.settings
        try:
            current = load_settings()
        except BivyError as exc:
            self.recovery.add("Your settings could not be read", exc.one_line())
            self.recovery.show_pending()
            return self.settings
        if current != self.settings:
            self._settings_saved(current)
        return current

    def _keep(self, dialog: QWidget) -> None:
        self._activity.watch(dialog)
        self.dialogs.append(dialog)
        dialog.destroyed.connect(lambda *_: self.dialogs.remove(dialog))
        dialog.finished.connect(dialog.deleteLater)  # type: ignore[attr-defined]

    def _settings_saved(self, settings: Settings) -> None:
        # Already written by the dialog (in a thread, errors shown there) before it accepted.
        self.settings = settings
        if self.workspaces is not None:
            # The service reads its settings on every call: new accounts count from now on.
            self.workspaces.service.settings = settings
        self.scheduler.policy = RefreshPolicy(base_seconds=float(settings.refresh_seconds))

        self.window.set_has_accounts(bool(user_accounts(settings)))
        self.request_refresh()
