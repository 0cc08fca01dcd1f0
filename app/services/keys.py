"""SSH keys: the install's ed25519 keypair (private half in the keychain) and VM host keys."""

# Bivy has one keypair per install: its public half goes into every VM's ``authorized_keys`` and is
# uploaded to each provider once; its private half lives only in the keychain under
# ``SecretKeys.SSH_PRIVATE_KEY``. Each workspace gets its own ed25519 host key, generated here and
# handed to the VM in its user data, so the app knows the host key before the first connection.

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import asyncssh

from app.errors import BivyError
from app.settings import SecretKeys, SecretStore

__all__ = ["KeyPair", "KeyService", "generate_host_key", "generate_keypair", "public_key_of"]


@dataclass(frozen=True)
class KeyPair:
    """An ed25519 keypair in OpenSSH formats.

    Attributes:
        private_openssh: the private key (``-----BEGIN OPENSSH PRIVATE KEY-----``), never shown.
        public_openssh: ``ssh-ed25519 AAAA… comment``.
        fingerprint: ``SHA256:…`` of the public key.
    """

    private_openssh: str = field(repr=False)
    public_openssh: str
    fingerprint: str


def _pair(key: Any) -> KeyPair:
    return KeyPair(
        private_openssh=key.export_private_key("openssh").decode("ascii"),
        public_openssh=key.export_public_key("openssh").decode("ascii").strip(),
        fingerprint=str(key.get_fingerprint("sha256")),
    )


def generate_keypair(comment: str = "bivy") -> KeyPair:
    """A fresh ed25519 keypair."""
    return _pair(asyncssh.generate_private_key("ssh-ed25519", comment=comment))


def generate_host_key(workspace: str) -> KeyPair:
    """A fresh ed25519 host key for the VM of ``workspace`` (comment ``bivy-<name>``)."""
    return generate_keypair(comment=f"bivy-{workspace}")


def _import(private_openssh: str) -> Any:
    try:
        return asyncssh.import_private_key(private_openssh)
    except (asyncssh.KeyImportError, ValueError):
        raise BivyError(
            "the SSH key stored in the keychain is not a valid OpenSSH private key",
            hint=f"Delete the keychain entry 'bivy / {SecretKeys.SSH_PRIVATE_KEY}' and Bivy will "
            "create a new key (existing workspaces will then refuse it)",
        ) from None


def public_key_of(private_openssh: str) -> str:
    """The ``ssh-ed25519 …`` public line of an OpenSSH private key."""
    return _pair(_import(private_openssh)).public_openssh


class KeyService:
    """The install's SSH keypair, created on first use and kept in the keychain.

    Attributes:
        secrets: where the private key is kept.
    """

    def __init__(self, secrets: SecretStore) -> None:
        self.secrets = secrets
        self._lock = asyncio.Lock()
        self._cached: KeyPair | None = None

    async def install_key(self) -> KeyPair:
        """The install's keypair; generated and stored in the keychain the first time."""
        async with self._lock:
            if self._cached is not None:
                return self._cached
            stored = await self.secrets.aget(SecretKeys.SSH_PRIVATE_KEY)
            if stored:
                pair = _pair(await asyncio.to_thread(_import, stored))
            else:
                pair = await asyncio.to_thread(generate_keypair, "bivy")
                await self.secrets.aset(SecretKeys.SSH_PRIVATE_KEY, pair.private_openssh)
            self._cached = pair
            return pair

    async def public_key(self) -> str:
        """The install's public key line (``ssh-ed25519 … bivy``)."""
        return (await self.install_key()).public_openssh

    async def client_key(self) -> Any:
        """The install's private key as an ``asyncssh.SSHKey``, for SSH connections."""
        return await asyncio.to_thread(_import, (await self.install_key()).private_openssh)
