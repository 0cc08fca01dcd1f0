"""What a new VM's user data is made of: the spec, the provider's self-delete, the keys, the
agent's credential, the backup settings — gathered from settings and keychain, then rendered by
``app.cloudinit`` (in a thread: jinja2 + gzip). Used by ``WorkspaceService.create``.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from app.agents import DEFAULT_AGENT, Agent, get_agent
from app.cloudinit import BackupInputs, RenderedUserData, UserDataInputs, render_user_data
from app.domain import WorkspaceSpec
from app.domain.validation import is_local_repo
from app.errors import InvalidInput
from app.providers.base import Provider
from app.services.keys import KeyPair
from app.settings import SecretKeys, SecretStore, Settings

__all__ = ["LOCAL_USER_DATA_LIMIT_ENV", "VmMode", "VmSecrets", "agent_env", "vm_user_data"]

#: ``workspace``: a normal VM; ``prebuild``: a prebuild's builder (no agent credentials, no
#: backups, no terminal; notes/CONTRACTS2.md).
VmMode = Literal["workspace", "prebuild"]

log = logging.getLogger(__name__)

#: The user data limit on the local provider (bytes; default its 1 MiB): a small one (e.g.
#: 32768) makes a local VM take the ``split`` layout, its tools sent over SSH as on Hetzner.
LOCAL_USER_DATA_LIMIT_ENV = "BIVY_LOCAL_USER_DATA_LIMIT"


@dataclass(frozen=True)
class VmSecrets:
    """Where a VM's secrets come from: settings, the keychain, and the environment
    (``environ`` None: the process's own)."""

    settings: Settings
    secrets: SecretStore
    environ: Mapping[str, str] | None = None


async def vm_user_data(
    source: VmSecrets,
    spec: WorkspaceSpec,
    provider: Provider,
    ssh_public_key: str,
    host_key: KeyPair,
    ttyd_password: str,
    *,
    mode: VmMode = "workspace",
) -> RenderedUserData:
    """The user data for ``spec``'s VM at ``provider`` (``.user_data`` as sent; ``.toolkit``
    the archive to send over SSH once sshd answers, when it did not fit)."""
    caps = provider.capabilities
    builder = mode == "prebuild"
    environ = os.environ if source.environ is None else source.environ
    limit = caps.user_data_limit
    if provider.kind == "local" and environ.get(LOCAL_USER_DATA_LIMIT_ENV, "").strip():
        try:
            limit = int(environ[LOCAL_USER_DATA_LIMIT_ENV])
        except ValueError:
            raise InvalidInput(f"{LOCAL_USER_DATA_LIMIT_ENV} must be a number of bytes") from None
    inputs = UserDataInputs(
        spec=spec,
        provider=provider.kind,
        user_data_limit=limit,
        gzip_base64_ok=caps.user_data_gzip_base64,
        ssh_authorized_key=ssh_public_key,
        host_key_private=host_key.private_openssh,
        host_key_public=host_key.public_openssh,
        ttyd_password=ttyd_password,
        self_delete_script=provider.self_delete_script(),
        self_delete_env=provider.self_delete_env(),
        # A builder's image outlives it: nothing secret may be on board.
        agent_env={} if builder else await agent_env(source, spec),
        # A local checkout arrives as a bundle: no git credential goes to the VM.
        git_token=(
            None
            if is_local_repo(spec.repo_url)
            else await source.secrets.aget(SecretKeys.GIT_TOKEN)
        ),
        backup=None if builder else await _backup_inputs(source, spec),
        mode=mode,
    )
    return await asyncio.to_thread(render_user_data, inputs)


async def agent_env(source: VmSecrets, spec: WorkspaceSpec) -> dict[str, str]:
    """The agent's credential: its environment variable here, else the keychain."""
    if spec.agent != DEFAULT_AGENT:
        return await _plugin_agent_env(source, get_agent(spec.agent))
    if spec.agent_credential == "none":
        return {}
    name, key = {
        "api_key": ("ANTHROPIC_API_KEY", SecretKeys.ANTHROPIC_API_KEY),
        "oauth_token": ("CLAUDE_CODE_OAUTH_TOKEN", SecretKeys.CLAUDE_OAUTH_TOKEN),
    }[spec.agent_credential]
    environ = os.environ if source.environ is None else source.environ
    value = environ.get(name, "").strip() or await source.secrets.aget(key)
    if not value:
        log.warning("no %s is configured: log the agent in from its terminal", name)
        return {}
    return {name: value}


async def _plugin_agent_env(source: VmSecrets, agent: Agent) -> dict[str, str]:
    """Every credential of ``agent`` that is set (its variable here wins over the keychain)."""
    environ = os.environ if source.environ is None else source.environ
    found: dict[str, str] = {}
    for cred in agent.credentials:
        value = environ.get(cred.env, "").strip() or await source.secrets.aget(cred.key)
        if value:
            found[cred.env] = value
    if not found:
        names = " or ".join(agent.credential_envs)
        log.warning("no %s is configured: log %s in from its terminal", names, agent.name)
    return found


async def _backup_inputs(source: VmSecrets, spec: WorkspaceSpec) -> BackupInputs | None:
    """Backup settings for the VM (issue 6 hooks in here); None: no backups."""
    from app.services.backup import BackupService  # issue 6 (persistence engineer)

    return await BackupService(source.settings, source.secrets).inputs_for(spec)
