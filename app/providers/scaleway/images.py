"""Scaleway images (prebuilds): power off, a snapshot of the root volume, an image from it.

The Instance API's way from a server to an image is two steps: ``POST /snapshots`` of the
server's root volume (``volumes["0"]``; a local SSD can only be snapshotted while its server is
stopped), then, once that snapshot is ``available``, ``POST /images`` with it as
``root_volume``. Both carry Bivy's tags (``bivy`` + ``key=value``), so images are listed with
``GET /images?tags=bivy&project=…`` in every zone. ``create_image`` waits for the snapshot
(cancellable) and returns the image.

What costs money is the snapshots: deleting an image deletes its snapshots too (image first,
since a snapshot an image uses cannot be deleted).

Price: the Instance API has no price for snapshots. Scaleway's billing FAQ
(https://www.scaleway.com/en/faq/how-am-i-billed-for-scaleway-elements-services/, read
2026-12) bills "Volumes and Snapshots" at €0.00004 per GB-hour or a monthly fixed €0.02 per GB
(the monthly cap applies after 500 h): ``SNAPSHOT_PRICE_PER_GB_MONTH`` is that cap, on the
image's snapshot sizes (bytes / 10⁹). Check it against https://www.scaleway.com/en/pricing/ when
prices move.

Ids: an image is ``<zone>/<uuid>`` like a server, since every call needs both.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from decimal import Decimal

from app.domain import (
    LABEL_MANAGED_BY,
    LABEL_MANAGED_BY_VALUE,
    ImageStatus,
    ProviderImage,
    Server,
    ServerStatus,
)
from app.errors import ActionFailed, BivyError, InvalidInput, NotFound
from app.providers._polling import Backoff, poll_until
from app.providers._snapshots import require_off, snapshot_price
from app.providers.scaleway import models as m
from app.providers.scaleway.client import KIND, ScalewayClient
from app.providers.scaleway.common import (
    MANAGED_TAG,
    ZONES,
    labels_to_tags,
    make_id,
    parse_time,
    tags_to_labels,
)

#: EUR per GB-month of snapshot storage (documented, not in the API; see the module docstring).
SNAPSHOT_PRICE_PER_GB_MONTH = Decimal("0.02")
SNAPSHOT_PRICE_SOURCE = (
    "https://www.scaleway.com/en/faq/how-am-i-billed-for-scaleway-elements-services/"
)
SNAPSHOT_TIMEOUT = 3600.0
POWER_OFF_TIMEOUT = 600.0

IMAGE_STATUS = {
    "available": ImageStatus.AVAILABLE,
    "creating": ImageStatus.CREATING,
    "error": ImageStatus.FAILED,
}


def image_to_domain(image: m.Image, zone: str) -> ProviderImage:
    size_gb = image.size_bytes / 10**9 if image.size_bytes else None
    return ProviderImage(
        provider=KIND,
        id=make_id(image.zone or zone, image.id),
        name=image.name,
        status=IMAGE_STATUS.get(image.state, ImageStatus.UNKNOWN),
        region=image.zone or zone,
        size_gb=size_gb,
        created_at=parse_time(image.creation_date),
        labels=tags_to_labels(image.tags),
        monthly_price=snapshot_price(size_gb, SNAPSHOT_PRICE_PER_GB_MONTH, "EUR"),
    )


class ScalewayImagesMixin:
    """The image half of ``ScalewayProvider`` (it supplies the attributes declared here)."""

    client: ScalewayClient
    project_id: str
    zone: str
    _sleep: Callable[[float], Awaitable[None]]

    def _check(self) -> None:
        raise NotImplementedError

    def _split(self, server_id: str) -> tuple[str, str]:
        raise NotImplementedError

    async def get(self, server_id: str) -> Server:
        raise NotImplementedError

    def split_image_id(self, image_id: str) -> tuple[str, str]:
        """(zone, uuid) of a Bivy image id; ``NotFound`` for an unknown zone."""
        zone, sep, uuid = image_id.partition("/")
        if not sep:
            return self.zone, image_id
        if zone not in ZONES:
            raise NotFound(f"Scaleway: unknown zone in image id {image_id!r}", provider=KIND)
        return zone, uuid

    async def power_off(self, server_id: str) -> None:
        """The ``poweroff`` action, then wait until the server reads ``stopped``."""
        self._check()
        zone, uuid = self._split(server_id)
        if (await self.get(server_id)).status not in (ServerStatus.OFF, ServerStatus.STOPPING):
            await self.client.action(zone, uuid, "poweroff")
        await poll_until(
            lambda: self.get(server_id),
            lambda server: server.status == ServerStatus.OFF,
            timeout=POWER_OFF_TIMEOUT,
            backoff=Backoff(initial=2.0, factor=1.5, maximum=10.0),
            sleep=self._sleep,
            what=f"Scaleway to power off server {uuid}",
            provider=KIND,
        )

    async def create_image(
        self, server_id: str, *, name: str, labels: Mapping[str, str]
    ) -> ProviderImage:
        """Snapshot the stopped server's root volume, wait for it, make the image from it."""
        self._check()
        zone, uuid = self._split(server_id)
        tags = labels_to_tags({LABEL_MANAGED_BY: LABEL_MANAGED_BY_VALUE, **labels})
        require_off(await self.get(server_id), "Scaleway")
        server = await self.client.server(zone, uuid)
        root = server.volumes.get("0")
        if root is None:
            raise InvalidInput(f"Scaleway server {uuid} has no root volume", provider=KIND)
        snapshot = await self.client.create_snapshot(
            zone,
            {"name": name, "volume_id": root.id, "project": self.project_id, "tags": tags},
        )
        try:
            await self._wait_snapshot(zone, snapshot.id)
            image = await self.client.create_image(
                zone,
                {
                    "name": name,
                    "root_volume": snapshot.id,
                    "arch": "arm" if server.arch == "arm" else "x86_64",
                    "project": self.project_id,
                    "tags": tags,
                },
            )
        except BaseException:
            # No image will reference the snapshot: do not leave it behind to be billed.
            with contextlib.suppress(BivyError):
                await asyncio.shield(self.client.delete_snapshot(zone, snapshot.id))
            raise
        return image_to_domain(image, zone)

    async def _wait_snapshot(self, zone: str, snapshot_id: str) -> None:
        def done(current: m.Snapshot) -> bool:
            if current.state in ("error", "invalid_data"):
                raise ActionFailed(
                    f"Scaleway could not snapshot the volume (snapshot {snapshot_id} is "
                    f"{current.state})",
                    provider=KIND,
                    code=current.state,
                )
            return current.state == "available"

        await poll_until(
            lambda: self.client.snapshot(zone, snapshot_id),
            done,
            timeout=SNAPSHOT_TIMEOUT,
            backoff=Backoff(initial=2.0, factor=1.5, maximum=15.0),
            sleep=self._sleep,
            what="Scaleway to finish the snapshot",
            provider=KIND,
        )

    async def get_image(self, image_id: str) -> ProviderImage:
        self._check()
        zone, uuid = self.split_image_id(image_id)
        return image_to_domain(await self.client.image(zone, uuid), zone)

    async def list_images(self) -> builtins.list[ProviderImage]:
        """Bivy's images in every zone (tag- and project-filtered at Scaleway), concurrently."""
        self._check()
        per_zone = await asyncio.gather(
            *(self.client.images(zone, MANAGED_TAG, self.project_id) for zone in ZONES)
        )
        return [
            image_to_domain(image, zone)
            for zone, images in zip(ZONES, per_zone, strict=True)
            for image in images
        ]

    async def delete_image(self, image_id: str) -> None:
        """Delete the image, then its snapshots (what is billed); gone already is fine."""
        self._check()
        zone, uuid = self.split_image_id(image_id)
        try:
            image = await self.client.image(zone, uuid)
        except NotFound:
            return
        with contextlib.suppress(NotFound):
            await self.client.delete_image(zone, uuid)
        left: builtins.list[tuple[str, BivyError]] = []
        for snapshot_id in image.snapshot_ids:
            try:
                await self.client.delete_snapshot(zone, snapshot_id)
            except NotFound:
                continue
            except BivyError as exc:
                left.append((snapshot_id, exc))
        if left:
            # The image is gone, so nothing will find these again: name them.
            ids = ", ".join(snapshot_id for snapshot_id, _ in left)
            first = left[0][1]
            raise type(first)(
                f"Scaleway deleted the image but not its snapshot(s) {ids} in {zone}: "
                f"{first.message}",
                hint=f"Delete snapshot(s) {ids} in the Scaleway console (Instances → Snapshots); "
                "they are billed until then",
                provider=KIND,
                code=first.code,
                request_id=first.request_id,
                status=first.status,
            )
