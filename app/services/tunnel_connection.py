"""One workspace's SSH tunnel: its pinned connection, its local forwards and its reconnect loop.

A local forward is a listener Bivy owns on 127.0.0.1 that opens a ``direct-tcpip`` channel on the
*current* connection per accepted socket. Owning the listener (rather than asking asyncssh for
one per connection) keeps the local port - and so the URL an IDE tab shows - stable across
reconnects, and lets a socket accepted while reconnecting wait for the new connection.

States (observable through listeners)::

    CONNECTING ──ok──► CONNECTED ──drop──► RECONNECTING ──ok──► CONNECTED
        │                                     │  (backoff, retries until closed)
        └──fails: error raised        host key / auth refused ──► CLOSED ◄── close()

``app.services.tunnels.TunnelService`` makes the connections (host key pinning, the install's
key) and hands a ``Tunnel`` the factory that makes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import asyncssh

from app.errors import BivyError, HostKeyMismatch, SSHError
from app.services.tunnel_types import (
    CommandResult,
    Forward,
    ReconnectPolicy,
    SSHTarget,
    StateChange,
    TunnelState,
)

log = logging.getLogger(__name__)


class LoginRefused(SSHError):
    """The server refused the login (wrong or unknown key): retrying cannot help."""


class ConnectionFactory(Protocol):
    def __call__(self, target: SSHTarget) -> Awaitable[asyncssh.SSHClientConnection]: ...


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
        connect: ConnectionFactory,
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
                except (HostKeyMismatch, LoginRefused) as exc:
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
