"""The steps of a create and a delete that ``WorkspaceService`` shares out of its own module:
name checks, waiting for a server, sending a local repository, undoing a failed create, and
forgetting a workspace locally (keychain item, ssh entry, then the record)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable

from app.domain import Server, ServerStatus
from app.errors import ActionFailed, BivyError, Conflict, NotFound
from app.providers._polling import Backoff, poll_until
from app.providers.base import Provider
from app.services import sshconfig, toolkit_send
from app.services.keys import KeyService
from app.services.reconcile import pick_server
from app.services.registry import Registry
from app.services.repo_bundle import BundleJob, send_repository
from app.services.tunnels import SSHTarget
from app.settings import Account, SecretKeys, SecretStore

__all__ = ["TTYD_PASSWORD", "WorkspaceSteps"]

log = logging.getLogger(__name__)

TTYD_PASSWORD = "ttyd-password"

_STATUS_FRACTION = {
    ServerStatus.INITIALIZING: 0.6,
    ServerStatus.STARTING: 0.8,
    ServerStatus.RUNNING: 1.0,
}


class WorkspaceSteps:
    """The helpers ``WorkspaceService`` is built on (it sets every attribute below)."""

    secrets: SecretStore
    registry: Registry
    keys: KeyService
    running_timeout: float
    repository_timeout: float
    vm_user: str
    incoming_dir: str
    _poll_backoff: Backoff
    _sleep: Callable[[float], Awaitable[None]]
    _clock: Callable[[], float]
    _cleanup_attempts: int
    _cleanup_interval: float

    async def _forget(self, name: str) -> None:
        # The record goes last: a crash in between leaves it, and the next listing forgets again.
        with contextlib.suppress(BivyError):
            await self.secrets.adelete(SecretKeys.workspace(name, TTYD_PASSWORD))
        try:
            await sshconfig.remove_workspace(name)
        except (OSError, BivyError) as exc:
            log.warning("could not remove ssh entry bivy-%s: %s", name, exc)
        await self.registry.aremove(name)

    async def _add_ssh_entry(self, name: str) -> None:
        """Make ``ssh bivy-<name>`` work; a failure here never fails the workspace."""
        record = await self.registry.aget(name)
        if record is None:
            return
        try:
            await sshconfig.add_workspace(record, self.secrets)
        except (OSError, BivyError) as exc:
            log.warning("could not add ssh entry bivy-%s: %s", name, exc)

    async def _check_duplicates(
        self, name: str, account: Account, provider: Provider, created: Server
    ) -> None:
        """On a provider that allows two servers of one name, a create elsewhere (another
        installation of Bivy on the same account) may have raced ours: the newer one loses.
        Raises ``Conflict`` when ours is the newer (the caller's cleanup deletes it)."""
        same = [s for s in await provider.list() if s.workspace_name == name]
        if not any(s.id == created.id for s in same):
            same.append(created)
        winner = pick_server(same, None)
        if winner is not None and winner.id != created.id:
            raise Conflict(
                f"a workspace named {name!r} was created at the same time in account "
                f"{account.id!r}; this one (server {created.id}) is removed",
                hint="Choose another name, or use the other one",
                provider=account.provider,
            )

    async def _check_name_free(self, name: str, account: Account, provider: Provider) -> None:
        for server in await provider.list():
            if server.workspace_name == name:
                raise Conflict(
                    f"a workspace named {name!r} already exists in account {account.id!r}",
                    hint=f"Choose another name, or remove it first with `bivy rm {name}`",
                    provider=account.provider,
                )
        record = await self.registry.aget(name)
        if record is not None and record.account != account.id:
            raise Conflict(
                f"a workspace named {name!r} already exists in account {record.account!r}",
                hint=f"Choose another name, or remove it first with `bivy rm {name}`",
            )

    async def _wait_running(
        self,
        provider: Provider,
        created: Server,
        progress: Callable[[str, str, float], None],
        end: float = 1.0,
    ) -> Server:
        async def fetch() -> Server:
            try:
                return await provider.get(created.id)
            except NotFound:
                raise ActionFailed(
                    f"server {created.id} disappeared while starting",
                    hint="It may have been deleted in the provider's console; try again",
                    provider=created.provider,
                ) from None

        def report(server: Server) -> None:
            fraction = 0.5 + (end - 0.5) * _STATUS_FRACTION.get(server.status, 0.5) * 0.98
            progress("wait", f"Server {server.id} is {server.status.value}", fraction)

        def done(server: Server) -> bool:
            if server.status in (ServerStatus.DELETING, ServerStatus.OFF):
                raise ActionFailed(
                    f"server {server.id} went {server.status.value} while starting",
                    provider=server.provider,
                )
            return server.status == ServerStatus.RUNNING

        if done(created):
            return created
        return await poll_until(
            fetch,
            done,
            timeout=self.running_timeout,
            backoff=self._poll_backoff,
            sleep=self._sleep,
            clock=self._clock,
            what=f"server {created.id} to start",
            on_value=report,
        )

    async def _send_repository(
        self,
        name: str,
        server: Server,
        host_public_key: str,
        job: BundleJob,
        progress: Callable[[str, str, float], None],
    ) -> None:
        """Ship the local checkout's bundle once the VM's sshd answers (its key is pinned)."""
        await send_repository(
            job,
            self._ssh_target(name, server, host_public_key),
            (await self.keys.install_key()).private_openssh,
            timeout=self.repository_timeout,
            incoming_dir=self.incoming_dir,
            on_progress=lambda detail, done: progress("repository", detail, 0.8 + 0.19 * done),
            sleep=self._sleep,
            clock=self._clock,
        )

    async def _send_toolkit(
        self,
        name: str,
        server: Server,
        host_public_key: str,
        toolkit: bytes,
        progress: Callable[[str, str, float], None],
        end: float,
    ) -> None:
        """Send Bivy's tools (the user data's ``split`` layout) once the VM's sshd answers."""
        start = end - 0.1
        await toolkit_send.send_toolkit(
            toolkit,
            self._ssh_target(name, server, host_public_key),
            (await self.keys.install_key()).private_openssh,
            timeout=self.repository_timeout,
            incoming_dir=self.incoming_dir,
            on_progress=lambda detail, done: progress("toolkit", detail, start + 0.1 * done),
            sleep=self._sleep,
            clock=self._clock,
        )

    def _ssh_target(self, name: str, server: Server, host_public_key: str) -> SSHTarget:
        if not server.ipv4:
            raise ActionFailed(f"server {server.id} has no IPv4 address to send the repository to")
        return SSHTarget(
            workspace=name,
            host=server.ipv4,
            host_public_key=host_public_key,
            port=server.ssh_port,
            username=self.vm_user,
        )

    async def _undo_create(
        self,
        name: str,
        provider: Provider,
        created: Server | None,
        search: bool,
        attempts: int | None = None,
    ) -> None:
        """Delete what a failed or cancelled create left behind (raises ``BivyError``)."""
        failure: BivyError | None = None
        attempts = attempts or self._cleanup_attempts
        if created is not None:
            try:
                await provider.delete(created.id)
            except BivyError as exc:
                failure = exc
        elif search:
            # The POST may have been applied without us seeing the answer: look by label, a
            # few times, since an in-flight request can land after the first look.
            for attempt in range(attempts):
                try:
                    found = [s for s in await provider.list() if s.workspace_name == name]
                    for server in found:
                        log.info("deleting server %s left by an interrupted create", server.id)
                        await provider.delete(server.id)
                    failure = None
                    if found:
                        break
                except BivyError as exc:
                    failure = exc
                if attempt + 1 < attempts:
                    await self._sleep(self._cleanup_interval)
        await self._forget(name)
        if failure is not None:
            raise failure

    async def _wait_gone(self, provider: Provider, server_id: str, timeout: float) -> None:  # noqa: ASYNC109
        async def fetch() -> bool:
            try:
                await provider.get(server_id)
            except NotFound:
                return True
            return False

        await poll_until(
            fetch,
            bool,
            timeout=timeout,
            backoff=self._poll_backoff,
            sleep=self._sleep,
            clock=self._clock,
            what=f"server {server_id} to be deleted",
        )
