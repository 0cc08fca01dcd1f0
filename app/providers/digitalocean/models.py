"""DigitalOcean API v2 wire models, shaped exactly like the JSON (only the fields Bivy reads)."""

from __future__ import annotations

from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore")


class NetworkV4(_Wire):
    ip_address: str
    type: str = "public"


class NetworkV6(_Wire):
    ip_address: str
    type: str = "public"


class Networks(_Wire):
    v4: list[NetworkV4] = Field(default_factory=list)
    v6: list[NetworkV6] = Field(default_factory=list)


class RegionRef(_Wire):
    slug: str
    name: str = ""


class Region(_Wire):
    slug: str
    name: str
    available: bool = True
    sizes: list[str] = Field(default_factory=list)
    features: list[str] = Field(default_factory=list)


class Size(_Wire):
    """``/v2/sizes`` entry: memory in MB, disk in GB, prices in USD (JSON numbers)."""

    slug: str
    memory: int
    vcpus: int
    disk: int
    transfer: float = 0.0
    price_monthly: Decimal
    price_hourly: Decimal
    regions: list[str] = Field(default_factory=list)
    available: bool = True
    description: str = ""


class Droplet(_Wire):
    id: int
    name: str
    status: str
    memory: int = 0
    vcpus: int = 0
    disk: int = 0
    created_at: str | None = None
    networks: Networks = Field(default_factory=Networks)
    region: RegionRef | None = None
    size_slug: str = ""
    size: Size | None = None
    tags: list[str] = Field(default_factory=list)


class ActionLink(_Wire):
    id: int
    rel: str = ""
    href: str = ""


class DropletLinks(_Wire):
    actions: list[ActionLink] = Field(default_factory=list)


class DropletCreated(_Wire):
    """202 answer of ``POST /v2/droplets`` (single droplet)."""

    droplet: Droplet
    links: DropletLinks = Field(default_factory=DropletLinks)


class Pages(_Wire):
    next: str | None = None
    last: str | None = None


class Links(_Wire):
    pages: Pages = Field(default_factory=Pages)


class Meta(_Wire):
    total: int = 0


class DropletList(_Wire):
    droplets: list[Droplet] = Field(default_factory=list)
    links: Links = Field(default_factory=Links)
    meta: Meta = Field(default_factory=Meta)


class SizeList(_Wire):
    sizes: list[Size] = Field(default_factory=list)
    links: Links = Field(default_factory=Links)
    meta: Meta = Field(default_factory=Meta)


class RegionList(_Wire):
    regions: list[Region] = Field(default_factory=list)
    links: Links = Field(default_factory=Links)
    meta: Meta = Field(default_factory=Meta)


class SshKey(_Wire):
    id: int
    fingerprint: str
    name: str = ""
    public_key: str = ""


class Account(_Wire):
    droplet_limit: int = 0
    email: str = ""
    status: str = "active"
    status_message: str = ""


class ErrorBody(_Wire):
    """Every 4xx/5xx body: ``{"id": "not_found", "message": "…", "request_id": "…"}``."""

    id: str = ""
    message: str = ""
    request_id: str | None = None


class Action(_Wire):
    """A droplet action (``power_off``, ``snapshot``): in-progress, completed or errored."""

    id: int
    status: str
    type: str = ""
    resource_id: int | None = None
    resource_type: str = ""


class ActionEnvelope(_Wire):
    action: Action


class Snapshot(_Wire):
    """``GET /v2/droplets/{id}/snapshots`` entry; ``size_gigabytes`` is what is billed."""

    id: int
    name: str
    type: str = "snapshot"
    created_at: str | None = None
    regions: list[str] = Field(default_factory=list)
    min_disk_size: int | None = None
    size_gigabytes: float | None = None


class SnapshotList(_Wire):
    snapshots: list[Snapshot] = Field(default_factory=list)
    links: Links = Field(default_factory=Links)


class Image(_Wire):
    """A private image (a droplet snapshot is ``type: snapshot``), with its tags."""

    id: int
    name: str = ""
    type: str = ""
    status: str = "available"
    regions: list[str] = Field(default_factory=list)
    created_at: str | None = None
    min_disk_size: int | None = None
    size_gigabytes: float | None = None
    tags: list[str] | None = None
    error_message: str = ""
