"""Bivy's tools for a VM whose user data could not hold them (app/cloudinit/render.py ``split``
layout, e.g. Hetzner's 32 KiB), sent over SSH once the VM's sshd answers — as a local
checkout's bundle is (app/services/repo_bundle.py).

The toolkit (a tar.xz, no secrets) is uploaded with SFTP as ``dev`` to
``~/bivy-incoming/toolkit.tar.xz``; ``toolkit.tar.xz.sha256`` is written last and atomically:
its presence tells the bootstrap the archive is complete. The VM installs only the archive whose
sha256 its root-only workspace.env names, so nothing else sent there is ever run.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable

import asyncssh

from app.cloudinit import TOOLKIT_NAME
from app.errors import SSHError
from app.services.repo_bundle import INCOMING_DIR, send_when_sshd_answers
from app.services.tunnels import SSHTarget, Tunnel

__all__ = ["send_toolkit", "upload_toolkit"]

log = logging.getLogger(__name__)

SendProgress = Callable[[str, float], None]


async def upload_toolkit(
    conn: asyncssh.SSHClientConnection, toolkit: bytes, *, incoming_dir: str = INCOMING_DIR
) -> None:
    """Write ``toolkit`` with SFTP, then its ``.sha256`` last, atomically (a stale one from an
    earlier attempt goes first, so the VM never pairs it with a half-written archive)."""
    remote = f"{incoming_dir}/{TOOLKIT_NAME}"
    digest_path = f"{remote}.sha256"
    partial = f"{digest_path}.tmp"
    try:
        async with conn.start_sftp_client() as sftp:
            await sftp.makedirs(incoming_dir, exist_ok=True)
            await sftp.chmod(incoming_dir, 0o700)
            for stale in (digest_path, partial):
                if await sftp.exists(stale):
                    await sftp.remove(stale)
            async with sftp.open(remote, "wb") as handle:
                await handle.write(toolkit)
            async with sftp.open(partial, "w") as handle:
                await handle.write(hashlib.sha256(toolkit).hexdigest() + "\n")
            try:
                await sftp.posix_rename(partial, digest_path)
            except asyncssh.SFTPOpUnsupported:
                await sftp.rename(partial, digest_path)
    except (asyncssh.Error, OSError) as exc:
        reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None)
        raise SSHError(f"sending Bivy's tools failed: {reason or type(exc).__name__}") from None
    log.info("Bivy's tools sent (%d bytes)", len(toolkit))


async def send_toolkit(
    toolkit: bytes,
    target: SSHTarget,
    client_key: str,
    *,
    timeout: float = 1200.0,  # noqa: ASYNC109 - a deadline for the whole retry loop
    incoming_dir: str = INCOMING_DIR,
    on_progress: SendProgress | None = None,
    retry_interval: float = 3.0,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Wait for the VM's sshd (pinned host key), then upload ``toolkit``; retried until
    ``timeout`` while sshd does not answer or the connection drops. Cancellable at any await.

    ``on_progress(detail, fraction_of_this_step)`` reports what happens.
    """

    def report(detail: str, fraction: float) -> None:
        if on_progress is not None:
            on_progress(detail, fraction)

    async def send(tunnel: Tunnel) -> None:
        report(f"Sending Bivy's tools ({len(toolkit) / 1000:.0f} kB)", 0.5)
        await upload_toolkit(await tunnel.connection(), toolkit, incoming_dir=incoming_dir)
        report("Bivy's tools sent", 1.0)

    await send_when_sshd_answers(
        target,
        client_key,
        send,
        what="Bivy's tools",
        waiting="Waiting for the VM's SSH server to send Bivy's tools",
        timeout=timeout,
        on_progress=on_progress,
        retry_interval=retry_interval,
        sleep=sleep,
        clock=clock,
    )
