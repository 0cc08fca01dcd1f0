"""DigitalOcean provider: droplets mapped to Bivy's servers, tags standing in for labels."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import os
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, ClassVar

import httpx

from app.domain import (
    AccountInfo,
    CreateServerRequest,
    Price,
    Region,
    Server,
    ServerStatus,
    Size,
)
from app.errors import AuthError, InvalidInput, NotFound
from app.providers._http import ApiClient, RateLimitState
from app.providers.base import BillingRule, Capabilities, Provider, ProviderOption
from app.providers.digitalocean import models as m
from app.providers.digitalocean.client import (
    DEFAULT_API_URL,
    KIND,
    DigitalOceanClient,
    parse_error,
)
from app.providers.digitalocean.images import DigitalOceanImagesMixin
from app.providers.digitalocean.tags import MANAGED_TAG, labels_to_tags, tags_to_labels

__all__ = ["MANAGED_TAG", "DigitalOceanProvider", "labels_to_tags", "tags_to_labels"]

#: DigitalOcean's documented cap: "plain text and may not exceed 64 KiB".
USER_DATA_LIMIT = 64 * 1024
DEFAULT_IMAGE = "ubuntu-24-04-x64"

#: Region slug prefix → ISO country, for the region picker.
_COUNTRIES = {
    "nyc": "US", "sfo": "US", "atl": "US", "ams": "NL", "sgp": "SG", "lon": "GB",
    "fra": "DE", "tor": "CA", "blr": "IN", "syd": "AU",
}  # fmt: skip

STATUS_MAP = {
    "new": ServerStatus.INITIALIZING,
    "active": ServerStatus.RUNNING,
    "off": ServerStatus.OFF,
    "archive": ServerStatus.DELETING,
}


def ssh_md5_fingerprint(public_key: str) -> str:
    """The MD5 fingerprint DigitalOcean identifies SSH keys by (``aa:bb:…``)."""
    parts = public_key.split()
    if len(parts) < 2:
        raise InvalidInput("The SSH public key is not in OpenSSH format", provider=KIND)
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput("The SSH public key is not valid base64", provider=KIND) from None
    digest = hashlib.md5(blob, usedforsecurity=False).hexdigest()
    return ":".join(digest[i : i + 2] for i in range(0, 32, 2))


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _cpu_type(slug: str) -> str:
    # Basic droplets ("s-…") share CPUs; CPU-optimised, general-purpose, memory- and
    # storage-optimised plans ("c-", "g-", "gd-", "m-", "so-") have dedicated vCPUs.
    return "shared" if slug.startswith("s-") else "dedicated"


def _price(size: m.Size) -> Price:
    # JSON floats arrive as Decimal via str(); round away float noise (0.00743999984…).
    hourly = Decimal(str(size.price_hourly)).quantize(Decimal("0.00001"), ROUND_HALF_UP)
    monthly = Decimal(str(size.price_monthly)).quantize(Decimal("0.01"), ROUND_HALF_UP)
    return Price(currency="USD", hourly=hourly, monthly=monthly, includes_vat=False)


def droplet_to_server(droplet: m.Droplet) -> Server:
    """Map a wire droplet to Bivy's ``Server``."""
    ipv4 = next((n.ip_address for n in droplet.networks.v4 if n.type == "public"), None)
    ipv6 = next((n.ip_address for n in droplet.networks.v6 if n.type == "public"), None)
    return Server(
        provider=KIND,
        id=str(droplet.id),
        name=droplet.name,
        status=STATUS_MAP.get(droplet.status, ServerStatus.UNKNOWN),
        region=droplet.region.slug if droplet.region else "",
        size=droplet.size_slug or (droplet.size.slug if droplet.size else ""),
        ipv4=ipv4,
        ipv6=ipv6,
        created_at=_parse_time(droplet.created_at),
        labels=tags_to_labels(droplet.tags),
        price=_price(droplet.size) if droplet.size else None,
    )


def size_to_domain(size: m.Size) -> Size:
    price = _price(size)
    return Size(
        name=size.slug,
        description=size.description,
        cores=size.vcpus,
        memory_gb=size.memory / 1024,
        disk_gb=size.disk,
        cpu_type=_cpu_type(size.slug),
        architecture="x86",
        prices={region: price for region in size.regions},
    )


def _droplet_id(server_id: str) -> int:
    try:
        value = int(server_id)
    except ValueError:
        raise NotFound(f"DigitalOcean: no droplet with id {server_id!r}", provider=KIND) from None
    if value < 1:
        raise NotFound(f"DigitalOcean: no droplet with id {server_id!r}", provider=KIND)
    return value


def _image_ref(image: str) -> int | str:
    return int(image) if image.isdigit() else image


SELF_DELETE_SCRIPT = r"""#!/bin/sh
# Delete this droplet through the DigitalOcean API. The token comes from the root-only env
# file and reaches curl on stdin (-K -), never on the command line.
set -eu
: "${BIVY_DIGITALOCEAN_TOKEN:?BIVY_DIGITALOCEAN_TOKEN is not set}"
meta="${BIVY_METADATA_URL:-http://169.254.169.254/metadata/v1}"
api="${BIVY_API_URL:-https://api.digitalocean.com}"
id=$(curl -fsS --max-time 10 "$meta/id")
case "$id" in
  ''|*[!0-9]*) echo "bivy: no droplet id from the metadata service" >&2; exit 1 ;;
esac
code=$(printf 'header = "Authorization: Bearer %s"\n' "$BIVY_DIGITALOCEAN_TOKEN" |
  curl -sS -K - -o /dev/null -w '%{http_code}' --max-time 30 -X DELETE "$api/v2/droplets/$id") ||
  code=000
case "$code" in
  204|404) exit 0 ;;
  *) echo "bivy: DigitalOcean answered HTTP $code to the delete" >&2; exit 1 ;;
esac
"""


class DigitalOceanProvider(DigitalOceanImagesMixin, Provider):
    """DigitalOcean droplets.

    Attributes:
        client: the REST client (``client.api.rate_limit`` holds the last ``ratelimit-*``).
    """

    kind: ClassVar[str] = KIND
    display_name: ClassVar[str] = "DigitalOcean"
    # The droplets spec subset Bivy builds on has no /v2/firewalls endpoints, so the VM's own
    # firewall (nftables/ufw from the cloud-init) is what keeps everything but TCP 22 out.
    capabilities: ClassVar[Capabilities] = Capabilities(
        user_data_limit=USER_DATA_LIMIT,
        user_data_gzip_base64=False,
        firewall=False,
        labels=False,
        unique_names=False,
        rate_limit_per_hour=5000,
        billing=BillingRule(
            granularity="second", billed_when_off=True, monthly_cap=True, minimum_seconds=60
        ),
        metadata_url="http://169.254.169.254/metadata/v1",
        snapshots=True,
    )
    options: ClassVar[tuple[ProviderOption, ...]] = (
        ProviderOption(
            key="token",
            label="API token",
            secret=True,
            pattern=r"^[A-Za-z0-9_]{20,}$",
            help=(
                "A personal access token with custom scopes droplet:create/read/delete, "
                "ssh_key:create/read, tag:create/read, sizes:read, regions:read, "
                "account:read, image:read."
            ),
            env=("BIVY_DIGITALOCEAN_TOKEN", "DIGITALOCEAN_TOKEN"),
        ),
        ProviderOption(
            key="delete_token",
            label="Self-delete token (optional)",
            secret=True,
            required=False,
            pattern=r"^$|^[A-Za-z0-9_]{20,}$",
            help=(
                "A second token with only the droplet:delete scope, given to the VM "
                "so it can delete itself; without it the VM gets the main token."
            ),
        ),
    )
    #: The custom scopes Bivy's token needs, and the self-delete token's (tests prove both).
    token_scopes: ClassVar[tuple[str, ...]] = (
        "account:read",
        "droplet:create",
        "droplet:delete",
        "droplet:read",
        "image:read",
        "regions:read",
        "sizes:read",
        "ssh_key:create",
        "ssh_key:read",
        "tag:create",
        "tag:read",
    )
    delete_token_scopes: ClassVar[tuple[str, ...]] = ("droplet:delete",)
    token_guidance: ClassVar[str] = (
        "In the DigitalOcean control panel open API → Tokens → Generate New Token and choose "
        "Custom Scopes: droplet (create, read, delete), ssh_key (create, read), tag (create, "
        "read), sizes (read), regions (read), account (read) and image (read); for prebuilds "
        "also droplet (update), actions (read) and image (create, delete). Give it an expiry. For "
        "the VM's self-delete, create a second token with only droplet:delete; "
        "note that it can still delete any droplet of the team, so use a team that holds "
        "nothing else."
    )
    default_region: ClassVar[str] = "fra1"
    default_size: ClassVar[str] = "s-2vcpu-4gb"

    def __init__(
        self,
        options: Mapping[str, str],
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._sleep = sleep
        self._token = options.get("token", "")
        self._delete_token = options.get("delete_token", "") or self._token
        base_url = os.environ.get("BIVY_DIGITALOCEAN_API_URL") or DEFAULT_API_URL
        self.client = DigitalOceanClient(
            ApiClient(
                provider=KIND,
                base_url=base_url,
                headers={"Authorization": f"Bearer {self._token}"},
                secrets=(self._token, self._delete_token),
                transport=transport,
                parse_error=parse_error,
                sleep=sleep,
            )
        )

    def __repr__(self) -> str:
        return f"DigitalOceanProvider(api={self.client.api!r})"

    @property
    def rate_limit(self) -> RateLimitState:
        """The last rate-limit headers seen (read by the refresh scheduler)."""
        return self.client.api.rate_limit

    def _check_token(self) -> None:
        if not self._token:
            raise AuthError("No DigitalOcean API token is configured", provider=KIND)

    async def validate(self) -> AccountInfo:
        self._check_token()
        account = await self.client.account()
        return AccountInfo(provider=KIND, description=account.email, currency="USD")

    async def regions(self) -> list[Region]:
        self._check_token()
        return [
            Region(
                id=r.slug,
                name=r.name,
                city=r.name.rstrip(" 0123456789"),
                country=_COUNTRIES.get(r.slug[:3], ""),
            )
            for r in await self.client.regions()
            if r.available
        ]

    async def sizes(self, region: str | None = None) -> list[Size]:
        self._check_token()
        result = []
        for size in await self.client.sizes():
            if not size.available or (region and region not in size.regions):
                continue
            result.append(size_to_domain(size))
        return result

    async def list(self) -> list[Server]:
        self._check_token()
        return [droplet_to_server(d) for d in await self.client.droplets(MANAGED_TAG)]

    async def get(self, server_id: str) -> Server:
        self._check_token()
        return droplet_to_server(await self.client.droplet(_droplet_id(server_id)))

    async def _ensure_ssh_key(self, name: str, public_key: str) -> str:
        fingerprint = ssh_md5_fingerprint(public_key)
        if await self.client.ssh_key(fingerprint) is None:
            key = await self.client.create_ssh_key(name, public_key)
            fingerprint = key.fingerprint
        return fingerprint

    async def create(self, request: CreateServerRequest) -> Server:
        self._check_token()
        size = len(request.user_data.encode("utf-8"))
        if size > USER_DATA_LIMIT:
            raise InvalidInput(
                f"The user data is {size} bytes; DigitalOcean accepts at most {USER_DATA_LIMIT}",
                provider=KIND,
            )
        tags = labels_to_tags(request.labels)  # refuses over-long labels before any request
        fingerprint = await self._ensure_ssh_key(request.ssh_key_name, request.ssh_public_key)
        body: dict[str, Any] = {
            "name": request.name,
            "size": request.size,
            # A prebuild's snapshot is named by its integer id, a public image by its slug.
            "image": _image_ref(request.image or DEFAULT_IMAGE),
            "ssh_keys": [fingerprint],
            "tags": tags,
            "user_data": request.user_data,
            "ipv6": True,
            "monitoring": False,
        }
        if request.region:
            body["region"] = request.region
        created = await self.client.create_droplet(body)
        return droplet_to_server(created.droplet)

    async def delete(self, server_id: str) -> None:
        self._check_token()
        try:
            await self.client.delete_droplet(_droplet_id(server_id))
        except NotFound:
            return

    def self_delete_script(self) -> str:
        return SELF_DELETE_SCRIPT

    def self_delete_env(self) -> dict[str, str]:
        return {"BIVY_DIGITALOCEAN_TOKEN": self._delete_token}

    async def aclose(self) -> None:
        await self.client.api.aclose()
