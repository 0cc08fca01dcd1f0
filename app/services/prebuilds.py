"""``PrebuildService``: build, list, delete and match prebuilt workspace images (issue 14).

A build boots a *builder* VM through the same create path as a workspace (pinned host key, a
local checkout sent as a bundle) with user data in prebuild mode: the VM installs the tools,
clones, builds the devcontainer and installs the agent, with no secret on board, and reports
phase ``prebuilt``. The app reads ``/var/lib/bivy/prebuild.json``, runs the seal script (it
cleans the VM and powers it off), waits for the provider to see the server off, snapshots it
with the labels of notes/CONTRACTS2.md and waits for the image. The builder is deleted in every
case, leaving nothing in the workspace registry or the keychain.

A new workspace starts from the newest matching prebuild (``match``): same account, region,
repository key (repository + branch) and agent; a local checkout also the same devcontainer
config hash. A VM that had to rebuild its devcontainer anyway reports ``prebuild_stale`` and the
record is marked stale (``mark_stale_from_status``).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import json
import logging
import secrets
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from app.domain import (
    LABEL_MANAGED_BY,
    LABEL_MANAGED_BY_VALUE,
    ImageStatus,
    Phase,
    ProviderImage,
    Server,
    ServerStatus,
    StatusReport,
    WorkspaceSpec,
    utcnow,
)
from app.errors import (
    ActionFailed,
    BivyError,
    HostKeyMismatch,
    InvalidInput,
    NotFound,
    SSHError,
    UnsupportedOperation,
)
from app.errors import Timeout as BivyTimeout
from app.providers.base import Provider
from app.services.accounts import provider_class
from app.services.prebuild_hash import (
    LABEL_AGENT,
    LABEL_CONFIG_HASH,
    LABEL_PREBUILD,
    LABEL_VERSION,
    label_value,
    repo_key,
    version_label,
)
from app.services.prebuild_match import (
    mark_stale_from_status,
    match_prebuild,
    with_local_staleness,
)
from app.services.prebuild_registry import PrebuildRecord, PrebuildRegistry
from app.services.registry import WorkspaceRecord
from app.services.status import StatusService
from app.services.tunnels import SSHTarget, Tunnel, TunnelService
from app.settings import Account

if TYPE_CHECKING:
    from app.services.workspaces import CreateProgress, WorkspaceService

__all__ = [
    "PREBUILD_JSON",
    "SEAL_COMMAND",
    "BuildProgress",
    "PrebuildRecord",
    "PrebuildRegistry",
    "PrebuildService",
    "builder_name",
    "mark_stale_from_status",
    "match_prebuild",
]

log = logging.getLogger(__name__)

PREBUILD_JSON = "/var/lib/bivy/prebuild.json"
SEAL_COMMAND = "sudo -n /usr/local/lib/bivy/prebuild-seal"
#: A builder nobody images (the app died) deletes itself once idle this long.
BUILDER_IDLE_MINUTES = 30
BUILDER_MAX_HOURS = 4


@dataclass(frozen=True)
class BuildProgress:
    """One step of a build, for the CLI's progress lines and the window's progress bar.

    Attributes:
        step: "create" (the builder's own create steps follow in ``detail``), "build" (a VM
            phase: ``detail`` says which), "seal", "power-off", "image", "record", "cleanup",
            "done".
        detail: one human sentence; fraction: overall, 0..1.
    """

    step: str
    detail: str
    fraction: float


ProgressCallback = Callable[[BuildProgress], None]


def builder_name(key: str) -> str:
    """A workspace name for a builder VM: ``pb-<8 hex of the repo key>-<6 random hex>``."""
    return f"pb-{key[:8]}-{secrets.token_hex(3)}"


class PrebuildService:
    """Prebuilds across the accounts of ``workspaces`` (whose providers, keys and create path
    it uses).

    Attributes:
        registry: the local prebuild records.
        phase_timeout: seconds the builder may take to reach ``prebuilt``.
        off_timeout: seconds to wait for the sealed VM to power itself off before asking the
            provider to; image_timeout: seconds the provider may take to make the image.
        poll_interval: seconds between status reads and image polls.
        status_path / prebuild_json / seal_command: the VM's files and seal (tests use others).
        errors: account id → the error its last ``list`` raised.
    """

    def __init__(
        self,
        workspaces: WorkspaceService,
        *,
        registry: PrebuildRegistry | None = None,
        phase_timeout: float = 3600.0,
        off_timeout: float = 60.0,
        image_timeout: float = 3600.0,
        poll_interval: float = 3.0,
        status_path: str = "",
        prebuild_json: str = PREBUILD_JSON,
        seal_command: str = SEAL_COMMAND,
    ) -> None:
        self.workspaces = workspaces
        self.registry = registry or PrebuildRegistry()
        self.phase_timeout = phase_timeout
        self.off_timeout = off_timeout
        self.image_timeout = image_timeout
        self.poll_interval = poll_interval
        self.status_path = status_path
        self.prebuild_json = prebuild_json
        self.seal_command = seal_command
        self.errors: dict[str, BivyError] = {}
        #: The builder's last status report of the latest ``build`` (its timings and steps).
        self.last_report: StatusReport | None = None

    # -- match ---------------------------------------------------------------------------------

    def match(self, spec: WorkspaceSpec, account: str, region: str | None) -> PrebuildRecord | None:
        """See ``match_prebuild`` (blocking: reads the registry, may hash a local checkout)."""
        return match_prebuild(self.registry.all(), spec, account, region)

    # -- list ----------------------------------------------------------------------------------

    def _snapshot_accounts(self) -> builtins.list[Account]:
        out = []
        for account in self.workspaces.accounts():
            try:
                if provider_class(account.provider).capabilities.snapshots:
                    out.append(account)
            except BivyError:
                continue
        return out

    async def list(self, refresh: bool = True) -> builtins.list[PrebuildRecord]:
        """Every prebuild: the registry joined with each account's ``list_images`` (size,
        monthly cost, state). An image the provider no longer has is forgotten; one it has
        but the registry does not is listed as ``unrecorded``. A local checkout whose config
        hash changed since shows as stale. ``refresh=False``: the registry only."""
        records = await self.registry.aall()
        if refresh:
            records = await self._join(records)
        return await asyncio.to_thread(with_local_staleness, records)

    async def _join(self, records: builtins.list[PrebuildRecord]) -> builtins.list[PrebuildRecord]:
        accounts = self._snapshot_accounts()

        async def one(account: Account) -> builtins.list[ProviderImage]:
            provider = await self.workspaces.provider(account)
            return await provider.list_images()

        results = await asyncio.gather(*(one(a) for a in accounts), return_exceptions=True)
        self.errors = {}
        listed: dict[str, dict[str, ProviderImage]] = {}
        for account, result in zip(accounts, results, strict=True):
            if isinstance(result, BivyError):
                self.errors[account.id] = result
                continue
            if isinstance(result, BaseException):
                raise result
            listed[account.id] = {i.id: i for i in result if i.is_bivy and _is_prebuild(i)}
        out: builtins.list[PrebuildRecord] = []
        seen: set[tuple[str, str]] = set()
        for record in records:
            images = listed.get(record.account)
            if images is None:
                out.append(record)  # that account could not be listed: keep what we know
                continue
            image = images.get(record.id)
            if image is None:
                log.info("prebuild %s is gone at the provider; forgetting it", record.id)
                await self.registry.aremove(record.account, record.id)
                continue
            seen.add(record.key)
            out.append(
                record.model_copy(
                    update={
                        "size_gb": image.size_gb,
                        "monthly_price": image.monthly_price,
                        "status": image.status,
                        "name": image.name or record.name,
                    }
                )
            )
        for account_id, images in listed.items():
            for image in images.values():
                if (account_id, image.id) not in seen:
                    out.append(_unrecorded(account_id, image))
        out.sort(key=lambda r: (r.repo, r.created_at))
        return out

    # -- delete --------------------------------------------------------------------------------

    async def delete(self, image_id: str, account: str | None = None) -> PrebuildRecord:
        """Delete the prebuild's image at the provider and forget it; ``NotFound`` when no
        account has it."""
        records = [
            r for r in await self.list(refresh=True)
            if r.id == image_id and (account is None or r.account == account)
        ]  # fmt: skip
        if not records:
            raise NotFound(
                f"there is no prebuild {image_id!r}", hint="See them with `bivy prebuild ls`"
            )
        if len(records) > 1:
            raise InvalidInput(
                f"prebuild id {image_id!r} exists in several accounts",
                hint="Name the account too (--account)",
            )
        record = records[0]
        provider = await self.workspaces.provider(self.workspaces.account(record.account))
        await provider.delete_image(record.id)
        await self.registry.aremove(record.account, record.id)
        return record

    # -- build ---------------------------------------------------------------------------------

    async def build(
        self,
        repo: str,
        *,
        account: str | None = None,
        provider: str | None = None,
        region: str | None = None,
        size: str | None = None,
        branch: str | None = None,
        agent: str = "claude",
        include_uncommitted: bool = False,
        progress: ProgressCallback | None = None,
    ) -> PrebuildRecord:
        """Build a prebuild of ``repo`` (URL or local checkout) and return its record.

        The builder VM is deleted whatever happens (and an image left half-made by a failure
        is deleted too); a cancel propagates after that cleanup.
        """

        def report(step: str, detail: str, fraction: float) -> None:
            if progress is not None:
                progress(BuildProgress(step, detail, fraction))

        chosen = self.workspaces.account(account, provider=provider)
        prov = await self.workspaces.provider(chosen)
        if not prov.capabilities.snapshots:
            raise UnsupportedOperation(
                f"{prov.display_name} cannot make images, so it has no prebuilds in Bivy",
                hint="Prebuild on a provider that has snapshots (Hetzner, DigitalOcean, "
                "Scaleway, OVH, or this computer)",
            )
        name = builder_name(repo_key(repo.strip(), branch))
        spec = WorkspaceSpec(
            name=name,
            repo_url=repo,
            branch=branch,
            provider=chosen.provider,
            account=chosen.id,
            region=region,
            size=size,
            idle_minutes=BUILDER_IDLE_MINUTES,
            max_hours=BUILDER_MAX_HOURS,
            agent_credential="none",
            agent=agent,
            backup=False,
            include_uncommitted=include_uncommitted,
        )
        key = repo_key(spec.repo_url, spec.branch)  # the validated source, as match() sees it
        labels = {
            LABEL_MANAGED_BY: LABEL_MANAGED_BY_VALUE,
            LABEL_PREBUILD: key,
            LABEL_VERSION: version_label(),
            LABEL_AGENT: label_value(agent),
        }
        created_image: ProviderImage | None = None
        builder_made = False
        try:

            def on_create(step: CreateProgress) -> None:
                report("create", step.detail, 0.15 * step.fraction)

            report("create", f"Creating the builder VM {name}", 0.0)
            builder_made = True
            workspace = await self.workspaces.create(
                spec, on_create, use_prebuild=False, mode="prebuild", labels=labels
            )
            server = workspace.server
            assert server is not None
            record = await self.workspaces.registry.aget(name)
            if record is None:
                raise ActionFailed(f"the builder {name} has no record", provider=chosen.provider)
            info = await self._build_on_vm(record, report)
            config_hash = str(info.get("config_hash") or "")
            if config_hash:
                labels[LABEL_CONFIG_HASH] = label_value(config_hash)
            await self._power_off(prov, server, report)
            report("image", f"Making the image of {server.id}", 0.75)
            stamp = utcnow().strftime("%Y%m%d-%H%M%S")
            created_image = await prov.create_image(
                server.id, name=f"bivy-prebuild-{key[:8]}-{stamp}", labels=labels
            )
            image = await self._wait_image(prov, created_image, report)
            report("record", f"Recording prebuild {image.id}", 0.95)
            result = PrebuildRecord(
                id=image.id,
                account=chosen.id,
                provider=chosen.provider,
                region=image.region,
                repo=spec.repo_url,
                branch=spec.branch,
                agent=agent,
                repo_key=key,
                config_hash=config_hash,
                commit=str(info.get("commit") or ""),
                agent_version=str(info.get("agent_version") or ""),
                bivy_version=str(info.get("bivy_version") or ""),
                name=image.name,
                size_gb=image.size_gb,
                monthly_price=image.monthly_price,
                created_at=image.created_at or utcnow(),
                status=image.status,
                build_timings=dict(self.last_report.timings) if self.last_report else {},
                build_steps=dict(self.last_report.steps) if self.last_report else {},
            )
            await self.registry.aput(result)
            created_image = None  # recorded: it stays
        except BaseException:
            if created_image is not None:
                with contextlib.suppress(BivyError):
                    await asyncio.shield(prov.delete_image(created_image.id))
            raise
        finally:
            if builder_made:
                report("cleanup", f"Deleting the builder VM {name}", 0.97)
                cleanup = asyncio.ensure_future(self._delete_builder(name))
                with contextlib.suppress(BivyError):
                    await asyncio.shield(cleanup)
        report("done", f"Prebuild {result.id} is ready", 1.0)
        return result

    async def _delete_builder(self, name: str) -> None:
        try:
            await self.workspaces.delete(name)
        except NotFound:
            return
        except BivyError as exc:
            log.warning("could not delete the builder %s: %s", name, exc.one_line())
            raise

    def _target(self, record: WorkspaceRecord) -> SSHTarget:
        if not record.ipv4:
            raise SSHError(f"the builder {record.name} has no address yet")
        return SSHTarget(
            workspace=record.name,
            host=record.ipv4,
            host_public_key=record.host_public_key,
            port=record.ssh_port,
            username=self.workspaces.vm_user,
        )

    async def _build_on_vm(
        self, record: WorkspaceRecord, report: Callable[[str, str, float], None]
    ) -> dict[str, object]:
        """Follow the builder's phases to ``prebuilt``, read prebuild.json and seal the VM."""
        tunnels = TunnelService(self.workspaces.secrets, connect_timeout=10.0)
        status = (
            StatusService(tunnels, status_path=self.status_path)
            if self.status_path
            else StatusService(tunnels)
        )
        deadline = time.monotonic() + self.phase_timeout
        seen: set[str] = set()
        fraction = 0.15
        try:
            tunnel: Tunnel | None = None
            while True:
                try:
                    if tunnel is None:
                        tunnel = await tunnels.open(self._target(record))
                    snapshot = await status.read(tunnel)
                except HostKeyMismatch:
                    raise
                except SSHError:
                    tunnel = None
                    await tunnels.close_all()
                    snapshot = None
                current = snapshot.status if snapshot is not None else None
                if current is not None:
                    phase = current.phase
                    said = f"{phase.value}: {current.detail}".rstrip(": ")
                    if said not in seen:
                        seen.add(said)
                        fraction = max(fraction, 0.15 + 0.45 * min(1.0, current.progress or 0.0))
                        report("build", said, fraction)
                    if phase == Phase.PREBUILT:
                        self.last_report = current
                        break
                    if phase in (Phase.FAILED, Phase.DELETING, Phase.EXPIRING):
                        tail = (current.log_tail or "").strip().splitlines()[-15:]
                        why = current.detail or phase.value
                        if current.error and current.error not in why:
                            why += f" ({current.error})"
                        raise ActionFailed(
                            f"the builder {record.name} failed: {why}",
                            hint="\n".join(tail) if tail else "",
                        )
                if time.monotonic() > deadline:
                    raise BivyTimeout(
                        f"the builder {record.name} did not finish in {self.phase_timeout:g} s"
                    )
                await asyncio.sleep(self.poll_interval)
            assert tunnel is not None
            info = await self._read_prebuild_json(tunnel)
            report("seal", "Sealing the builder (cleaning it; it powers off)", 0.62)
            sealed = await tunnel.run(self.seal_command, limit=600.0)
            if sealed.exit_status != 0 or "sealed" not in sealed.stdout:
                detail = (sealed.stderr.strip() or sealed.stdout.strip()).splitlines()[-3:]
                raise ActionFailed(
                    f"sealing the builder {record.name} failed (exit {sealed.exit_status})",
                    hint=" / ".join(detail),
                )
            return info
        finally:
            await tunnels.close_all()

    async def _read_prebuild_json(self, tunnel: Tunnel) -> dict[str, object]:
        path = shlex.quote(self.prebuild_json)
        result = await tunnel.run(f"cat {path} 2>/dev/null || sudo -n cat {path}", limit=30.0)
        try:
            data = json.loads(result.stdout)
        except ValueError:
            data = None
        if result.exit_status != 0 or not isinstance(data, dict):
            raise ActionFailed(
                f"the builder reported prebuilt but {self.prebuild_json} is missing or unreadable"
            )
        return data

    async def _power_off(
        self, provider: Provider, server: Server, report: Callable[[str, str, float], None]
    ) -> None:
        """Wait for the sealed VM to be off at the provider; ask for a power-off after
        ``off_timeout`` seconds."""
        report("power-off", f"Waiting for {server.id} to power off", 0.66)

        async def off_within(seconds: float) -> bool:
            deadline = time.monotonic() + seconds
            while True:
                current = await provider.get(server.id)
                if current.status == ServerStatus.OFF:
                    return True
                if time.monotonic() > deadline:
                    return False
                await asyncio.sleep(min(self.poll_interval, 2.0))

        if await off_within(self.off_timeout):
            return
        report("power-off", f"{server.id} is still on: powering it off", 0.68)
        await provider.power_off(server.id)
        if not await off_within(max(120.0, self.off_timeout)):
            raise BivyTimeout(f"server {server.id} does not power off")

    async def _wait_image(
        self,
        provider: Provider,
        image: ProviderImage,
        report: Callable[[str, str, float], None],
    ) -> ProviderImage:
        deadline = time.monotonic() + self.image_timeout
        current = image
        while current.status != ImageStatus.AVAILABLE:
            if current.status == ImageStatus.FAILED:
                raise ActionFailed(f"the provider could not make the image {image.id}")
            if time.monotonic() > deadline:
                raise BivyTimeout(f"the image {image.id} was not ready in {self.image_timeout:g} s")
            await asyncio.sleep(self.poll_interval)
            current = await provider.get_image(image.id)
            size = f" ({current.size_gb:.1f} GB)" if current.size_gb else ""
            report("image", f"Image {image.id} is {current.status.value}{size}", 0.8)
        return current


def _is_prebuild(image: ProviderImage) -> bool:
    return bool(image.labels.get(LABEL_PREBUILD))


def _unrecorded(account: str, image: ProviderImage) -> PrebuildRecord:
    return PrebuildRecord(
        id=image.id,
        account=account,
        provider=image.provider,
        region=image.region,
        agent=image.labels.get(LABEL_AGENT, "claude"),
        repo_key=image.labels.get(LABEL_PREBUILD, ""),
        config_hash=image.labels.get(LABEL_CONFIG_HASH, ""),
        name=image.name,
        size_gb=image.size_gb,
        monthly_price=image.monthly_price,
        created_at=image.created_at or utcnow(),
        status=image.status,
        unrecorded=True,
    )
