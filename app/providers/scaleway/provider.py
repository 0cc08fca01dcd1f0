"""Scaleway provider: servers created stopped, user data set through its own API, then poweron."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable, Mapping
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
from app.errors import AuthError, BivyError, InvalidInput, NotFound
from app.providers._http import ApiClient, RateLimitState
from app.providers.base import BillingRule, Capabilities, Provider, ProviderOption
from app.providers.scaleway import models as m
from app.providers.scaleway.client import DEFAULT_API_URL, KIND, ScalewayClient, parse_error
from app.providers.scaleway.common import (
    MANAGED_TAG,
    ZONES,
    labels_to_tags,
    make_id,
    parse_time,
    tags_to_labels,
)
from app.providers.scaleway.images import ScalewayImagesMixin

__all__ = ["ZONES", "ScalewayProvider", "labels_to_tags", "make_id", "tags_to_labels"]

#: Scaleway publishes no user-data size limit; Bivy keeps to 64 KiB like DigitalOcean.
USER_DATA_LIMIT = 64 * 1024
DEFAULT_IMAGE = "ubuntu_noble"
USER_DATA_KEY = "cloud-init"
SECURITY_GROUP = "bivy-ssh-only"
HOURS_PER_MONTH = Decimal(730)

STATUS_MAP = {
    "running": ServerStatus.RUNNING,
    "starting": ServerStatus.STARTING,
    "stopping": ServerStatus.STOPPING,
    "stopped": ServerStatus.OFF,
    "stopped in place": ServerStatus.OFF,
    "locked": ServerStatus.UNKNOWN,
}


def server_to_domain(server: m.Server, zone: str) -> Server:
    zone = server.zone or zone
    return Server(
        provider=KIND,
        id=make_id(zone, server.id),
        name=server.name,
        status=STATUS_MAP.get(server.state, ServerStatus.UNKNOWN),
        region=zone,
        size=server.commercial_type,
        ipv4=(server.public_ip.address or None) if server.public_ip else None,
        ipv6=(server.ipv6.address or None) if server.ipv6 else None,
        created_at=parse_time(server.creation_date),
        labels=tags_to_labels(server.tags),
    )


def _price(kind: m.ServerType) -> Price:
    hourly = Decimal(str(kind.hourly_price)).quantize(Decimal("0.00001"), ROUND_HALF_UP)
    monthly = (
        Decimal(str(kind.monthly_price)) if kind.monthly_price else hourly * HOURS_PER_MONTH
    ).quantize(Decimal("0.01"), ROUND_HALF_UP)
    return Price(currency="EUR", hourly=hourly, monthly=monthly, includes_vat=False)


def type_to_size(name: str, kind: m.ServerType, zone: str) -> Size:
    # Development and Play/Pro "shared" ranges share vCPUs; the rest (GP1, POP2…) are dedicated.
    shared = name.split("-")[0] in {"DEV1", "PLAY2", "PRO2", "STARDUST1", "COPARM1", "BASIC2"}
    return Size(
        name=name,
        description=name,
        cores=kind.ncpus,
        memory_gb=round(kind.ram / 2**30, 2),
        disk_gb=int(kind.volumes_constraint.max_size / 10**9),
        cpu_type="shared" if shared else "dedicated",
        architecture="arm" if kind.arch == "arm" else "x86",
        prices={zone: _price(kind)},
    )


SELF_DELETE_SCRIPT = r"""#!/bin/sh
# Terminate this server (and its volumes) through the Scaleway API. The metadata service answers
# only from a privileged source port, hence curl --local-port 1-1023 (this runs as root). The key
# comes from the root-only env file and reaches curl on stdin (-K -), never on the command line.
set -eu
: "${BIVY_SCALEWAY_SECRET_KEY:?BIVY_SCALEWAY_SECRET_KEY is not set}"
meta="${BIVY_METADATA_URL:-http://169.254.42.42}"
api="${BIVY_API_URL:-https://api.scaleway.com}"
conf=$(curl -fsS --max-time 10 --local-port 1-1023 "$meta/conf?format=json")
found=$(printf '%s' "$conf" | python3 -c '
import json, sys
conf = json.load(sys.stdin)
zone = conf.get("zone") or (conf.get("location") or {}).get("zone_id") or ""
print(conf["id"], zone)
')
id=${found%% *}
zone=${found#* }
zone=${zone:-${BIVY_SCALEWAY_ZONE:-}}
case "$id" in
  ''|*[!0-9a-f-]*) echo "bivy: no server id from the metadata service" >&2; exit 1 ;;
esac
case "$zone" in
  ''|*[!a-z0-9-]*) echo "bivy: no zone from the metadata service" >&2; exit 1 ;;
esac
code=$(printf 'header = "X-Auth-Token: %s"\n' "$BIVY_SCALEWAY_SECRET_KEY" |
  curl -sS -K - -o /dev/null -w '%{http_code}' --max-time 30 -X POST \
    -H 'Content-Type: application/json' -d '{"action":"terminate"}' \
    "$api/instance/v1/zones/$zone/servers/$id/action") || code=000
case "$code" in
  200|202|404) exit 0 ;;
  *) echo "bivy: Scaleway answered HTTP $code to terminate" >&2; exit 1 ;;
esac
"""


class ScalewayProvider(ScalewayImagesMixin, Provider):
    """Scaleway Instances in one project, any zone.

    Attributes:
        client: the REST client.
        project_id: the Scaleway project servers are created in and listed from.
        zone: the default zone (``regions()`` lists them all).
    """

    kind: ClassVar[str] = KIND
    display_name: ClassVar[str] = "Scaleway"
    # A stateful security group per zone drops every inbound connection but TCP 22.
    capabilities: ClassVar[Capabilities] = Capabilities(
        user_data_limit=USER_DATA_LIMIT,
        user_data_gzip_base64=False,
        firewall=True,
        labels=False,
        unique_names=False,
        rate_limit_per_hour=0,
        billing=BillingRule(granularity="hour", billed_when_off=True, monthly_cap=True),
        metadata_url="http://169.254.42.42",
        snapshots=True,
    )
    options: ClassVar[tuple[ProviderOption, ...]] = (
        ProviderOption(
            key="secret_key",
            label="Secret key",
            secret=True,
            pattern=r"^[0-9a-fA-F-]{36}$",
            help=(
                "The secret key of an IAM application whose policy grants InstancesFullAccess "
                "on this project only."
            ),
            env=("BIVY_SCALEWAY_SECRET_KEY", "SCW_SECRET_KEY"),
        ),
        ProviderOption(
            key="project_id",
            label="Project ID",
            pattern=r"^[0-9a-fA-F-]{36}$",
            help="The project servers are created in (Console → Project settings).",
            env=("BIVY_SCALEWAY_PROJECT_ID", "SCW_DEFAULT_PROJECT_ID"),
        ),
        ProviderOption(
            key="zone",
            label="Default zone",
            required=False,
            default="fr-par-1",
            pattern=r"^[a-z]{2}-[a-z]{3}-[0-9]$",
            help="Where new servers go unless the create dialog says otherwise.",
            env=("BIVY_SCALEWAY_ZONE", "SCW_DEFAULT_ZONE"),
        ),
    )
    token_guidance: ClassVar[str] = (
        "In the Scaleway console create a dedicated project for Bivy, then IAM → Applications "
        "→ Create application, and a policy for it scoped to that project with the permission "
        "set InstancesFullAccess (add SSHKeysReadOnly only if you use project SSH keys). "
        "Generate an API key for the application and paste its secret key here. There is no "
        "delete-only permission set, so the VM's self-delete uses the same key: keep the "
        "project free of anything else."
    )
    default_region: ClassVar[str] = "fr-par-1"
    default_size: ClassVar[str] = "DEV1-M"

    def __init__(
        self,
        options: Mapping[str, str],
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._sleep = sleep
        self._secret = options.get("secret_key", "")
        self.project_id = options.get("project_id", "")
        self.zone = options.get("zone") or self.default_region
        self._groups: dict[str, str] = {}
        base_url = os.environ.get("BIVY_SCALEWAY_API_URL") or DEFAULT_API_URL
        self.client = ScalewayClient(
            ApiClient(
                provider=KIND,
                base_url=base_url,
                headers={"X-Auth-Token": self._secret},
                secrets=(self._secret,),
                transport=transport,
                parse_error=parse_error,
                sleep=sleep,
            )
        )

    def __repr__(self) -> str:
        return f"ScalewayProvider(project={self.project_id!r}, zone={self.zone!r})"

    @property
    def rate_limit(self) -> RateLimitState:
        """The last rate-limit headers seen (read by the refresh scheduler)."""
        return self.client.api.rate_limit

    def _check(self) -> None:
        if not self._secret:
            raise AuthError("No Scaleway secret key is configured", provider=KIND)
        if not self.project_id:
            raise InvalidInput(
                "The Scaleway account has no project ID",
                hint="Set the project ID in Settings → Accounts",
                provider=KIND,
            )

    def _split(self, server_id: str) -> tuple[str, str]:
        zone, sep, uuid = server_id.partition("/")
        if not sep:
            return self.zone, server_id
        if zone not in ZONES:
            raise NotFound(f"Scaleway: unknown zone in server id {server_id!r}", provider=KIND)
        return zone, uuid

    async def validate(self) -> AccountInfo:
        self._check()
        # Listing the project's servers needs the same permissions as everything else Bivy does.
        await self.client.servers(self.zone, MANAGED_TAG, self.project_id)
        return AccountInfo(provider=KIND, description=f"project {self.project_id}", currency="EUR")

    async def regions(self) -> list[Region]:
        return [
            Region(id=zone, name=zone, city=city, country=country)
            for zone, (city, country) in ZONES.items()
        ]

    async def sizes(self, region: str | None = None) -> list[Size]:
        self._check()
        zone = region or self.zone
        types, availability = await asyncio.gather(
            self.client.server_types(zone), self.client.availability(zone)
        )
        return [
            type_to_size(name, kind, zone)
            for name, kind in sorted(types.items(), key=lambda kv: kv[1].hourly_price)
            if not kind.baremetal and availability.get(name, "available") != "shortage"
        ]

    async def list(self) -> list[Server]:
        self._check()
        # Bivy may have created servers in any zone; the list is one call per zone, concurrent.
        per_zone = await asyncio.gather(
            *(self.client.servers(zone, MANAGED_TAG, self.project_id) for zone in ZONES)
        )
        return [
            server_to_domain(s, zone)
            for zone, servers in zip(ZONES, per_zone, strict=True)
            for s in servers
        ]

    async def get(self, server_id: str) -> Server:
        self._check()
        zone, uuid = self._split(server_id)
        return server_to_domain(await self.client.server(zone, uuid), zone)

    async def create(self, request: CreateServerRequest) -> Server:
        self._check()
        data = request.user_data.encode("utf-8")
        if len(data) > USER_DATA_LIMIT:
            raise InvalidInput(
                f"The user data is {len(data)} bytes; Bivy sends at most {USER_DATA_LIMIT} "
                "to Scaleway",
                provider=KIND,
            )
        zone = request.region or self.zone
        if zone not in ZONES:
            raise InvalidInput(f"Scaleway has no zone {zone!r}", provider=KIND)
        body: dict[str, Any] = {
            "name": request.name,
            "commercial_type": request.size,
            "image": self._image_in(zone, request.image) if request.image else DEFAULT_IMAGE,
            "project": self.project_id,
            "tags": labels_to_tags(request.labels),
            "dynamic_ip_required": True,
            "enable_ipv6": False,
            "boot_type": "local",
        }
        body["security_group"] = await self._ssh_only_group(zone)
        # The app's SSH key travels in the cloud-init user data (ssh_authorized_keys), so no
        # IAM SSH key is uploaded: that would need the separate IAM API and its permissions.
        server = await self.client.create_server(zone, body)
        try:
            # Created stopped: cloud-init reads the key on first boot, so it must be set first.
            await self.client.set_user_data(zone, server.id, USER_DATA_KEY, data)
            await self.client.action(zone, server.id, "poweron")
        except BaseException:
            # Never leave a stopped server (and its volume) behind when the start failed.
            await asyncio.shield(self._remove_stopped(zone, server))
            raise
        try:
            return server_to_domain(await self.client.server(zone, server.id), zone)
        except BivyError:
            return server_to_domain(server, zone)

    def _image_in(self, zone: str, image: str) -> str:
        """The image for a server in ``zone``: a label, or a prebuild's ``<zone>/<uuid>``."""
        if "/" not in image:
            return image
        image_zone, uuid = self.split_image_id(image)
        if image_zone != zone:
            raise InvalidInput(
                f"The prebuild image is in {image_zone}, the server would be in {zone}",
                hint=f"Create the workspace in {image_zone}, or build a prebuild in {zone}",
                provider=KIND,
            )
        return uuid

    async def _ssh_only_group(self, zone: str) -> str:
        """The zone's ``bivy-ssh-only`` security group (found by name, created once)."""
        if zone in self._groups:
            return self._groups[zone]
        found = [
            g
            for g in await self.client.security_groups(zone, SECURITY_GROUP, self.project_id)
            if g.name == SECURITY_GROUP
        ]
        if found:
            self._groups[zone] = found[0].id
            return found[0].id
        group = await self.client.create_security_group(
            zone,
            {
                "name": SECURITY_GROUP,
                "project": self.project_id,
                "tags": [MANAGED_TAG],
                "stateful": True,
                "inbound_default_policy": "drop",
                "outbound_default_policy": "accept",
                "enable_default_security": True,
            },
        )
        try:
            for ip_range in ("0.0.0.0/0", "::/0"):
                await self.client.add_security_group_rule(
                    zone,
                    group.id,
                    {
                        "protocol": "TCP",
                        "direction": "inbound",
                        "action": "accept",
                        "ip_range": ip_range,
                        "dest_port_from": 22,
                        "dest_port_to": 22,
                    },
                )
        except BaseException:
            # A group without its SSH rule would lock Bivy out of every later server.
            with contextlib.suppress(BivyError):
                await asyncio.shield(self.client.delete_security_group(zone, group.id))
            raise
        self._groups[zone] = group.id
        return group.id

    async def _remove_stopped(self, zone: str, server: m.Server) -> None:
        try:
            await self.client.delete_server(zone, server.id)
            for volume in server.volumes.values():
                await self.client.delete_volume(zone, volume.id)
        except BivyError:
            return

    async def delete(self, server_id: str) -> None:
        self._check()
        zone, uuid = self._split(server_id)
        try:
            server = await self.client.server(zone, uuid)
        except NotFound:
            return
        try:
            if server.state in ("stopped", "stopped in place"):
                # terminate needs a running server; a stopped one is deleted with its volumes.
                await self.client.delete_server(zone, uuid)
                for volume in server.volumes.values():
                    try:
                        await self.client.delete_volume(zone, volume.id)
                    except NotFound:
                        continue
            else:
                # terminate also deletes the local and block volumes.
                await self.client.action(zone, uuid, "terminate")
        except NotFound:
            return

    def self_delete_script(self) -> str:
        return SELF_DELETE_SCRIPT

    def self_delete_env(self) -> dict[str, str]:
        return {"BIVY_SCALEWAY_SECRET_KEY": self._secret, "BIVY_SCALEWAY_ZONE": self.zone}

    async def aclose(self) -> None:
        await self.client.api.aclose()
