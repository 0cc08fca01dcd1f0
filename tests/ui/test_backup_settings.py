"""The Backups settings section: presets, masked keys, Check against S3 answers, its tab."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from pytestqt.qtbot import QtBot

from app.services.backup import CheckResult, S3Credentials, check_storage
from app.settings import BackupSettings, SecretKeys, SecretStore
from app.ui.backup_settings import BackupSettingsWidget
from app.ui.secret_field import STORED
from tests.support.waits import WAIT_MS
from tests.unit.services.test_backup import FakeS3, s3_error


def make(qtbot: QtBot, config: BackupSettings | None = None, checker=None) -> BackupSettingsWidget:  # type: ignore[no-untyped-def]
    widget = BackupSettingsWidget(config or BackupSettings(), SecretStore(), checker=checker)
    qtbot.addWidget(widget)
    widget.show()
    return widget


def choose(widget: BackupSettingsWidget, preset_id: str) -> None:
    widget.preset.setCurrentIndex(widget.preset.findData(preset_id))


def test_first_visit_shows_the_default_presets_endpoint(qtbot: QtBot) -> None:
    widget = make(qtbot)
    preset = widget.current_preset()
    region = widget.region.currentText()
    assert preset.endpoint and region
    assert widget.endpoint.text() == preset.endpoint_for(region, "")
    assert widget.values().endpoint == widget.endpoint.text()


def test_presets_fill_the_endpoint(qtbot: QtBot) -> None:
    widget = make(qtbot)
    choose(widget, "hetzner")
    widget.region.setCurrentText("nbg1")
    assert widget.endpoint.text() == "https://nbg1.your-objectstorage.com"
    assert widget.endpoint.isReadOnly()
    assert not widget.account.isVisible()

    choose(widget, "r2")
    assert widget.account.isVisible()
    assert widget.endpoint.text() == ""  # no account id yet
    widget.account.setText("0123456789abcdef0123456789abcdef")
    assert (
        widget.endpoint.text()
        == "https://0123456789abcdef0123456789abcdef.r2.cloudflarestorage.com"
    )
    assert widget.region.currentText() == "auto"

    choose(widget, "scaleway")
    assert widget.endpoint.text() == "https://s3.fr-par.scw.cloud"

    choose(widget, "custom")
    assert not widget.endpoint.isReadOnly()
    widget.endpoint.setText("http://minio.lan:9000")
    widget.bucket.setText("bivy")
    values = widget.values()
    assert values.endpoint == "http://minio.lan:9000" and values.bucket == "bivy"


def test_saved_settings_come_back_as_saved(qtbot: QtBot) -> None:
    config = BackupSettings(
        enabled=True,
        endpoint="https://abc123.r2.cloudflarestorage.com",
        bucket="bivy-backups",
        region="auto",
        prefix="team",
        interval_minutes=10,
        include_uncommitted=False,
    )
    widget = make(qtbot, config)
    assert widget.current_preset().id == "r2"
    assert widget.account.text() == "abc123"
    assert widget.values() == config

    custom = make(qtbot, BackupSettings(endpoint="http://10.0.0.5:9000", bucket="b0b", region=""))
    assert custom.current_preset().id == "custom"
    assert custom.values().endpoint == "http://10.0.0.5:9000"


def test_keys_are_masked_and_never_read_back(
    qtbot: QtBot, qloop: asyncio.AbstractEventLoop
) -> None:
    store = SecretStore()
    store.set(SecretKeys.BACKUP_ACCESS_KEY, "AKIDSTORED")
    store.set(SecretKeys.BACKUP_SECRET_KEY, "stored-secret-value")
    widget = make(qtbot)
    task = widget._spawn(widget.load())
    qtbot.waitUntil(task.done, timeout=WAIT_MS)
    for field in (widget.access_key, widget.secret_key):
        assert field.echoMode() == field.EchoMode.Password
        assert field.text() == ""
        assert field.placeholderText() == STORED
    assert widget.secrets_to_store() == {}
    widget.secret_key.setText("  typed-secret  ")
    assert widget.secrets_to_store() == {SecretKeys.BACKUP_SECRET_KEY: "typed-secret"}


def test_check_succeeds_with_typed_and_stored_keys(
    qtbot: QtBot, qloop: asyncio.AbstractEventLoop
) -> None:
    SecretStore().set(SecretKeys.BACKUP_SECRET_KEY, "stored-secret-value")
    fake = FakeS3({})
    used: list[S3Credentials] = []

    async def checker(config: BackupSettings, keys: S3Credentials) -> CheckResult:
        used.append(keys)
        return await check_storage(config, keys, transport=fake.transport())

    widget = make(qtbot, BackupSettings(endpoint="https://fsn1.your-objectstorage.com"), checker)
    widget.bucket.setText("my-bivy")
    widget.access_key.setText("AKIDTYPED")
    with qtbot.waitSignal(widget.checked, timeout=WAIT_MS) as signal:
        widget.check_button.click()
    assert signal.args[0] is True
    assert widget.result.text().startswith("✓ Storage works")
    assert [r.method for r in fake.requests] == ["GET", "PUT", "DELETE"]
    assert used == [S3Credentials("AKIDTYPED", "stored-secret-value")]
    assert widget.check_button.isEnabled()


@pytest.mark.parametrize(
    ("bucket", "response", "expected"),
    [
        ("my-bivy", s3_error(404, "NoSuchBucket"), "Create the bucket 'my-bivy' first"),
        ("my-bivy", s3_error(403, "SignatureDoesNotMatch"), "secret access key does not match"),
        ("No_Such", None, "bucket name is 3-63 characters"),
    ],
)
def test_check_failures_are_shown(
    qtbot: QtBot,
    qloop: asyncio.AbstractEventLoop,
    bucket: str,
    response: httpx.Response | None,
    expected: str,
) -> None:
    fake = FakeS3({}, fail={"GET": response} if response is not None else None)

    async def checker(config: BackupSettings, keys: S3Credentials) -> CheckResult:
        return await check_storage(config, keys, transport=fake.transport())

    widget = make(qtbot, BackupSettings(endpoint="https://fsn1.your-objectstorage.com"), checker)
    widget.bucket.setText(bucket)
    widget.access_key.setText("AKIDTYPED")
    widget.secret_key.setText("typed-secret-value")
    with qtbot.waitSignal(widget.checked, timeout=WAIT_MS) as signal:
        widget.check_button.click()
    assert signal.args[0] is False
    assert expected in widget.result.text()
    assert "typed-secret-value" not in widget.result.text()


def test_settings_dialog_has_the_backups_section(
    qtbot: QtBot, qloop: asyncio.AbstractEventLoop
) -> None:
    from app.providers.registry import PROVIDERS
    from app.settings import Settings
    from app.ui.settings_dialog import SettingsDialog

    async def validator(kind: str, options: object) -> str:
        return "ok"

    dialog = SettingsDialog(Settings(), SecretStore(), PROVIDERS, validator)
    qtbot.addWidget(dialog)
    dialog.show()
    qtbot.waitUntil(lambda: not dialog.tasks, timeout=WAIT_MS)
    titles = [dialog.tabs.tabText(i) for i in range(dialog.tabs.count())]
    assert "Backups" in titles
    section = dialog.backup
    section.enabled.setChecked(True)
    choose(section, "scaleway")
    section.region.setCurrentText("nl-ams")
    section.bucket.setText("Bad_Bucket")
    section.access_key.setText("SCWAKID")
    section.secret_key.setText("scw-secret")

    # An unusable bucket keeps the dialog open with the reason, and stores nothing.
    dialog.buttons.button(dialog.buttons.StandardButton.Save).click()
    qtbot.waitUntil(lambda: dialog.save_error is not None, timeout=WAIT_MS)
    assert "bucket name" in dialog.save_error
    assert SecretStore().get(SecretKeys.BACKUP_SECRET_KEY) is None

    section.bucket.setText("team-bivy")
    with qtbot.waitSignal(dialog.accepted, timeout=WAIT_MS):
        dialog.buttons.button(dialog.buttons.StandardButton.Save).click()
    saved = dialog.settings.backup
    assert saved.enabled and saved.endpoint == "https://s3.nl-ams.scw.cloud"
    assert saved.bucket == "team-bivy" and saved.region == "nl-ams"
    assert SecretStore().get(SecretKeys.BACKUP_ACCESS_KEY) == "SCWAKID"
    assert SecretStore().get(SecretKeys.BACKUP_SECRET_KEY) == "scw-secret"
    assert "scw-secret" not in saved.model_dump_json()
