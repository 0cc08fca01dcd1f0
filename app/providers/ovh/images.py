"""OVHcloud Public Cloud instance snapshots (prebuilds): stop, snapshot, list/get/delete.

OVH snapshots carry no labels or tags, so the name holds them:
``bivy-prebuild-<repo key>-<config hash>`` (``-<config hash>`` only when known) followed by
`` key=value`` for each other label (``bivy-agent=claude bivy-version=0-4-0``), parsed back
into labels when listed. Label values never hold spaces (they pass the strictest provider's
label rules), so the split is exact.

``POST /instance/{id}/snapshot`` answers nothing, so ``create_image`` finds the new snapshot by
its (unique) name in ``GET /snapshot?region=`` and returns it ``creating`` (queued/saving).
The API cannot filter snapshots by name: Bivy's are those whose name has the prefix.

Price: the public catalogue (``GET /order/catalog/public/cloud``, already read for flavours)
prices snapshot storage as the addon ``snapshot.consumption`` (product
``publiccloud-snapshot``) per GB and hour; × 730 gives the GB-month. A snapshot that names its
own ``planCode`` is priced by that one.
"""

from __future__ import annotations

import asyncio
import builtins
import re
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from decimal import Decimal

from app.domain import (
    LABEL_MANAGED_BY,
    LABEL_MANAGED_BY_VALUE,
    ImageStatus,
    ProviderImage,
    Server,
    ServerStatus,
)
from app.errors import InvalidInput, NotFound
from app.providers._polling import Backoff, poll_until
from app.providers._snapshots import HOURS_PER_MONTH, require_off, snapshot_price
from app.providers.ovh import models as m
from app.providers.ovh.client import KIND, OvhClient

PREBUILD_PREFIX = "bivy-prebuild-"
LABEL_PREBUILD = "bivy-prebuild"
LABEL_CONFIG_HASH = "bivy-config-hash"
SNAPSHOT_PLAN_CODE = "snapshot.consumption"
POWER_OFF_TIMEOUT = 600.0
#: Polls (1 s growing to 5 s, about a minute) for a snapshot OVH accepted to show up listed.
LIST_LAG_POLLS = 14
MAX_NAME = 255
_TOKEN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)

IMAGE_STATUS = {
    "active": ImageStatus.AVAILABLE,
    "queued": ImageStatus.CREATING,
    "saving": ImageStatus.CREATING,
    "uploading": ImageStatus.CREATING,
    "importing": ImageStatus.CREATING,
    "killed": ImageStatus.FAILED,
    "deleted": ImageStatus.FAILED,
    "pending_delete": ImageStatus.FAILED,
    "deactivated": ImageStatus.FAILED,
}


def is_uuid(value: str) -> bool:
    return bool(_UUID.fullmatch(value))


def snapshot_name(labels: Mapping[str, str]) -> str:
    """The name that carries a prebuild's labels (see the module docstring)."""
    repo, digest = labels.get(LABEL_PREBUILD, ""), labels.get(LABEL_CONFIG_HASH, "")
    if not repo:
        raise InvalidInput(
            "An OVHcloud prebuild snapshot needs the bivy-prebuild label (its name carries it)",
            provider=KIND,
        )
    parts = [f"{PREBUILD_PREFIX}{repo}-{digest}" if digest else f"{PREBUILD_PREFIX}{repo}"]
    skip = {LABEL_MANAGED_BY, LABEL_PREBUILD, LABEL_CONFIG_HASH}
    for key, value in sorted(labels.items()):
        if key in skip:
            continue
        if not _TOKEN.fullmatch(key) or not _TOKEN.fullmatch(value) or "=" in key:
            raise InvalidInput(
                f"The label {key}={value!r} cannot be written into an OVHcloud snapshot name",
                provider=KIND,
            )
        parts.append(f"{key}={value}")
    for token in (repo, digest) if digest else (repo,):
        if not re.fullmatch(r"[A-Za-z0-9]+", token):
            raise InvalidInput(f"{token!r} cannot be part of a snapshot name", provider=KIND)
    name = " ".join(parts)
    if len(name) > MAX_NAME:
        raise InvalidInput(f"The snapshot name would exceed {MAX_NAME} characters", provider=KIND)
    return name


def labels_from_snapshot_name(name: str) -> dict[str, str]:
    """The labels a Bivy snapshot name carries; {} for a name Bivy did not write."""
    head, *rest = name.split(" ")
    if not head.startswith(PREBUILD_PREFIX):
        return {}
    repo, sep, digest = head[len(PREBUILD_PREFIX) :].partition("-")
    if not repo or (sep and not digest):
        return {}
    labels = {LABEL_MANAGED_BY: LABEL_MANAGED_BY_VALUE, LABEL_PREBUILD: repo}
    if digest:
        labels[LABEL_CONFIG_HASH] = digest
    for token in rest:
        key, eq, value = token.partition("=")
        if eq and key:
            labels[key] = value
    return labels


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def snapshot_to_domain(
    snapshot: m.Snapshot, currency: str, prices: Mapping[str, tuple[str, Decimal]]
) -> ProviderImage:
    size_gb = snapshot.size if snapshot.size and snapshot.size > 0 else None
    per_gb_month = None
    unit_price = prices.get(snapshot.planCode or SNAPSHOT_PLAN_CODE) or prices.get(
        SNAPSHOT_PLAN_CODE
    )
    if unit_price is not None:
        unit, amount = unit_price
        per_gb_month = amount * HOURS_PER_MONTH if unit == "hour" else amount
    return ProviderImage(
        provider=KIND,
        id=snapshot.id,
        name=snapshot.name,
        status=IMAGE_STATUS.get(snapshot.status, ImageStatus.UNKNOWN),
        region=snapshot.region,
        size_gb=size_gb,
        created_at=_parse_time(snapshot.creationDate),
        labels=labels_from_snapshot_name(snapshot.name),
        monthly_price=snapshot_price(size_gb, per_gb_month, currency),
    )


class OvhImagesMixin:
    """The image half of ``OvhProvider`` (it supplies the attributes declared here)."""

    client: OvhClient
    sleep: Callable[[float], Awaitable[None]]

    def _check(self) -> None:
        raise NotImplementedError

    async def get(self, server_id: str) -> Server:
        raise NotImplementedError

    async def _catalog_prices(self) -> tuple[str, dict[str, tuple[str, Decimal]]]:
        """(currency, planCode → (interval unit, price)) from the public catalogue."""
        raise NotImplementedError

    async def power_off(self, server_id: str) -> None:
        """``POST /instance/{id}/stop``, then wait until the instance reads ``SHUTOFF``."""
        self._check()
        if (await self.get(server_id)).status != ServerStatus.OFF:
            await self.client.stop_instance(server_id)
        await poll_until(
            lambda: self.get(server_id),
            lambda server: server.status == ServerStatus.OFF,
            timeout=POWER_OFF_TIMEOUT,
            backoff=Backoff(initial=2.0, factor=1.5, maximum=10.0),
            sleep=self.sleep,
            what=f"OVHcloud to stop instance {server_id}",
            provider=KIND,
        )

    async def create_image(
        self, server_id: str, *, name: str, labels: Mapping[str, str]
    ) -> ProviderImage:
        """Snapshot the stopped instance under a name carrying ``labels``; returns it creating.

        ``name`` is not used: the name is made from the labels, OVH's only place for them."""
        self._check()
        wanted = snapshot_name(labels)
        server = await self.get(server_id)
        require_off(server, "OVHcloud")

        async def named() -> builtins.list[m.Snapshot]:
            listed = await self.client.snapshots(server.region or None)
            return [s for s in listed if s.name == wanted and s.id not in earlier]

        # An earlier prebuild of the same repository, config and agent has the same name.
        earlier: set[str] = set()
        earlier = {s.id for s in await named()}
        await self.client.snapshot_instance(server_id, wanted)

        # Glance lists the new image (queued) within moments; allow the API a little lag
        # (counted in polls, not by a clock, so a test's instant sleep cannot spin).
        found = await named()
        delays = Backoff(initial=1.0, factor=1.5, maximum=5.0).delays()
        for _ in range(LIST_LAG_POLLS):
            if found:
                break
            await self.sleep(next(delays))
            found = await named()
        if not found:
            raise NotFound(
                f"OVHcloud accepted the snapshot of {server_id} but does not list {wanted!r}",
                hint="It may still appear: see `bivy prebuild ls` before building again",
                provider=KIND,
            )
        newest = max(found, key=lambda s: (s.creationDate or "", s.id))
        currency, prices = await self._catalog_prices()
        return snapshot_to_domain(newest, currency, prices)

    async def get_image(self, image_id: str) -> ProviderImage:
        self._check()
        snapshot, (currency, prices) = await asyncio.gather(
            self.client.snapshot(image_id), self._catalog_prices()
        )
        return snapshot_to_domain(snapshot, currency, prices)

    async def list_images(self) -> builtins.list[ProviderImage]:
        """Bivy's snapshots in every region (by the name prefix; the API has no filter)."""
        self._check()
        snapshots, (currency, prices) = await asyncio.gather(
            self.client.snapshots(), self._catalog_prices()
        )
        return [
            snapshot_to_domain(s, currency, prices)
            for s in snapshots
            if labels_from_snapshot_name(s.name)
        ]

    async def delete_image(self, image_id: str) -> None:
        self._check()
        try:
            await self.client.delete_snapshot(image_id)
        except NotFound:
            return
