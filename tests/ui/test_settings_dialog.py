"""The settings dialog: account form from Provider.options, Validate against the emulator,
secrets masked and written to the keychain, never shown back."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import pytest
from pytestqt.qtbot import QtBot

from app.providers.hetzner import HetznerProvider
from app.providers.registry import PROVIDERS
from app.settings import Account, SecretKeys, SecretStore, Settings
from app.ui.secret_field import STORED, SecretField
from app.ui.settings_dialog import SettingsDialog
from tests.emulators.hetzner import HetznerEmulator
from tests.support.memory_keyring import MemoryKeyring
from tests.support.waits import WAIT_MS


def emulator_validator(emulator: HetznerEmulator):  # type: ignore[no-untyped-def]
    async def validate(kind: str, options: Mapping[str, str]) -> str:
        provider = HetznerProvider(options, transport=emulator.transport())
        try:
            info = await provider.validate()
        finally:
            await provider.aclose()
        return info.description

    return validate


@pytest.fixture
def emulator() -> HetznerEmulator:
    return HetznerEmulator(token="good-token-1234")


def open_dialog(
    qtbot: QtBot, settings: Settings, emulator: HetznerEmulator, public_key: str = ""
) -> SettingsDialog:
    async def key() -> str:
        return public_key

    dialog = SettingsDialog(
        settings,
        SecretStore(),
        PROVIDERS,
        emulator_validator(emulator),
        public_key=key if public_key else None,
    )
    qtbot.addWidget(dialog)
    dialog.show()
    qtbot.waitUntil(lambda: not dialog.tasks, timeout=WAIT_MS)
    return dialog


def test_add_account_validate_and_save(
    qtbot: QtBot,
    qloop: asyncio.AbstractEventLoop,
    emulator: HetznerEmulator,
    isolated_environment: MemoryKeyring,
) -> None:
    dialog = open_dialog(qtbot, Settings(), emulator, public_key="ssh-ed25519 AAAA bivy")
    assert dialog.public_key.toPlainText() == "ssh-ed25519 AAAA bivy"
    form = dialog.add_account("hetzner")
    token = form.fields["token"]
    assert isinstance(token, SecretField)
    assert token.echoMode() is token.EchoMode.Password
    token.setText("wrong-token-9999")
    form.validate_button.click()
    qtbot.waitUntil(lambda: form.result.text() not in ("", "Checking…"), timeout=WAIT_MS)
    assert "rejected the API token" in form.result.text()  # the provider's AuthError
    assert "wrong-token-9999" not in form.result.text()
    token.setText("good-token-1234")
    form.validate_button.click()
    qtbot.waitUntil(lambda: form.result.text().startswith("✓"), timeout=WAIT_MS)
    assert "Hetzner Cloud project" in form.result.text()
    form.label.setText("Personal")
    with qtbot.waitSignal(dialog.accepted, timeout=WAIT_MS):
        dialog.buttons.button(dialog.buttons.StandardButton.Save).click()
    assert dialog.settings.accounts == [
        Account(id="hetzner", provider="hetzner", label="Personal", options={})
    ]
    assert isolated_environment.store[("bivy", SecretKeys.account("hetzner", "token"))] == (
        "good-token-1234"
    )
    assert "good-token-1234" not in dialog.settings.model_dump_json()


def test_stored_secret_is_never_shown(
    qtbot: QtBot, qloop: asyncio.AbstractEventLoop, emulator: HetznerEmulator
) -> None:
    SecretStore().set(SecretKeys.account("hetzner", "token"), "good-token-1234")
    settings = Settings(accounts=[Account(id="hetzner", provider="hetzner")])
    dialog = open_dialog(qtbot, settings, emulator)
    form = dialog.forms["hetzner"]
    token = form.fields["token"]
    assert token.text() == ""
    assert token.placeholderText() == STORED
    # Validate with the stored token (fetched off the UI thread), not the empty field.
    form.validate_button.click()
    qtbot.waitUntil(lambda: form.result.text().startswith("✓"), timeout=WAIT_MS)


def test_budget_and_defaults_are_saved(
    qtbot: QtBot, qloop: asyncio.AbstractEventLoop, emulator: HetznerEmulator
) -> None:
    dialog = open_dialog(qtbot, Settings(), emulator)
    dialog.budget.setValue(50)
    dialog.default_idle.setValue(45)
    with qtbot.waitSignal(dialog.accepted, timeout=WAIT_MS):
        dialog.buttons.button(dialog.buttons.StandardButton.Save).click()
    assert str(dialog.settings.monthly_budget) == "50.00"
    assert dialog.settings.defaults.idle_minutes == 45


def test_settings_file_is_written_off_the_ui_thread(
    qtbot: QtBot, qloop: asyncio.AbstractEventLoop, emulator: HetznerEmulator
) -> None:
    import threading

    from app.settings import load_settings, save_settings

    writers: list[threading.Thread] = []

    def persist(settings: Settings) -> None:
        writers.append(threading.current_thread())
        save_settings(settings)

    dialog = SettingsDialog(Settings(), SecretStore(), PROVIDERS, emulator_validator(emulator),
                            persist=persist)  # fmt: skip
    qtbot.addWidget(dialog)
    dialog.show()
    dialog.budget.setValue(70)
    with qtbot.waitSignal(dialog.accepted, timeout=WAIT_MS):
        dialog.buttons.button(dialog.buttons.StandardButton.Save).click()
    assert writers and writers[0] is not threading.main_thread()
    assert str(load_settings().monthly_budget) == "70.00"


def test_a_failed_settings_write_is_shown_and_keeps_the_dialog(
    qtbot: QtBot,
    qloop: asyncio.AbstractEventLoop,
    emulator: HetznerEmulator,
    tmp_path: object,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pathlib import Path

    from app.settings import save_settings

    blocker = Path(str(tmp_path)) / "not-a-folder"
    blocker.write_text("a file where the config folder should be")
    monkeypatch.setenv("BIVY_CONFIG_DIR", str(blocker))
    dialog = SettingsDialog(Settings(), SecretStore(), PROVIDERS, emulator_validator(emulator),
                            persist=save_settings)  # fmt: skip
    qtbot.addWidget(dialog)
    dialog.show()
    accepted: list[bool] = []
    dialog.accepted.connect(lambda: accepted.append(True))
    dialog.buttons.button(dialog.buttons.StandardButton.Save).click()
    qtbot.waitUntil(lambda: dialog.error.isVisible(), timeout=WAIT_MS)
    assert "cannot write" in dialog.error.text() and "not-a-folder" in dialog.error.text()
    assert dialog.isVisible() and not accepted
    assert dialog.buttons.isEnabled()  # the user can fix it and save again


def test_agent_tab_shows_commands_as_code_not_backticks(
    qtbot: QtBot, qloop: asyncio.AbstractEventLoop, emulator: HetznerEmulator
) -> None:
    dialog = open_dialog(qtbot, Settings(), emulator)
    advice = dialog.agent_advice.text()
    assert "<code>claude setup-token</code>" in advice
    assert "`" not in advice and "`" not in dialog.oauth_token.toolTip()
