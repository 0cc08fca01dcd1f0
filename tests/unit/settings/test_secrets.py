"""SecretStore over the in-memory backend, and every way a keychain can be missing or fail."""

from __future__ import annotations

import logging

import keyring
import keyring.backends.fail
import keyring.errors
import pytest
from keyring.backend import KeyringBackend

from app.errors import SecretStoreError
from app.settings import SecretKeys, SecretStore
from app.settings.secrets import SERVICE
from tests.support.memory_keyring import MemoryKeyring

SECRET = "hc-token-5f1e2d3c4b5a69788796a5b4c3d2e1f0"


class PlaintextKeyring(KeyringBackend):
    """Looks like keyrings.alt's plaintext file backend: positive priority, but a file."""

    priority = 0.5  # type: ignore[assignment]

    def get_password(self, service: str, username: str) -> str | None:
        raise AssertionError("a plaintext backend must never be used")

    def set_password(self, service: str, username: str, password: str) -> None:
        raise AssertionError("a plaintext backend must never be used")

    def delete_password(self, service: str, username: str) -> None:
        raise AssertionError("a plaintext backend must never be used")


class ExplodingKeyring(KeyringBackend):
    """A backend whose every call fails the way D-Bus errors do (not a KeyringError)."""

    priority = 1  # type: ignore[assignment]

    def __init__(self, exc: Exception) -> None:
        super().__init__()
        self.exc = exc

    def get_password(self, service: str, username: str) -> str | None:
        raise self.exc

    def set_password(self, service: str, username: str, password: str) -> None:
        raise self.exc

    def delete_password(self, service: str, username: str) -> None:
        raise self.exc


def test_round_trip_in_memory(isolated_environment: MemoryKeyring) -> None:
    store = SecretStore()
    assert store.backend is isolated_environment  # the platform default, as conftest set it
    key = SecretKeys.account("hetzner", "token")
    assert store.get(key) is None
    assert not store.has(key)
    store.set(key, SECRET)
    assert store.get(key) == SECRET
    assert store.has(key)
    assert isolated_environment.store[(SERVICE, "account/hetzner/token")] == SECRET
    store.delete(key)
    assert store.get(key) is None
    store.delete(key)  # deleting twice is fine


async def test_async_twins() -> None:
    store = SecretStore(MemoryKeyring())
    await store.aset(SecretKeys.workspace("demo", "ttyd-password"), SECRET)
    assert await store.aget("workspace/demo/ttyd-password") == SECRET
    await store.adelete("workspace/demo/ttyd-password")
    assert await store.aget("workspace/demo/ttyd-password") is None


def test_empty_secret_is_refused() -> None:
    with pytest.raises(SecretStoreError, match="empty secret"):
        SecretStore(MemoryKeyring()).set("x", "")


@pytest.mark.parametrize("op", ["get", "set", "delete", "has"])
def test_no_backend_gives_clear_error(op: str) -> None:
    store = SecretStore(keyring.backends.fail.Keyring())
    assert not store.available
    with pytest.raises(SecretStoreError) as info:
        getattr(store, op)(*(["k", SECRET] if op == "set" else ["k"]))
    line = info.value.one_line()
    assert "no system keychain" in line
    assert "does not write secrets to plain files" in line
    assert "GNOME Keyring" in line  # the hint says what to install
    assert SECRET not in line


def test_platform_default_on_a_bare_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    # What keyring picks in a venv with no backend at all.
    keyring.set_keyring(keyring.backends.fail.Keyring())
    store = SecretStore()
    with pytest.raises(SecretStoreError, match="no system keychain"):
        store.get("anything")


def test_keyring_discovery_failure_is_not_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> KeyringBackend:
        raise RuntimeError("plugin import failed")

    monkeypatch.setattr(keyring, "get_keyring", broken)
    store = SecretStore()
    assert store.backend is None
    with pytest.raises(SecretStoreError, match="no system keychain"):
        store.set("k", SECRET)


def test_plaintext_backend_is_refused() -> None:
    store = SecretStore(PlaintextKeyring())
    with pytest.raises(SecretStoreError, match="plain files"):
        store.set("k", SECRET)


def test_chainer_with_a_plaintext_member_is_refused() -> None:
    from keyring.backends.chainer import ChainerBackend

    class Chain(ChainerBackend):
        members: tuple[KeyringBackend, ...] = ()

        @property
        def backends(self) -> list[KeyringBackend]:  # type: ignore[override]
            return list(self.members)

    chain = Chain()
    chain.members = (MemoryKeyring(), PlaintextKeyring())
    assert not SecretStore(chain).available
    chain.members = (MemoryKeyring(),)
    assert SecretStore(chain).available
    chain.members = ()
    assert not SecretStore(chain).available


@pytest.mark.parametrize(
    "exc",
    [
        keyring.errors.KeyringLocked("locked"),
        keyring.errors.InitError("no bus"),
        OSError(f"D-Bus said no to {SECRET}"),  # a backend echoing the value back
        ValueError(SECRET),
    ],
)
@pytest.mark.parametrize("op", ["get", "set", "delete"])
def test_backend_failures_become_secret_store_errors(exc: Exception, op: str) -> None:
    store = SecretStore(ExplodingKeyring(exc))
    with pytest.raises(SecretStoreError) as info:
        getattr(store, op)(*(["k", SECRET] if op == "set" else ["k"]))
    if isinstance(exc, keyring.errors.KeyringLocked):
        assert "the keychain is locked" in info.value.one_line()
        assert "Unlock your keychain" in info.value.one_line()
    else:
        assert "the keychain refused" in info.value.one_line()
        assert type(exc).__name__ in info.value.one_line()
    assert SECRET not in info.value.one_line()
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_secrets_never_reach_the_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    store = SecretStore(MemoryKeyring())
    store.set(SecretKeys.ANTHROPIC_API_KEY, SECRET)
    store.get(SecretKeys.ANTHROPIC_API_KEY)
    store.delete(SecretKeys.ANTHROPIC_API_KEY)
    assert "stored secret anthropic/api-key" in caplog.text
    assert SECRET not in caplog.text
    assert SECRET not in repr(store)


def test_secret_keys_are_namespaced() -> None:
    assert SecretKeys.account("hetzner-2", "token") == "account/hetzner-2/token"
    assert SecretKeys.workspace("demo", "ttyd-password") == "workspace/demo/ttyd-password"


def test_secret_goes_to_the_keychain_never_to_settings_or_log(
    isolated_environment: MemoryKeyring, caplog: pytest.LogCaptureFixture
) -> None:
    from app.settings import Account, Settings, load_settings, save_settings, settings_path

    caplog.set_level(logging.DEBUG)
    store = SecretStore()
    store.set(SecretKeys.account("hetzner", "token"), SECRET)
    settings = Settings(accounts=[Account(id="hetzner", provider="hetzner", label="Hetzner")])
    save_settings(settings)
    assert load_settings() == settings
    files = [p for p in settings_path().parent.rglob("*") if p.is_file()]
    assert sorted(files) == [settings_path(), settings_path().with_name("settings.json.lock")]
    assert settings_path().with_name("settings.json.lock").read_bytes() == b""
    assert all(SECRET not in p.read_text() for p in files)
    assert SECRET not in caplog.text
    assert isolated_environment.store == {(SERVICE, "account/hetzner/token"): SECRET}
