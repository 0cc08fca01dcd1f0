"""A private D-Bus session bus with a notification server on it, for tests.

The server answers ``org.freedesktop.Notifications.Notify`` as a desktop's would (an id per
notification), records each call, and ``click(id)`` sends the ``ActionInvoked`` signal a user's
click on the notification makes. The bus is a real ``dbus-daemon --session`` in a temp dir.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import count
from typing import Any

from jeepney import DBusAddress, MessageType, message_bus, new_method_return, new_signal
from jeepney.io.blocking import open_dbus_connection
from jeepney.low_level import HeaderFields

PATH = "/org/freedesktop/Notifications"
NAME = "org.freedesktop.Notifications"


@dataclass
class Notification:
    """One ``Notify`` call: what the app asked the desktop to show."""

    id: int
    app_name: str
    summary: str
    body: str
    actions: list[str]


@dataclass
class NotificationServer:
    """Serves ``Notify`` on ``address`` from a thread until ``stop()``."""

    address: str
    shown: list[Notification] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._conn: Any = open_dbus_connection(bus=self.address)
        self._conn.send_and_get_reply(message_bus.RequestName(NAME), timeout=10)
        self._lock = threading.Lock()
        self._ids = count(1)
        self._running = True
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while self._running:
            try:
                message = self._conn.receive(timeout=0.1)
            except TimeoutError:
                continue
            except OSError:
                return
            header = message.header
            if header.message_type is not MessageType.method_call:
                continue
            if header.fields.get(HeaderFields.member) == "Notify":
                app, _replaces, _icon, summary, body, actions, _hints, _timeout = message.body
                ident = next(self._ids)
                self.shown.append(Notification(ident, app, summary, body, list(actions)))
                with self._lock:
                    self._conn.send(new_method_return(message, "u", (ident,)))

    def click(self, ident: int, action: str = "default") -> None:
        """What a click on notification ``ident`` makes the server send."""
        signal = new_signal(
            DBusAddress(PATH, interface=NAME), "ActionInvoked", "us", (ident, action)
        )
        with self._lock:
            self._conn.send(signal)

    def stop(self) -> None:
        self._running = False
        self._thread.join(timeout=5)
        self._conn.close()


@contextlib.contextmanager
def notification_bus() -> Iterator[NotificationServer]:
    """A private session bus with a notification server; both stopped on exit."""
    root = tempfile.mkdtemp(prefix="bivy-notify-")
    process = subprocess.Popen(
        ["dbus-daemon", "--session", "--nofork", "--print-address=1",
         f"--address=unix:path={root}/bus"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,  # dbus-daemon warns about fd limits in containers
        text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        address = process.stdout.readline().strip()
        if not address.startswith("unix:"):
            raise RuntimeError(f"dbus-daemon did not start (exit {process.poll()})")
        server = NotificationServer(address)
        try:
            yield server
        finally:
            server.stop()
    finally:
        process.terminate()
        process.wait(timeout=5)
        if process.stdout is not None:
            process.stdout.close()
        shutil.rmtree(root, ignore_errors=True)
