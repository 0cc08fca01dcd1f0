"""SSH tunnels to workspaces: the service that opens one pinned-host-key asyncssh connection each.

Every workspace gets one ``Tunnel`` (``app.services.tunnel_connection``): an asyncssh connection
as ``dev`` with the install's key (from the keychain), whose host key must be the one Bivy
generated for that VM. There is no trust-on-first-use and no prompt: any other key is a
``HostKeyMismatch``. ``open_terminal`` forwards a workspace's ttyd for an IDE tab.

The tunnel's value types (``app.services.tunnel_types``) and ``Tunnel`` are re-exported here, the
place the rest of the app imports them from.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import asyncssh

from app.errors import HostKeyMismatch, SSHError
from app.services.tunnel_connection import LoginRefused, Tunnel
from app.services.tunnel_types import (
    TTYD_PORT,
    VM_USER,
    CommandResult,
    Forward,
    Listener,
    ReconnectPolicy,
    SSHTarget,
    StateChange,
    TunnelState,
)
from app.settings.secrets import SecretKeys, SecretStore

__all__ = [
    "TTYD_PORT",
    "TTYD_USER",
    "VM_USER",
    "CommandResult",
    "Forward",
    "Listener",
    "ReconnectPolicy",
    "SSHTarget",
    "StateChange",
    "TerminalEndpoint",
    "Tunnel",
    "TunnelService",
    "TunnelState",
    "open_terminal",
    "parse_host_key",
]

log = logging.getLogger(__name__)


class _PinningClient(asyncssh.SSHClient):
    """Remembers the key the server presented when it was not the pinned one, for the error."""

    def __init__(self) -> None:
        self.presented: asyncssh.SSHKey | None = None

    def validate_host_public_key(
        self, host: str, addr: str, port: int, key: asyncssh.SSHKey
    ) -> bool:
        self.presented = key
        return False


def _fingerprint(key: asyncssh.SSHKey) -> str:
    return str(key.get_fingerprint("sha256"))


def parse_host_key(text: str, workspace: str = "") -> asyncssh.SSHKey:
    """Parse a pinned ``ssh-ed25519 AAAA…`` line, or raise ``SSHError``."""
    try:
        return asyncssh.import_public_key(text.strip())
    except (asyncssh.KeyImportError, ValueError):
        raise SSHError(
            f"the pinned host key of workspace {workspace!r} is not a valid SSH public key",
            hint="The workspace record is damaged; delete and recreate the workspace",
        ) from None


class TunnelService:
    """All workspace tunnels of the app.

    Attributes:
        keepalive_interval / keepalive_count_max: SSH keep-alives; a silent peer is dropped
            after interval × count seconds and the tunnel reconnects.
        policy: the reconnect backoff.
    """

    def __init__(
        self,
        secrets: SecretStore | None = None,
        *,
        client_key: str | None = None,
        keepalive_interval: float = 15.0,
        keepalive_count_max: int = 3,
        connect_timeout: float = 20.0,
        policy: ReconnectPolicy | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._secrets = secrets
        self._client_key_text = client_key
        self._client_key: asyncssh.SSHKey | None = None
        self.keepalive_interval = keepalive_interval
        self.keepalive_count_max = keepalive_count_max
        self.connect_timeout = connect_timeout
        self.policy = policy or ReconnectPolicy()
        self._sleep = sleep
        self._tunnels: dict[str, Tunnel] = {}
        self._opening: dict[str, asyncio.Lock] = {}
        self._listeners: list[Listener] = []

    def add_listener(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` on every state change; returns a function that removes it."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def _notify(self, change: StateChange) -> None:
        for listener in list(self._listeners):
            try:
                listener(change)
            except Exception:
                log.exception("tunnel state listener failed")

    def get(self, workspace: str) -> Tunnel | None:
        return self._tunnels.get(workspace)

    def state(self, workspace: str) -> TunnelState:
        tunnel = self._tunnels.get(workspace)
        return tunnel.state if tunnel is not None else TunnelState.CLOSED

    async def _load_client_key(self) -> asyncssh.SSHKey:
        if self._client_key is not None:
            return self._client_key
        text = self._client_key_text
        if text is None:
            if self._secrets is None:
                raise SSHError("no SSH key was given to the tunnel service")
            text = await self._secrets.aget(SecretKeys.SSH_PRIVATE_KEY)
        if not text:
            raise SSHError(
                "this installation has no SSH key in the keychain",
                hint="Create a workspace first: Bivy generates its key then",
            )
        try:
            self._client_key = asyncssh.import_private_key(text)
        except (asyncssh.KeyImportError, ValueError):
            raise SSHError(
                "the SSH key in the keychain cannot be read",
                hint="Remove it from the keychain (service 'bivy') and recreate the workspace",
            ) from None
        return self._client_key

    async def _open_connection(self, target: SSHTarget) -> asyncssh.SSHClientConnection:
        pinned = parse_host_key(target.host_public_key, target.workspace)
        client_key = await self._load_client_key()
        client = _PinningClient()
        where = f"{target.host}:{target.port}"
        try:
            conn = await asyncssh.connect(
                target.host,
                target.port,
                username=target.username,
                client_factory=lambda: client,
                client_keys=[client_key],
                known_hosts=([pinned], [], []),
                server_host_key_algs=[pinned.get_algorithm()],
                agent_path=None,
                password_auth=False,
                kbdint_auth=False,
                config=None,
                connect_timeout=self.connect_timeout,
                login_timeout=self.connect_timeout,
                keepalive_interval=self.keepalive_interval,
                keepalive_count_max=self.keepalive_count_max,
            )
        except (asyncssh.HostKeyNotVerifiable, asyncssh.KeyExchangeFailed):
            # KeyExchangeFailed: the server has no key of the pinned type at all.
            presented = (
                f"a different key ({_fingerprint(client.presented)})"
                if client.presented is not None
                else "no key of the pinned type"
            )
            raise HostKeyMismatch(
                f"workspace {target.workspace!r} at {where} presented {presented}, not the host "
                f"key Bivy generated for it ({_fingerprint(pinned)})"
            ) from None
        except asyncssh.PermissionDenied:
            raise LoginRefused(
                f"workspace {target.workspace!r} at {where} refused Bivy's SSH key "
                f"for user {target.username!r}",
                hint="The VM was not set up by this installation of Bivy, or its setup failed",
            ) from None
        except (asyncssh.Error, OSError, TimeoutError) as exc:
            detail = getattr(exc, "strerror", None) or getattr(exc, "reason", None)
            raise SSHError(
                f"cannot reach workspace {target.workspace!r} at {where}: "
                f"{detail or type(exc).__name__}",
                hint="The VM may still be starting, or the network is down",
            ) from None
        return conn

    async def open(self, target: SSHTarget) -> Tunnel:
        """The workspace's tunnel, connecting if needed (the first failure is raised)."""
        lock = self._opening.setdefault(target.workspace, asyncio.Lock())
        async with lock:
            tunnel = self._tunnels.get(target.workspace)
            if tunnel is not None and tunnel.state != TunnelState.CLOSED:
                if tunnel.target == target:
                    return tunnel
                await tunnel.close()  # the VM was replaced: new address or key
            tunnel = Tunnel(
                target,
                self._open_connection,
                policy=self.policy,
                notify=self._notify,
                sleep=self._sleep,
            )
            self._tunnels[target.workspace] = tunnel
            try:
                await tunnel.start()
            except BaseException:
                self._tunnels.pop(target.workspace, None)
                raise
            return tunnel

    async def close(self, workspace: str) -> None:
        """Close one workspace's tunnel (the agent keeps running on the VM)."""
        tunnel = self._tunnels.pop(workspace, None)
        if tunnel is not None:
            await tunnel.close()

    async def close_all(self) -> None:
        """Close every tunnel: the app's quit path."""
        tunnels = list(self._tunnels.values())
        self._tunnels.clear()
        await asyncio.gather(*(t.close() for t in tunnels), return_exceptions=True)


TTYD_USER = "bivy"


@dataclass(frozen=True)
class TerminalEndpoint:
    """What an IDE tab needs: the forwarded ttyd URL and its basic-auth credential.

    Attributes:
        workspace: whose terminal; url: ``http://127.0.0.1:<port>/`` (no credential in it).
        username / password: ttyd's credential (the password is kept out of repr()).
    """

    workspace: str
    url: str
    username: str
    password: str = field(repr=False)


async def open_terminal(
    tunnels: TunnelService,
    target: SSHTarget,
    secrets: SecretStore,
    *,
    ttyd_port: int = TTYD_PORT,
) -> TerminalEndpoint:
    """Connect (or reuse the tunnel), forward ttyd and fetch its password from the keychain."""
    from app.services.workspaces import TTYD_PASSWORD

    password = await secrets.aget(SecretKeys.workspace(target.workspace, TTYD_PASSWORD))
    if not password:
        raise SSHError(
            f"the terminal password of workspace {target.workspace!r} is not in the keychain",
            hint="The workspace was created on another computer or the keychain entry was "
            "removed; `bivy ssh` still works",
        )
    tunnel = await tunnels.open(target)
    forward = await tunnel.forward(ttyd_port)
    return TerminalEndpoint(target.workspace, forward.url, TTYD_USER, password)
