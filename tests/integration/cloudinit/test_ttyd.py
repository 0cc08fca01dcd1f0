"""The rendered ttyd launcher with a real ttyd: loopback only, basic auth, its websocket counts."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.domain import WorkspaceSpec
from tests.support.sshd import free_port, ttyd_binary, wait_for_port
from tests.unit.cloudinit.vmtree import render_tree

PASSWORD = "pw-0123456789abcdef"  # what tests.unit.cloudinit.vmtree renders


@pytest.fixture
def vm_ttyd(tmp_path: Path) -> Iterator[tuple[int, dict[str, str], Path]]:
    try:
        binary = ttyd_binary(tmp_path / "ttyd-bin")
    except (ImportError, RuntimeError) as exc:
        pytest.skip(f"no ttyd binary: {exc}")
    env = render_tree(WorkspaceSpec(name="w", repo_url="https://github.com/o/r.git"), tmp_path)
    (tmp_path / "state" / "container.env").write_text(
        "BIVY_CONTAINER_ID=c0ffee\nBIVY_REMOTE_USER=node\nBIVY_REMOTE_WORKSPACE=/workspaces/r\n"
    )
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    docker = stubs / "docker"
    docker.write_text('#!/bin/sh\necho "docker $*" >> "$STUB_LOG"\nexit 0\n')
    docker.chmod(0o755)
    port = free_port()
    env.update(
        PATH=f"{binary.parent}:{stubs}:/usr/bin:/bin",
        BIVY_TTYD_PORT=str(port),
        STUB_LOG=str(tmp_path / "stub.log"),
    )
    process = subprocess.Popen(
        ["bash", str(tmp_path / "lib" / "ttyd-run")],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for_port(port, process=process)
        yield port, env, tmp_path
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)


def test_listens_on_the_loopback_with_basic_auth(vm_ttyd: tuple[int, dict[str, str], Path]) -> None:
    port, _, root = vm_ttyd
    listening = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True)
    addresses = {line.split()[3].rsplit(":", 1)[0] for line in listening.stdout.splitlines()}
    assert addresses and addresses <= {"127.0.0.1", "[::1]"}
    url = f"http://127.0.0.1:{port}/"
    assert httpx.get(url).status_code == 401
    assert httpx.get(url, auth=("bivy", "wrong")).status_code == 401
    assert httpx.get(url, auth=("bivy", PASSWORD)).status_code == 200
    assert "docker start c0ffee" in (root / "stub.log").read_text()


def _open_websocket(port: int) -> socket.socket:
    key = base64.b64encode(os.urandom(16)).decode()
    auth = base64.b64encode(f"bivy:{PASSWORD}".encode()).decode()
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(
        (
            f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nOrigin: http://127.0.0.1:{port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Protocol: tty\r\n"
            f"Authorization: Basic {auth}\r\n\r\n"
        ).encode()
    )
    assert sock.recv(4096).startswith(b"HTTP/1.1 101")
    return sock


def test_an_open_terminal_websocket_keeps_the_vm_alive(
    vm_ttyd: tuple[int, dict[str, str], Path],
) -> None:
    port, env, root = vm_ttyd
    (root / "state" / "status.json").write_text(json.dumps({"phase": "ready"}))
    (root / "state" / "deadline").write_text("9999999999\n")
    env = {**env, "BIVY_PS_CMD": "true", "BIVY_NOW": "1800000000"}

    def decide() -> str:
        result = subprocess.run(
            ["bash", str(root / "lib" / "idle-monitor"), "--decide"],
            env=env,
            capture_output=True,
            text=True,
        )
        return result.stdout.strip()

    assert decide().startswith("idle")
    sock = _open_websocket(port)
    try:
        assert decide() == "active 1 web terminal connection(s)"
    finally:
        sock.close()
