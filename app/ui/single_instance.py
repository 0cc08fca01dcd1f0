"""One window per user: a second launch brings the first window forward and exits.

Who is first is decided by a lock file (``data_dir()/window.lock``, an OS lock that dies with
its process, so a crash never blocks the next start); the first one then listens on a
``QLocalServer`` with a per-user name (a Unix socket, a named pipe on Windows) and a later
launch connects there, says ``activate`` and exits. Deciding by the lock, not by who listens
first, keeps two launches at the same moment from both becoming "first". The CLI never takes
part: it may run beside the window.
"""

from __future__ import annotations

import getpass
import hashlib
import logging
import time

from PySide6.QtCore import QObject, Signal
from PySide6.QtNetwork import QLocalServer, QLocalSocket

from app.settings import HeldLock, data_dir, try_hold

log = logging.getLogger(__name__)

#: What a later launch sends to the first one.
ACTIVATE = b"activate\n"


def server_name() -> str:
    """A name per user and data folder (two users, or a test's private folder, never meet)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no user name in the environment or the password database
        user = "user"
    digest = hashlib.sha256(f"{user}\0{data_dir()}".encode()).hexdigest()[:16]
    return f"bivy-{digest}"


class SingleInstance(QObject):
    """The first window's lock and server; ``activated`` fires when a later launch knocks.

    Attributes:
        name: the local server name; primary: this process is the first one.
        knocked: (a later launch) the first one was told to come forward.
    """

    activated = Signal()

    def __init__(self, name: str | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.name = name or server_name()
        self.primary = False
        self.knocked = False
        self._lock: HeldLock | None = None
        self._server: QLocalServer | None = None

    def claim(self, wait: float = 10.0) -> bool:
        """Become the first window (True), or knock on the first one's door (False).

        A later launch waits up to ``wait`` seconds for the first one to listen (it may be
        starting at this very moment).
        """
        self._lock = try_hold(data_dir() / "window.lock")
        if self._lock is None:
            self.knocked = self._knock(wait)
            return False
        # A socket file left by a first window that crashed: ours now, since we hold the lock.
        QLocalServer.removeServer(self.name)
        server = QLocalServer(self)
        server.setSocketOptions(QLocalServer.SocketOption.UserAccessOption)
        if not server.listen(self.name):
            log.warning("cannot listen for later launches: %s", server.errorString())
        server.newConnection.connect(self._accept)
        self._server = server
        self.primary = True
        log.info("first window; later launches knock on %s", self.name)
        return True

    def _knock(self, wait: float) -> bool:
        deadline = time.monotonic() + wait
        while True:
            socket = QLocalSocket()
            socket.connectToServer(self.name)
            if socket.waitForConnected(500):
                socket.write(ACTIVATE)
                sent = socket.bytesToWrite() == 0 or socket.waitForBytesWritten(2000)
                socket.disconnectFromServer()
                if socket.state() != QLocalSocket.LocalSocketState.UnconnectedState:
                    socket.waitForDisconnected(1000)
                return sent
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)  # the first window is still starting: no event to wait on yet

    def _accept(self) -> None:
        assert self._server is not None
        while self._server.hasPendingConnections():
            connection = self._server.nextPendingConnection()
            connection.readyRead.connect(lambda c=connection: self._read(c))
            connection.disconnected.connect(connection.deleteLater)
            if connection.bytesAvailable():
                self._read(connection)

    def _read(self, connection: QLocalSocket) -> None:
        data = bytes(connection.readAll().data())
        if ACTIVATE.strip() in data:
            log.info("another launch asked for the window: bringing it forward")
            self.activated.emit()

    def release(self) -> None:
        """Stop listening and drop the lock (the window is closing)."""
        if self._server is not None:
            self._server.close()
            self._server = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None
        self.primary = False
