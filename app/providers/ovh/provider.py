"""OVHcloud Public Cloud provider: signed API, operations to poll, names standing in for labels."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, ClassVar

import httpx

from app.domain import (
    LABEL_MANAGED_BY,
    LABEL_MANAGED_BY_VALUE,
    LABEL_WORKSPACE,
    AccountInfo,
    CreateServerRequest,
    Price,
    Region,
    Server,
    ServerStatus,
    Size,
)
from app.errors import ActionFailed, AuthError, InvalidInput, NotFound, ProviderUnavailable
from app.providers._http import ApiClient, RateLimitState
from app.providers._polling import Backoff, poll_until
from app.providers.base import BillingRule, Capabilities, Provider, ProviderOption
from app.providers.ovh import models as m
from app.providers.ovh.client import (
    CATALOG_PRICE_SCALE,
    ENDPOINTS,
    KIND,
    SUBSIDIARIES,
    OvhClient,
    SigningTransport,
    parse_error,
)
from app.providers.ovh.images import OvhImagesMixin, is_uuid

#: Instances have no labels or tags: Bivy's are named ``bivy-<workspace>``.
NAME_PREFIX = "bivy-"
#: Nova caps user data at 65,535 bytes once base64-encoded: 49,149 raw bytes.
USER_DATA_LIMIT = 49149
DEFAULT_IMAGE_NAME = "Ubuntu 24.04"
HOURS_PER_MONTH = Decimal(730)
CREATE_TIMEOUT = 600.0

#: Region code prefix → (city, ISO country), for the region picker.
_CITIES = {
    "GRA": ("Gravelines", "FR"), "SBG": ("Strasbourg", "FR"), "RBX": ("Roubaix", "FR"),
    "BHS": ("Beauharnois", "CA"), "DE": ("Frankfurt", "DE"), "UK": ("London", "GB"),
    "WAW": ("Warsaw", "PL"), "SGP": ("Singapore", "SG"), "SYD": ("Sydney", "AU"),
}  # fmt: skip

STATUS_MAP = {
    "BUILD": ServerStatus.INITIALIZING,
    "BUILDING": ServerStatus.INITIALIZING,
    "ACTIVE": ServerStatus.RUNNING,
    "REBOOT": ServerStatus.STARTING,
    "HARD_REBOOT": ServerStatus.STARTING,
    "SHUTOFF": ServerStatus.OFF,
    "STOPPED": ServerStatus.OFF,
    "SHELVED": ServerStatus.OFF,
    "SHELVED_OFFLOADED": ServerStatus.OFF,
    "SUSPENDED": ServerStatus.OFF,
    "PAUSED": ServerStatus.OFF,
    "DELETING": ServerStatus.DELETING,
    "DELETED": ServerStatus.DELETING,
    "SOFT_DELETED": ServerStatus.DELETING,
    "MIGRATING": ServerStatus.MIGRATING,
    "RESIZE": ServerStatus.MIGRATING,
    "REBUILD": ServerStatus.REBUILDING,
}


def instance_name(request: CreateServerRequest) -> str:
    """``bivy-<workspace>``: the name carries the only label OVH instances can hold."""
    workspace = request.labels.get(LABEL_WORKSPACE)
    if workspace:
        return NAME_PREFIX + workspace
    return request.name if request.name.startswith(NAME_PREFIX) else NAME_PREFIX + request.name


def labels_from_name(name: str) -> dict[str, str]:
    if not name.startswith(NAME_PREFIX) or len(name) == len(NAME_PREFIX):
        return {}
    return {
        LABEL_MANAGED_BY: LABEL_MANAGED_BY_VALUE,
        LABEL_WORKSPACE: name[len(NAME_PREFIX) :],
    }


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def instance_to_server(instance: m.Instance, flavors: Mapping[str, str] | None = None) -> Server:
    public = [a for a in instance.ipAddresses if a.type == "public"]
    return Server(
        provider=KIND,
        id=instance.id,
        name=instance.name,
        status=STATUS_MAP.get(instance.status, ServerStatus.UNKNOWN),
        region=instance.region,
        size=(flavors or {}).get(instance.flavorId, instance.flavorId),
        ipv4=next((a.ip for a in public if a.version == 4), None),
        ipv6=next((a.ip for a in public if a.version == 6), None),
        created_at=_parse_time(instance.created),
        labels=labels_from_name(instance.name),
    )


def catalog_prices(catalog: m.Catalog) -> dict[str, tuple[str, Decimal]]:
    """planCode → (interval unit, price) from the public catalogue."""
    prices: dict[str, tuple[str, Decimal]] = {}
    for addon in catalog.addons:
        for pricing in addon.pricings:
            if pricing.intervalUnit in ("hour", "month"):
                amount = Decimal(pricing.price) / CATALOG_PRICE_SCALE
                prices.setdefault(addon.planCode, (pricing.intervalUnit, amount))
    return prices


def flavor_price(
    flavor: m.Flavor, prices: Mapping[str, tuple[str, Decimal]], currency: str
) -> Price | None:
    hourly_code = flavor.planCodes.hourly
    if not hourly_code or hourly_code not in prices:
        return None
    hourly = prices[hourly_code][1].quantize(Decimal("0.00001"), ROUND_HALF_UP)
    monthly_code = flavor.planCodes.monthly
    if monthly_code and monthly_code in prices and prices[monthly_code][0] == "month":
        monthly = prices[monthly_code][1]
    else:
        monthly = hourly * HOURS_PER_MONTH
    return Price(
        currency=currency, hourly=hourly, monthly=monthly.quantize(Decimal("0.01"), ROUND_HALF_UP)
    )


SELF_DELETE_SCRIPT = r"""#!/bin/sh
# Delete this instance through the OVHcloud API with a signed request:
# X-Ovh-Signature = "$1$" + sha1(AS+CK+METHOD+URL+BODY+TIMESTAMP), timestamp from /auth/time.
# Secrets come from the root-only env file; printf is a shell builtin, so they never reach a
# command line, and curl reads its headers on stdin (-K -).
set -eu
: "${BIVY_OVH_APPLICATION_KEY:?BIVY_OVH_APPLICATION_KEY is not set}"
: "${BIVY_OVH_APPLICATION_SECRET:?BIVY_OVH_APPLICATION_SECRET is not set}"
: "${BIVY_OVH_CONSUMER_KEY:?BIVY_OVH_CONSUMER_KEY is not set}"
: "${BIVY_OVH_PROJECT_ID:?BIVY_OVH_PROJECT_ID is not set}"
meta="${BIVY_METADATA_URL:-http://169.254.169.254/openstack/latest}"
api="${BIVY_API_URL:-${BIVY_OVH_ENDPOINT_URL:-https://eu.api.ovh.com/1.0}}"
id=$(curl -fsS --max-time 10 "$meta/meta_data.json" |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["uuid"])')
case "$id" in
  ''|*[!0-9a-f-]*) echo "bivy: no instance id from the metadata service" >&2; exit 1 ;;
esac
ts=$(curl -fsS --max-time 10 "$api/auth/time")
case "$ts" in
  ''|*[!0-9]*) echo "bivy: no time from $api/auth/time" >&2; exit 1 ;;
esac
url="$api/cloud/project/$BIVY_OVH_PROJECT_ID/instance/$id"
sig=$(printf '%s+%s+%s+%s+%s+%s' "$BIVY_OVH_APPLICATION_SECRET" "$BIVY_OVH_CONSUMER_KEY" \
  DELETE "$url" "" "$ts" | sha1sum | cut -d' ' -f1)
code=$({
  printf 'header = "X-Ovh-Application: %s"\n' "$BIVY_OVH_APPLICATION_KEY"
  printf 'header = "X-Ovh-Consumer: %s"\n' "$BIVY_OVH_CONSUMER_KEY"
  printf 'header = "X-Ovh-Timestamp: %s"\n' "$ts"
  printf 'header = "X-Ovh-Signature: %s"\n' "\$1\$$sig"
} | curl -sS -K - -o /dev/null -w '%{http_code}' --max-time 30 -X DELETE "$url") || code=000
case "$code" in
  200|204|404) exit 0 ;;
  *) echo "bivy: OVHcloud answered HTTP $code to the delete" >&2; exit 1 ;;
esac
"""


class OvhProvider(OvhImagesMixin, Provider):
    """OVHcloud Public Cloud instances of one project.

    Attributes:
        client: the REST client (signed requests).
        project_id, region, endpoint: from the account's options.
        sleep: the wait between operation polls (tests inject a fast one).
    """

    kind: ClassVar[str] = KIND
    display_name: ClassVar[str] = "OVHcloud"
    capabilities: ClassVar[Capabilities] = Capabilities(
        user_data_limit=USER_DATA_LIMIT,
        user_data_gzip_base64=False,
        firewall=False,
        labels=False,
        unique_names=False,
        rate_limit_per_hour=0,
        billing=BillingRule(granularity="hour", billed_when_off=True, monthly_cap=False),
        metadata_url="http://169.254.169.254/openstack/latest",
        snapshots=True,
    )
    options: ClassVar[tuple[ProviderOption, ...]] = (
        ProviderOption(
            key="application_key",
            label="Application key",
            pattern=r"^[A-Za-z0-9]{8,64}$",
            help="From https://eu.api.ovh.com/createApp (or the ca/us equivalent).",
            env=("BIVY_OVH_APPLICATION_KEY", "OVH_APPLICATION_KEY"),
        ),
        ProviderOption(
            key="application_secret",
            label="Application secret",
            secret=True,
            pattern=r"^[A-Za-z0-9]{8,64}$",
            env=("BIVY_OVH_APPLICATION_SECRET", "OVH_APPLICATION_SECRET"),
        ),
        ProviderOption(
            key="consumer_key",
            label="Consumer key",
            secret=True,
            pattern=r"^[A-Za-z0-9]{8,64}$",
            help="Requested with access rules limited to /cloud/project/<project>/*.",
            env=("BIVY_OVH_CONSUMER_KEY", "OVH_CONSUMER_KEY"),
        ),
        ProviderOption(
            key="delete_consumer_key",
            label="Self-delete consumer key (optional)",
            secret=True,
            required=False,
            pattern=r"^$|^[A-Za-z0-9]{8,64}$",
            help=(
                "A second consumer key whose only rule is DELETE "
                "/cloud/project/<project>/instance/*, given to the VM for its self-delete."
            ),
        ),
        ProviderOption(
            key="project_id",
            label="Project ID",
            pattern=r"^[0-9a-f]{32}$",
            help="The Public Cloud project (serviceName), 32 hex characters.",
            env=("BIVY_OVH_PROJECT_ID", "OVH_CLOUD_PROJECT_SERVICE"),
        ),
        ProviderOption(
            key="region",
            label="Default region",
            required=False,
            default="GRA11",
            pattern=r"^[A-Z]{2,5}[0-9]{0,2}(-[A-Z0-9-]+)?$",
            env=("BIVY_OVH_REGION",),
        ),
        ProviderOption(
            key="endpoint",
            label="API endpoint",
            required=False,
            default="eu",
            pattern=r"^(eu|ca|us)$",
            help="eu (OVHcloud Europe), ca (OVHcloud Canada) or us (OVHcloud US).",
            env=("BIVY_OVH_ENDPOINT",),
        ),
    )
    token_guidance: ClassVar[str] = (
        "Create an application at https://eu.api.ovh.com/createApp, then request a consumer "
        "key (POST /auth/credential) with access rules limited to the project: "
        "GET /cloud/project/<project>/*, POST /cloud/project/<project>/region/*/instance, "
        "POST /cloud/project/<project>/sshkey, DELETE /cloud/project/<project>/instance/*, "
        "and for prebuilds POST /cloud/project/<project>/instance/*/stop, "
        "POST /cloud/project/<project>/instance/*/snapshot and "
        "DELETE /cloud/project/<project>/snapshot/*; "
        "validate it at the returned validationUrl and give it an expiry. For the VM's "
        "self-delete, request a second consumer key with only "
        "DELETE /cloud/project/<project>/instance/*. Prices come from the public catalogue, "
        "which needs no rule. Instances carry no labels: Bivy names them bivy-<workspace> "
        "and keeps the rest in its local registry."
    )
    default_region: ClassVar[str] = "GRA11"
    default_size: ClassVar[str] = "d2-4"

    def __init__(
        self,
        options: Mapping[str, str],
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._ak = options.get("application_key", "")
        self._as = options.get("application_secret", "")
        self._ck = options.get("consumer_key", "")
        self._delete_ck = options.get("delete_consumer_key", "") or self._ck
        self.project_id = options.get("project_id", "")
        self.region = options.get("region") or self.default_region
        self.endpoint = options.get("endpoint") or "eu"
        if self.endpoint not in ENDPOINTS:
            raise InvalidInput(
                f"Unknown OVHcloud endpoint {self.endpoint!r}",
                hint="Use eu, ca or us",
                provider=KIND,
            )
        self.endpoint_url = ENDPOINTS[self.endpoint]
        base_url = os.environ.get("BIVY_OVH_API_URL") or self.endpoint_url
        self.signer = SigningTransport(
            transport or httpx.AsyncHTTPTransport(),
            base_url=base_url,
            application_key=self._ak,
            application_secret=self._as,
            consumer_key=self._ck,
        )
        self.client = OvhClient(
            ApiClient(
                provider=KIND,
                base_url=base_url,
                secrets=(self._as, self._ck, self._delete_ck),
                transport=self.signer,
                parse_error=parse_error,
                sleep=sleep,
            ),
            self.project_id,
        )
        self.sleep = sleep
        self._flavor_names: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"OvhProvider(project={self.project_id!r}, endpoint={self.endpoint!r})"

    @staticmethod
    def access_rules(project_id: str, *, self_delete: bool = False) -> list[dict[str, str]]:
        """The ``accessRules`` to request a consumer key with (``POST /auth/credential``).

        Bivy's own key may read the project, create instances and SSH keys, delete instances,
        and for prebuilds stop and snapshot instances and delete snapshots; the VM's
        self-delete key may only delete instances of the project.
        """
        project = f"/cloud/project/{project_id}"
        delete = {"method": "DELETE", "path": f"{project}/instance/*"}
        if self_delete:
            return [delete]
        return [
            {"method": "GET", "path": project},
            {"method": "GET", "path": f"{project}/*"},
            {"method": "POST", "path": f"{project}/region/*/instance"},
            {"method": "POST", "path": f"{project}/sshkey"},
            delete,
            {"method": "POST", "path": f"{project}/instance/*/stop"},
            {"method": "POST", "path": f"{project}/instance/*/snapshot"},
            {"method": "DELETE", "path": f"{project}/snapshot/*"},
        ]

    @property
    def rate_limit(self) -> RateLimitState:
        """The last rate-limit headers seen (read by the refresh scheduler)."""
        return self.client.api.rate_limit

    def _check(self) -> None:
        if not (self._ak and self._as and self._ck):
            raise AuthError(
                "The OVHcloud account needs an application key, application secret and "
                "consumer key",
                provider=KIND,
            )
        if not self.project_id:
            raise InvalidInput("The OVHcloud account has no project ID", provider=KIND)

    async def validate(self) -> AccountInfo:
        self._check()
        project = await self.client.project_info()
        return AccountInfo(
            provider=KIND,
            description=project.description or f"project {self.project_id}",
            currency="",
        )

    async def regions(self) -> list[Region]:
        self._check()
        regions = []
        for code in sorted(await self.client.regions()):
            city, country = _CITIES.get(code.rstrip("0123456789").split("-")[0], ("", ""))
            regions.append(
                Region(
                    id=code, name=f"{city} ({code})" if city else code, city=city, country=country
                )
            )
        return regions

    async def sizes(self, region: str | None = None) -> list[Size]:
        self._check()
        where = region or self.region
        flavors, catalog = await asyncio.gather(
            self.client.flavors(where), self.client.catalog(SUBSIDIARIES[self.endpoint])
        )
        prices = catalog_prices(catalog)
        currency = catalog.locale.currencyCode
        sizes: dict[str, Size] = {}
        for flavor in flavors:
            self._flavor_names[flavor.id] = flavor.name
            if not flavor.available or flavor.osType != "linux" or flavor.name in sizes:
                continue
            price = flavor_price(flavor, prices, currency)
            sizes[flavor.name] = Size(
                name=flavor.name,
                description=flavor.type,
                cores=flavor.vcpus,
                memory_gb=round(flavor.ram / 1000, 2),
                disk_gb=flavor.disk,
                cpu_type="shared" if flavor.name.startswith(("d2-", "s1-")) else "dedicated",
                prices={flavor.region: price} if price else {},
            )
        return sorted(sizes.values(), key=lambda s: (s.cores, s.memory_gb, s.name))

    async def list(self) -> list[Server]:
        self._check()
        return [
            instance_to_server(i, self._flavor_names)
            for i in await self.client.instances()
            if i.name.startswith(NAME_PREFIX)
        ]

    async def get(self, server_id: str) -> Server:
        self._check()
        return instance_to_server(await self.client.instance(server_id), self._flavor_names)

    async def _ssh_key_name(self, public_key: str) -> str:
        wanted = " ".join(public_key.split()[:2])
        for key in await self.client.ssh_keys():
            if " ".join(key.publicKey.split()[:2]) == wanted:
                return key.name
        digest = hashlib.sha256(wanted.encode()).hexdigest()[:12]
        return (await self.client.create_ssh_key(f"bivy-{digest}", public_key)).name

    async def create(self, request: CreateServerRequest) -> Server:
        self._check()
        size = len(request.user_data.encode("utf-8"))
        if size > USER_DATA_LIMIT:
            raise InvalidInput(
                f"The user data is {size} bytes; OVHcloud accepts at most {USER_DATA_LIMIT}",
                provider=KIND,
            )
        region = request.region or self.region
        flavors = await self.client.flavors(region)
        flavor = next((f for f in flavors if f.name == request.size), None)
        if flavor is None:
            raise InvalidInput(
                f"OVHcloud has no flavor {request.size!r} in {region}", provider=KIND
            )
        if not flavor.available:
            raise ProviderUnavailable(
                f"OVHcloud cannot provide {request.size} in {region} right now",
                hint="Pick another flavor or region",
                provider=KIND,
            )
        image_id = await self._image_id(request.image or DEFAULT_IMAGE_NAME, region)
        key_name = await self._ssh_key_name(request.ssh_public_key)
        body: dict[str, Any] = {
            "name": instance_name(request),
            "flavor": {"id": flavor.id},
            "bootFrom": {"imageId": image_id},
            "sshKey": {"name": key_name},
            "userData": request.user_data,
            "network": {"public": True},
            "billingPeriod": "hourly",
        }
        operation = await self.client.create_instance(region, body)
        done = await poll_until(
            lambda: self.client.operation(operation.id),
            _operation_done,
            timeout=CREATE_TIMEOUT,
            backoff=Backoff(initial=1.0, factor=1.5, maximum=5.0),
            sleep=self.sleep,
            what="OVHcloud to create the instance",
        )
        instance_id = done.resourceId or next(
            (s.resourceId for s in done.subOperations if s.resourceId), None
        )
        if not instance_id:
            raise ActionFailed("OVHcloud finished the create without an instance id", provider=KIND)
        self._flavor_names[flavor.id] = flavor.name
        return instance_to_server(await self.client.instance(instance_id), self._flavor_names)

    async def _image_id(self, image: str, region: str) -> str:
        """The id to boot from: a prebuild snapshot's id as given (it must be in ``region``),
        else the public image of that name in ``region``."""
        if is_uuid(image):
            snapshot = await self.client.snapshot(image)
            if snapshot.region and snapshot.region != region:
                raise InvalidInput(
                    f"The prebuild snapshot is in {snapshot.region}, the instance would be in "
                    f"{region}",
                    hint=f"Create the workspace in {snapshot.region}, or prebuild in {region}",
                    provider=KIND,
                )
            return snapshot.id
        found = next((i for i in await self.client.images(region) if i.name == image), None)
        if found is None:
            raise InvalidInput(f"OVHcloud has no image {image!r} in {region}", provider=KIND)
        return found.id

    async def _catalog_prices(self) -> tuple[str, dict[str, tuple[str, Decimal]]]:
        catalog = await self.client.catalog(SUBSIDIARIES[self.endpoint])
        return catalog.locale.currencyCode, catalog_prices(catalog)

    async def delete(self, server_id: str) -> None:
        self._check()
        try:
            await self.client.delete_instance(server_id)
        except NotFound:
            return

    def self_delete_script(self) -> str:
        return SELF_DELETE_SCRIPT

    def self_delete_env(self) -> dict[str, str]:
        return {
            "BIVY_OVH_APPLICATION_KEY": self._ak,
            "BIVY_OVH_APPLICATION_SECRET": self._as,
            "BIVY_OVH_CONSUMER_KEY": self._delete_ck,
            "BIVY_OVH_PROJECT_ID": self.project_id,
            "BIVY_OVH_ENDPOINT_URL": self.endpoint_url,
        }

    async def aclose(self) -> None:
        await self.client.api.aclose()


def _operation_done(operation: m.Operation) -> bool:
    if operation.status == "in-error":
        raise ActionFailed(
            f"OVHcloud could not create the instance (operation {operation.id} ended in error)",
            provider=KIND,
            code="in-error",
        )
    return operation.status == "completed"
