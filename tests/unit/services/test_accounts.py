"""Accounts: env beats keychain, implicit env accounts, validated login that stores secrets only
in the keychain."""

from __future__ import annotations

import json
import logging

import keyring.backends.fail
import pytest

from app.errors import AuthError, InvalidInput, SecretStoreError
from app.providers.hetzner import HetznerProvider
from app.services.accounts import (
    add_account,
    effective_accounts,
    find_account,
    open_provider,
    provider_class,
    remove_account,
    resolve_options,
)
from app.settings import Account, SecretKeys, SecretStore, Settings, save_settings, settings_path
from tests.emulators.hetzner import HetznerEmulator, ManualClock
from tests.support.memory_keyring import MemoryKeyring

TOKEN = "LoginToken0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQR"
ENV_TOKEN = "EnvToken0123456789abcdefghijklmnopqrstuvwxyz"


def hetzner(account_id: str = "hetzner") -> Account:
    return Account(id=account_id, provider="hetzner")


def test_provider_class_names_the_known_kinds() -> None:
    assert provider_class("hetzner") is HetznerProvider
    with pytest.raises(InvalidInput, match="unknown provider 'nope'") as info:
        provider_class("nope")
    assert "hetzner" in info.value.one_line()


def test_keychain_value_is_used() -> None:
    store = SecretStore(MemoryKeyring())
    store.set(SecretKeys.account("hetzner", "token"), TOKEN)
    assert resolve_options(hetzner(), store, environ={}) == {"token": TOKEN}


@pytest.mark.parametrize("name", ["BIVY_HETZNER_TOKEN", "HCLOUD_TOKEN"])
def test_environment_wins_over_keychain(name: str) -> None:
    store = SecretStore(MemoryKeyring())
    store.set(SecretKeys.account("hetzner", "token"), TOKEN)
    assert resolve_options(hetzner(), store, environ={name: ENV_TOKEN}) == {"token": ENV_TOKEN}


def test_environment_works_without_any_keychain() -> None:
    store = SecretStore(keyring.backends.fail.Keyring())
    options = resolve_options(hetzner(), store, environ={"HCLOUD_TOKEN": ENV_TOKEN})
    assert options == {"token": ENV_TOKEN}
    with pytest.raises(SecretStoreError):
        resolve_options(hetzner(), store, environ={})


def test_missing_token_is_an_auth_error_with_the_fix() -> None:
    with pytest.raises(AuthError) as info:
        resolve_options(hetzner(), SecretStore(MemoryKeyring()), environ={})
    line = info.value.one_line()
    assert "bivy login hetzner" in line
    assert "BIVY_HETZNER_TOKEN" in line


def test_effective_accounts_adds_an_implicit_env_account() -> None:
    settings = Settings()
    # The local provider needs nothing configured: it is always there.
    assert [a.id for a in effective_accounts(settings, environ={})] == ["local"]
    implicit = effective_accounts(settings, environ={"BIVY_HETZNER_TOKEN": ENV_TOKEN})
    assert [(a.id, a.provider) for a in implicit] == [("hetzner", "hetzner"), ("local", "local")]
    assert "BIVY_HETZNER_TOKEN" in implicit[0].label
    # A configured account of that kind makes the implicit one unnecessary.
    settings.accounts.append(hetzner("work"))
    accounts = effective_accounts(settings, environ={"BIVY_HETZNER_TOKEN": ENV_TOKEN})
    assert [a.id for a in accounts] == ["work", "local"]


def test_find_account_prefers_explicit_then_default_then_first() -> None:
    settings = Settings(accounts=[hetzner("a"), hetzner("b")])
    assert find_account(settings, environ={}).id == "a"
    settings.defaults.account = "b"
    assert find_account(settings, environ={}).id == "b"
    assert find_account(settings, "a", environ={}).id == "a"
    assert find_account(settings, provider="hetzner", environ={}).id == "b"
    with pytest.raises(InvalidInput, match="no account 'zzz'"):
        find_account(settings, "zzz", environ={})
    with pytest.raises(InvalidInput, match="not digitalocean"):
        find_account(settings, "a", provider="digitalocean", environ={})
    with pytest.raises(InvalidInput, match="no digitalocean account") as info:
        find_account(settings, provider="digitalocean", environ={})
    assert "bivy login digitalocean" in info.value.one_line()


async def test_open_provider_uses_the_resolved_token() -> None:
    emulator = HetznerEmulator(token=ENV_TOKEN, clock=ManualClock())
    provider = open_provider(
        hetzner(),
        SecretStore(MemoryKeyring()),
        emulator.transport(),
        environ={"BIVY_HETZNER_TOKEN": ENV_TOKEN},
    )
    try:
        info = await provider.validate()
    finally:
        await provider.aclose()
    assert info.currency == "EUR"
    assert ENV_TOKEN not in repr(provider)


async def test_login_validates_then_stores_secret_only_in_keychain(
    isolated_environment: MemoryKeyring, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    emulator = HetznerEmulator(token=TOKEN, clock=ManualClock())
    settings = Settings()
    store = SecretStore()
    account = await add_account(
        settings, store, "hetzner", {"token": f"  {TOKEN}\n"}, transport=emulator.transport()
    )
    assert account.id == "hetzner" and account.options == {}
    assert settings.accounts == [account]
    assert settings.defaults.account == "hetzner"
    assert store.get(SecretKeys.account("hetzner", "token")) == TOKEN  # stripped
    save_settings(settings)
    assert TOKEN not in settings_path().read_text()
    assert json.loads(settings_path().read_text())["accounts"][0]["id"] == "hetzner"
    assert TOKEN not in caplog.text
    assert len(emulator.calls("GET", r"/v1/pricing")) == 1  # it was checked with the API


async def test_bad_token_stores_nothing(isolated_environment: MemoryKeyring) -> None:
    emulator = HetznerEmulator(token=TOKEN, clock=ManualClock())
    settings = Settings()
    with pytest.raises(AuthError, match="rejected the API token") as info:
        await add_account(
            settings, SecretStore(), "hetzner", {"token": "Wrong" + TOKEN[5:]},
            transport=emulator.transport(),
        )  # fmt: skip
    assert "Wrong" not in info.value.one_line()
    assert settings.accounts == []
    assert isolated_environment.store == {}


@pytest.mark.parametrize("value", ["", "has spaces in it", "x"])
async def test_malformed_token_is_refused_before_any_call(value: str) -> None:
    emulator = HetznerEmulator(token=TOKEN, clock=ManualClock())
    with pytest.raises(InvalidInput):
        await add_account(
            Settings(), SecretStore(), "hetzner", {"token": value},
            transport=emulator.transport(),
        )  # fmt: skip
    assert emulator.requests == []


async def test_bad_account_id_is_refused() -> None:
    with pytest.raises(InvalidInput, match="cannot be an account id"):
        await add_account(Settings(), SecretStore(), "hetzner", {"token": TOKEN}, account_id="A B")


async def test_remove_account_forgets_secret_and_entry(isolated_environment: MemoryKeyring) -> None:
    emulator = HetznerEmulator(token=TOKEN, clock=ManualClock())
    settings = Settings()
    store = SecretStore()
    await add_account(
        settings, store, "hetzner", {"token": TOKEN}, account_id="work",
        transport=emulator.transport(),
    )  # fmt: skip
    await remove_account(settings, store, "work")
    assert settings.accounts == []
    assert settings.defaults.account == ""
    assert isolated_environment.store == {}
    with pytest.raises(InvalidInput):
        await remove_account(settings, store, "work")
