"""DigitalOcean droplet snapshots (prebuilds): power off, snapshot, tag, list/get/delete.

The ``snapshot`` droplet action answers with an action, not the image, and takes tags nowhere:
so ``create_image`` waits for the action (minutes for a big disk; cancellable), finds the new
snapshot by name among the droplet's snapshots, then tags it (``bivy`` first, so an interrupted
tagging still leaves it listed) through ``POST /v2/tags/{tag}/resources`` — the same
``key:value`` tags droplets carry. It therefore returns the image already ``available``.

Listing is tag-filtered at DigitalOcean: ``GET /v2/images?private=true&tag_name=bivy``.

DigitalOcean's API publishes no snapshot price; its pricing page does: "$0.06 GB per month for
Droplets" (https://docs.digitalocean.com/products/images/snapshots/details/pricing/, read
2026-12; $0.01 minimum charge), on ``size_gigabytes``. ``SNAPSHOT_PRICE_PER_GB_MONTH`` holds it.
"""

from __future__ import annotations

import builtins
import contextlib
import time
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
from app.errors import ActionFailed, Conflict, InvalidInput, NotFound, Timeout
from app.providers._polling import Backoff, poll_until
from app.providers._snapshots import require_off, snapshot_price
from app.providers.digitalocean import models as m
from app.providers.digitalocean.client import KIND, DigitalOceanClient
from app.providers.digitalocean.tags import MANAGED_TAG, labels_to_tags, tags_to_labels

#: USD per GB-month of snapshot storage (documented, not in the API; see the module docstring).
SNAPSHOT_PRICE_PER_GB_MONTH = Decimal("0.06")
SNAPSHOT_PRICE_SOURCE = "https://docs.digitalocean.com/products/images/snapshots/details/pricing/"
#: How long a snapshot action may take before Bivy gives up waiting (it may still finish).
SNAPSHOT_TIMEOUT = 3600.0
POWER_OFF_TIMEOUT = 300.0

IMAGE_STATUS = {
    "available": ImageStatus.AVAILABLE,
    "NEW": ImageStatus.CREATING,
    "pending": ImageStatus.CREATING,
    "deleted": ImageStatus.FAILED,
    "retired": ImageStatus.FAILED,
}


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def numeric_id(value: str, what: str) -> int:
    """DigitalOcean's integer ids; ``NotFound`` for anything that cannot be one."""
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise NotFound(f"DigitalOcean has no {what} {value!r}", provider=KIND)
    return number


def image_to_domain(image: m.Image, labels: dict[str, str]) -> ProviderImage:
    return ProviderImage(
        provider=KIND,
        id=str(image.id),
        name=image.name,
        status=IMAGE_STATUS.get(image.status, ImageStatus.UNKNOWN),
        region=image.regions[0] if image.regions else "",
        size_gb=image.size_gigabytes,
        created_at=_parse_time(image.created_at),
        labels=labels,
        monthly_price=snapshot_price(image.size_gigabytes, SNAPSHOT_PRICE_PER_GB_MONTH, "USD"),
    )


class DigitalOceanImagesMixin:
    """The image half of ``DigitalOceanProvider`` (it supplies the attributes declared here)."""

    client: DigitalOceanClient
    _sleep: Callable[[float], Awaitable[None]]
    #: What waits measure their deadline by (tests swap in the emulator's clock).
    _clock: Callable[[], float] = staticmethod(time.monotonic)
    #: Scopes prebuilds add to ``token_scopes``: droplet actions, polling them, deleting images.
    image_token_scopes: tuple[str, ...] = (
        "actions:read",
        "droplet:update",
        "image:create",
        "image:delete",
    )

    def _check_token(self) -> None:
        raise NotImplementedError

    async def get(self, server_id: str) -> Server:
        raise NotImplementedError

    @staticmethod
    def _labels(tags: builtins.list[str] | None) -> dict[str, str]:
        return tags_to_labels(tags or [])

    async def _run_action(self, droplet_id: int, body: dict[str, str], limit: float) -> None:
        action = await self.client.droplet_action(droplet_id, body)

        def done(current: m.Action) -> bool:
            if current.status == "errored":
                raise ActionFailed(
                    f"DigitalOcean could not {body['type'].replace('_', ' ')} droplet "
                    f"{droplet_id} (action {current.id} errored)",
                    provider=KIND,
                    code="errored",
                )
            return current.status == "completed"

        if done(action):
            return
        await poll_until(
            lambda: self.client.action(action.id),
            done,
            timeout=limit,
            backoff=Backoff(initial=2.0, factor=1.5, maximum=15.0),
            sleep=self._sleep,
            clock=self._clock,
            what=f"DigitalOcean to {body['type'].replace('_', ' ')} droplet {droplet_id}",
            provider=KIND,
        )

    async def power_off(self, server_id: str) -> None:
        """The ``power_off`` droplet action, waited for (the droplet then reads ``off``);
        nothing to do for a droplet that is off already."""
        self._check_token()
        droplet = numeric_id(server_id, "droplet")
        if (await self.get(server_id)).status == ServerStatus.OFF:
            return
        await self._run_action(droplet, {"type": "power_off"}, POWER_OFF_TIMEOUT)

    async def create_image(
        self, server_id: str, *, name: str, labels: Mapping[str, str]
    ) -> ProviderImage:
        """Snapshot the powered-off droplet, wait for it, tag it; returns it ``available``."""
        self._check_token()
        droplet = numeric_id(server_id, "droplet")
        tags = labels_to_tags({LABEL_MANAGED_BY: LABEL_MANAGED_BY_VALUE, **labels})
        if not name:
            raise InvalidInput("A DigitalOcean snapshot needs a name", provider=KIND)
        require_off(await self.get(server_id), "DigitalOcean")
        try:
            await self._run_action(droplet, {"type": "snapshot", "name": name}, SNAPSHOT_TIMEOUT)
        except Timeout as exc:
            # The snapshot may still finish, untagged: Bivy's listing would never show it.
            exc.hint = (
                f"DigitalOcean may still finish snapshot {name!r}; if it appears under Images → "
                "Snapshots and you do not want it, delete it there (it is billed)"
            )
            raise
        found = [s for s in await self.client.droplet_snapshots(droplet) if s.name == name]
        if not found:
            raise ActionFailed(
                f"DigitalOcean finished the snapshot of droplet {droplet} but lists no "
                f"snapshot named {name!r}",
                provider=KIND,
            )
        snapshot = max(found, key=lambda s: (s.created_at or "", s.id))
        for tag in tags:
            with contextlib.suppress(Conflict, InvalidInput):  # the tag exists already
                await self.client.create_tag(tag)
            await self.client.tag_resource(tag, str(snapshot.id), "image")
        return await self.get_image(str(snapshot.id))

    async def get_image(self, image_id: str) -> ProviderImage:
        self._check_token()
        image = await self.client.image(numeric_id(image_id, "image"))
        return image_to_domain(image, self._labels(image.tags))

    async def list_images(self) -> builtins.list[ProviderImage]:
        """Bivy's snapshots: the private images tagged ``bivy``, with size and monthly cost."""
        self._check_token()
        return [
            image_to_domain(i, self._labels(i.tags)) for i in await self.client.images(MANAGED_TAG)
        ]

    async def delete_image(self, image_id: str) -> None:
        self._check_token()
        try:
            await self.client.delete_image(numeric_id(image_id, "image"))
        except NotFound:
            return
