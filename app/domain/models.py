"""Pydantic models shared by every layer: workspaces, servers, sizes, prices, phases. No I/O."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.domain.validation import validate_branch, validate_repo_source

#: Labels every VM Bivy creates carries; the list is one filtered call per provider.
LABEL_MANAGED_BY = "managed-by"
LABEL_MANAGED_BY_VALUE = "bivy"
LABEL_WORKSPACE = "bivy-workspace"
LABEL_IDLE_MINUTES = "bivy-idle-minutes"
LABEL_MAX_HOURS = "bivy-max-hours"
LABEL_REPO = "bivy-repo"

#: Workspace names: a hostname label, so every provider accepts it and it fits ``bivy-<name>``.
WORKSPACE_NAME_PATTERN = r"^[a-z][a-z0-9-]{0,38}[a-z0-9]$|^[a-z]$"
_WORKSPACE_NAME_RE = re.compile(WORKSPACE_NAME_PATTERN)

DEFAULT_IDLE_MINUTES = 30
DEFAULT_MAX_HOURS = 12


def utcnow() -> datetime:
    """The current time, timezone-aware in UTC (every timestamp in Bivy is)."""
    return datetime.now(UTC)


def validate_workspace_name(name: str) -> str:
    """Return ``name`` if it is a valid workspace name, else raise ``ValueError`` saying why."""
    if not _WORKSPACE_NAME_RE.match(name):
        raise ValueError(
            "a workspace name is 1-40 characters: lower-case letters, digits and '-', "
            "starting with a letter and not ending with '-'"
        )
    return name


class ServerStatus(StrEnum):
    """The VM's power state as Bivy understands it, whatever the provider calls it."""

    INITIALIZING = "initializing"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    OFF = "off"
    DELETING = "deleting"
    MIGRATING = "migrating"
    REBUILDING = "rebuilding"
    UNKNOWN = "unknown"


class Phase(StrEnum):
    """The bootstrap phase the VM reports in /var/lib/bivy/status.json."""

    BOOTING = "booting"
    INSTALLING = "installing"
    RESTORING = "restoring"
    CLONING = "cloning"
    BUILDING = "building"
    STARTING = "starting"
    READY = "ready"
    #: Prebuild mode (issue 14): everything built, nothing secret on board; the app seals the VM
    #: (cleans it, powers it off) and snapshots it.
    PREBUILT = "prebuilt"
    EXPIRING = "expiring"
    DELETING = "deleting"
    FAILED = "failed"
    UNKNOWN = "unknown"


class AgentState(StrEnum):
    """What the coding agent is doing, from the Claude Code hooks on the VM."""

    WORKING = "working"
    WAITING = "waiting"
    IDLE = "idle"
    UNKNOWN = "unknown"


class Price(BaseModel):
    """A price in the account's currency. Amounts are Decimals: money is never a float."""

    model_config = ConfigDict(frozen=True)

    currency: str
    hourly: Decimal
    monthly: Decimal
    includes_vat: bool = False


class Region(BaseModel):
    """A place servers can be created in (Hetzner location, DO region, Scaleway zone…)."""

    model_config = ConfigDict(frozen=True)

    id: str
    name: str
    city: str = ""
    country: str = ""


class Size(BaseModel):
    """A server type with its live prices per region.

    Attributes:
        name: the provider's id for it ("cx23", "s-2vcpu-4gb").
        cores, memory_gb, disk_gb: what it offers.
        cpu_type: "shared" or "dedicated"; architecture: "x86" or "arm".
        prices: region id → price; a region absent here cannot host it.
        deprecated: the provider is phasing it out.
        notice: one short sentence to show beside it when chosen (the local provider: "slow: no
            hardware virtualisation", or that QEMU is missing); usually empty.
    """

    model_config = ConfigDict(frozen=True)

    name: str
    description: str = ""
    cores: int
    memory_gb: float
    disk_gb: int
    cpu_type: str = "shared"
    architecture: str = "x86"
    prices: dict[str, Price] = Field(default_factory=dict)
    deprecated: bool = False
    notice: str = ""

    def price_in(self, region: str) -> Price | None:
        return self.prices.get(region)


class AccountInfo(BaseModel):
    """What a successful ``validate()`` learnt about the account."""

    provider: str
    description: str = ""
    currency: str = ""
    read_only: bool = False


class Server(BaseModel):
    """A VM as the provider reports it, mapped to Bivy's vocabulary.

    Attributes:
        id: the provider's id (string even when the provider uses integers).
        labels: the labels/tags, as a dict (tag-based providers map ``k=v`` tags here).
        ssh_port: the port sshd answers on at ``ipv4`` (22 on clouds; the local provider
            forwards a free port on 127.0.0.1).
        status_detail: why the status is what it is, when the provider knows more than the
            status says (e.g. "QEMU exited without the guest powering off"); else empty.
    """

    provider: str
    id: str
    name: str
    status: ServerStatus
    region: str = ""
    size: str = ""
    ipv4: str | None = None
    ipv6: str | None = None
    created_at: datetime | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    price: Price | None = None
    ssh_port: int = Field(default=22, ge=1, le=65535)
    status_detail: str = ""

    @property
    def workspace_name(self) -> str | None:
        return self.labels.get(LABEL_WORKSPACE)

    @property
    def is_bivy(self) -> bool:
        return self.labels.get(LABEL_MANAGED_BY) == LABEL_MANAGED_BY_VALUE


class ImageStatus(StrEnum):
    """A provider image's (snapshot's) state, in Bivy's words."""

    CREATING = "creating"
    AVAILABLE = "available"
    FAILED = "failed"
    UNKNOWN = "unknown"


class ProviderImage(BaseModel):
    """A snapshot image at a provider (a prebuild, issue 14), mapped to Bivy's vocabulary.

    Attributes:
        id: the provider's image id (what ``CreateServerRequest.image`` takes).
        size_gb: the billed size (GB) when the provider reports it, else None.
        labels: as for servers (``managed-by=bivy``, ``bivy-prebuild``, ``bivy-config-hash``,
            ``bivy-version``); tag-based providers map ``k=v`` tags here.
        monthly_price: what keeping it costs per month (size × the provider's GB-month price),
            when known.
    """

    provider: str
    id: str
    name: str
    status: ImageStatus
    region: str = ""
    size_gb: float | None = None
    created_at: datetime | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    monthly_price: Price | None = None

    @property
    def is_bivy(self) -> bool:
        return self.labels.get(LABEL_MANAGED_BY) == LABEL_MANAGED_BY_VALUE


AgentCredentialKind = Literal["api_key", "oauth_token", "none"]


class WorkspaceSpec(BaseModel):
    """Everything the user chose when creating a workspace.

    ``account`` names the configured account (settings) that pays for it. ``repo_url`` is a URL
    or the absolute path of a git checkout on this computer (shipped to the VM as a bundle).
    """

    name: str
    repo_url: str
    branch: str | None = None
    provider: str = "hetzner"
    account: str = ""
    region: str | None = None
    size: str | None = None
    idle_minutes: int = Field(default=DEFAULT_IDLE_MINUTES, ge=1, le=24 * 60)
    max_hours: int = Field(default=DEFAULT_MAX_HOURS, ge=1, le=24 * 7)
    agent_credential: AgentCredentialKind = "api_key"
    #: The first session's coding agent (a name from app.agents: claude, codex, gemini…).
    agent: str = Field(default="claude", pattern=r"^[a-z][a-z0-9-]{0,31}$")
    backup: bool = True
    #: With a local checkout: also send its uncommitted work (as ``refs/bivy/uncommitted``).
    include_uncommitted: bool = False

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return validate_workspace_name(value)

    @field_validator("repo_url")
    @classmethod
    def _repo_url(cls, value: str) -> str:
        return validate_repo_source(value)

    @field_validator("branch")
    @classmethod
    def _branch(cls, value: str | None) -> str | None:
        return None if value is None or value == "" else validate_branch(value)


class CreateServerRequest(BaseModel):
    """What a provider needs to create one Bivy VM."""

    name: str
    region: str | None
    size: str
    ssh_public_key: str
    ssh_key_name: str = "bivy"
    labels: dict[str, str]
    user_data: str
    image: str | None = None


class StatusReport(BaseModel):
    """The VM's /var/lib/bivy/status.json."""

    phase: Phase = Phase.UNKNOWN
    detail: str = ""
    progress: float = 0.0
    error: str | None = None
    log_tail: str | None = None
    updated_at: datetime | None = None
    idle_since: datetime | None = None
    idle_deadline: datetime | None = None
    lifetime_deadline: datetime | None = None
    last_backup_at: datetime | None = None
    backup_error: str | None = None
    #: phase → when the VM entered it (epoch seconds); step → seconds a bootstrap step took.
    timings: dict[str, float] = Field(default_factory=dict)
    steps: dict[str, float] = Field(default_factory=dict)
    #: A VM created from a prebuild had to rebuild its devcontainer (its config hash differs
    #: from the prebuild's): the app marks that prebuild stale (issue 14).
    prebuild_stale: bool = False

    @field_validator("phase", mode="before")
    @classmethod
    def _phase(cls, value: object) -> object:
        return value if value in {p.value for p in Phase} else Phase.UNKNOWN

    @field_validator("timings", "steps", mode="before")
    @classmethod
    def _numbers(cls, value: object) -> object:
        # Extras for display and benchmarks: an odd entry is dropped, never the whole report.
        if not isinstance(value, dict):
            return {}
        return {
            str(k): float(v)
            for k, v in value.items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        }


class AgentReport(BaseModel):
    """The VM's /var/lib/bivy/agent.json, written by the Claude Code hooks."""

    state: AgentState = AgentState.UNKNOWN
    event: str = ""
    message: str = ""
    background_tasks: int = 0
    updated_at: datetime | None = None

    @field_validator("state", mode="before")
    @classmethod
    def _state(cls, value: object) -> object:
        return value if value in {s.value for s in AgentState} else AgentState.UNKNOWN


class SessionReport(BaseModel):
    """One agent session of a workspace (issue 15): its worktree, branch and agent state, as the
    VM's ``bivy-session ls --json`` reports it (``/var/lib/bivy/sessions/<name>.json`` joined
    with that session's agent.json)."""

    name: str
    agent: str = "claude"
    branch: str = ""
    base: str = ""
    worktree: str = ""
    state: AgentState = AgentState.UNKNOWN
    event: str = ""
    message: str = ""
    updated_at: datetime | None = None
    #: The session could not be set up or its agent failed to start (then ``message`` says why).
    failed: bool = False

    @field_validator("state", mode="before")
    @classmethod
    def _state(cls, value: object) -> object:
        return value if value in {s.value for s in AgentState} else AgentState.UNKNOWN


class Workspace(BaseModel):
    """A workspace: the server at the provider plus what Bivy knows of it locally and on the VM.

    Attributes:
        name: the workspace name (label ``bivy-workspace``).
        account: the account id it was found in.
        server: the provider's view; None while creating or after deletion.
        repo_url: from the local registry (labels cannot hold URLs).
        status: last status.json read over SSH, if any.
        agent: last agent.json read over SSH, if any.
        unrecorded: the server carries Bivy's labels but this installation has no record of it
            (no pinned host key): it cannot be opened, only deleted.
    """

    name: str
    account: str
    provider: str
    server: Server | None = None
    repo_url: str = ""
    unrecorded: bool = False
    idle_minutes: int = DEFAULT_IDLE_MINUTES
    max_hours: int = DEFAULT_MAX_HOURS
    status: StatusReport | None = None
    agent: AgentReport | None = None
    sessions: list[SessionReport] = Field(default_factory=list)
    keep_alive_until: datetime | None = None

    @property
    def lifetime_deadline(self) -> datetime | None:
        if self.server is None or self.server.created_at is None:
            return None
        return self.server.created_at + timedelta(hours=self.max_hours)
