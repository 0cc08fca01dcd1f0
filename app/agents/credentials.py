"""Whether an agent's credentials are set: in the environment (which wins, as when a VM is
created) or in the keychain. Reads only whether a value exists; never returns the value."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from dataclasses import dataclass

from app.agents.base import Agent, Credential
from app.errors import SecretStoreError
from app.settings.secrets import SecretStore

__all__ = ["CredentialState", "acredential_states", "credential_states"]


@dataclass(frozen=True)
class CredentialState:
    """Where one credential of an agent is set.

    Attributes:
        credential: the credential.
        source: "env" (its environment variable), "keychain", "" (not set) or "unknown"
            (the keychain could not be read).
    """

    credential: Credential

    source: str

    @property
    def is_set(self) -> bool:
        return self.source in ("env", "keychain")


def credential_states(
    agent: Agent, secrets: SecretStore, environ: Mapping[str, str] | None = None
) -> list[CredentialState]:
    """One state per credential of ``agent``, in its order."""
    env = os.environ if environ is None else environ
    states = []
    for cred in agent.credentials:
        if env.get(cred.env, "").strip():
            states.append(CredentialState(cred, "env"))
            continue
        try:
            stored = secrets.has(cred.key)
        except SecretStoreError:
            states.append(CredentialState(cred, "unknown"))
            continue
        states.append(CredentialState(cred, "keychain" if stored else ""))
    return states


async def acredential_states(
    agent: Agent, secrets: SecretStore, environ: Mapping[str, str] | None = None
) -> list[CredentialState]:
    return await asyncio.to_thread(credential_states, agent, secrets, environ)
