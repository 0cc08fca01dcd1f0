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
from keyring.backends.chainer import ChainerBackend

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


#: Backends that keep secrets in a plain or home-made file: Bivy refuses them (keyrings.alt's
#: PlaintextKeyring and its file-based cousins), so a secret never lands in a file silently.
_FILE_BACKEND_MODULES = ("keyrings.alt.file", "keyrings.alt.pyfs", "keyrings.alt.Gnome")


def _is_usable(backend: KeyringBackend) -> bool:
    if isinstance(backend, ChainerBackend):
        # A chainer writes to its first member that accepts: every member must be acceptable.
        members = list(backend.backends)
        return bool(members) and all(_is_usable(m) for m in members)
    module = type(backend).__module__
    if module.startswith("keyring.backends.fail") or module.endswith(".null"):
        return False
    if module.startswith(_FILE_BACKEND_MODULES) or "plaintext" in type(backend).__name__.lower():
        return False
    try:
        priority = backend.priority
    except Exception:  # a backend's priority probes the system and may raise anything
        return False
    return priority is None or float(priority) > 0


def _default_backend() -> KeyringBackend | None:
    try:
        return keyring.get_keyring()
    except Exception:  # keyring's discovery imports third-party plugins; any failure means none
        log.warning("no keyring backend could be loaded", exc_info=False)
        return None


#: What a locked keychain error says (the window shows it in a dialog).
LOCKED_HINT = (
    "Unlock your keychain (log in to the desktop session, or unlock the login keyring in your "
    "password manager) and try again"
)


def _refused(verb: str, key: str, exc: BaseException) -> SecretStoreError:
    # The exception's text is left out on purpose: some backends echo the value back.
    if isinstance(exc, keyring.errors.KeyringLocked):
        return SecretStoreError(
            f"the keychain is locked, so Bivy could not {verb} {key!r}", hint=LOCKED_HINT
        )
    return SecretStoreError(f"the keychain refused to {verb} {key!r}: {type(exc).__name__}")


class SecretStore:
    """Secrets by key, in the OS keychain.

    Attributes:
        backend: the keyring backend in use (the platform default unless one was given).
    """

    def __init__(self, backend: KeyringBackend | None = None) -> None:
        self.backend = backend if backend is not None else _default_backend()

    def __repr__(self) -> str:
        return f"SecretStore(backend={type(self.backend).__name__})"

    @property
    def available(self) -> bool:
        """Whether a usable keychain backend is configured (it may still be locked)."""
        return self.backend is not None and _is_usable(self.backend)

    def _require(self) -> KeyringBackend:
        if self.backend is None or not _is_usable(self.backend):
            raise SecretStoreError(
                "no system keychain is available to keep Bivy's secrets, "
                "and Bivy does not write secrets to plain files"
            )
        return self.backend

    def get(self, key: str) -> str | None:
        """The secret stored under ``key``, or None."""
        backend = self._require()
        try:
            value = backend.get_password(SERVICE, key)
        except Exception as exc:  # D-Bus and backend errors are not all KeyringErrors
            raise _refused("read", key, exc) from None
        return value if isinstance(value, str) and value else None

    def set(self, key: str, value: str) -> None:
        """Store ``value`` under ``key`` (replacing any previous value)."""
        backend = self._require()
        if not value:
            raise SecretStoreError(f"refusing to store an empty secret for {key!r}", hint="")
        try:
            backend.set_password(SERVICE, key, value)
        except Exception as exc:
            raise _refused("store", key, exc) from None
        log.info("stored secret %s", key)

    def delete(self, key: str) -> None:
        """Forget ``key``; a key that is not there is not an error."""
        backend = self._require()
        try:
            backend.delete_password(SERVICE, key)
        except keyring.errors.PasswordDeleteError:
            return
        except Exception as exc:
            raise _refused("delete", key, exc) from None
        log.info("deleted secret %s", key)

    def has(self, key: str) -> bool:
        return self.get(key) is not None

    async def aget(self, key: str) -> str | None:
        return await asyncio.to_thread(self.get, key)

    async def aset(self, key: str, value: str) -> None:
        await asyncio.to_thread(self.set, key, value)

    async def adelete(self, key: str) -> None:
        await asyncio.to_thread(self.delete, key)
