"""``WorkspaceService.create`` with a local checkout: bundled while the VM boots, sent over real
SSH/SFTP once sshd answers (retried while it does not), never with a git token; Cancel-safe.

The provider is the Hetzner emulator; the "VM" is a real sshd behind a TCP relay that, like a
VM still booting (or QEMU's port forward before the guest's sshd runs), first accepts and drops
connections. The workspace's SSH target is pointed at that relay (the emulator hands out
addresses nobody listens on).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import tarfile
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from app.domain import Server, WorkspaceSpec
from app.errors import InvalidInput, SSHError
from app.providers._polling import Backoff
from app.services.registry import Registry
from app.services.tunnels import SSHTarget
from app.services.workspaces import CreateProgress, WorkspaceService
from app.settings import SecretKeys, SecretStore, Settings
from tests.emulators.hetzner import HetznerEmulator, ManualClock
from tests.support.local_repo import clone_like_the_vm, git, make_repo
from tests.support.sshd import SshServer, free_port, start_sshd

TOKEN = "WorkspaceTestToken0123456789abcdefghijklmnopqrstuvwxyz"
GIT_TOKEN = "ghp_LocalRepoMustNeverSeeThis0123456789"


class BootingRelay:
    """127.0.0.1:port → sshd, dropping the first ``drops`` connections (None: all of them)."""

    def __init__(self, target_port: int, drops: int | None) -> None:
        self.target_port = target_port
        self.drops = drops
        self.dropped = 0
        self.relayed = 0
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.drops is None or self.dropped < self.drops:
            self.dropped += 1
            writer.close()
            return
        self.relayed += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers |= {writer, up_writer}

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in self._writers:
                writer.close()
            await self._server.wait_closed()


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[SshServer]:
    server = start_sshd(tmp_path / "sshd", extra_config="Subsystem sftp internal-sftp\n")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "project")


@pytest.fixture
def bundle_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where the bundle's temporary folder goes (to check it is removed)."""
    directory = tmp_path / "tmp"
    directory.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(directory))
    return directory


@pytest.fixture
async def relay(sshd: SshServer) -> AsyncIterator[BootingRelay]:
    relay = BootingRelay(sshd.port, drops=2)
    await relay.start()
    try:
        yield relay
    finally:
        await relay.stop()


def make_service(
    emulator: HetznerEmulator,
    sshd: SshServer,
    relay: BootingRelay,
    incoming: Path,
    monkeypatch: pytest.MonkeyPatch,
    **kw: Any,
) -> WorkspaceService:
    def target(self: WorkspaceService, name: str, server: Server, host_key: str) -> SSHTarget:
        # The emulator's address is nobody's: reach the test sshd (its own pinned key) instead.
        assert server.ipv4 and host_key.startswith("ssh-ed25519 ")
        return SSHTarget(name, "127.0.0.1", sshd.host_public_key, relay.port, sshd.user)

    monkeypatch.setattr(WorkspaceService, "_ssh_target", target)
    SecretStore().set(SecretKeys.SSH_PRIVATE_KEY, sshd.client_private_key)
    SecretStore().set(SecretKeys.GIT_TOKEN, GIT_TOKEN)
    values: dict[str, Any] = {
        "transport_factory": lambda account: emulator.transport(),
        "environ": {"BIVY_HETZNER_TOKEN": TOKEN},
        "poll_backoff": Backoff(initial=0.05, factor=1.0, maximum=0.05),
        "cleanup_interval": 0.0,
        "incoming_dir": str(incoming),
        "vm_user": sshd.user,
    }
    values.update(kw)
    return WorkspaceService(Settings(), SecretStore(), **values)


def emulator_() -> HetznerEmulator:
    return HetznerEmulator(
        token=TOKEN,
        clock=ManualClock(),
        tick_per_request=1.0,
        create_seconds=0.0,
        start_seconds=2.0,
        delete_seconds=0.0,
    )


def user_data_of(emulator: HetznerEmulator) -> str:
    import base64
    import gzip

    sent = str(emulator.calls("POST", r"/v1/servers")[0].body["user_data"])
    return sent if sent.startswith("#cloud") else gzip.decompress(base64.b64decode(sent)).decode()


async def test_create_sends_the_checkout_once_sshd_answers(
    repo: Path,
    tmp_path: Path,
    sshd: SshServer,
    relay: BootingRelay,
    bundle_tmp: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    emulator = emulator_()
    incoming = tmp_path / "dev-home" / "bivy-incoming"
    service = make_service(emulator, sshd, relay, incoming, monkeypatch)
    seen: list[CreateProgress] = []
    spec = WorkspaceSpec(name="demo", repo_url=str(repo), include_uncommitted=True)
    try:
        workspace = await service.create(spec, seen.append)
    finally:
        await service.aclose()

    assert relay.dropped == 2 and relay.relayed >= 1  # retried while "sshd" was not up
    # Hetzner's user data cannot hold Bivy's tools: they went first, through the same sshd.
    steps = [p.step for p in seen]
    assert steps.index("toolkit") < steps.index("repository")
    tool_details = [p.detail for p in seen if p.step == "toolkit"]
    assert tool_details[0] == "Waiting for the VM's SSH server to send Bivy's tools"
    assert any(d.startswith("Sending Bivy's tools (") for d in tool_details)
    toolkit = (incoming / "toolkit.tar.xz").read_bytes()
    digest = hashlib.sha256(toolkit).hexdigest()
    assert (incoming / "toolkit.tar.xz.sha256").read_text() == digest + "\n"
    assert f"BIVY_TOOLKIT_SHA256={digest}" in user_data_of(emulator)  # the VM takes only this
    with tarfile.open(fileobj=io.BytesIO(toolkit), mode="r:xz") as tar:
        assert "devcontainer-up" in tar.getnames()
    details = [p.detail for p in seen if p.step == "repository"]
    assert details[0] == "Waiting for the VM's SSH server"
    assert any(d.startswith("Sending the repository (") and d.endswith(" MB)") for d in details)
    fractions = [p.fraction for p in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert workspace.repo_url == str(repo)

    # what arrived is complete and clones back to the user's work, uncommitted changes included
    assert sorted(p.name for p in incoming.iterdir()) == [
        "repo.bundle", "repo.bundle.sha256", "toolkit.tar.xz", "toolkit.tar.xz.sha256"
    ]  # fmt: skip
    clone = tmp_path / "vm" / "project"
    clone.parent.mkdir()
    clone_like_the_vm(incoming / "repo.bundle", clone, branch="feature")
    assert (clone / "notes.txt").read_text() == "untracked but not ignored\n"
    assert git(clone, "rev-parse", "HEAD") == git(repo, "rev-parse", "HEAD")

    # the VM checks out the branch the user is on, and gets no git credential
    user_data = user_data_of(emulator)
    assert GIT_TOKEN not in user_data
    assert str(repo) in user_data
    record = Registry().get("demo")
    assert record is not None and record.branch == "feature"
    assert list(bundle_tmp.iterdir()) == []  # the temporary bundle folder is gone


async def test_cancel_while_waiting_for_sshd_deletes_the_server_and_the_bundle(
    repo: Path,
    tmp_path: Path,
    sshd: SshServer,
    relay: BootingRelay,
    bundle_tmp: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    relay.drops = None  # never answers
    emulator = emulator_()
    service = make_service(emulator, sshd, relay, tmp_path / "in", monkeypatch)
    waiting = asyncio.Event()

    def progress(p: CreateProgress) -> None:
        if p.step in ("toolkit", "repository"):  # both wait for sshd
            waiting.set()

    spec = WorkspaceSpec(name="demo", repo_url=str(repo))
    task = asyncio.create_task(service.create(spec, progress))
    await asyncio.wait_for(waiting.wait(), 30)
    await asyncio.sleep(0.5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await service.aclose()
    emulator.clock.advance(5)  # type: ignore[attr-defined]
    assert emulator.calls("DELETE", r"/v1/servers/\d+")
    assert Registry().get("demo") is None
    assert list(bundle_tmp.iterdir()) == []
    assert not (tmp_path / "in").exists()


async def test_sshd_that_never_answers_fails_the_create_in_time(
    repo: Path,
    tmp_path: Path,
    sshd: SshServer,
    relay: BootingRelay,
    bundle_tmp: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    relay.drops = None
    emulator = emulator_()
    service = make_service(
        emulator, sshd, relay, tmp_path / "in", monkeypatch, repository_timeout=4.0
    )
    started = time.monotonic()
    with pytest.raises(SSHError, match=r"could not be sent .* within 4 s"):
        await service.create(WorkspaceSpec(name="demo", repo_url=str(repo)))
    await service.aclose()
    assert time.monotonic() - started < 30
    assert emulator.calls("DELETE", r"/v1/servers/\d+")
    assert list(bundle_tmp.iterdir()) == []


async def test_a_folder_that_is_not_a_checkout_is_refused_before_any_server(
    tmp_path: Path,
    sshd: SshServer,
    relay: BootingRelay,
    monkeypatch: pytest.MonkeyPatch,
    repo: Path,
) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    emulator = emulator_()
    service = make_service(emulator, sshd, relay, tmp_path / "in", monkeypatch)
    with pytest.raises(InvalidInput, match="not a git checkout"):
        await service.create(WorkspaceSpec(name="demo", repo_url=str(plain)))
    with pytest.raises(InvalidInput, match="no local branch 'nope'"):
        await service.create(WorkspaceSpec(name="demo", repo_url=str(repo), branch="nope"))
    with pytest.raises(InvalidInput, match="uncommitted changes are on feature"):
        await service.create(
            WorkspaceSpec(name="demo", repo_url=str(repo), branch="main", include_uncommitted=True)
        )
    await service.aclose()
    assert not emulator.calls("POST", r"/v1/servers")
