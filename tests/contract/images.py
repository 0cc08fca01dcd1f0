"""The image (snapshot) contract every cloud provider meets, run by each provider's test file
(``test_images_<provider>.py``) against its emulator, every request spec-checked.

The round trip: a builder server refuses a snapshot while it runs (a clear ``Conflict``), is
powered off, snapshotted with Bivy's prebuild labels, the image turns ``available`` with a size
and a monthly price, is listed (and nothing that is not Bivy's), a new server is created from
it, and the image is deleted (gone: ``NotFound``; deleting again is fine).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from app.domain import CreateServerRequest, ImageStatus, ProviderImage, Server, ServerStatus
from app.errors import Conflict, NotFound
from app.providers.base import Provider
from tests.contract.harness import HARNESSES, Harness
from tests.emulators.base import ManualClock

#: The labels a prebuild image carries (CONTRACTS2: repo key, config hash, version, agent).
PREBUILD_LABELS = {
    "managed-by": "bivy",
    "bivy-prebuild": "0123456789abcdef",
    "bivy-config-hash": "fedcba9876543210",
    "bivy-version": "0-4-0",
    "bivy-agent": "claude",
}
PREBUILD_NAME = "bivy-prebuild-0123456789abcdef-fedcba9876543210"


@dataclass
class ImageEnv:
    harness: Harness
    emulator: Any
    options: dict[str, str]
    clock: ManualClock
    provider: Provider
    sleeps: list[float] = field(default_factory=list)

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.clock.advance(max(seconds, 0.0))

    def request(self, name: str, image: str | None = None) -> CreateServerRequest:
        return self.harness.request(name).model_copy(update={"image": image})

    async def wait_status(self, server_id: str, status: ServerStatus) -> Server:
        for _ in range(120):
            server = await self.provider.get(server_id)
            if server.status == status:
                return server
            self.clock.advance(5)
        raise AssertionError(f"{server_id} never reached {status}")

    async def wait_image(self, image_id: str) -> ProviderImage:
        for _ in range(120):
            image = await self.provider.get_image(image_id)
            if image.status != ImageStatus.CREATING:
                return image
            self.clock.advance(5)
        raise AssertionError(f"image {image_id} stayed creating")

    async def builder(self, name: str = "builder") -> Server:
        created = await self.provider.create(self.request(name))
        return await self.wait_status(created.id, ServerStatus.RUNNING)


def harness(kind: str) -> Harness:
    return next(h for h in HARNESSES if h.kind == kind)


@contextlib.asynccontextmanager
async def image_env(kind: str) -> AsyncIterator[ImageEnv]:
    chosen = harness(kind)
    clock = ManualClock()
    emulator, options = chosen.make(clock)
    env = ImageEnv(chosen, emulator, options, clock, None)  # type: ignore[arg-type]
    env.provider = chosen.provider_cls(options, transport=emulator.transport(), sleep=env.sleep)
    try:
        yield env
    finally:
        await env.provider.aclose()
    emulator.assert_no_violations()


async def round_trip(env: ImageEnv) -> tuple[Server, ProviderImage, Server]:
    """The whole contract; returns (builder, the available image, the server made from it)."""
    provider = env.provider
    assert provider.capabilities.snapshots
    builder = await env.builder()

    with pytest.raises(Conflict) as refused:
        await provider.create_image(builder.id, name=PREBUILD_NAME, labels=PREBUILD_LABELS)
    assert refused.value.provider == env.harness.kind
    assert "off" in refused.value.message

    await provider.power_off(builder.id)
    await env.wait_status(builder.id, ServerStatus.OFF)
    posts = len(env.emulator.calls("POST", ".*"))
    await provider.power_off(builder.id)  # off already: nothing to ask
    assert len(env.emulator.calls("POST", ".*")) == posts

    image = await provider.create_image(builder.id, name=PREBUILD_NAME, labels=PREBUILD_LABELS)
    assert image.provider == env.harness.kind
    assert image.status in (ImageStatus.CREATING, ImageStatus.AVAILABLE)
    assert image.is_bivy
    assert {k: image.labels.get(k) for k in PREBUILD_LABELS} == PREBUILD_LABELS

    ready = await env.wait_image(image.id)
    assert ready.id == image.id
    assert ready.status == ImageStatus.AVAILABLE
    assert ready.size_gb is not None and ready.size_gb > 0
    assert ready.monthly_price is not None and ready.monthly_price.monthly > 0
    assert {k: ready.labels.get(k) for k in PREBUILD_LABELS} == PREBUILD_LABELS

    listed = await provider.list_images()
    assert [i.id for i in listed] == [image.id]
    assert listed[0].monthly_price == ready.monthly_price
    assert all(i.is_bivy for i in listed)

    await provider.delete(builder.id)
    server = await provider.create(env.request("from-prebuild", image=image.id))
    server = await env.wait_status(server.id, ServerStatus.RUNNING)

    await provider.delete_image(image.id)
    with pytest.raises(NotFound):
        await provider.get_image(image.id)
    await provider.delete_image(image.id)  # already gone: fine
    assert await provider.list_images() == []
    return builder, ready, server


async def misspelt_is_a_violation(env: ImageEnv, path: str, body: dict[str, Any]) -> None:
    """A request the spec (or OVH's hand-written schema) rejects never reaches the routes."""
    from tests.emulators.base import SpecViolation

    api = env.provider.client.api  # type: ignore[attr-defined]
    with pytest.raises(SpecViolation):
        await api.send_json("POST", path, body)
    assert len(env.emulator.take_violations()) == 1
