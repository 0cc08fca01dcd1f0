"""Write-ahead records meet the provider's servers: adopt, forget, or show as unrecorded.

``WorkspaceService.create`` writes the workspace's record (pinned host key, spec, the key the VM
trusts) with ``state="creating"`` BEFORE the provider is asked, and holds the name's create lock
(``<registry folder>/locks/create-<name>.lock``, an OS lock the kernel drops when the process
dies, even on SIGKILL) until the record is settled. Every listing (``bivy ls``, each window
refresh) then settles what a dead process left:

- a ``creating`` record whose lock nobody holds: its server exists → the record is adopted
  (``ready``, with the server's id and address; reachable with its pinned key); no server → the
  record and its keychain item are forgotten;
- a ``deleting`` record whose server is gone → forgotten;
- a server with Bivy's labels and no record (or another server's record) → listed as
  ``unrecorded``: it cannot be opened (no pinned key); its one safe action is delete.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path

from app.domain import Server
from app.services.registry import Registry, WorkspaceRecord
from app.settings import HeldLock, try_hold

__all__ = ["create_lock_path", "hold_create_lock", "pick_server", "reconcile"]

log = logging.getLogger(__name__)

Forget = Callable[[str], Awaitable[None]]


def create_lock_path(registry: Registry, name: str) -> Path:
    """The lock a create of ``name`` holds from its name check until its record is settled."""
    return registry.path.parent / "locks" / f"create-{name}.lock"


async def hold_create_lock(registry: Registry, name: str) -> HeldLock | None:
    """Take ``name``'s create lock now; None when another create (any process) holds it."""
    return await asyncio.to_thread(try_hold, create_lock_path(registry, name))


def pick_server(servers: Sequence[Server], record: WorkspaceRecord | None) -> Server | None:
    """The server a record stands for: its id when known, else the oldest of that name (a
    newer one of the same name is a concurrent create's loser)."""
    if record is not None and record.server_id:
        return next((s for s in servers if s.id == record.server_id), None)
    if not servers:
        return None
    return min(servers, key=lambda s: (s.created_at is None, s.created_at, _id_key(s.id)))


def _id_key(server_id: str) -> tuple[int, str]:
    return (int(server_id), "") if server_id.isdigit() else (0, server_id)


async def reconcile(
    registry: Registry,
    records: Mapping[str, WorkspaceRecord],
    listed: Mapping[str, Sequence[Server]],
    forget: Forget,
    on_adopted: Callable[[WorkspaceRecord], Awaitable[None]],
) -> dict[str, WorkspaceRecord]:
    """Settle the ``creating`` and ``deleting`` records of the accounts in ``listed`` (account
    id → its Bivy servers, for the accounts that listed fine); returns the records after."""
    result = dict(records)
    for name, record in records.items():
        servers = listed.get(record.account)
        if servers is None or record.state == "ready":
            continue
        mine = [s for s in servers if s.is_bivy and s.workspace_name == name]
        if record.state == "deleting":
            if not mine:
                log.info("workspace %s was being deleted and is gone: forgetting it", name)
                await forget(name)
                result.pop(name, None)
            continue
        held = await hold_create_lock(registry, name)
        if held is None:
            continue  # a create of this name is running (this process or another)
        try:
            current = await registry.aget(name)  # settled meanwhile by the create itself?
            if current is None or not current.pending:
                if current is None:
                    result.pop(name, None)
                else:
                    result[name] = current
                continue
            server = pick_server(mine, current)
            if server is None:
                log.info("an interrupted create of %s left no server: forgetting it", name)
                await forget(name)
                result.pop(name, None)
                continue
            log.info("an interrupted create of %s left server %s: adopting it", name, server.id)
            adopted = await registry.aupdate(
                name,
                state="ready",
                server_id=server.id,
                region=server.region or current.region,
                ipv4=server.ipv4 or current.ipv4,
                ssh_port=server.ssh_port,
            )
            if adopted is not None:
                result[name] = adopted
                await on_adopted(adopted)
        finally:
            held.release()
    return result
