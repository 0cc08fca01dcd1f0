"""SSH tunnels to workspaces: one pinned-host-key asyncssh connection each, forwards, reconnect.

Every workspace gets one ``Tunnel``: an asyncssh connection as ``dev`` with the install's key
(from the keychain), whose host key must be the one Bivy generated for that VM. There is no
trust-on-first-use and no prompt: any other key is a ``HostKeyMismatch``.

A local forward is a listener Bivy owns on 127.0.0.1 that opens a ``direct-tcpip`` channel on the
*current* connection per accepted socket. Owning the listener (rather than asking asyncssh for
one per connection) keeps the local port - and so the URL an IDE tab shows - stable across
reconnects, and lets a socket accepted while reconnecting wait for the new connection.

States (observable through listeners)::

    CONNECTING ──ok──► CONNECTED ──drop──► RECONNECTING ──ok──► CONNECTED
        │                                     │  (backoff, retries until closed)
        └──fails: error raised        host key / auth refused ──► CLOSED ◄── close()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

import asyncssh

from app.errors import BivyError, HostKeyMismatch, SSHError
from app.services.registry import WorkspaceRecord
from app.settings.secrets import SecretKeys, SecretStore

log = logging.getLogger(__name__)

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


class _Refused(SSHError):
    """The server refused the login (wrong or unknown key): retrying cannot help."""


class _ConnectionFactory(Protocol):
    def __call__(self, target: SSHTarget) -> Awaitable[asyncssh.SSHClientConnection]: ...


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


class Tunnel:
    """One workspace's SSH connection, its forwards and its reconnect loop.

    Attributes:
        target: where it connects; state: the current ``TunnelState``.
        last_error: the most recent failure, if any.
        forwards: the local forwards it serves.
    """

    def __init__(
        self,
        target: SSHTarget,
        connect: _ConnectionFactory,
        *,
        policy: ReconnectPolicy,
        notify: Callable[[StateChange], None],
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        wait_timeout: float = 30.0,
    ) -> None:
        self.target = target
        self.state = TunnelState.CONNECTING
        self.last_error: BivyError | None = None
        self.forwards: list[Forward] = []
        self._connect = connect
        self._policy = policy
        self._notify = notify
        self._sleep = sleep
        self._wait_timeout = wait_timeout
        self._conn: asyncssh.SSHClientConnection | None = None
        self._connected = asyncio.Event()
        self._closing = False
        self._supervisor: asyncio.Task[None] | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    def _set(self, state: TunnelState, error: BivyError | None = None, attempt: int = 0) -> None:
        self.state = state
        if error is not None:
            self.last_error = error
        self._notify(StateChange(self.target.workspace, state, error, attempt))

    async def start(self) -> None:
        """Connect for the first time (errors raised) and start watching for drops."""
        self._set(TunnelState.CONNECTING)
        try:
            self._conn = await self._connect(self.target)
        except BivyError as exc:
            self._closing = True
            self._set(TunnelState.CLOSED, exc)
            raise
        self._connected.set()
        self._set(TunnelState.CONNECTED)
        self._supervisor = asyncio.create_task(
            self._supervise(), name=f"bivy-tunnel-{self.target.workspace}"
        )

    async def _supervise(self) -> None:
        while not self._closing:
            conn = self._conn
            assert conn is not None
            await conn.wait_closed()
            if self._closing:
                return
            self._connected.clear()
            self._conn = None
            log.info("tunnel to %s dropped; reconnecting", self.target.workspace)
            self._set(TunnelState.RECONNECTING, SSHError("the SSH connection was lost"))
            attempt = 0
            while not self._closing:
                attempt += 1
                await self._sleep(self._policy.delay(attempt))
                try:
                    self._conn = await self._connect(self.target)
                except (HostKeyMismatch, _Refused) as exc:
                    # Retrying cannot fix a wrong key or a refused login: stop and say so.
                    self._closing = True
                    for fwd in self.forwards:
                        if fwd._server is not None:
                            fwd._server.close()
                    self._set(TunnelState.CLOSED, exc, attempt)
                    return
                except SSHError as exc:
                    self._set(TunnelState.RECONNECTING, exc, attempt)
                    continue
                self._connected.set()
                self._set(TunnelState.CONNECTED)
                log.info("tunnel to %s reconnected (attempt %d)", self.target.workspace, attempt)
                break

    async def connection(self, wait: float | None = None) -> asyncssh.SSHClientConnection:
        """The live connection, waiting up to ``wait`` s while (re)connecting."""
        if self._closing:
            raise SSHError(
                f"the tunnel to workspace {self.target.workspace!r} is closed",
                hint=self.last_error.one_line() if self.last_error else "",
            )
        try:
            await asyncio.wait_for(self._connected.wait(), wait or self._wait_timeout)
        except TimeoutError:
            raise SSHError(
                f"workspace {self.target.workspace!r} is not reachable over SSH right now",
                hint="Bivy keeps reconnecting; check the network or whether the VM still runs",
            ) from None
        assert self._conn is not None
        return self._conn

    async def run(
        self, command: str, *, input: str | None = None, limit: float = 30.0
    ) -> CommandResult:
        """Run ``command`` on the VM in an exec channel WITHOUT a pty (not user activity)."""
        conn = await self.connection(limit)
        try:
            result = await conn.run(
                command, input=input, check=False, request_pty=False, timeout=limit
            )
        except asyncssh.TimeoutError:
            raise SSHError(
                f"a command on workspace {self.target.workspace!r} did not finish in {limit:g} s"
            ) from None
        except (asyncssh.Error, OSError) as exc:
            raise SSHError(
                f"running a command on workspace {self.target.workspace!r} failed: "
                f"{type(exc).__name__}"
            ) from None
        return CommandResult(
            exit_status=result.exit_status if result.exit_status is not None else -1,
            stdout=_text(result.stdout),
            stderr=_text(result.stderr),
        )

    async def forward(
        self, remote_port: int, remote_host: str = "127.0.0.1", local_port: int = 0
    ) -> Forward:
        """Listen on 127.0.0.1:``local_port`` (0 = any free port) and forward to the VM."""
        for existing in self.forwards:
            if (existing.remote_host, existing.remote_port) == (remote_host, remote_port):
                return existing
        fwd = Forward(local_port=0, remote_host=remote_host, remote_port=remote_port)

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            # Ends normally when cancelled by close(): asyncio's stream server calls
            # task.exception() on its handler, which raises for a cancelled task (3.11).
            with contextlib.suppress(asyncio.CancelledError):
                await self._serve_socket(fwd, reader, writer)

        try:
            server = await asyncio.start_server(handle, "127.0.0.1", local_port)
        except OSError as exc:
            raise SSHError(
                f"cannot listen on 127.0.0.1:{local_port}: {exc.strerror or type(exc).__name__}"
            ) from None
        fwd._server = server
        fwd.local_port = int(server.sockets[0].getsockname()[1])
        self.forwards.append(fwd)
        log.info(
            "forward 127.0.0.1:%d -> %s:%d on %s",
            fwd.local_port,
            remote_host,
            remote_port,
            self.target.workspace,
        )
        return fwd

    async def _serve_socket(
        self, fwd: Forward, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._writers.add(writer)
        try:
            try:
                conn = await self.connection()
                remote_reader, remote_writer = await conn.open_connection(
                    fwd.remote_host, fwd.remote_port
                )
            except (BivyError, asyncssh.Error, OSError) as exc:
                log.info("forward to %s:%d refused: %s", fwd.remote_host, fwd.remote_port, exc)
                return
            try:
                await asyncio.gather(_pump(reader, remote_writer), _pump(remote_reader, writer))
            finally:
                remote_writer.close()
        finally:
            self._writers.discard(writer)
            writer.close()
            # Let the transport really close its socket before the loop may go away.
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await writer.wait_closed()
            self._handlers.discard(task)

    async def close(self) -> None:
        """Close forwards, every forwarded socket and the connection; idempotent."""
        already = self._closing and self.state == TunnelState.CLOSED
        self._closing = True
        for fwd in self.forwards:
            if fwd._server is not None:
                fwd._server.close()
        # A socket accepted just before the listener closed gets its handler a few loop turns
        # later (a browser reconnects at once when its websocket drops): keep closing until
        # several turns pass without one, so no socket outlives the tunnel.
        quiet = 0
        while quiet < 5:
            await asyncio.sleep(0)
            handlers = list(self._handlers)
            if not handlers:
                quiet += 1
                continue
            quiet = 0
            for writer in list(self._writers):
                writer.close()
            for task in handlers:
                task.cancel()
            await asyncio.gather(*handlers, return_exceptions=True)
        for fwd in self.forwards:
            if fwd._server is not None:
                await fwd._server.wait_closed()
        # The supervisor first: a reconnect finishing now must not leave a connection behind.
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
            self._supervisor = None
        if self._conn is not None:
            self._conn.close()
            with contextlib.suppress(Exception):
                await self._conn.wait_closed()
            self._conn = None
        self._connected.clear()
        if not already:
            self._set(TunnelState.CLOSED)


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


async def _pump(reader: Any, writer: Any) -> None:
    """Copy until EOF, then pass the EOF on (half-close), as a TCP relay should."""
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (OSError, asyncssh.Error, BrokenPipeError):
        writer.close()


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
            raise _Refused(
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
