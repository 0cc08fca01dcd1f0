"""``BackupService``: the agent's history in S3-compatible storage (restic on the VM, issue 6)."""

# The VM does the backing up (cloudinit/backup/backup.sh, restic); the app owns the settings, the
# keys (keychain), one restic password per workspace (generated here, kept in the keychain — a VM
# deletion never deletes it, or the backup could not be read again), "Back up now" over SSH, and
# the explicit "delete the workspace and its backups".
#
# The app talks to the storage itself (``app.services.s3``: httpx, requests signed with AWS
# Signature V4) rather than running a local ``restic``: the desktop bundles (Windows, macOS) then
# need no restic binary, the check can prove *write* permission (put and delete a probe object)
# and name the exact problem (unknown bucket, bad key, wrong region), and deleting a repository
# is deleting its key prefix. restic's repository layout is plain objects (``config``, ``keys/``,
# ``snapshots/``, ``data/``…), so listing ``snapshots/`` also tells when the last backup was
# taken, even with the VM gone.

from __future__ import annotations

import asyncio
import logging
import os
import re
import secrets as secrets_module
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol
from urllib.parse import urlsplit

import httpx

from app.cloudinit import BackupInputs
from app.domain import WorkspaceSpec
from app.errors import BackupError, BivyError, InvalidInput, NotFound
from app.services.s3 import S3Client, S3Credentials
from app.settings import BackupSettings, SecretKeys, SecretStore, Settings

__all__ = [
    "BACKUP_COMMAND",
    "PRESETS",
    "RESTIC_PASSWORD",
    "BackupService",
    "CheckResult",
    "CommandRunner",
    "RepositoryInfo",
    "S3Client",
    "S3Credentials",
    "StoragePreset",
    "check_storage",
    "repository_prefix",
    "repository_url",
    "validate_backup_settings",
]

log = logging.getLogger(__name__)

#: The keychain entry of a workspace's restic password (``SecretKeys.workspace(name, …)``).
RESTIC_PASSWORD = "restic-password"
#: What "Back up now" runs on the VM (user dev has passwordless sudo there).
BACKUP_COMMAND = "/usr/local/lib/bivy/backup"
#: Environment variables that supply the storage keys instead of the keychain (both or neither).
ENV_ACCESS_KEY = "BIVY_BACKUP_ACCESS_KEY_ID"
ENV_SECRET_KEY = "BIVY_BACKUP_SECRET_ACCESS_KEY"
#: How long "Back up now" may take (a first backup of a large history uploads everything).
BACKUP_NOW_LIMIT = 1800.0
_EXIT_LOCKED = 75  # backup.sh: another backup still holds the lock

_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_PREFIX_RE = re.compile(r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")
_REGION_RE = re.compile(r"^[a-z0-9-]{0,40}$")


@dataclass(frozen=True)
class StoragePreset:
    """A storage provider the settings dialog offers, with how its endpoint is built.

    Attributes:
        id: stable id ("r2", "hetzner", …); label: what the dialog shows.
        endpoint: the endpoint template; ``{region}`` and ``{account}`` are filled in.
        regions: the regions to offer (empty: free text); default_region: the first choice.
        needs_account: the endpoint needs an account id (Cloudflare R2).
        hint: one line on where to create the bucket and keys.
    """

    id: str
    label: str
    endpoint: str
    regions: tuple[str, ...] = ()
    default_region: str = ""
    needs_account: bool = False
    hint: str = ""

    def endpoint_for(self, region: str = "", account: str = "") -> str:
        """The endpoint URL for ``region`` (and ``account`` for R2); "" for a custom one."""
        if not self.endpoint:
            return ""
        if self.needs_account and not account:
            raise InvalidInput(f"{self.label} needs your account id to build the endpoint")
        return self.endpoint.format(region=region or self.default_region, account=account)

    def matches(self, endpoint: str) -> bool:
        """Whether ``endpoint`` was built from this preset (for showing the saved choice)."""
        if not self.endpoint:
            return False
        pattern = re.escape(self.endpoint).replace(r"\{region\}", "[a-z0-9-]+")
        pattern = pattern.replace(r"\{account\}", "[A-Za-z0-9]+")
        return re.fullmatch(pattern, endpoint.rstrip("/")) is not None


PRESETS: tuple[StoragePreset, ...] = (
    StoragePreset(
        "r2", "Cloudflare R2", "https://{account}.r2.cloudflarestorage.com",
        regions=("auto",), default_region="auto", needs_account=True,
        hint="R2 → Manage API tokens: an Object Read & Write token for one bucket",
    ),
    StoragePreset(
        "hetzner", "Hetzner Object Storage", "https://{region}.your-objectstorage.com",
        regions=("fsn1", "nbg1", "hel1"), default_region="fsn1",
        hint="Cloud Console → Object Storage: create a bucket, then S3 credentials",
    ),
    StoragePreset(
        "scaleway", "Scaleway Object Storage", "https://s3.{region}.scw.cloud",
        regions=("fr-par", "nl-ams", "pl-waw"), default_region="fr-par",
        hint="Console → Object Storage: create a bucket; IAM → API keys for the access key",
    ),
    StoragePreset(
        "aws", "AWS S3", "https://s3.{region}.amazonaws.com",
        regions=("us-east-1", "us-east-2", "us-west-2", "eu-west-1", "eu-central-1",
                 "eu-north-1", "ap-southeast-1", "ap-northeast-1"),
        default_region="us-east-1",
        hint="An IAM user limited to s3:ListBucket/GetObject/PutObject/DeleteObject on the bucket",
    ),
    StoragePreset(
        "custom", "MinIO or another S3-compatible service", "",
        hint="The endpoint URL of your S3 API, e.g. https://minio.example.com:9000",
    ),
)  # fmt: skip


def preset_for(endpoint: str) -> StoragePreset:
    """The preset ``endpoint`` belongs to (``custom`` when none)."""
    return next((p for p in PRESETS if p.matches(endpoint)), PRESETS[-1])


def validate_backup_settings(config: BackupSettings) -> None:
    """Raise ``InvalidInput`` saying what is wrong with the endpoint, bucket, prefix or region."""
    url = urlsplit(config.endpoint.strip())
    if url.scheme not in ("http", "https") or not url.hostname:
        raise InvalidInput(
            "the backup endpoint must be an http(s) URL, e.g. https://fsn1.your-objectstorage.com"
        )
    if url.path not in ("", "/") or url.query or url.fragment or url.username or url.password:
        raise InvalidInput(
            "the backup endpoint is only scheme, host and port: put the bucket in its own field"
        )
    if not _BUCKET_RE.match(config.bucket) or ".." in config.bucket:
        raise InvalidInput(
            "a bucket name is 3-63 characters: lower-case letters, digits, '.' and '-'"
        )
    if config.prefix.strip("/") and not _PREFIX_RE.match(config.prefix.strip("/")):
        raise InvalidInput("the backup prefix may hold letters, digits, '.', '_', '-' and '/'")
    if not _REGION_RE.match(config.region):
        raise InvalidInput("a region is lower-case letters, digits and '-' (e.g. eu-central-1)")


def repository_prefix(config: BackupSettings, workspace: str) -> str:
    """The key prefix of ``workspace``'s restic repository inside the bucket (no slashes around)."""
    parts = [p for p in (config.prefix.strip("/"), workspace) if p]
    return "/".join(parts)


def repository_url(config: BackupSettings, workspace: str) -> str:
    """restic's repository string: ``s3:<endpoint>/<bucket>/<prefix>/<workspace>``."""
    endpoint = config.endpoint.strip().rstrip("/")
    return f"s3:{endpoint}/{config.bucket}/{repository_prefix(config, workspace)}"


# -- checks and repository facts ---------------------------------------------------------------


@dataclass(frozen=True)
class CheckResult:
    """What a successful storage check established.

    Attributes:
        endpoint, bucket: what was checked; objects_seen: objects under the prefix (up to 1).
        message: one sentence for the dialog and the CLI.
    """

    endpoint: str
    bucket: str
    objects_seen: int
    message: str


async def check_storage(
    config: BackupSettings,
    credentials: S3Credentials,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
) -> CheckResult:
    """Prove the settings work: list the bucket, then write and delete a probe object.

    Raises ``InvalidInput`` for malformed settings and ``BackupError`` naming what failed.
    """
    validate_backup_settings(config)
    if not credentials.access_key or not credentials.secret_key:
        raise InvalidInput("enter both the access key id and the secret access key")
    prefix = config.prefix.strip("/")
    probe = "/".join(p for p in (prefix, f".bivy-check-{secrets_module.token_hex(6)}") if p)
    async with S3Client(
        config.endpoint, config.bucket, config.region, credentials, transport=transport
    ) as client:
        seen = await client.list(prefix + "/" if prefix else "", limit=1)
        await client.put(probe, b"bivy storage check\n")
        await client.delete(probe)
    where = f"{config.bucket}/{prefix}" if prefix else config.bucket
    return CheckResult(
        endpoint=config.endpoint,
        bucket=config.bucket,
        objects_seen=len(seen),
        message=f"Storage works: Bivy can list, write and delete in {where}",
    )


@dataclass(frozen=True)
class RepositoryInfo:
    """A workspace's restic repository as the storage lists it.

    Attributes:
        exists: restic's ``config`` object is there.
        snapshots: snapshot objects (each backup writes one per part: agent, work tree).
        last_backup_at: when the newest snapshot object was written (UTC), if any.
        objects / size_bytes: everything under the repository prefix.
    """

    exists: bool
    snapshots: int
    last_backup_at: datetime | None
    objects: int
    size_bytes: int


class CommandRunner(Protocol):
    """What "Back up now" needs from an SSH connection (``app.services.tunnels.Tunnel``)."""

    async def run(self, command: str, *, input: str | None = None, limit: float = 30.0) -> object:
        """Run ``command`` without a pty; returns exit_status/stdout/stderr."""
        ...


class _Deleter(Protocol):
    async def delete(self, name: str, *, wait: bool = ...) -> None: ...


@dataclass(frozen=True)
class DeleteReport:
    """What "Delete workspace and its backups" did.

    Attributes:
        vm_deleted: a server was deleted (False when it was already gone).
        objects_deleted: backup objects removed; password_forgotten: the keychain entry went.
    """

    vm_deleted: bool
    objects_deleted: int
    password_forgotten: bool


class BackupService:
    """Backups of every workspace, under the user's backup settings.

    Attributes:
        settings: the user's settings (``settings.backup`` read on every call).
        secrets: the keychain (storage keys, per-workspace restic passwords).
        vm_command: how "Back up now" invokes the VM's script (tests run it elsewhere).
    """

    def __init__(
        self,
        settings: Settings,
        secrets: SecretStore,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        environ: Mapping[str, str] | None = None,
        vm_command: str = f"sudo -n {shlex.quote(BACKUP_COMMAND)}",
    ) -> None:
        self.settings = settings
        self.secrets = secrets
        self.vm_command = vm_command
        self._transport = transport
        self._environ = os.environ if environ is None else environ

    @property
    def config(self) -> BackupSettings:
        return self.settings.backup

    @property
    def configured(self) -> bool:
        """Backups are on and have an endpoint and a bucket (keys are checked when used)."""
        c = self.config
        return c.enabled and bool(c.endpoint.strip()) and bool(c.bucket.strip())

    def repository_url(self, workspace: str) -> str:
        return repository_url(self.config, workspace)

    async def credentials(self) -> S3Credentials:
        """The storage keys: ``BIVY_BACKUP_ACCESS_KEY_ID``/``BIVY_BACKUP_SECRET_ACCESS_KEY`` when
        both are set (scripts, CI), else the keychain; ``BackupError`` when either is missing."""
        access = self._environ.get(ENV_ACCESS_KEY, "").strip()
        secret = self._environ.get(ENV_SECRET_KEY, "").strip()
        if not (access and secret):
            access = await self.secrets.aget(SecretKeys.BACKUP_ACCESS_KEY) or ""
            secret = await self.secrets.aget(SecretKeys.BACKUP_SECRET_KEY) or ""
        if not access or not secret:
            raise BackupError(
                "the backup storage keys are not in the keychain",
                hint=f"Enter them in Settings → Backups, or set {ENV_ACCESS_KEY} and "
                f"{ENV_SECRET_KEY}",
            )
        return S3Credentials(access, secret)

    async def save_credentials(self, access_key: str, secret_key: str) -> None:
        await self.secrets.aset(SecretKeys.BACKUP_ACCESS_KEY, access_key.strip())
        await self.secrets.aset(SecretKeys.BACKUP_SECRET_KEY, secret_key.strip())

    async def password(self, workspace: str, *, create: bool = False) -> str | None:
        """The workspace's restic password; with ``create``, generate and store one if absent."""
        key = SecretKeys.workspace(workspace, RESTIC_PASSWORD)
        value = await self.secrets.aget(key)
        if value is None and create:
            value = secrets_module.token_urlsafe(32)
            await self.secrets.aset(key, value)
            log.info("generated the backup password of workspace %s", workspace)
        return value

    async def check(self) -> CheckResult:
        """Check the saved settings and keys against the storage (``bivy backup check``)."""
        return await check_storage(self.config, await self.credentials(), transport=self._transport)

    async def inputs_for(self, spec: WorkspaceSpec) -> BackupInputs | None:
        """What the VM needs to back up ``spec``; None when backups are off for it."""
        if not spec.backup or not self.configured:
            return None
        validate_backup_settings(self.config)
        credentials = await self.credentials()
        keys = {
            "AWS_ACCESS_KEY_ID": credentials.access_key,
            "AWS_SECRET_ACCESS_KEY": credentials.secret_key,
        }
        if self.config.region:
            keys["AWS_DEFAULT_REGION"] = self.config.region
        password = await self.password(spec.name, create=True)
        assert password is not None
        return BackupInputs(
            repository=self.repository_url(spec.name),
            keys=keys,
            password=password,
            interval_minutes=self.config.interval_minutes,
            include_uncommitted=self.config.include_uncommitted,
        )

    def _client(self, credentials: S3Credentials) -> S3Client:
        c = self.config
        return S3Client(c.endpoint, c.bucket, c.region, credentials, transport=self._transport)

    async def repository_info(self, workspace: str) -> RepositoryInfo:
        """What the storage holds for ``workspace`` (works with the VM gone)."""
        validate_backup_settings(self.config)
        prefix = repository_prefix(self.config, workspace) + "/"
        async with self._client(await self.credentials()) as client:
            objects = await client.list(prefix)
        snapshots = [o for o in objects if o.key.startswith(prefix + "snapshots/")]
        times = [o.last_modified for o in snapshots if o.last_modified is not None]
        return RepositoryInfo(
            exists=any(o.key == prefix + "config" for o in objects),
            snapshots=len(snapshots),
            last_backup_at=max(times) if times else None,
            objects=len(objects),
            size_bytes=sum(o.size for o in objects),
        )

    async def backup_now(self, runner: CommandRunner, *, force: bool = False) -> None:
        """Run the VM's backup script now, over SSH, and wait for it.

        ``force`` also backs up after a failed restore (which the timer refuses, so an empty
        VM never hides the older backup). Raises ``BackupError`` with the script's reason.
        """
        command = f"{self.vm_command} run"
        if force:
            command += " --force"
        result = await runner.run(command, limit=BACKUP_NOW_LIMIT)
        status = int(getattr(result, "exit_status", -1))
        if status == 0:
            return
        stderr = str(getattr(result, "stderr", ""))
        lines = [line for line in stderr.splitlines() if line.strip()]
        if status == _EXIT_LOCKED:
            raise BackupError(
                "a backup is already running on the VM", hint="Wait a minute and look again"
            )
        if status in (126, 127) or (lines and "command not found" in lines[-1]):
            raise BackupError(
                "this workspace's VM has no backup script",
                hint="It was created without backups; turn them on in Settings and recreate it",
            )
        reason = lines[-1].split("bivy-backup: ", 1)[-1] if lines else f"exit status {status}"
        raise BackupError(f"the backup on the VM failed: {reason[:300]}")

    async def delete_backups(self, workspace: str, *, concurrency: int = 8) -> int:
        """Delete every object of ``workspace``'s repository; returns how many went."""
        validate_backup_settings(self.config)
        prefix = repository_prefix(self.config, workspace) + "/"
        async with self._client(await self.credentials()) as client:
            objects = await client.list(prefix)
            # Snapshots first and `config` last: an interrupted delete leaves a repository restic
            # still recognises (without snapshots), and deleting again finishes the job.
            config_key = prefix + "config"
            snapshots = [o.key for o in objects if o.key.startswith(prefix + "snapshots/")]
            rest = [o.key for o in objects if o.key not in snapshots and o.key != config_key]
            last = [o.key for o in objects if o.key == config_key]
            limiter = asyncio.Semaphore(concurrency)

            async def one(key: str) -> None:
                async with limiter:
                    await client.delete(key)

            for batch in (snapshots, rest, last):
                await asyncio.gather(*(one(k) for k in batch))
        log.info("deleted %d backup objects of workspace %s", len(objects), workspace)
        return len(objects)

    async def delete_workspace_and_backups(
        self, workspace: str, workspaces: _Deleter
    ) -> DeleteReport:
        """The explicit, confirmed delete: the VM first (so no backup lands after), then every
        backup object, then the restic password. A VM already gone is not an error."""
        vm_deleted = True
        try:
            await workspaces.delete(workspace, wait=True)
        except NotFound:
            vm_deleted = False
        count = await self.delete_backups(workspace)
        try:
            await self.secrets.adelete(SecretKeys.workspace(workspace, RESTIC_PASSWORD))
            forgotten = True
        except BivyError as exc:
            log.warning("could not forget the backup password of %s: %s", workspace, exc)
            forgotten = False
        return DeleteReport(vm_deleted, count, forgotten)
