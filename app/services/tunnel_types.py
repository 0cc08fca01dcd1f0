"""The value types of Bivy's SSH tunnels: targets, states, state changes, backoff, forwards.

``app.services.tunnel_connection`` (one workspace's connection) and ``app.services.tunnels`` (the
service that opens them) share these; they are re-exported from ``app.services.tunnels``.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from app.errors import BivyError, SSHError
from app.services.registry import WorkspaceRecord

#: The user the app logs in as on every VM.
VM_USER = "dev"
#: ttyd's port on the VM's loopback (shared/DESIGN.md §3).
TTYD_PORT = 7681


class TunnelState(StrEnum):
    """Where a workspace's SSH connection stands."""

    CONNECTING = "connecting"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    CLOSED = "closed"


@dataclass(frozen=True)
class SSHTarget:
    """Where and how to reach one workspace's VM.

    Attributes:
        workspace: the workspace name (for messages and the tunnel table).
        host: IP address or host name; port: sshd's port.
        host_public_key: the VM's pinned host key, ``ssh-ed25519 AAAA…``.
        username: the login (``dev`` on every Bivy VM; tests use their own).
    """

    workspace: str
    host: str
    host_public_key: str
    port: int = 22
    username: str = VM_USER

    @classmethod
    def from_record(cls, record: WorkspaceRecord) -> SSHTarget:
        """A target from the workspace's registry record (address and pinned host key)."""
        if not record.ipv4:
            raise SSHError(
                f"workspace {record.name!r} has no IP address yet", hint="Wait until it is running"
            )
        if not record.host_public_key:
            raise SSHError(
                f"Bivy has no pinned host key for workspace {record.name!r}",
                hint="Only workspaces created by this installation of Bivy can be opened",
            )
        return cls(
            workspace=record.name,
            host=record.ipv4,
            host_public_key=record.host_public_key,
            port=record.ssh_port,
        )


@dataclass(frozen=True)
class StateChange:
    """One transition of a tunnel, as listeners receive it.

    Attributes:
        workspace: whose tunnel; state: the new state.
        error: why (for RECONNECTING and CLOSED after a failure), else None.
        attempt: the reconnect attempt that failed or is under way (0 otherwise).
    """

    workspace: str
    state: TunnelState
    error: BivyError | None = None
    attempt: int = 0


Listener = Callable[[StateChange], None]


@dataclass(frozen=True)
class ReconnectPolicy:
    """Delays between reconnect attempts: first retry at once, then exponential with jitter."""

    initial: float = 0.5
    maximum: float = 30.0
    factor: float = 2.0
    jitter: float = 0.2

    def delay(self, attempt: int) -> float:
        """Seconds to wait before attempt ``attempt`` (1-based) after a drop."""
        if attempt <= 1:
            return 0.0
        base = min(self.maximum, self.initial * self.factor ** (attempt - 2))
        return base * (1 + random.uniform(-self.jitter, self.jitter))  # noqa: S311 - not crypto


@dataclass(frozen=True)
class CommandResult:
    """What a command run over SSH returned (no pty: stdout and stderr apart)."""

    exit_status: int
    stdout: str
    stderr: str


@dataclass
class Forward:
    """A local port that reaches ``remote_host:remote_port`` on the VM through the tunnel.

    Attributes:
        local_port: the port on 127.0.0.1 (stable for the tunnel's lifetime).
        remote_host, remote_port: the destination as the VM sees it.
    """

    local_port: int
    remote_host: str
    remote_port: int
    _server: asyncio.Server | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>/`` (never carries a credential)."""
        return f"http://127.0.0.1:{self.local_port}/"
