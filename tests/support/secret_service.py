"""A real Secret Service (D-Bus + gnome-keyring-daemon) for tests, started and stopped here.

Use the ``secret_service`` fixture (registered for every test by tests/conftest.py through
``tests.support.fixtures``)::

    def test_x(secret_service: SecretServiceSession) -> None:
        store = SecretStore(secret_service.backend())   # keyring's SecretService backend
        subprocess.run([...], env=secret_service.env(os.environ))  # a child process sees it too

It runs ``dbus-run-session -- sh -c '…gnome-keyring-daemon --unlock --components=secrets…'``
with HOME/XDG dirs in a temp folder, so the user's real keychain is never touched. Closing the
helper's stdin ends the session (dbus-run-session stops the bus); gnome-keyring-daemon, which
daemonises out of the process tree, is stopped by pid first (found by the private HOME in its
environment). Startup and shutdown take well under a second.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from keyring.backend import KeyringBackend

#: The shell run inside the private bus: unlock (empty password on stdin), report, wait for EOF.
_SESSION_SCRIPT = r"""
printf '\n' | gnome-keyring-daemon --unlock --components=secrets >/dev/null 2>&1 || exit 3
echo "BUS=$DBUS_SESSION_BUS_ADDRESS"
read -r _ignored
"""

KEYRING_BACKEND = "keyring.backends.SecretService.Keyring"


def available() -> bool:
    """Whether dbus-run-session and gnome-keyring-daemon are installed."""
    return bool(shutil.which("dbus-run-session") and shutil.which("gnome-keyring-daemon"))


@dataclass
class SecretServiceSession:
    """A running private Secret Service.

    Attributes:
        address: the D-Bus session bus address (``unix:path=…``).
        root: the temp folder holding its HOME and XDG dirs.
        process: the ``dbus-run-session`` process.
    """

    address: str
    root: Path
    process: subprocess.Popen[str] = field(repr=False)

    def env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """Environment for a child process that should use this Secret Service via keyring."""
        env = dict(base if base is not None else os.environ)
        env["DBUS_SESSION_BUS_ADDRESS"] = self.address
        env["PYTHON_KEYRING_BACKEND"] = KEYRING_BACKEND
        return env

    def backend(self) -> KeyringBackend:
        """keyring's SecretService backend, talking to this bus (``DBUS_SESSION_BUS_ADDRESS``
        must point at it while it is used: the fixture sets it)."""
        from keyring.backends import SecretService

        return SecretService.Keyring()


@contextlib.contextmanager
def secret_service_session(timeout: float = 60.0) -> Iterator[SecretServiceSession]:
    """Start a private D-Bus session with an unlocked gnome-keyring; stop it on exit."""
    root = Path(tempfile.mkdtemp(prefix="bivy-keyring-"))
    runtime = root / "run"
    runtime.mkdir(mode=0o700)
    home = root / "home"
    home.mkdir()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "XDG_RUNTIME_DIR": str(runtime),
        "XDG_DATA_HOME": str(home / ".local" / "share"),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "LANG": "C.UTF-8",
    }
    process = subprocess.Popen(
        ["dbus-run-session", "--", "sh", "-c", _SESSION_SCRIPT],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,  # dbus-daemon warns about fd limits in containers
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        assert process.stdout is not None
        # The script prints one line, or exits. A slow start (a loaded machine) is still a
        # start: only no line at all within ``timeout`` is a failure.
        ready, _, _ = select.select([process.stdout], [], [], timeout)
        line = process.stdout.readline() if ready else ""
        if not line.startswith("BUS="):
            raise RuntimeError(
                f"the private Secret Service did not start within {timeout:.0f} s "
                f"(exit {process.poll()}, got {line!r})"
            )
        yield SecretServiceSession(address=line[4:].strip(), root=root, process=process)
    finally:
        _stop_keyring(home)
        if process.stdin is not None:
            with contextlib.suppress(OSError):
                process.stdin.close()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
        if process.stdout is not None:
            process.stdout.close()
        shutil.rmtree(root, ignore_errors=True)


def _keyring_pids(home: Path) -> list[int]:
    """Live gnome-keyring-daemon processes started with our private HOME (so: ours)."""
    marker = f"HOME={home}".encode()
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if not (proc / "comm").read_text().startswith("gnome-keyring"):
                continue
            if marker not in (proc / "environ").read_bytes().split(b"\0"):
                continue
            if (proc / "stat").read_text().split(") ", 1)[1][:1] == "Z":
                continue
        except OSError:
            continue
        pids.append(int(proc.name))
    return pids


def _stop_keyring(home: Path, timeout: float = 5.0) -> None:
    """gnome-keyring-daemon daemonised itself out of our process tree: stop it by pid."""
    for pid in _keyring_pids(home):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _keyring_pids(home) and time.monotonic() < deadline:
        time.sleep(0.02)  # waiting on a foreign process: there is no event to wait on
    for pid in _keyring_pids(home):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
