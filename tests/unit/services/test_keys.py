"""The install's SSH keypair (created once, private half only in the keychain) and host keys."""

from __future__ import annotations

import asyncio
import logging

import asyncssh
import pytest

from app.errors import BivyError
from app.services.keys import KeyService, generate_host_key, generate_keypair, public_key_of
from app.settings import SecretKeys, SecretStore, data_dir
from tests.support.memory_keyring import MemoryKeyring


def test_generated_keypair_is_ed25519_and_consistent() -> None:
    pair = generate_keypair("bivy")
    assert pair.private_openssh.startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert pair.public_openssh.startswith("ssh-ed25519 ")
    assert pair.public_openssh.endswith(" bivy")
    assert pair.fingerprint.startswith("SHA256:")
    assert public_key_of(pair.private_openssh) == pair.public_openssh
    key = asyncssh.import_private_key(pair.private_openssh)
    assert key.algorithm == b"ssh-ed25519"
    assert pair.private_openssh not in repr(pair)


def test_host_keys_are_unique_per_workspace() -> None:
    a, b = generate_host_key("demo"), generate_host_key("demo")
    assert a.public_openssh != b.public_openssh
    assert a.public_openssh.endswith(" bivy-demo")


async def test_install_key_is_created_once_and_kept_in_the_keychain(
    isolated_environment: MemoryKeyring, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    service = KeyService(SecretStore())
    first = await service.install_key()
    stored = isolated_environment.store[("bivy", SecretKeys.SSH_PRIVATE_KEY)]
    assert stored == first.private_openssh
    # A second service (another process, the next start) reads the same key back.
    again = await KeyService(SecretStore()).install_key()
    assert again.public_openssh == first.public_openssh
    assert await service.public_key() == first.public_openssh
    client_key = await service.client_key()
    assert client_key.export_public_key("openssh").decode().strip() == first.public_openssh
    # Never on disk, never in the log.
    assert not data_dir().exists() or all(
        first.private_openssh not in p.read_text(errors="ignore")
        for p in data_dir().rglob("*")
        if p.is_file()
    )
    assert "PRIVATE KEY" not in caplog.text


async def test_concurrent_first_use_makes_one_key(isolated_environment: MemoryKeyring) -> None:
    service = KeyService(SecretStore())
    pairs = await asyncio.gather(*(service.install_key() for _ in range(5)))
    assert len({p.public_openssh for p in pairs}) == 1


async def test_corrupt_stored_key_gives_a_clear_error() -> None:
    store = SecretStore(MemoryKeyring())
    store.set(SecretKeys.SSH_PRIVATE_KEY, "not a key at all")
    with pytest.raises(BivyError, match="not a valid OpenSSH private key") as info:
        await KeyService(store).install_key()
    assert "not a key at all" not in info.value.one_line()
