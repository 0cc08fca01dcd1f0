"""SecretStore against a real Secret Service (gnome-keyring over a private D-Bus session)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import keyring.backends.fail
import pytest

from app.errors import SecretStoreError
from app.settings import Account, SecretKeys, SecretStore, Settings, save_settings, settings_path
from tests.support.secret_service import SecretServiceSession

TOKEN = "hcloud-REAL-looking-token-0123456789abcdefghijklmnopqrstuvwxyzABCDEF"


def test_round_trip_through_gnome_keyring(
    secret_service: SecretServiceSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    backend = secret_service.backend()
    assert type(backend).__module__ == "keyring.backends.SecretService"
    store = SecretStore(backend)
    assert store.available
    key = SecretKeys.account("hetzner", "token")
    assert store.get(key) is None
    store.set(key, TOKEN)
    assert store.get(key) == TOKEN
    store.set(key, TOKEN + "-rotated")  # replacing keeps one item
    assert store.get(key) == TOKEN + "-rotated"
    multiline = "-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n-----END OPENSSH PRIVATE KEY-----\n"
    store.set(SecretKeys.SSH_PRIVATE_KEY, multiline)
    assert store.get(SecretKeys.SSH_PRIVATE_KEY) == multiline
    store.delete(key)
    assert store.get(key) is None
    store.delete(key)  # already gone: no error
    assert TOKEN not in caplog.text


async def test_async_round_trip(secret_service: SecretServiceSession) -> None:
    store = SecretStore(secret_service.backend())
    name = SecretKeys.workspace("demo", "ttyd-password")
    await store.aset(name, "pw-" + "x" * 30)
    assert await store.aget(name) == "pw-" + "x" * 30
    await store.adelete(name)
    assert await store.aget(name) is None


def test_another_process_sees_the_secret(secret_service: SecretServiceSession) -> None:
    # The keychain is shared between processes (the CLI and the app): what one stores the other
    # reads, through the platform default backend chosen by PYTHON_KEYRING_BACKEND.
    SecretStore(secret_service.backend()).set("account/hetzner/token", TOKEN)
    code = (
        "from app.settings import SecretStore; s = SecretStore(); "
        "print(type(s.backend).__module__); print(s.get('account/hetzner/token') == "
        + repr(TOKEN)
        + ")"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=secret_service.env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["keyring.backends.SecretService", "True"]
    assert TOKEN not in result.stdout + result.stderr


def test_secret_never_lands_in_settings(secret_service: SecretServiceSession) -> None:
    store = SecretStore(secret_service.backend())
    store.set(SecretKeys.account("hetzner", "token"), TOKEN)
    save_settings(Settings(accounts=[Account(id="hetzner", provider="hetzner")]))
    text = settings_path().read_text()
    assert TOKEN not in text
    assert json.loads(text)["accounts"][0] == {
        "id": "hetzner",
        "provider": "hetzner",
        "label": "",
        "options": {},
    }


def test_no_backend_gives_the_clear_error() -> None:
    store = SecretStore(keyring.backends.fail.Keyring())
    with pytest.raises(SecretStoreError) as info:
        store.set(SecretKeys.account("hetzner", "token"), TOKEN)
    line = info.value.one_line()
    assert "no system keychain" in line
    assert "Install and unlock a keychain" in line
    assert TOKEN not in line


def test_no_backend_in_a_fresh_process_writes_no_file() -> None:
    # A bare process (keyring's fail backend, as in a venv without any) gets the error and
    # writes nothing anywhere under its HOME.
    home = Path(os.environ["HOME"])
    before = sorted(p for p in home.rglob("*"))
    code = (
        "from app.settings import SecretStore\n"
        "from app.errors import SecretStoreError\n"
        "try:\n"
        f"    SecretStore().set('account/hetzner/token', {TOKEN!r})\n"
        "except SecretStoreError as e:\n"
        "    print(e.one_line())\n"
    )
    env = dict(os.environ, PYTHON_KEYRING_BACKEND="keyring.backends.fail.Keyring")
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "keychain" in result.stdout
    assert result.stderr == ""
    assert sorted(p for p in home.rglob("*")) == before


def test_locked_or_gone_service_is_an_error_not_a_crash(
    secret_service: SecretServiceSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SecretStore(secret_service.backend())
    # The bus disappears (session ended, daemon crashed): the next call must fail cleanly.
    monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent/bivy-bus")
    # keyring's backend probes the bus when asked for its priority, so this reads as "no
    # keychain" (a locked one would read "the keychain refused"): either way one clear error.
    with pytest.raises(SecretStoreError, match="keychain"):
        store.get("account/hetzner/token")
