"""Hetzner Cloud snapshots (prebuilds): power off, ``create_image``, list/get/delete, and the
price per GB-month from ``GET /pricing`` (``pricing.image``, gross like the server prices).

Snapshots are project-wide (not bound to a location) and carry labels like servers, so Bivy's
are listed with ``GET /images?type=snapshot&label_selector=managed-by=bivy``. The billed size is
``image_size`` (GB), which Hetzner fills in once the snapshot is ``available``.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from decimal import Decimal

from app.domain import (
    LABEL_MANAGED_BY,
    LABEL_MANAGED_BY_VALUE,
    ImageStatus,
    ProviderImage,
    Server,
    ServerStatus,
)
from app.errors import NotFound
from app.providers._snapshots import require_off, snapshot_price
from app.providers.hetzner import models as m
from app.providers.hetzner.client import KIND, HetznerClient

IMAGE_STATUS = {
    "creating": ImageStatus.CREATING,
    "available": ImageStatus.AVAILABLE,
    "unavailable": ImageStatus.FAILED,
}
#: Hetzner's longest image description.
MAX_DESCRIPTION = 255


def parse_image_id(value: str) -> int:
    """Hetzner's integer image id; ``NotFound`` for anything that cannot be one."""
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise NotFound(f"Hetzner has no image {value!r}", provider=KIND)
    return number


def image_to_domain(image: m.Image, price: tuple[str, Decimal] | None) -> ProviderImage:
    """A wire image as Bivy's ``ProviderImage``; ``price`` is (currency, gross per GB-month)."""
    currency, per_gb = price if price else ("", None)
    return ProviderImage(
        provider=KIND,
        id=str(image.id),
        name=image.description or image.name or str(image.id),
        status=IMAGE_STATUS.get(image.status, ImageStatus.UNKNOWN),
        region="",
        size_gb=image.image_size,
        created_at=image.created,
        labels=dict(image.labels),
        monthly_price=snapshot_price(image.image_size, per_gb, currency, includes_vat=True),
    )


class HetznerImagesMixin:
    """The image half of ``HetznerProvider`` (it supplies the attributes declared here)."""

    client: HetznerClient

    def _need_token(self) -> None:
        raise NotImplementedError

    def _check_labels(self, labels: Mapping[str, str]) -> None:
        raise NotImplementedError

    async def get(self, server_id: str) -> Server:
        raise NotImplementedError

    async def wait_for_action(self, action: m.Action) -> m.Action:
        raise NotImplementedError

    async def _image_price(self) -> tuple[str, Decimal] | None:
        pricing = await self.client.pricing()
        if pricing.image is None:
            return None
        return pricing.currency, pricing.image.price_per_gb_month.gross

    async def power_off(self, server_id: str) -> None:
        """``POST /servers/{id}/actions/poweroff`` and wait for its action (a few seconds);
        nothing to do for a server that is off already."""
        self._need_token()
        server = server_id_of(server_id)
        if (await self.get(server_id)).status == ServerStatus.OFF:
            return
        await self.wait_for_action(await self.client.power_off(server))

    async def create_image(
        self, server_id: str, *, name: str, labels: Mapping[str, str]
    ) -> ProviderImage:
        """``create_image`` (type snapshot) of the powered-off server; returns it ``creating``."""
        self._need_token()
        all_labels = {**labels, LABEL_MANAGED_BY: LABEL_MANAGED_BY_VALUE}
        self._check_labels(all_labels)
        require_off(await self.get(server_id), "Hetzner")
        created = await self.client.create_image(
            server_id_of(server_id), name[:MAX_DESCRIPTION], all_labels
        )
        return image_to_domain(created.image, None)

    async def get_image(self, image_id: str) -> ProviderImage:
        self._need_token()
        image = await self.client.image(parse_image_id(image_id))
        return image_to_domain(image, await self._image_price())

    async def list_images(self) -> builtins.list[ProviderImage]:
        """Bivy's snapshots (label-selected at Hetzner), each with its size and monthly cost."""
        self._need_token()
        selector = f"{LABEL_MANAGED_BY}={LABEL_MANAGED_BY_VALUE}"
        images = await self.client.images(type="snapshot", label_selector=selector)
        price = await self._image_price() if images else None
        return [image_to_domain(i, price) for i in images]

    async def delete_image(self, image_id: str) -> None:
        self._need_token()
        try:
            await self.client.delete_image(parse_image_id(image_id))
        except NotFound:
            return


def server_id_of(server_id: str) -> int:
    """The server's integer id (``NotFound`` for anything that cannot be one)."""
    try:
        number = int(server_id)
    except ValueError:
        number = 0
    if number < 1:
        raise NotFound(f"Hetzner has no server {server_id!r}", provider=KIND)
    return number
