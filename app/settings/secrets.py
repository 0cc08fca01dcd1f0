"""``SecretStore``: the one way Bivy keeps secrets, over the OS keychain (keyring).

A machine without a keychain backend gets ``SecretStoreError`` with what to install; Bivy never
falls back to a plaintext file. Blocking keyring calls have async twins that run in a thread.
"""

from __future__ import annotations

import asyncio
import logging

import keyring
import keyring.errors
from keyring.backend import KeyringBackend

from app.errors import SecretStoreError

log = logging.getLogger(__name__)

SERVICE = "bivy"


class SecretKeys:
    """The names secrets are stored under (the keychain's "username" in service ``bivy``)."""

    SSH_PRIVATE_KEY = "ssh/private-key"
    ANTHROPIC_API_KEY = "anthropic/api-key"
    CLAUDE_OAUTH_TOKEN = "anthropic/oauth-token"
    BACKUP_ACCESS_KEY = "backup/access-key-id"
    BACKUP_SECRET_KEY = "backup/secret-access-key"
    GIT_TOKEN = "git/token"

    @staticmethod
    def account(account_id: str, option: str) -> str:
        return f"account/{account_id}/{option}"

    @staticmethod
    def workspace(name: str, what: str) -> str:
        """Per-workspace secrets: "ttyd-password", "restic-password", "host-key"."""
        return f"workspace/{name}/{what}"


def _is_usable(backend: KeyringBackend) -> bool:
    priority = getattr(backend, "priority", 0)
    module = type(backend).__module__
    return not (module.startswith("keyring.backends.fail") or module.endswith(".null")) and (
        priority is None or float(priority) > 0
    )


def _refused(verb: str, key: str, exc: Exception) -> SecretStoreError:
    # The exception's text is left out on purpose: some backends echo the value back.
    return SecretStoreError(f"the keychain refused to {verb} {key!r}: {type(exc).__name__}")


class SecretStore:
    """Secrets by key, in the OS keychain.

    Attributes:
        backend: the keyring backend in use (the platform default unless one was given).
    """

    def __init__(self, backend: KeyringBackend | None = None) -> None:
        self.backend = backend if backend is not None else keyring.get_keyring()

    def _check(self) -> None:
        if not _is_usable(self.backend):
            raise SecretStoreError(
                "no system keychain is available to keep Bivy's secrets, "
                "and Bivy does not write secrets to plain files"
            )

    def get(self, key: str) -> str | None:
        self._check()
        try:
            return self.backend.get_password(SERVICE, key)
        except keyring.errors.KeyringError as exc:
            raise SecretStoreError(
                f"the keychain refused to read {key!r}: {type(exc).__name__}"
            ) from None

    def set(self, key: str, value: str) -> None:
        self._check()
        if not value:
            raise SecretStoreError(f"refusing to store an empty secret for {key!r}", hint="")
        try:
            self.backend.set_password(SERVICE, key, value)
        except keyring.errors.KeyringError as exc:
            raise SecretStoreError(
                f"the keychain refused to store {key!r}: {type(exc).__name__}"
            ) from None
        log.info("stored secret %s", key)

    def delete(self, key: str) -> None:
        self._check()
        try:
            self.backend.delete_password(SERVICE, key)
        except keyring.errors.PasswordDeleteError:
            return
        except keyring.errors.KeyringError as exc:
            raise SecretStoreError(
                f"the keychain refused to delete {key!r}: {type(exc).__name__}"
            ) from None
        log.info("deleted secret %s", key)

    def has(self, key: str) -> bool:
        return self.get(key) is not None

    async def aget(self, key: str) -> str | None:
        return await asyncio.to_thread(self.get, key)

    async def aset(self, key: str, value: str) -> None:
        await asyncio.to_thread(self.set, key, value)

    async def adelete(self, key: str) -> None:
        await asyncio.to_thread(self.delete, key)
