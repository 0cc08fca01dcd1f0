"""Hetzner Cloud wire models: the API's JSON as it is, tolerant of legacy and odd shapes."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

# "2016-01-30T23:50+00:00" (no seconds, in hcloud-python's data), "…Z", or a space for the "T".
_NO_SECONDS = re.compile(r"^(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2})(Z|[+-]\d{2}:?\d{2})?$")


def _timestamp(value: Any) -> Any:
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        m = _NO_SECONDS.match(text)
        if m:
            text = f"{m.group(1)}T{m.group(2)}:00{m.group(3) or ''}"
        if text.endswith("Z"):
            text = text[:-1] + "+00:00"
        parsed = datetime.fromisoformat(text.replace(" ", "T", 1))
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


#: A timestamp the API may write with or without seconds; always timezone-aware.
Timestamp = Annotated[datetime, BeforeValidator(_timestamp)]


class Wire(BaseModel):
    """Base of the wire models: unknown fields are ignored (the API grows), nothing is coerced."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class Money(Wire):
    """A price as the API writes it: decimal strings, without (net) and with VAT (gross)."""

    net: Decimal
    gross: Decimal


class ServerTypePrice(Wire):
    location: str
    price_hourly: Money
    price_monthly: Money
    included_traffic: int | None = None
    price_per_tb_traffic: Money | None = None


class Deprecation(Wire):
    announced: Timestamp | None = None
    unavailable_after: Timestamp | None = None


class ServerTypeLocation(Wire):
    id: int | None = None
    name: str
    available: bool = True
    recommended: bool = False
    deprecation: Deprecation | None = None


class ServerType(Wire):
    """A server type; legacy ones (cx11) lack ``category``, ``locations`` and ``architecture``."""

    id: int
    name: str
    description: str = ""
    cores: int
    memory: float
    disk: int
    deprecated: bool | None = None
    prices: list[ServerTypePrice] = Field(default_factory=list)
    storage_type: str | None = None
    cpu_type: str = "shared"
    category: str | None = None
    architecture: str = "x86"
    deprecation: Deprecation | None = None
    locations: list[ServerTypeLocation] | None = None

    @property
    def is_deprecated(self) -> bool:
        return bool(self.deprecated) or self.deprecation is not None

    def available_in(self, location: str) -> bool:
        """Orderable in ``location`` (legacy types without a locations list: where priced)."""
        if self.locations is None:
            return any(p.location == location for p in self.prices)
        return any(loc.name == location and loc.available for loc in self.locations)


class Location(Wire):
    id: int
    name: str
    description: str = ""
    country: str = ""
    city: str = ""
    latitude: float | None = None
    longitude: float | None = None
    network_zone: str = ""


class Datacenter(Wire):
    id: int
    name: str
    description: str = ""
    location: Location | None = None


class ImageCreatedFrom(Wire):
    id: int
    name: str = ""


class Image(Wire):
    """An image; for a snapshot ``image_size`` (GB, what is billed) is null while creating."""

    id: int
    type: str
    status: str = "available"
    name: str | None = None
    description: str = ""
    architecture: str = "x86"
    os_flavor: str | None = None
    os_version: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    created: Timestamp | None = None
    deprecated: Timestamp | None = None
    image_size: float | None = None
    disk_size: float | None = None
    created_from: ImageCreatedFrom | None = None

    @field_validator("labels", mode="before")
    @classmethod
    def _labels(cls, value: Any) -> Any:
        return {} if value is None else value


class IPv4(Wire):
    id: int | None = None
    ip: str
    blocked: bool = False
    dns_ptr: str | None = None


class IPv6(Wire):
    id: int | None = None
    ip: str
    blocked: bool = False


class PublicNetFirewall(Wire):
    id: int
    status: str = "applied"


class PublicNet(Wire):
    ipv4: IPv4 | None = None
    ipv6: IPv6 | None = None
    floating_ips: list[int] = Field(default_factory=list)
    firewalls: list[PublicNetFirewall] = Field(default_factory=list)


class Server(Wire):
    """A server. ``status`` stays a string so a new state never breaks parsing."""

    id: int
    name: str
    status: str
    created: Timestamp | None = None
    public_net: PublicNet = Field(default_factory=PublicNet)
    server_type: ServerType
    location: Location | None = None
    datacenter: Datacenter | None = None
    image: Image | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    locked: bool = False
    primary_disk_size: int | None = None

    @field_validator("labels", mode="before")
    @classmethod
    def _labels(cls, value: Any) -> Any:
        return {} if value is None else value

    @property
    def location_name(self) -> str:
        if self.location is not None:
            return self.location.name
        if self.datacenter is not None and self.datacenter.location is not None:
            return self.datacenter.location.name
        return ""


class ActionError(Wire):
    code: str = ""
    message: str = ""


class ActionResource(Wire):
    id: int
    type: str


class Action(Wire):
    id: int
    command: str
    status: str
    progress: int = 0
    started: Timestamp | None = None
    finished: Timestamp | None = None
    resources: list[ActionResource] = Field(default_factory=list)
    error: ActionError | None = None


class CreateServerResponse(Wire):
    server: Server
    action: Action
    next_actions: list[Action] = Field(default_factory=list)
    #: Only set when no SSH key was given; Bivy always gives one and never keeps this.
    root_password: str | None = Field(default=None, repr=False)


class CreateImageResponse(Wire):
    """``POST /servers/{id}/actions/create_image``: the new image (``creating``) and its action."""

    image: Image
    action: Action


class SSHKey(Wire):
    id: int
    name: str
    fingerprint: str
    public_key: str
    labels: dict[str, str] = Field(default_factory=dict)
    created: Timestamp | None = None


class FirewallRule(Wire):
    direction: str
    protocol: str
    port: str | None = None
    source_ips: list[str] = Field(default_factory=list)
    destination_ips: list[str] = Field(default_factory=list)
    description: str | None = None


class Firewall(Wire):
    id: int
    name: str
    labels: dict[str, str] = Field(default_factory=dict)
    rules: list[FirewallRule] = Field(default_factory=list)
    created: Timestamp | None = None


class PricingServerType(Wire):
    id: int | None = None
    name: str
    prices: list[ServerTypePrice] = Field(default_factory=list)


class PricingImage(Wire):
    """``pricing.image``: what a snapshot costs per GB (``image_size``) and month."""

    price_per_gb_month: Money


class Pricing(Wire):
    """``GET /pricing``: the project owner's currency and VAT rate, and every price."""

    currency: str
    vat_rate: Decimal | None = None
    server_types: list[PricingServerType] = Field(default_factory=list)
    image: PricingImage | None = None


class Pagination(Wire):
    page: int = 1
    per_page: int = 25
    previous_page: int | None = None
    next_page: int | None = None
    last_page: int | None = None
    total_entries: int | None = None


class Meta(Wire):
    pagination: Pagination | None = None


class ErrorBody(Wire):
    code: str = ""
    message: str = ""
    details: dict[str, Any] | None = None
