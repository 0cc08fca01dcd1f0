"""The guard for real: the rendered rules, loaded by the rendered script in network namespaces,
stop a non-root host process and a container's forwarded traffic from reaching a stand-in
metadata service, while root on the host still gets through (the self-delete), and keep a
published container port closed to the outside.

Topology (three namespaces joined by veth pairs, all torn down afterwards):
container 10.77.1.2 → host 10.77.1.1 | 10.77.2.1 → cloud 10.77.2.2 with 169.254.169.254 and
169.254.42.42 on its loopback and a TCP server on port 80 answering "ok". The container runs the
same server, and the host publishes it on port 8080 the way Docker does (a DNAT rule in its own
table): the cloud side, standing for the internet, must not reach it once the guard is loaded.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.cloudinit import METADATA_IPV4
from app.domain import WorkspaceSpec
from tests.unit.cloudinit.vmtree import render_tree

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
CONNECT = (
    "import socket, sys\n"
    "s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)\n"
    "print(s.recv(2).decode())\n"
)
SERVER = (
    "import socket\n"
    "srv = socket.socket()\n"
    "srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "srv.bind(('0.0.0.0', 80))\n"
    "srv.listen(16)\n"
    "print('listening', flush=True)\n"
    "while True:\n"
    "    conn, _ = srv.accept()\n"
    "    conn.sendall(b'ok')\n"
    "    conn.close()\n"
)


def _missing() -> str | None:
    for tool in ("ip", "nft", "setpriv"):
        if shutil.which(tool) is None:
            return f"needs {tool} (.ci/setup --test installs it)"
    return None


pytestmark = [
    pytest.mark.needs_root("network namespaces and nftables"),
    pytest.mark.skipif(_missing() is not None, reason=_missing() or ""),
]


def _sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=30)


class Net:
    """Three namespaces: container (c), host (h), cloud (m)."""

    def __init__(self, tag: str) -> None:
        self.c, self.h, self.m = (f"bivy{tag}{n}" for n in "chm")

    def run(self, ns: str, *cmd: str, timeout: float = 15) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ip", "netns", "exec", ns, *cmd],
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip

    def reaches(self, ns: str, address: str, *, as_nobody: bool = False, port: int = 80) -> bool:
        prefix = NOBODY if as_nobody else []
        result = self.run(ns, *prefix, sys.executable, "-c", CONNECT, address, str(port))
        return result.returncode == 0 and result.stdout.strip() == "ok"


@pytest.fixture
def net() -> Iterator[Net]:
    net = Net(str(os.getpid() % 100000))
    created: list[str] = []
    servers: list[subprocess.Popen[str]] = []
    try:
        for ns in (net.c, net.h, net.m):
            _sh("ip", "netns", "add", ns)
            created.append(ns)
        for ns in (net.c, net.h, net.m):
            _sh("ip", "-n", ns, "link", "set", "lo", "up")
        _sh(
            "ip", "link", "add", "vc", "netns", net.c, "type", "veth", "peer", "vhc", "netns", net.h
        )
        _sh(
            "ip", "link", "add", "vm", "netns", net.m, "type", "veth", "peer", "vhm", "netns", net.h
        )
        for ns, dev, addr in (
            (net.c, "vc", "10.77.1.2/24"),
            (net.h, "vhc", "10.77.1.1/24"),
            (net.h, "vhm", "10.77.2.1/24"),
            (net.m, "vm", "10.77.2.2/24"),
        ):
            _sh("ip", "-n", ns, "addr", "add", addr, "dev", dev)
            _sh("ip", "-n", ns, "link", "set", dev, "up")
        for address in METADATA_IPV4:
            _sh("ip", "-n", net.m, "addr", "add", f"{address}/32", "dev", "lo")
        _sh("ip", "-n", net.c, "route", "add", "default", "via", "10.77.1.1")
        _sh("ip", "-n", net.m, "route", "add", "default", "via", "10.77.2.1")
        _sh("ip", "-n", net.h, "route", "add", "169.254.0.0/16", "via", "10.77.2.2")
        _sh("ip", "netns", "exec", net.h, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        # Docker's port publishing, as Docker does it: DNAT in a table of its own.
        publish = (
            "add table ip dockerlike; add chain ip dockerlike pre"
            " { type nat hook prerouting priority dstnat; };"
            " add rule ip dockerlike pre tcp dport 8080 dnat to 10.77.1.2:80"
        )
        _sh("ip", "netns", "exec", net.h, "nft", publish)
        for ns in (net.m, net.c):
            server = subprocess.Popen(
                ["ip", "netns", "exec", ns, sys.executable, "-c", SERVER],
                stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
            servers.append(server)
            assert server.stdout is not None and server.stdout.readline().strip() == "listening"
        yield net
    finally:
        for server in servers:
            server.kill()
            server.wait(timeout=10)
            if server.stdout is not None:
                server.stdout.close()
        for ns in created:
            subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True)


def test_only_root_on_the_host_reaches_the_metadata_service_and_nothing_comes_in(
    net: Net, tmp_path: Path
) -> None:
    env = render_tree(WorkspaceSpec(name="w", repo_url="https://github.com/o/r.git"), tmp_path)
    guard = [
        "env", f"BIVY_LIB_DIR={env['BIVY_LIB_DIR']}", f"PATH={os.environ['PATH']}",
        "bash", str(tmp_path / "lib" / "metadata-guard"),
    ]  # fmt: skip
    metadata, scaleway = METADATA_IPV4
    # Without the guard everybody gets through: the setup itself is not what blocks.
    assert net.reaches(net.h, metadata, as_nobody=True)
    assert net.reaches(net.c, metadata)
    assert net.reaches(net.m, "10.77.2.1", port=8080)  # the published container port

    loaded = net.run(net.h, *guard)
    assert loaded.returncode == 0, loaded.stderr
    again = net.run(net.h, *guard)  # every boot loads it again: it replaces, never duplicates
    assert again.returncode == 0, again.stderr
    ruleset = net.run(net.h, "nft", "list", "ruleset").stdout
    assert ruleset.count("table inet bivy_guard") == 1
    assert ruleset.count("reject with icmpx admin-prohibited") == 4
    assert ruleset.count("ct status dnat") == 1

    for address in (metadata, scaleway):
        assert net.reaches(net.h, address)  # root on the host: the self-delete
        assert not net.reaches(net.h, address, as_nobody=True)  # any other user
        assert not net.reaches(net.c, address)  # root in the container (forwarded)
        assert not net.reaches(net.c, address, as_nobody=True)
    # Only the metadata addresses are closed: the same server on another address answers all.
    assert net.reaches(net.h, "10.77.2.2", as_nobody=True)
    assert net.reaches(net.c, "10.77.2.2", as_nobody=True)
    # Only SSH comes in: the published port is closed to the outside, the container still serves
    # the host itself (the app's SSH forwards start there) and still reaches the internet.
    assert not net.reaches(net.m, "10.77.2.1", port=8080)
    assert net.reaches(net.h, "10.77.1.2", as_nobody=True)
