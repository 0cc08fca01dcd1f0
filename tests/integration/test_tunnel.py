"""TunnelService and StatusService against a real OpenSSH server and a real ttyd on 127.0.0.1.

The install's SSH key and the terminal password live in a real private gnome-keyring over D-Bus
(the ``keychain`` fixture), as on a user's desktop.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncssh
import pytest

from app.domain import AgentState, Phase
from app.errors import HostKeyMismatch, SSHError
from app.services.tunnels import (
    ReconnectPolicy,
    SSHTarget,
    StateChange,
    TunnelService,
    TunnelState,
)
from app.settings.secrets import SecretKeys, SecretStore
from tests.support.sshd import SshServer, Ttyd, new_keypair, start_sshd, start_ttyd
from tests.support.waits import WAIT_S

TTYD_PASSWORD = "integration-pass-5f2c"


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[SshServer]:
    server = start_sshd(tmp_path / "sshd")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def ttyd(tmp_path: Path) -> Iterator[Ttyd]:
    server = start_ttyd(tmp_path / "ttyd", password=TTYD_PASSWORD)
    try:
        yield server
    finally:
        server.stop()


def target_for(server: SshServer, host_key: str | None = None) -> SSHTarget:
    return SSHTarget(
        workspace="demo",
        host=server.host,
        port=server.port,
        username=server.user,
        host_public_key=host_key or server.host_public_key,
    )


@pytest.fixture
async def service(sshd: SshServer, keychain: SecretStore) -> TunnelService:
    secrets = keychain
    await secrets.aset(SecretKeys.SSH_PRIVATE_KEY, sshd.client_private_key)
    svc = TunnelService(
        secrets,
        keepalive_interval=1.0,
        keepalive_count_max=2,
        connect_timeout=5.0,
        policy=ReconnectPolicy(initial=0.1, maximum=0.5),
    )
    yield svc
    await svc.close_all()


async def until(condition: Callable[[], bool], what: str) -> None:
    """Poll a foreign process's state (no event to wait on) until ``condition`` holds."""
    deadline = asyncio.get_running_loop().time() + WAIT_S
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, f"timed out: {what}"
        await asyncio.sleep(0.05)


async def http_get(port: int, auth: tuple[str, str] | None = None) -> tuple[int, bytes]:
    """One HTTP/1.1 GET over a plain socket (no client library's retries or pools)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    headers = f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n"
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        headers += f"Authorization: Basic {token}\r\n"
    writer.write((headers + "\r\n").encode())
    await writer.drain()
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT_S)
        length = 0
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        body = await asyncio.wait_for(reader.readexactly(length), WAIT_S)
    finally:
        writer.close()
        await writer.wait_closed()
    return int(head.split(b" ", 2)[1]), body


async def test_pinned_key_accepted_and_exec_has_no_pty(
    service: TunnelService, sshd: SshServer
) -> None:
    changes: list[StateChange] = []
    service.add_listener(changes.append)
    tunnel = await service.open(target_for(sshd))
    assert tunnel.state == TunnelState.CONNECTED
    result = await tunnel.run("echo ready; tty; echo $USER")
    lines = result.stdout.splitlines()
    assert lines[0] == "ready"
    assert lines[1] == "not a tty"  # status reads must not look like an interactive session
    assert [c.state for c in changes] == [TunnelState.CONNECTING, TunnelState.CONNECTED]


async def test_wrong_host_key_is_refused_with_clear_error(
    service: TunnelService, sshd: SshServer
) -> None:
    _, other_public = new_keypair()
    changes: list[StateChange] = []
    service.add_listener(changes.append)
    with pytest.raises(HostKeyMismatch) as caught:
        await service.open(target_for(sshd, host_key=other_public))
    message = caught.value.one_line()
    presented = asyncssh.import_public_key(sshd.host_public_key).get_fingerprint("sha256")
    pinned = asyncssh.import_public_key(other_public).get_fingerprint("sha256")
    assert "demo" in message
    assert presented in message and pinned in message
    assert "refuses to connect" in message  # the hint: never a prompt to accept
    assert changes[-1].state == TunnelState.CLOSED
    assert service.get("demo") is None
    # the server saw no login: the client stopped at the host key
    assert "Accepted publickey" not in sshd.log()


async def test_unknown_client_key_is_refused(sshd: SshServer) -> None:
    stranger, _ = new_keypair()
    svc = TunnelService(client_key=stranger, connect_timeout=5.0)
    try:
        with pytest.raises(SSHError, match="refused Bivy's SSH key"):
            await svc.open(target_for(sshd))
    finally:
        await svc.close_all()


async def test_missing_key_in_keychain_is_explained(sshd: SshServer, keychain: SecretStore) -> None:
    svc = TunnelService(keychain)
    with pytest.raises(SSHError, match="no SSH key in the keychain"):
        await svc.open(target_for(sshd))


async def test_forward_serves_ttyd_with_basic_auth(
    service: TunnelService, sshd: SshServer, ttyd: Ttyd
) -> None:
    tunnel = await service.open(target_for(sshd))
    fwd = await tunnel.forward(ttyd.port)
    assert fwd.local_port != ttyd.port
    assert fwd.url == f"http://127.0.0.1:{fwd.local_port}/"
    status, _ = await http_get(fwd.local_port)
    assert status == 401
    status, body = await http_get(fwd.local_port, (ttyd.username, ttyd.password))
    assert status == 200
    assert b"<html" in body.lower() and b"ttyd" in body.lower()
    # asking again for the same destination reuses the same local port
    assert (await tunnel.forward(ttyd.port)).local_port == fwd.local_port


async def test_drop_triggers_reconnect_and_forward_works_again(
    service: TunnelService, sshd: SshServer, ttyd: Ttyd
) -> None:
    changes: list[StateChange] = []
    reconnected = asyncio.Event()
    dropped = asyncio.Event()

    def listen(change: StateChange) -> None:
        changes.append(change)
        if change.state == TunnelState.RECONNECTING:
            dropped.set()
        if change.state == TunnelState.CONNECTED and dropped.is_set():
            reconnected.set()

    service.add_listener(listen)
    tunnel = await service.open(target_for(sshd))
    fwd = await tunnel.forward(ttyd.port)
    assert (await http_get(fwd.local_port, (ttyd.username, ttyd.password)))[0] == 200

    assert sshd.kill_connections() >= 1
    await asyncio.wait_for(dropped.wait(), WAIT_S)
    await asyncio.wait_for(reconnected.wait(), WAIT_S)
    assert tunnel.state == TunnelState.CONNECTED
    states = [c.state for c in changes]
    assert states[:2] == [TunnelState.CONNECTING, TunnelState.CONNECTED]
    assert TunnelState.RECONNECTING in states and states[-1] == TunnelState.CONNECTED
    # same local port, served through the new connection
    status, _ = await http_get(fwd.local_port, (ttyd.username, ttyd.password))
    assert status == 200
    assert (await tunnel.run("echo again")).stdout.strip() == "again"
    assert sshd.log().count("Accepted publickey") == 2


async def test_reconnect_stops_when_host_key_changes(
    service: TunnelService, sshd: SshServer, tmp_path: Path
) -> None:
    """After a drop, a server with a different key (VM replaced, or an attacker) is not retried."""
    changes: list[StateChange] = []
    closed = asyncio.Event()

    def listen(change: StateChange) -> None:
        changes.append(change)
        if change.state == TunnelState.CLOSED:
            closed.set()

    service.add_listener(listen)
    tunnel = await service.open(target_for(sshd))
    fwd = await tunnel.forward(sshd.port)
    # swap the server's host key, then drop the connection
    imposter_private, _ = new_keypair()
    (sshd.directory / "ssh_host_ed25519_key").write_text(imposter_private)
    sshd.kill_connections()
    await asyncio.wait_for(closed.wait(), WAIT_S)
    assert isinstance(changes[-1].error, HostKeyMismatch)
    assert tunnel.state == TunnelState.CLOSED
    with pytest.raises(SSHError, match="closed"):
        await tunnel.run("true")
    with pytest.raises(OSError):  # its forwards stopped listening too
        await asyncio.open_connection("127.0.0.1", fwd.local_port)


async def test_quit_closes_everything(service: TunnelService, sshd: SshServer, ttyd: Ttyd) -> None:
    before = {t for t in asyncio.all_tasks() if not t.done()}
    tunnel = await service.open(target_for(sshd))
    fwd = await tunnel.forward(ttyd.port)
    # an open forwarded connection (like a terminal's websocket) must be closed too
    reader, writer = await asyncio.open_connection("127.0.0.1", fwd.local_port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n")  # incomplete request keeps it open
    await writer.drain()
    await until(lambda: len(sshd.connection_pids()) >= 1, "sshd serves the connection")
    await service.close_all()
    assert tunnel.state == TunnelState.CLOSED
    assert await asyncio.wait_for(reader.read(), WAIT_S) == b""  # peer closed it
    writer.close()
    await writer.wait_closed()
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", fwd.local_port)
    await asyncio.sleep(0)
    leaked = {t for t in asyncio.all_tasks() if not t.done()} - before - {asyncio.current_task()}
    assert not leaked, leaked
    # the server side of the connection went away too
    await until(lambda: not sshd.connection_pids(), "sshd's connection processes end")


async def test_status_and_agent_files_are_read(
    service: TunnelService, sshd: SshServer, tmp_path: Path
) -> None:
    from app.services.status import StatusService

    status_file = tmp_path / "vm" / "status.json"
    agent_file = tmp_path / "vm" / "agent.json"
    lease_file = tmp_path / "vm" / "lease"
    status_file.parent.mkdir()
    status_file.write_text(
        json.dumps(
            {
                "phase": "building",
                "detail": "devcontainer up",
                "progress": 0.6,
                "updated_at": "2026-11-27T03:00:00Z",
                "idle_deadline": "2026-11-27T03:30:00Z",
            }
        )
    )
    agent_file.write_text(json.dumps({"state": "waiting", "event": "PermissionRequest"}))
    tunnel = await service.open(target_for(sshd))
    statuses = StatusService(
        service,
        status_path=str(status_file),
        agent_path=str(agent_file),
        lease_path=str(lease_file),
    )
    snapshot = await statuses.read(tunnel)
    assert snapshot.status is not None and snapshot.status.phase == Phase.BUILDING
    assert snapshot.status.progress == pytest.approx(0.6)
    assert snapshot.agent is not None and snapshot.agent.state == AgentState.WAITING
    until = await statuses.keep_alive(tunnel, 3600)
    assert int(lease_file.read_text().strip()) == int(until.timestamp())


async def test_status_watch_emits_phase_and_waiting(
    service: TunnelService, sshd: SshServer, tmp_path: Path
) -> None:
    from app.services.status import StatusEvent, StatusEventKind, StatusService

    vm = tmp_path / "vm"
    vm.mkdir()
    status_file, agent_file = vm / "status.json", vm / "agent.json"
    status_file.write_text(json.dumps({"phase": "cloning"}))
    tunnel = await service.open(target_for(sshd))
    statuses = StatusService(
        service,
        interval=0.05,
        fast_interval=0.05,
        status_path=str(status_file),
        agent_path=str(agent_file),  # absent at first: agent stays None
    )
    events: list[StatusEvent] = []
    waiting = asyncio.Event()
    first_phase = asyncio.Event()

    def listen(event: StatusEvent) -> None:
        events.append(event)
        if event.kind == StatusEventKind.PHASE_CHANGED:
            first_phase.set()
        if event.kind == StatusEventKind.AGENT_WAITING:
            waiting.set()

    statuses.add_listener(listen)
    statuses.watch(tunnel.target.workspace)
    await asyncio.wait_for(first_phase.wait(), WAIT_S)
    status_file.write_text(json.dumps({"phase": "ready"}))
    agent_file.write_text(json.dumps({"state": "waiting", "message": "Allow edit?"}))
    await asyncio.wait_for(waiting.wait(), WAIT_S)
    await statuses.close()
    phases = [
        (e.previous_phase, e.snapshot.phase)
        for e in events
        if e.kind == StatusEventKind.PHASE_CHANGED and e.snapshot is not None
    ]
    assert phases == [(None, Phase.CLONING), (Phase.CLONING, Phase.READY)]
    latest = statuses.latest("demo")
    assert latest is not None and latest.agent is not None
    assert latest.agent.message == "Allow edit?"
    assert sum(e.kind == StatusEventKind.AGENT_WAITING for e in events) == 1


def run_openssh(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [argv[0], "-o", "BatchMode=yes", *argv[1:]],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )


def test_openssh_client_uses_the_generated_config(sshd: SshServer, tmp_path: Path) -> None:
    """``ssh bivy-<name>`` (what `bivy ssh` and VS Code run) logs in with the pinned key only."""
    from app.services.sshconfig import SshConfigManager, SshHostEntry

    manager = SshConfigManager(tmp_path / "home" / ".ssh")
    manager.add(
        SshHostEntry(
            name="demo",
            host=sshd.host,
            port=sshd.port,
            user=sshd.user,
            host_public_key=sshd.host_public_key,
        ),
        sshd.client_private_key,
    )
    ok = run_openssh(manager.ssh_command("demo", ["echo", "hello-from-vm"]))
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == "hello-from-vm"
    # through the user's own ~/.ssh/config too (the Include line)
    via_user = run_openssh(["ssh", "-F", str(manager.user_config), "bivy-demo", "echo", "again"])
    assert via_user.returncode == 0, via_user.stderr
    assert via_user.stdout.strip() == "again"

    # the VM is replaced behind the same address: OpenSSH refuses, it does not ask
    _, other = new_keypair()
    manager.add(
        SshHostEntry(
            name="demo", host=sshd.host, port=sshd.port, user=sshd.user, host_public_key=other
        ),
        sshd.client_private_key,
    )
    refused = run_openssh(manager.ssh_command("demo", ["echo", "nope"]))
    assert refused.returncode == 255
    assert "Host key verification failed" in refused.stderr
    assert "nope" not in refused.stdout


def test_bivy_ssh_runs_a_command_on_the_vm(
    sshd: SshServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    keychain: SecretStore,
) -> None:
    """`bivy ssh NAME -- cmd` with the registry record and the keychain key, via real OpenSSH.

    The record has no port (VMs listen on 22) and logs in as ``dev``; the test's sshd sits on
    another port with another user, so an ``ssh`` earlier on PATH adds those two options and
    execs the real client, which still reads only Bivy's generated config for everything else.
    """
    from app.cli import main
    from app.services.registry import Registry, WorkspaceRecord

    Registry().put(
        WorkspaceRecord(
            name="demo",
            account="hetzner",
            provider="hetzner",
            ipv4=sshd.host,
            host_public_key=sshd.host_public_key,
        )
    )
    keychain.set(SecretKeys.SSH_PRIVATE_KEY, sshd.client_private_key)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    real_ssh = shutil.which("ssh")
    assert real_ssh is not None
    wrapper = bin_dir / "ssh"
    wrapper.write_text(
        f"#!/bin/sh\nexec {real_ssh} -o BatchMode=yes "
        f'-o Port={sshd.port} -o User={sshd.user} "$@"\n'
    )
    wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")

    assert main(["ssh", "demo", "--", "echo", "via-bivy-ssh"]) == 0
    out = capfd.readouterr().out
    assert "via-bivy-ssh" in out
    assert (Path(os.environ["HOME"]) / ".ssh" / "bivy" / "config").exists()
    assert main(["ssh", "demo", "--", "exit", "3"]) == 3
    assert main(["ssh", "nosuch"]) == 1
    assert "no workspace named 'nosuch'" in capfd.readouterr().err


async def test_silent_server_is_detected_by_keepalives(
    service: TunnelService, sshd: SshServer
) -> None:
    """A peer that stops answering (no FIN, no RST: a dead network) is dropped by keep-alives."""
    reconnected = asyncio.Event()
    seen: list[TunnelState] = []

    def listen(change: StateChange) -> None:
        seen.append(change.state)
        if change.state == TunnelState.CONNECTED and TunnelState.RECONNECTING in seen:
            reconnected.set()

    service.add_listener(listen)
    tunnel = await service.open(target_for(sshd))
    frozen = []
    for pid in sshd.connection_pids():
        try:
            os.kill(pid, signal.SIGSTOP)
        except ProcessLookupError:  # a short-lived helper of sshd's that ended meanwhile
            continue
        frozen.append(pid)
    assert frozen
    try:
        started = asyncio.get_running_loop().time()
        # keepalive_interval=1 s, keepalive_count_max=2 (the fixture): dropped after ~2-3 s
        await asyncio.wait_for(reconnected.wait(), WAIT_S)
        elapsed = asyncio.get_running_loop().time() - started
        # Not before two missed keep-alives; and long before TCP itself would give up (its
        # retransmissions take minutes): the upper bound leaves room for a loaded machine.
        assert 1.5 < elapsed < 30
        assert (await tunnel.run("echo alive")).stdout.strip() == "alive"
    finally:
        for pid in frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


async def test_open_terminal_gives_url_and_credential(
    service: TunnelService, sshd: SshServer, ttyd: Ttyd, keychain: SecretStore
) -> None:
    from app.services.tunnels import open_terminal

    secrets = keychain
    target = target_for(sshd)
    with pytest.raises(SSHError, match="terminal password"):
        await open_terminal(service, target, secrets, ttyd_port=ttyd.port)
    await secrets.aset(SecretKeys.workspace("demo", "ttyd-password"), ttyd.password)
    endpoint = await open_terminal(service, target, secrets, ttyd_port=ttyd.port)
    assert endpoint.username == "bivy"
    assert ttyd.password not in repr(endpoint) and ttyd.password not in endpoint.url
    port = int(endpoint.url.rsplit(":", 1)[1].strip("/"))
    assert (await http_get(port, (endpoint.username, endpoint.password)))[0] == 200
    again = await open_terminal(service, target, secrets, ttyd_port=ttyd.port)
    assert again.url == endpoint.url  # one tunnel, one forward per workspace
