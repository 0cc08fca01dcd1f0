"""OVHcloud API 1.0 wire models (Public Cloud project, operations, public catalogue)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


# Field names are the API's own camelCase, so the models read the JSON as it is.
class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class IpAddress(_Wire):
    ip: str
    type: str = "public"
    version: int = 4


class Instance(_Wire):
    id: str
    name: str
    status: str
    region: str = ""
    flavorId: str = ""
    planCode: str | None = None
    ipAddresses: list[IpAddress] = Field(default_factory=list)
    created: str | None = None


class PlanCodes(_Wire):
    hourly: str | None = None
    monthly: str | None = None


class Flavor(_Wire):
    """``/cloud/project/{sn}/flavor`` entry: RAM in MB, disk in GB."""

    id: str
    name: str
    region: str
    vcpus: int
    ram: int
    disk: int = 0
    osType: str = "linux"
    available: bool = True
    type: str = ""
    planCodes: PlanCodes = Field(default_factory=PlanCodes)


class Image(_Wire):
    id: str
    name: str
    region: str = ""
    type: str = "linux"
    status: str = "active"


class SshKey(_Wire):
    id: str
    name: str
    publicKey: str = ""


class SubOperation(_Wire):
    id: str = ""
    action: str = ""
    status: str = ""
    resourceId: str | None = None


class Operation(_Wire):
    """An asynchronous project operation; ``status``: created, in-progress, completed, in-error."""

    id: str
    action: str = ""
    status: str = ""
    resourceId: str | None = None
    subOperations: list[SubOperation] = Field(default_factory=list)


class Project(_Wire):
    project_id: str = ""
    description: str = ""
    status: str = "ok"


class CatalogPricing(_Wire):
    price: int
    intervalUnit: str = ""
    capacities: list[str] = Field(default_factory=list)


class CatalogAddon(_Wire):
    planCode: str
    pricings: list[CatalogPricing] = Field(default_factory=list)


class CatalogLocale(_Wire):
    currencyCode: str = "EUR"
    subsidiary: str = ""


class Catalog(_Wire):
    """``/order/catalog/public/cloud``: prices are integers in 1e-8 of the currency unit."""

    locale: CatalogLocale = Field(default_factory=CatalogLocale)
    addons: list[CatalogAddon] = Field(default_factory=list)


class ErrorBody(_Wire):
    """Error JSON: ``{"message", "errorCode"?, "class"?}`` (query id in ``X-OVH-QUERYID``)."""

    message: str = ""
    errorCode: str = ""
    class_: str = Field(default="", alias="class")


class Snapshot(_Wire):
    """``/cloud/project/{sn}/snapshot`` entry (an OpenStack image made from an instance):
    ``status`` queued → saving → active; ``size`` in GB once written (0 or absent before)."""

    id: str
    name: str
    region: str = ""
    status: str = ""
    size: float | None = None
    minDisk: int | None = None
    creationDate: str | None = None
    planCode: str | None = None
    visibility: str = "private"
