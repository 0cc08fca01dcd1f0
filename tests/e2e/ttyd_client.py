"""A minimal ttyd websocket client (what ttyd's web page does), for CLI-level terminal tests.

ttyd 1.7 speaks RFC 6455 with the subprotocol ``tty``: the client's first message is JSON
``{"AuthToken": base64(user:password), "columns", "rows"}``; after it, a client frame
``"0" + bytes`` is keyboard input and ``"1" + json`` a resize; a server frame ``"0" + bytes``
is terminal output (``"1"`` window title, ``"2"`` preferences). The HTTP upgrade also carries
Basic auth, which ttyd checks when started with ``-c``.

    async with TtydClient.connect("127.0.0.1", port, "bivy", password) as term:
        await term.send_keys("echo hi\\r")
        await term.wait_for("hi", timeout=30)
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import struct
from types import TracebackType


class TtydError(RuntimeError):
    """The terminal refused the connection or closed it."""


class TtydClient:
    """An open terminal session.

    Attributes:
        output: everything the terminal printed so far (decoded, lossy).
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self.output = ""
        self._closed = False

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        username: str,
        password: str,
        *,
        columns: int = 120,
        rows: int = 30,
        timeout: float = 20.0,
    ) -> TtydClient:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        credential = base64.b64encode(f"{username}:{password}".encode()).decode()
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            "GET /ws HTTP/1.1\r\n"
            f"Host: {host}:{port}\r\n"
            f"Origin: http://{host}:{port}\r\n"  # ttyd -O refuses other origins
            "Upgrade: websocket\r\n"
            "Connection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Protocol: tty\r\n"
            f"Authorization: Basic {credential}\r\n"
            "\r\n"
        )
        writer.write(request.encode())
        await writer.drain()
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            writer.close()
            raise TtydError(f"ttyd closed the connection during the handshake ({exc})") from None
        status = head.split(b"\r\n", 1)[0].decode(errors="replace")
        if " 101 " not in status + " ":
            writer.close()
            raise TtydError(f"ttyd refused the websocket: {status}")
        client = cls(reader, writer)
        hello = {"AuthToken": credential, "columns": columns, "rows": rows}
        await client._send(json.dumps(hello).encode())
        return client

    async def __aenter__(self) -> TtydClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def send_keys(self, text: str) -> None:
        """Type ``text`` into the terminal (``\\r`` is Enter)."""
        await self._send(b"0" + text.encode())

    async def wait_for(self, needle: str, timeout: float = 30.0) -> str:
        """Read output until ``needle`` appears in it; returns all output so far."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while needle not in self.output:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"{needle!r} not shown; terminal said: {self.output[-1500:]!r}")
            try:
                await asyncio.wait_for(self._read_message(), remaining)
            except TimeoutError:
                continue
            except (asyncio.IncompleteReadError, ConnectionError) as exc:
                raise TtydError(f"the terminal connection ended ({exc})") from None
        return self.output

    async def pump(self, stop: asyncio.Event) -> None:
        """Keep reading (answering ttyd's pings, collecting output) until ``stop`` is set."""
        while not stop.is_set():
            try:
                await asyncio.wait_for(self._read_message(), 1.0)
            except TimeoutError:
                continue
            except (asyncio.IncompleteReadError, ConnectionError) as exc:
                raise TtydError(f"the terminal connection ended ({exc})") from None

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self._send(struct.pack("!H", 1000), opcode=0x8)
        self._writer.close()
        with contextlib.suppress(TimeoutError, ConnectionError):
            await asyncio.wait_for(self._writer.wait_closed(), 5)

    async def _send(self, payload: bytes, opcode: int = 0x2) -> None:
        mask = os.urandom(4)
        length = len(payload)
        if length < 126:
            header = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
        elif length < 1 << 16:
            header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
        else:
            header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self._writer.write(header + mask + masked)
        await self._writer.drain()

    async def _read_message(self) -> None:
        data = b""
        while True:
            first, second = await self._reader.readexactly(2)
            fin, opcode = first & 0x80, first & 0x0F
            length = second & 0x7F
            if length == 126:
                (length,) = struct.unpack("!H", await self._reader.readexactly(2))
            elif length == 127:
                (length,) = struct.unpack("!Q", await self._reader.readexactly(8))
            if second & 0x80:
                mask = await self._reader.readexactly(4)
                raw = await self._reader.readexactly(length)
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(raw))
            else:
                payload = await self._reader.readexactly(length)
            if opcode == 0x8:
                raise TtydError(f"ttyd closed the terminal: {payload[2:].decode(errors='replace')}")
            if opcode == 0x9:  # ping
                await self._send(payload, opcode=0xA)
                continue
            if opcode == 0xA:
                continue
            data += payload
            if fin:
                break
        if data[:1] == b"0":
            self.output += data[1:].decode(errors="replace")
