"""A real OpenSSH server and ttyd on 127.0.0.1 for integration tests, started and reaped by tests.

Usage (see ``tests/integration/test_tunnel.py``)::

    from tests.support.sshd import start_sshd, start_ttyd

    server = start_sshd(tmp_path / "sshd")       # free port, fresh host + client keys
    server.host, server.port, server.user         # where and as whom to log in
    server.host_public_key                       # "ssh-ed25519 AAAA…" to pin
    server.client_private_key                    # OpenSSH private key text the server accepts
    server.kill_connections()                    # SIGKILL every per-connection sshd child
    server.stop()                                # stop the listener and its children

Facts this relies on (shared/DESIGN.md §5): sshd needs ``/run/sshd``; keys under /tmp need
``StrictModes no``. The login user is ``$BIVY_TEST_SSH_USER``, else ``dev`` when it exists, else
the current user (tests usually run as root, which sshd is told to permit). ``pytest.skip`` is
never used: a machine without sshd fails the test, because the feature needs it.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import asyncssh

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(
    port: int, timeout: float = 60.0, process: subprocess.Popen[bytes] | None = None
) -> None:
    """Block until something accepts TCP connections on 127.0.0.1:``port``."""
    deadline = time.monotonic() + timeout
    while True:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on 127.0.0.1:{port}") from None
            time.sleep(0.02)


def default_user() -> str:
    """The account tests log in as: $BIVY_TEST_SSH_USER, else ``dev`` if it exists, else ours."""
    configured = os.environ.get("BIVY_TEST_SSH_USER")
    if configured:
        return configured
    try:
        pwd.getpwnam("dev")
    except KeyError:
        return getpass.getuser()
    return "dev"


def new_keypair() -> tuple[str, str]:
    """A fresh ed25519 keypair as (OpenSSH private key text, ``ssh-ed25519 AAAA…`` public line)."""
    key = asyncssh.generate_private_key("ssh-ed25519")
    private = key.export_private_key("openssh").decode()
    public = key.export_public_key("openssh").decode().strip()
    return private, public


def descendants(pid: int) -> list[int]:
    """All live descendants of ``pid`` (Linux /proc walk), children first."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    found: list[int] = []
    stack = list(children.get(pid, []))
    while stack:
        child = stack.pop()
        found.append(child)
        stack.extend(children.get(child, []))
    return found


@dataclass
class SshServer:
    """A running sshd.

    Attributes:
        host, port, user: where and as whom to connect.
        host_public_key: the server's ed25519 host key, ``ssh-ed25519 AAAA…``.
        client_private_key / client_public_key: a keypair the server authorizes.
        directory: where its config, keys and log live.
        process: the listening sshd (run with ``-D``).
    """

    host: str
    port: int
    user: str
    host_public_key: str
    client_private_key: str
    client_public_key: str
    directory: Path
    process: subprocess.Popen[bytes]
    log_path: Path
    _stopped: bool = field(default=False, repr=False)

    def connection_pids(self) -> list[int]:
        """PIDs of the per-connection sshd processes (and whatever they run)."""
        return descendants(self.process.pid)

    def kill_connections(self) -> int:
        """SIGKILL every per-connection sshd child: the client sees its TCP connection die.

        Returns how many processes were killed.
        """
        pids = self.connection_pids()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return len(pids)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        """Stop the listener and every connection; idempotent."""
        if self._stopped:
            return
        self._stopped = True
        self.kill_connections()
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)
        self.kill_connections()


def start_sshd(
    directory: Path,
    *,
    user: str | None = None,
    authorized_keys: list[str] | None = None,
    extra_config: str = "",
    launcher: list[str] | None = None,
) -> SshServer:
    """Start sshd on 127.0.0.1:<free port> with its own host key; the caller must ``stop()`` it.

    ``authorized_keys`` defaults to a freshly generated client key (``client_private_key``).
    ``launcher`` is an argv prefix that ends by exec-ing the sshd command line appended to it
    (so the pid stays sshd's), e.g. to run it in a mount namespace (tests/support/vmroot.py).
    """
    directory.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # privilege separation dir
    host_private, host_public = new_keypair()
    client_private, client_public = new_keypair()
    host_key = directory / "ssh_host_ed25519_key"
    host_key.write_text(host_private)
    host_key.chmod(stat.S_IRUSR | stat.S_IWUSR)
    authorized = directory / "authorized_keys"
    authorized.write_text("\n".join([client_public, *(authorized_keys or [])]) + "\n")
    authorized.chmod(0o644)
    login = user or default_user()
    port = free_port()
    config = directory / "sshd_config"
    config.write_text(
        f"Port {port}\n"
        "ListenAddress 127.0.0.1\n"
        f"HostKey {host_key}\n"
        f"PidFile {directory / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {authorized}\n"
        "StrictModes no\n"
        "UsePAM no\n"
        "PubkeyAuthentication yes\n"
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        "PermitRootLogin prohibit-password\n"
        f"AllowUsers {login}\n"
        "AllowTcpForwarding yes\n"
        "X11Forwarding no\n"
        "PrintMotd no\n"
        "LogLevel VERBOSE\n"
        f"{extra_config}"
    )
    log_path = directory / "sshd.log"
    process = subprocess.Popen(
        [*(launcher or []), SSHD, "-D", "-f", str(config), "-E", str(log_path)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = SshServer(
        host="127.0.0.1",
        port=port,
        user=login,
        host_public_key=host_public,
        client_private_key=client_private,
        client_public_key=client_public,
        directory=directory,
        process=process,
        log_path=log_path,
    )
    try:
        wait_for_port(port, process=process)
    except BaseException:
        server.stop()
        raise RuntimeError(f"sshd did not start: {server.log()}") from None
    return server


def ttyd_binary(directory: Path | None = None) -> Path:
    """The ttyd a VM runs, got the way the VM's bootstrap gets it (tests/support/ttyd.py).

    ``directory`` is not used any more (the binary is cached by its pin); kept for callers.
    """
    from tests.support.ttyd import vm_ttyd

    return vm_ttyd()


@dataclass
class Ttyd:
    """A running ttyd bound to 127.0.0.1 with basic auth.

    Attributes:
        port: its port on 127.0.0.1; username/password: its basic-auth credential.
    """

    port: int
    username: str
    password: str
    process: subprocess.Popen[bytes]

    def stop(self) -> None:
        if self.process.poll() is None:
            for pid in descendants(self.process.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


def start_ttyd(directory: Path, *, password: str, command: list[str] | None = None) -> Ttyd:
    """Start ttyd as on the VM (``-i lo -W -O``, basic auth user ``bivy``) on a free port.

    ``command`` defaults to a plain bash with a short prompt (the VM runs tmux; a test does not
    need the persistence and must not leave a tmux server behind).
    """
    binary = ttyd_binary()
    directory.mkdir(parents=True, exist_ok=True)  # its HOME and working directory
    port = free_port()
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(directory),
        "TERM": "xterm-256color",
        "PS1": "$ ",
        "LANG": "C.UTF-8",
    }
    process = subprocess.Popen(
        [
            str(binary),
            "-i",
            "lo",
            "-p",
            str(port),
            "-W",
            "-O",
            "-c",
            f"bivy:{password}",
            "-t",
            "disableLeaveAlert=true",
            "--",  # without it ttyd parses the command's own options and crashes on unknown ones
            *(command or ["bash", "--norc", "--noprofile", "-i"]),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        cwd=directory,
    )
    server = Ttyd(port=port, username="bivy", password=password, process=process)
    try:
        wait_for_port(port, process=process)
    except BaseException:
        server.stop()
        raise
    return server
