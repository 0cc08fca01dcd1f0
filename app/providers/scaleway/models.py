"""Scaleway Instance API v1 wire models, shaped like the JSON (only the fields Bivy reads)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore")


class PublicIp(_Wire):
    id: str = ""
    address: str = ""
    dynamic: bool = False


class Ipv6(_Wire):
    address: str = ""


class VolumeRef(_Wire):
    id: str
    name: str = ""
    volume_type: str = ""
    size: int = 0


class Server(_Wire):
    id: str
    name: str
    state: str
    commercial_type: str = ""
    tags: list[str] = Field(default_factory=list)
    creation_date: str | None = None
    public_ip: PublicIp | None = None
    ipv6: Ipv6 | None = None
    volumes: dict[str, VolumeRef] = Field(default_factory=dict)
    zone: str = ""
    state_detail: str = ""
    project: str = ""
    arch: str = "x86_64"


class ServerEnvelope(_Wire):
    server: Server


class ServerList(_Wire):
    servers: list[Server] = Field(default_factory=list)


class VolumesConstraint(_Wire):
    min_size: int = 0
    max_size: int = 0


class ServerType(_Wire):
    """``/products/servers`` entry: RAM in bytes, prices in EUR (JSON numbers)."""

    hourly_price: Decimal
    monthly_price: Decimal | None = None
    ncpus: int
    ram: int
    arch: str = "x86_64"
    gpu: int | None = None
    baremetal: bool = False
    volumes_constraint: VolumesConstraint = Field(default_factory=VolumesConstraint)


class ServerTypes(_Wire):
    servers: dict[str, ServerType] = Field(default_factory=dict)


class Availability(_Wire):
    availability: str = "available"


class AvailabilityList(_Wire):
    servers: dict[str, Availability] = Field(default_factory=dict)


class SecurityGroup(_Wire):
    id: str
    name: str
    project: str = ""
    inbound_default_policy: str = "accept"


class SecurityGroupList(_Wire):
    security_groups: list[SecurityGroup] = Field(default_factory=list)


class SecurityGroupEnvelope(_Wire):
    security_group: SecurityGroup


class Task(_Wire):
    id: str = ""
    description: str = ""
    status: str = ""


class ActionResult(_Wire):
    task: Task = Field(default_factory=Task)


class ErrorBody(_Wire):
    """Error JSON: ``{"type", "message", …}`` plus type-specific fields."""

    type: str = ""
    message: str = ""
    details: list[dict[str, Any]] | None = None
    fields: dict[str, list[str]] | None = None
    resource: str = ""
    help_message: str = ""


class Snapshot(_Wire):
    """A volume snapshot: ``size`` in bytes (what is billed), ``state`` snapshotting → available."""

    id: str
    name: str = ""
    state: str = ""
    size: int = 0
    volume_type: str = ""
    tags: list[str] = Field(default_factory=list)
    zone: str = ""
    creation_date: str | None = None


class SnapshotEnvelope(_Wire):
    snapshot: Snapshot


class VolumeSummary(_Wire):
    id: str
    name: str = ""
    size: int = 0
    volume_type: str = ""


class Image(_Wire):
    """An image: its volumes are snapshots (``root_volume`` + ``extra_volumes``)."""

    id: str
    name: str = ""
    state: str = ""
    arch: str = "x86_64"
    root_volume: VolumeSummary | None = None
    extra_volumes: dict[str, VolumeSummary] = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list)
    project: str = ""
    public: bool = False
    zone: str = ""
    creation_date: str | None = None

    @property
    def snapshot_ids(self) -> list[str]:
        volumes = [self.root_volume, *self.extra_volumes.values()]
        return [v.id for v in volumes if v is not None]

    @property
    def size_bytes(self) -> int:
        volumes = [self.root_volume, *self.extra_volumes.values()]
        return sum(v.size for v in volumes if v is not None)


class ImageEnvelope(_Wire):
    image: Image


class ImageList(_Wire):
    images: list[Image] = Field(default_factory=list)
