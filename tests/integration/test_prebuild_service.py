"""``PrebuildService`` against the Hetzner emulator (spec-checked requests) with a real sshd as
the builder VM: build (builder created through the workspace create path with prebuild-mode user
data and the prebuild labels, phases followed to ``prebuilt``, prebuild.json read, the seal run
over SSH, power-off, ``create_image`` with the labels, image polled to available, builder
deleted), nothing left in the workspace registry, keychain or ssh config; a failed build deletes
the builder; a new workspace starts from the prebuild (``image``), ``--no-prebuild`` does not;
a VM's ``prebuild_stale`` marks it stale; ``list`` joins sizes and cost; ``delete``.

The "VM" is this machine's sshd: the test plays the bootstrap by writing status.json and
prebuild.json into a folder, and the seal is a real script that prints ``sealed``.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.domain import Phase, StatusReport, WorkspaceSpec
from app.errors import ActionFailed
from app.providers._polling import Backoff
from app.services.prebuild_hash import repo_key, version_label
from app.services.prebuilds import BuildProgress, PrebuildService, mark_stale_from_status
from app.services.registry import Registry
from app.services.tunnels import SSHTarget
from app.services.workspaces import WorkspaceService
from app.settings import SecretKeys, SecretStore, Settings
from tests.emulators.hetzner import HetznerEmulator, ManualClock
from tests.support.sshd import SshServer, start_sshd

TOKEN = "PrebuildTestToken0123456789abcdefghijklmnopqrstuvwxyzABCD"
REPO = "https://git.example.org/team/project.git"


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[SshServer]:
    server = start_sshd(tmp_path / "sshd")
    try:
        yield server
    finally:
        server.stop()


class FakeBootstrap:
    """Plays the VM's bootstrap in a folder the sshd user can read: phases, then prebuilt."""

    def __init__(self, root: Path, *, fail: bool = False) -> None:
        root.mkdir(parents=True, exist_ok=True)
        os.chmod(root, 0o755)
        self.root = root
        self.status = root / "status.json"
        self.info = root / "prebuild.json"
        self.sealed = root / "sealed"
        self.seal = root / "prebuild-seal"
        self.seal.write_text(f"#!/bin/sh\necho cleaning\ntouch {self.sealed}\necho sealed\n")
        self.seal.chmod(self.seal.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        self.fail = fail
        self.step_seconds = 1.0

    def write(self, phase: str, detail: str, **extra: Any) -> None:
        tmp = self.root / ".status.tmp"
        tmp.write_text(json.dumps({"phase": phase, "detail": detail, **extra}))
        tmp.replace(self.status)
        self.status.chmod(0o644)

    async def run(self) -> None:
        phases = [("booting", "starting"), ("installing", "tools"), ("cloning", "git clone"),
                  ("building", "devcontainer up")]  # fmt: skip
        for phase, detail in phases:
            self.write(phase, detail)
            await asyncio.sleep(self.step_seconds)
        if self.fail:
            self.write("failed", "devcontainer up failed", error="exit 1", log_tail="boom\n")
            return
        self.info.write_text(json.dumps({
            "config_hash": "0123456789abcdef", "commit": "a" * 40, "branch": "main",
            "agent": "claude", "agent_version": "2.0.1", "bivy_version": "0.1.0",
            "built_at": "2026-12-02T02:00:00Z",
        }))  # fmt: skip
        self.info.chmod(0o644)
        self.write("prebuilt", "ready to be sealed")


def emulator_() -> HetznerEmulator:
    return HetznerEmulator(
        token=TOKEN,
        clock=ManualClock(),
        tick_per_request=1.0,
        create_seconds=0.0,
        start_seconds=2.0,
        delete_seconds=0.0,
    )


def make_services(
    emulator: HetznerEmulator, sshd: SshServer, vm: FakeBootstrap, monkeypatch: pytest.MonkeyPatch
) -> tuple[WorkspaceService, PrebuildService]:
    def target(self: PrebuildService, record: Any) -> SSHTarget:
        # The emulator's address is nobody's: the builder "VM" is the test sshd (its own key).
        assert record.ipv4 and record.host_public_key.startswith("ssh-ed25519 ")
        return SSHTarget(record.name, "127.0.0.1", sshd.host_public_key, sshd.port, sshd.user)

    monkeypatch.setattr(PrebuildService, "_target", target)
    SecretStore().set(SecretKeys.SSH_PRIVATE_KEY, sshd.client_private_key)
    SecretStore().set(SecretKeys.ANTHROPIC_API_KEY, "sk-ant-api03-MustNeverReachABuilder0123")
    workspaces = WorkspaceService(
        Settings(),
        SecretStore(),
        transport_factory=lambda account: emulator.transport(),
        environ={"BIVY_HETZNER_TOKEN": TOKEN},
        poll_backoff=Backoff(initial=0.01, factor=1.0, maximum=0.01),
        cleanup_interval=0.0,
        vm_user=sshd.user,
    )
    prebuilds = PrebuildService(
        workspaces,
        off_timeout=0.5,
        poll_interval=0.05,
        status_path=str(vm.status),
        prebuild_json=str(vm.info),
        seal_command=str(vm.seal),
    )
    return workspaces, prebuilds


def user_data_of(body: dict[str, Any]) -> str:
    sent = str(body["user_data"])
    return sent if sent.startswith("#cloud") else gzip.decompress(base64.b64decode(sent)).decode()


def nothing_left(name: str) -> None:
    assert Registry().get(name) is None
    assert SecretStore().get(SecretKeys.workspace(name, "ttyd-password")) is None
    ssh_config = Path.home() / ".ssh" / "config"
    text = ssh_config.read_text() if ssh_config.exists() else ""
    assert f"bivy-{name}" not in text


async def test_build_list_create_from_it_stale_and_delete(
    tmp_path: Path, sshd: SshServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    emulator = emulator_()
    vm = FakeBootstrap(tmp_path / "vm")
    workspaces, prebuilds = make_services(emulator, sshd, vm, monkeypatch)
    seen: list[BuildProgress] = []
    bootstrap: asyncio.Task[None] | None = None

    def progress(p: BuildProgress) -> None:
        nonlocal bootstrap
        seen.append(p)
        if bootstrap is None and p.step == "create" and "accepted" in p.detail:
            bootstrap = asyncio.ensure_future(vm.run())

    try:
        record = await prebuilds.build(REPO, provider="hetzner", region="fsn1", size="cx23",
                                       progress=progress)  # fmt: skip
    finally:
        if bootstrap is not None:
            await bootstrap
    key = repo_key(REPO, None)

    # The builder: prebuild-mode user data without credentials, the prebuild labels.
    (post,) = emulator.calls("POST", r"/v1/servers$")
    body = post.body
    assert body["labels"]["bivy-prebuild"] == key
    assert body["labels"]["managed-by"] == "bivy"
    assert str(body["name"]).startswith("bivy-pb-")
    user_data = user_data_of(body)
    assert "BIVY_MODE=prebuild" in user_data
    assert "sk-ant-api03" not in user_data
    # Sealed over SSH, powered off by the app (the emulator's server does not power itself
    # off), imaged with the labels, then deleted.
    assert vm.sealed.exists()
    assert emulator.calls("POST", r"/v1/servers/\d+/actions/poweroff")
    (image_call,) = emulator.calls("POST", r"/v1/servers/\d+/actions/create_image")
    labels = image_call.body["labels"]
    assert labels == {
        "managed-by": "bivy", "bivy-prebuild": key, "bivy-config-hash": "0123456789abcdef",
        "bivy-version": version_label(), "bivy-agent": "claude",
    }  # fmt: skip
    assert image_call.body["type"] == "snapshot"
    assert emulator.calls("DELETE", r"/v1/servers/\d+")
    builder = str(body["name"]).removeprefix("bivy-")
    nothing_left(builder)
    steps = [p.step for p in seen]
    for step in ("create", "build", "seal", "power-off", "image", "record", "cleanup", "done"):
        assert step in steps, steps
    assert [p.fraction for p in seen] == sorted(p.fraction for p in seen)
    builds = [p.detail for p in seen if p.step == "build"]
    assert any(d.startswith("building") for d in builds), builds

    # The record, and the listing joined with the provider (size and monthly cost).
    assert record.repo == REPO and record.repo_key == key and record.commit == "a" * 40
    assert record.config_hash == "0123456789abcdef" and record.agent_version == "2.0.1"
    listed = await prebuilds.list()
    assert [r.id for r in listed] == [record.id]
    assert listed[0].size_gb and listed[0].monthly_price is not None
    assert listed[0].monthly_price.monthly > 0

    # A new workspace of that repository starts from it (and records which prebuild).
    spec = WorkspaceSpec(name="demo", repo_url=REPO, region="fsn1", size="cx23")
    await workspaces.create(spec)
    last = emulator.calls("POST", r"/v1/servers$")[-1].body
    assert str(last["image"]) == record.id
    demo = Registry().get("demo")
    assert demo is not None and demo.prebuild == record.id
    # ... unless told not to.
    await workspaces.create(spec.model_copy(update={"name": "plain"}), use_prebuild=False)
    assert emulator.calls("POST", r"/v1/servers$")[-1].body["image"] != record.id
    # Another branch is another prebuild: none.
    await workspaces.create(spec.model_copy(update={"name": "other", "branch": "dev"}))
    assert emulator.calls("POST", r"/v1/servers$")[-1].body["image"] != record.id

    # The VM had to rebuild: the prebuild is stale, and no longer matched.
    report = StatusReport(phase=Phase.READY, prebuild_stale=True)
    assert await mark_stale_from_status(demo, report) is True
    assert (await prebuilds.list())[0].stale
    assert prebuilds.match(spec, demo.account, "fsn1") is None

    # Delete: gone at the provider and locally.
    await prebuilds.delete(record.id)
    assert emulator.calls("DELETE", rf"/v1/images/{record.id}$")
    assert await prebuilds.list() == []
    for name in ("demo", "plain", "other"):
        await workspaces.delete(name)
    await workspaces.aclose()


async def test_a_failed_build_deletes_the_builder_and_leaves_nothing(
    tmp_path: Path, sshd: SshServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    emulator = emulator_()
    vm = FakeBootstrap(tmp_path / "vm", fail=True)
    workspaces, prebuilds = make_services(emulator, sshd, vm, monkeypatch)
    tasks: list[asyncio.Task[None]] = []

    def progress(p: BuildProgress) -> None:
        if not tasks and p.step == "create" and "accepted" in p.detail:
            tasks.append(asyncio.ensure_future(vm.run()))

    started = time.monotonic()
    with pytest.raises(ActionFailed, match="devcontainer up failed") as failure:
        await prebuilds.build(REPO, provider="hetzner", region="fsn1", size="cx23",
                              progress=progress)  # fmt: skip
    await asyncio.gather(*tasks)
    assert "boom" in failure.value.hint
    assert time.monotonic() - started < 60
    (post,) = emulator.calls("POST", r"/v1/servers$")
    assert emulator.calls("DELETE", r"/v1/servers/\d+")
    assert not emulator.calls("POST", r"/v1/servers/\d+/actions/create_image")
    nothing_left(str(post.body["name"]).removeprefix("bivy-"))
    assert await prebuilds.list() == []
    assert Registry().all() == []
    await workspaces.aclose()
