"""``WorkspaceService``: list, create (Cancel-safe), delete workspaces across every account."""

# Plain async, no Qt: the UI's controllers and the CLI drive the same code. The provider's labels
# say which servers are Bivy's; the local registry adds what labels cannot hold; secrets stay in
# the keychain. Creates and deletes are write-ahead (the record first, see app/services/
# reconcile.py), so every listing can settle what a crashed process left.

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta

import httpx

from app.cloudinit import new_ttyd_password
from app.domain import (
    LABEL_IDLE_MINUTES,
    LABEL_MANAGED_BY,
    LABEL_MANAGED_BY_VALUE,
    LABEL_MAX_HOURS,
    LABEL_WORKSPACE,
    CreateServerRequest,
    ImageStatus,
    Region,
    Server,
    Size,
    Workspace,
    WorkspaceSpec,
    utcnow,
)
from app.errors import BivyError, Conflict, InvalidInput, NotFound
from app.providers._polling import Backoff
from app.providers.base import Provider
from app.services.accounts import (
    effective_accounts,
    find_account,
    provider_class,
    resolve_options,
)
from app.services.keys import KeyService, generate_host_key
from app.services.prebuilds import PrebuildRecord, PrebuildRegistry, match_prebuild
from app.services.reconcile import hold_create_lock, reconcile
from app.services.registry import Registry, WorkspaceRecord
from app.services.repo_bundle import INCOMING_DIR, prepare_local_repo
from app.services.tunnels import VM_USER
from app.services.vm_inputs import VmMode, VmSecrets, vm_user_data
from app.services.workspace_steps import TTYD_PASSWORD, WorkspaceSteps
from app.settings import Account, SecretKeys, SecretStore, Settings

__all__ = [
    "TTYD_PASSWORD",
    "CreateProgress",
    "TransportFactory",
    "WorkspaceList",
    "WorkspaceService",
]

log = logging.getLogger(__name__)

TransportFactory = Callable[[Account], httpx.AsyncBaseTransport | None]
Sleep = Callable[[float], Awaitable[None]]

#: Records older than this whose server is gone (self-deleted) are pruned when listing; younger
#: ones may belong to a create still running in another process.
STALE_RECORD_GRACE = timedelta(minutes=10)


@dataclass(frozen=True)
class CreateProgress:
    """One step of a create, for progress bars and the CLI's stderr.

    Attributes:
        step: a stable id ("validate", "keys", "user-data", "create", "record", "wait", "done").
        detail: one human sentence.
        fraction: overall progress, 0..1.
    """

    step: str
    detail: str
    fraction: float


@dataclass
class WorkspaceList:
    """The result of a refresh across accounts.

    Attributes:
        workspaces: every workspace found, sorted by name.
        errors: account id → the error listing that account raised (the others still count).
    """

    workspaces: list[Workspace] = field(default_factory=list)
    errors: dict[str, BivyError] = field(default_factory=dict)


class WorkspaceService(WorkspaceSteps):
    """Workspaces across every configured account.

    Attributes:
        settings: the user's settings (accounts, defaults); read on every call.
        secrets: the keychain.
        registry: the local workspace records.
        keys: the install's SSH keypair.
        running_timeout: seconds a new server may take to reach ``running``.
        repository_timeout: seconds a VM's sshd may take to accept a local repository's bundle.
        vm_user / incoming_dir: who uploads the bundle, and where (tests log in as another user).
    """

    def __init__(
        self,
        settings: Settings,
        secrets: SecretStore,
        *,
        transport_factory: TransportFactory | None = None,
        registry: Registry | None = None,
        keys: KeyService | None = None,
        environ: Mapping[str, str] | None = None,
        running_timeout: float = 600.0,
        poll_backoff: Backoff | None = None,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        cleanup_attempts: int = 3,
        cleanup_interval: float = 1.0,
        repository_timeout: float = 1200.0,
        vm_user: str = VM_USER,
        incoming_dir: str = INCOMING_DIR,
        prebuilds: PrebuildRegistry | None = None,
    ) -> None:
        self.settings = settings
        self.secrets = secrets
        self.registry = registry or Registry()
        self.keys = keys or KeyService(secrets)
        self.running_timeout = running_timeout
        self._transport_factory = transport_factory
        self._environ = environ
        self._poll_backoff = poll_backoff or Backoff(initial=1.0, factor=1.5, maximum=5.0)
        self._sleep = sleep
        self._clock = clock
        self._cleanup_attempts = cleanup_attempts
        self._cleanup_interval = cleanup_interval
        self.repository_timeout = repository_timeout
        self.vm_user = vm_user
        self.incoming_dir = incoming_dir
        self.prebuilds = prebuilds or PrebuildRegistry()
        self._providers: dict[str, tuple[str, Provider]] = {}
        self._providers_lock = asyncio.Lock()

    # -- accounts and providers ----------------------------------------------------------------

    def accounts(self) -> list[Account]:
        """The accounts in use (configured, plus implicit ones from environment tokens)."""
        return effective_accounts(self.settings, self._environ)

    def account(self, account_id: str | None = None, provider: str | None = None) -> Account:
        return find_account(self.settings, account_id, provider=provider, environ=self._environ)

    async def provider(self, account: Account) -> Provider:
        """The provider of ``account`` (kept open; reopened when its options change)."""

        def build() -> tuple[str, Provider | None]:
            options = resolve_options(account, self.secrets, self._environ)
            digest = hashlib.sha256(repr(sorted(options.items())).encode()).hexdigest()
            cached = self._providers.get(account.id)
            if cached is not None and cached[0] == digest:
                return digest, None
            transport = self._transport_factory(account) if self._transport_factory else None
            cls = provider_class(account.provider)
            return digest, cls(options, transport=transport)

        # One at a time: two callers must not both build one and close the other's in use.
        async with self._providers_lock:
            digest, fresh = await asyncio.to_thread(build)
            if fresh is None:
                return self._providers[account.id][1]
            old = self._providers.get(account.id)
            self._providers[account.id] = (digest, fresh)
        if old is not None:
            await old[1].aclose()
        return fresh

    async def aclose(self) -> None:
        """Close every provider's HTTP client."""
        providers, self._providers = self._providers, {}
        for _, provider in providers.values():
            with contextlib.suppress(BivyError):
                await provider.aclose()

    async def sizes(self, account_id: str, region: str | None = None) -> list[Size]:
        provider = await self.provider(self.account(account_id))
        return await provider.sizes(region)

    async def regions(self, account_id: str) -> list[Region]:
        provider = await self.provider(self.account(account_id))
        return await provider.regions()

    # -- list ----------------------------------------------------------------------------------

    async def list_workspaces(self) -> WorkspaceList:
        """Every Bivy server of every account, concurrently; one account failing is reported
        in ``errors`` and does not hide the others."""
        accounts = self.accounts()

        async def one(account: Account) -> list[Server]:
            provider = await self.provider(account)
            return await provider.list()

        results = await asyncio.gather(*(one(a) for a in accounts), return_exceptions=True)
        listing = WorkspaceList()
        listed: dict[str, list[Server]] = {}
        for account, result in zip(accounts, results, strict=True):
            if isinstance(result, BivyError):
                listing.errors[account.id] = result
                continue
            if isinstance(result, BaseException):
                raise result
            listed[account.id] = [s for s in result if s.is_bivy and s.workspace_name]
        records = {r.name: r for r in await self.registry.aall()}
        # Settle what an interrupted create or delete left (write-ahead records).
        records = await reconcile(self.registry, records, listed, self._forget, self._adopted)
        seen: set[str] = set()
        for account in accounts:
            for server in listed.get(account.id, ()):
                name = server.workspace_name or ""
                seen.add(name)
                listing.workspaces.append(self._workspace(account, server, records.get(name)))
        listing.workspaces.sort(key=lambda w: (w.name, w.account))
        await self._prune(records, set(listed), seen)
        return listing

    async def _adopted(self, record: WorkspaceRecord) -> None:
        await self._add_ssh_entry(record.name)

    @staticmethod
    def _workspace(account: Account, server: Server, record: WorkspaceRecord | None) -> Workspace:
        if record is not None and record.account != account.id:
            record = None  # same name in another account: not this one's record
        if record is not None and record.server_id and record.server_id != server.id:
            record = None  # another server of the same name (a concurrent create's loser)
        idle = _int_label(server.labels.get(LABEL_IDLE_MINUTES))
        hours = _int_label(server.labels.get(LABEL_MAX_HOURS))
        workspace = Workspace(
            name=server.workspace_name or server.name,
            account=account.id,
            provider=account.provider,
            server=server,
            repo_url=record.repo_url if record else "",
            unrecorded=record is None,
        )
        if record is not None:
            workspace.idle_minutes = record.idle_minutes
            workspace.max_hours = record.max_hours
        else:
            workspace.idle_minutes = idle or workspace.idle_minutes
            workspace.max_hours = hours or workspace.max_hours
        return workspace

    async def _prune(
        self, records: dict[str, WorkspaceRecord], listed_ok: set[str], seen: set[str]
    ) -> None:
        cutoff = utcnow() - STALE_RECORD_GRACE
        for record in records.values():
            if record.state != "ready":
                continue  # settled by ``reconcile`` (or a create still running)
            gone = record.account in listed_ok and record.name not in seen
            opened = self._providers.get(record.account)
            current = opened is not None and opened[1].capabilities.listing_is_current
            if gone and (current or record.created_at < cutoff):
                log.info("workspace %s is gone at the provider; forgetting it", record.name)
                await self._forget(record.name)

    # -- create --------------------------------------------------------------------------------

    async def create(
        self,
        spec: WorkspaceSpec,
        on_progress: Callable[[CreateProgress], None] | None = None,
        *,
        use_prebuild: bool = True,
        mode: VmMode = "workspace",
        labels: Mapping[str, str] | None = None,
    ) -> Workspace:
        """Create the workspace's VM and wait until it runs.

        It starts from the newest matching prebuild (``app.services.prebuilds``) unless
        ``use_prebuild`` is False. ``mode="prebuild"`` makes a prebuild's builder VM (user data
        in prebuild mode, extra ``labels``; used by ``PrebuildService.build``).

        Cancel-safe: when the task is cancelled (or any step fails) after the create request may
        have reached the provider, the server — found by id, or by its workspace label when the
        request was in flight — is deleted, the record and the ttyd password forgotten, and the
        cancellation (or error) propagates.
        """

        def progress(step: str, detail: str, fraction: float) -> None:
            if on_progress is not None:
                on_progress(CreateProgress(step, detail, fraction))

        progress("validate", f"Checking workspace {spec.name}", 0.0)
        account = self.account(spec.account or None, provider=spec.provider)
        provider = await self.provider(account)
        cls = type(provider)
        defaults = self.settings.defaults
        same_account = defaults.account in ("", account.id)
        region = spec.region or (defaults.region if same_account else "") or cls.default_region
        size = spec.size or (defaults.size if same_account else "") or cls.default_size
        if not size:
            raise InvalidInput(f"choose a server size for {cls.display_name}")
        spec = spec.model_copy(
            update={"account": account.id, "provider": account.provider, "region": region,
                    "size": size}
        )  # fmt: skip
        # One create of a name at a time, across processes: the lock is held until the record
        # is settled (ready, or forgotten by the cleanup); the kernel drops it if we die.
        held = await hold_create_lock(self.registry, spec.name)
        if held is None:
            raise Conflict(
                f"workspace {spec.name!r} is being created by another Bivy process",
                hint="Wait for it, then see it with `bivy ls`",
            )
        try:
            options = _CreateOptions(use_prebuild and mode == "workspace", mode, dict(labels or {}))
            return await self._create_locked(spec, account, provider, progress, options)
        finally:
            held.release()

    async def _create_locked(
        self,
        spec: WorkspaceSpec,
        account: Account,
        provider: Provider,
        progress: Callable[[str, str, float], None],
        options: _CreateOptions,
    ) -> Workspace:
        cls = type(provider)
        region, size = spec.region or "", spec.size or ""
        await self._check_name_free(spec.name, account, provider)
        prebuild = None
        if options.use_prebuild and provider.capabilities.snapshots:
            prebuild = await self._usable_prebuild(spec, account, provider, region)
        # A local checkout: checked now, bundled in a thread while the VM boots, sent over SSH.
        spec, bundle_job = await prepare_local_repo(spec)

        created: Server | None = None
        request_sent = False
        try:
            if bundle_job is not None:
                bundle_job.start()
            progress("keys", "Preparing SSH keys and the terminal password", 0.1)
            install_key = await self.keys.install_key()
            host_key = await asyncio.to_thread(generate_host_key, spec.name)
            ttyd_password = new_ttyd_password()
            # Write-ahead: everything needed to reach the VM is on disk before the provider is
            # asked, so a crash after its create call leaves a record to adopt the server by.
            record = WorkspaceRecord(
                name=spec.name,
                account=account.id,
                provider=account.provider,
                repo_url=spec.repo_url,
                branch=spec.branch,
                region=region,
                size=size,
                idle_minutes=spec.idle_minutes,
                max_hours=spec.max_hours,
                host_public_key=host_key.public_openssh,
                state="creating",
                ssh_key_fingerprint=install_key.fingerprint,
                prebuild=prebuild.id if prebuild is not None else "",
            )
            await self.registry.aput(record)
            await self.secrets.aset(SecretKeys.workspace(spec.name, TTYD_PASSWORD), ttyd_password)

            progress("user-data", "Rendering the VM's cloud-init configuration", 0.2)
            rendered = await vm_user_data(
                VmSecrets(self.settings, self.secrets, self._environ),
                spec,
                provider,
                install_key.public_openssh,
                host_key,
                ttyd_password,
                mode=options.mode,
            )
            labels = {
                **options.labels,
                LABEL_MANAGED_BY: LABEL_MANAGED_BY_VALUE,
                LABEL_WORKSPACE: spec.name,
                LABEL_IDLE_MINUTES: str(spec.idle_minutes),
                LABEL_MAX_HOURS: str(spec.max_hours),
            }
            request = CreateServerRequest(
                name=f"bivy-{spec.name}",
                region=region or None,
                size=size,
                ssh_public_key=install_key.public_openssh,
                ssh_key_name="bivy",
                labels=labels,
                user_data=rendered.user_data,
                image=prebuild.id if prebuild is not None else None,
            )
            if prebuild is not None:
                built = prebuild.created_at.strftime("%Y-%m-%d %H:%M")
                progress("prebuild", f"Starting from the prebuild {prebuild.id} ({built} UTC)",
                         0.22)  # fmt: skip

            def prepared(detail: str, fraction: float | None) -> None:
                progress("prepare", detail, 0.25 + 0.05 * (fraction or 0.0))

            await provider.prepare(request, prepared)
            where = f" in {region}" if region else ""
            progress("create", f"Asking {cls.display_name} for a {size} server{where}", 0.3)
            request_sent = True
            created = await provider.create(request)

            progress("record", f"Server {created.id} accepted", 0.5)
            await self.registry.aupdate(
                spec.name,
                state="ready",
                server_id=created.id,
                region=created.region or region,
                ipv4=created.ipv4,
                ssh_port=created.ssh_port,
            )
            if not provider.capabilities.unique_names:
                await self._check_duplicates(spec.name, account, provider, created)

            toolkit = rendered.toolkit
            end = 1.0 - 0.1 * (toolkit is not None) - 0.2 * (bundle_job is not None)
            server = await self._wait_running(provider, created, progress, end=end)
            if server.ipv4 and (server.ipv4, server.ssh_port) != (created.ipv4, created.ssh_port):
                await self.registry.aupdate(spec.name, ipv4=server.ipv4, ssh_port=server.ssh_port)
            if toolkit is not None:  # the tools the user data could not hold, then the repo
                await self._send_toolkit(
                    spec.name, server, host_key.public_openssh, toolkit, progress, end + 0.1
                )
            if bundle_job is not None:
                await self._send_repository(
                    spec.name, server, host_key.public_openssh, bundle_job, progress
                )
            await self._add_ssh_entry(spec.name)
        except BaseException as exc:
            # Whether a server may exist is unknown unless we hold its id: look for it by label.
            # Not after a 409 though: the name belongs to another server (maybe a concurrent
            # create of the same name), which must not be touched. After any other answered
            # error one look is enough; after a cancel, timeout or network error the request may
            # still land, so look a few times.
            answered = isinstance(exc, BivyError) and exc.status >= 400
            search = request_sent and not (isinstance(exc, Conflict) and answered)
            cleanup = asyncio.ensure_future(
                self._undo_create(
                    spec.name, provider, created, search, attempts=1 if answered else None
                )
            )
            try:
                await asyncio.shield(cleanup)
            except asyncio.CancelledError:
                # Cancelled again while cleaning up: the cleanup task keeps running regardless.
                log.warning("create of %s cancelled during cleanup; cleanup continues", spec.name)
                raise
            except BivyError as cleanup_error:
                log.warning("cleanup after failed create of %s: %s", spec.name, cleanup_error)
                if isinstance(exc, BivyError):
                    exc.hint = (
                        f"{exc.hint + '. ' if exc.hint else ''}The server may still exist: "
                        f"check with `bivy ls` and remove it with `bivy rm {spec.name}`"
                    )
            raise
        finally:
            if bundle_job is not None:
                await bundle_job.aclose()
        progress("done", f"Workspace {spec.name} is running", 1.0)
        return Workspace(
            name=spec.name,
            account=account.id,
            provider=account.provider,
            server=server,
            repo_url=spec.repo_url,
            idle_minutes=spec.idle_minutes,
            max_hours=spec.max_hours,
        )

    async def _usable_prebuild(
        self, spec: WorkspaceSpec, account: Account, provider: Provider, region: str
    ) -> PrebuildRecord | None:
        """The matching prebuild, once the provider confirmed its image is there and available
        (one deleted in the provider's console is forgotten; any doubt: the plain image)."""
        records = await self.prebuilds.aall()
        found = await asyncio.to_thread(match_prebuild, records, spec, account.id, region)
        if found is None:
            return None
        try:
            image = await provider.get_image(found.id)
        except NotFound:
            log.info("prebuild %s is gone at the provider; forgetting it", found.id)
            await self.prebuilds.aremove(account.id, found.id)
            return None
        except BivyError as exc:
            log.warning("prebuild %s could not be checked (%s); not used", found.id, exc.one_line())
            return None
        return found if image.status == ImageStatus.AVAILABLE else None

    # -- delete --------------------------------------------------------------------------------

    async def delete(self, name: str, *, wait: bool = False, timeout: float = 300.0) -> None:  # noqa: ASYNC109
        """Delete the workspace's server(s) and forget it locally.

        ``NotFound`` when neither the registry nor any account knows ``name``. With ``wait``,
        return only once the provider no longer lists the server.
        """
        record = await self.registry.aget(name)
        accounts = self.accounts()
        if record is not None:
            if record.account not in {a.id for a in accounts}:
                # Forgetting it here would leave a billed server nobody can see.
                raise InvalidInput(
                    f"workspace {name!r} belongs to account {record.account!r}, which is not "
                    "configured any more",
                    hint=f"Log in to that account again (`bivy login {record.provider} --account "
                    f"{record.account}`), or delete the server in the provider's console",
                )
            # Its own account first; others too, in case the record is stale.
            accounts.sort(key=lambda a: a.id != record.account)
        # No create of this name starts while we delete by name (nor a listing adopts it).
        held = await hold_create_lock(self.registry, name)
        if held is None and record is not None and record.pending:
            raise Conflict(
                f"workspace {name!r} is being created right now",
                hint="Cancel that create, or wait for it and delete it then",
            )
        try:
            deleted = await self._delete_locked(name, record, accounts)
        finally:
            if held is not None:
                held.release()
        if wait:
            for provider, server_id in deleted:
                await self._wait_gone(provider, server_id, timeout)

    async def _delete_locked(
        self, name: str, record: WorkspaceRecord | None, accounts: list[Account]
    ) -> list[tuple[Provider, str]]:
        if record is not None:
            # Write-ahead: a crash after the delete call leaves a record the next listing
            # forgets once the server is gone.
            await self.registry.aupdate(name, state="deleting")
        deleted: list[tuple[Provider, str]] = []
        errors: list[BivyError] = []
        for account in accounts:
            try:
                provider = await self.provider(account)
                servers = [s for s in await provider.list() if s.workspace_name == name]
                for server in servers:
                    await provider.delete(server.id)
                    deleted.append((provider, server.id))
            except BivyError as exc:
                if record is not None and account.id == record.account:
                    raise
                errors.append(exc)
            if deleted:
                break
        if not deleted and record is None:
            if errors:
                raise errors[0]
            raise NotFound(
                f"there is no workspace named {name!r}",
                hint="See the names with `bivy ls`",
            )
        await self._forget(name)
        return deleted


@dataclass(frozen=True)
class _CreateOptions:
    use_prebuild: bool
    mode: VmMode
    labels: dict[str, str]


def _int_label(value: str | None) -> int | None:
    try:
        return int(value) if value else None
    except ValueError:
        return None
