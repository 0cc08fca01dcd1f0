"""The guardian asks an overdue VM for a final backup before deleting it (issue 13), over a real
sshd on 127.0.0.1 with the VM's backup command replaced by a script: one that works, one that
hangs. The hard lifetime always wins: a hung backup is given up on (and killed on the VM by
``timeout``), and the VM is deleted all the same."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from app.domain import (
    LABEL_MANAGED_BY,
    LABEL_MAX_HOURS,
    LABEL_WORKSPACE,
    Server,
    ServerStatus,
    Workspace,
    utcnow,
)
from app.services.backup import BackupService
from app.services.final_backup import KILL_AFTER, FinalBackup
from app.services.guardian import Guardian, GuardianReport, GuardianTarget
from app.services.registry import Registry, WorkspaceRecord
from app.services.tunnels import TunnelService
from app.settings import BackupSettings, SecretStore, Settings
from tests.support.sshd import SshServer, start_sshd


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[SshServer]:
    server = start_sshd(tmp_path / "sshd")
    try:
        yield server
    finally:
        server.stop()


def overdue(sshd: SshServer) -> list[Workspace]:
    """Workspace "demo" on the test sshd, created 3 h ago with a 1 h lifetime; its record."""
    Registry().put(
        WorkspaceRecord(
            name="demo",
            account="hetzner",
            provider="hetzner",
            server_id="42",
            ipv4=sshd.host,
            ssh_port=sshd.port,
            host_public_key=sshd.host_public_key,
            max_hours=1,
        )
    )
    server = Server(
        provider="hetzner",
        id="42",
        name="bivy-demo",
        status=ServerStatus.RUNNING,
        ipv4=sshd.host,
        created_at=utcnow() - timedelta(hours=3),
        labels={LABEL_MANAGED_BY: "bivy", LABEL_WORKSPACE: "demo", LABEL_MAX_HOURS: "1"},
    )
    return [Workspace(name="demo", account="hetzner", provider="hetzner", server=server)]


def script(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "backup"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


def backups(command: Path, enabled: bool = True) -> BackupService:
    settings = Settings(
        backup=BackupSettings(enabled=enabled, endpoint="https://s3.example.test", bucket="b")
    )
    return BackupService(settings, SecretStore(), vm_command=str(command))


def run_guardian(
    sshd: SshServer,
    service: BackupService,
    *,
    limit: float,
    guardian_limit: float,
    deleted: list[tuple[float, bool]],
    marker: Path,
) -> tuple[GuardianReport, float]:
    async def delete(target: GuardianTarget) -> None:
        deleted.append((time.monotonic(), marker.exists()))

    async def main() -> GuardianReport:
        tunnels = TunnelService(client_key=sshd.client_private_key, connect_timeout=10)
        final = FinalBackup(
            Registry(), SecretStore(), service, limit=limit, tunnels=tunnels, username=sshd.user
        )
        guardian = Guardian(delete, final_backup=final, backup_limit=guardian_limit)
        try:
            return await guardian.run(overdue(sshd), Registry().all())
        finally:
            await tunnels.close_all()

    started = time.monotonic()
    report = asyncio.run(main())
    return report, started


def test_the_final_backup_runs_before_the_delete(sshd: SshServer, tmp_path: Path) -> None:
    marker = tmp_path / "backed-up"
    command = script(tmp_path, f'echo "$@" > {marker}\n')
    deleted: list[tuple[float, bool]] = []
    report, _ = run_guardian(
        sshd, backups(command), limit=30, guardian_limit=60, deleted=deleted, marker=marker
    )
    assert [t.name for t in report.deleted] == ["demo"]
    assert [(t.name, outcome) for t, outcome in report.backups] == [("demo", "done")]
    assert deleted and deleted[0][1], "the delete came before the backup"
    assert marker.read_text().split() == ["run"]


def test_no_backup_is_asked_for_when_backups_are_off(sshd: SshServer, tmp_path: Path) -> None:
    marker = tmp_path / "backed-up"
    command = script(tmp_path, f"touch {marker}\n")
    deleted: list[tuple[float, bool]] = []
    report, _ = run_guardian(
        sshd,
        backups(command, enabled=False),
        limit=30,
        guardian_limit=60,
        deleted=deleted,
        marker=marker,
    )
    assert [(t.name, outcome) for t, outcome in report.backups] == [("demo", "not needed")]
    assert len(deleted) == 1 and not marker.exists()


def test_a_hung_backup_is_killed_on_the_vm_and_the_vm_deleted_anyway(
    sshd: SshServer, tmp_path: Path
) -> None:
    pid_file = tmp_path / "backup.pid"
    command = script(tmp_path, f"echo $$ > {pid_file}\nexec sleep 600\n")
    deleted: list[tuple[float, bool]] = []
    # The VM's bound (2 s) comes first: ``timeout`` ends the backup there.
    report, started = run_guardian(
        sshd, backups(command), limit=2, guardian_limit=60, deleted=deleted, marker=pid_file
    )
    assert [t.name for t in report.deleted] == ["demo"]
    (_target, outcome), *_ = report.backups
    assert outcome.startswith("failed"), outcome
    waited = deleted[0][0] - started
    assert 2 <= waited < 2 + KILL_AFTER, waited
    assert_gone(int(pid_file.read_text()))


def test_the_guardian_stops_waiting_at_its_own_bound(sshd: SshServer, tmp_path: Path) -> None:
    pid_file = tmp_path / "backup.pid"
    # A backup that even ignores TERM: only the KILL after it ends it on the VM.
    command = script(tmp_path, f"trap '' TERM\necho $$ > {pid_file}\nsleep 600 & wait\n")
    deleted: list[tuple[float, bool]] = []
    report, started = run_guardian(
        sshd, backups(command), limit=3, guardian_limit=1.5, deleted=deleted, marker=pid_file
    )
    assert [t.name for t in report.deleted] == ["demo"]
    assert [outcome for _t, outcome in report.backups] == ["did not finish in 1.5 s"]
    waited = deleted[0][0] - started
    assert 1.5 <= waited < 6, waited
    # On the VM the backup outlived the guardian's wait, until timeout's TERM (ignored) and KILL.
    assert_gone(int(pid_file.read_text()), within=3 + KILL_AFTER + 10)


def assert_gone(pid: int, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        with open(f"/proc/{pid}/stat") as stat:
            if stat.read().split(") ", 1)[1].startswith("Z"):
                return  # ended, not reaped yet
        time.sleep(0.1)
    raise AssertionError(f"the backup (pid {pid}) still runs after {within} s")
