"""The guardian's last request to an overdue VM: back up now, over SSH, bounded in time.

Used as ``Guardian(final_backup=FinalBackup(...))``. Only a VM this installation created (a
registry record with its pinned host key, for the same server) is asked, and only when backups
are configured. The bound holds twice: the guardian stops waiting after its ``backup_limit``, and
the command on the VM runs under ``timeout`` so a hung backup is killed there too, even when
the SSH connection is gone (the VM's own idle monitor must not find it still holding the lock).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

from app.services.backup import BackupService
from app.services.guardian import FINAL_BACKUP_LIMIT, GuardianTarget
from app.services.registry import Registry
from app.services.tunnels import VM_USER, CommandResult, SSHTarget, Tunnel, TunnelService
from app.settings import SecretStore

__all__ = ["FinalBackup"]

log = logging.getLogger(__name__)

#: Seconds ``timeout`` on the VM waits after its TERM before a KILL.
KILL_AFTER = 10


@dataclass
class _Bounded:
    """A tunnel whose commands all get the same time limit (``BackupService.backup_now`` asks
    for its own, much longer one)."""

    tunnel: Tunnel
    limit: float

    async def run(
        self, command: str, *, input: str | None = None, limit: float = 30.0
    ) -> CommandResult:
        return await self.tunnel.run(command, input=input, limit=self.limit)


class FinalBackup:
    """Runs ``<backup command> run`` on an overdue VM before the guardian deletes it.

    Attributes:
        limit: seconds the backup may take (on the VM, and this side's wait).
        username: the login on the VM (``dev``; tests log in as another user).
    """

    def __init__(
        self,
        registry: Registry,
        secrets: SecretStore,
        backups: BackupService,
        *,
        limit: float = FINAL_BACKUP_LIMIT,
        tunnels: TunnelService | None = None,
        username: str = VM_USER,
    ) -> None:
        self.registry = registry
        self.secrets = secrets
        self.backups = backups
        self.limit = limit
        self.username = username
        self._tunnels = tunnels

    async def __call__(self, target: GuardianTarget) -> bool:
        """Back ``target`` up now (nothing when backups are off or the VM is not this
        installation's: False); raises ``BivyError`` when the backup failed."""
        if not self.backups.configured:
            return False
        record = await self.registry.aget(target.name)
        if (
            record is None
            or record.account != target.account
            or record.server_id != target.server_id
        ):
            return False  # not reachable with a pinned key: nothing can be asked of it
        ssh_target = replace(SSHTarget.from_record(record), username=self.username)
        tunnels = self._tunnels or TunnelService(
            self.secrets, connect_timeout=min(20.0, self.limit / 3)
        )
        seconds = max(1, int(self.limit))
        bounded = BackupService(
            self.backups.settings,
            self.backups.secrets,
            vm_command=f"timeout -k {KILL_AFTER} {seconds} {self.backups.vm_command}",
        )
        log.info("asking %s for a final backup (at most %d s)", target.name, seconds)
        try:
            tunnel = await tunnels.open(ssh_target)
            await bounded.backup_now(_Bounded(tunnel, self.limit + KILL_AFTER + 5))
        finally:
            await tunnels.close(target.name)
        log.info("final backup of %s done", target.name)
        return True
