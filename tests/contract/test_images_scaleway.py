"""Scaleway images (prebuild snapshots) against the emulator, every request spec-checked: the
``poweroff`` action waited for, a snapshot of the root volume, an image from it (both tagged
``bivy`` + ``key=value``), ``/images`` tag- and project-filtered in every zone, a server from the
image, and delete taking the snapshot with it."""

from __future__ import annotations

from decimal import Decimal

import pytest

from app.domain import ImageStatus
from app.errors import BivyError, Conflict, InvalidInput, NotFound
from app.providers.scaleway.common import labels_to_tags
from app.providers.scaleway.images import SNAPSHOT_PRICE_PER_GB_MONTH
from tests.contract.images import (
    PREBUILD_LABELS,
    PREBUILD_NAME,
    image_env,
    misspelt_is_a_violation,
    round_trip,
)
from tests.emulators.scaleway import PROJECT_ID

BASE = "/instance/v1/zones/fr-par-1"


async def test_round_trip() -> None:
    async with image_env("scaleway") as env:
        _builder, image, server = await round_trip(env)
        emu = env.emulator
        tags = labels_to_tags({"managed-by": "bivy", **PREBUILD_LABELS})
        [snap] = emu.calls("POST", rf"{BASE}/snapshots")
        volume = snap.body["volume_id"]
        assert snap.body == {
            "name": PREBUILD_NAME,
            "volume_id": volume,
            "project": PROJECT_ID,
            "tags": tags,
        }
        [made] = emu.calls("POST", rf"{BASE}/images")
        assert made.body["root_volume"] != volume and made.body["arch"] == "x86_64"
        assert made.body["tags"] == tags and made.body["project"] == PROJECT_ID
        listings = emu.calls("GET", r"/instance/v1/zones/[^/]+/images")
        zones = {c.path.split("/")[4] for c in listings}
        assert len(zones) == 6
        assert all(c.query["tags"] == ["bivy"] for c in listings)
        assert all(c.query["project"] == [PROJECT_ID] for c in listings)
        # DEV1-M: a 40 GB local volume, the snapshot is as large
        assert image.size_gb == 40.0 and image.region == "fr-par-1"
        assert image.id.startswith("fr-par-1/")
        assert image.monthly_price is not None
        assert image.monthly_price.monthly == Decimal(40) * SNAPSHOT_PRICE_PER_GB_MONTH
        created = emu.calls("POST", rf"{BASE}/servers")[-1]
        assert created.body["image"] == image.id.split("/")[1]
        # deleting the image deleted its snapshot (what is billed) too
        assert emu.snapshots == {} and emu.images == {}
        assert emu.calls("DELETE", rf"{BASE}/snapshots/[^/]+")
        assert server.region == "fr-par-1"


async def test_stopped_snapshot_refusal_is_a_conflict() -> None:
    # Bivy never asks (it checks first), but should Scaleway refuse, the error is clear.
    async with image_env("scaleway") as env:
        builder = await env.builder()
        zone, uuid = builder.id.split("/")
        volume = env.emulator.servers[(zone, uuid)]["volumes"]["0"]["id"]
        with pytest.raises(Conflict) as info:
            await env.provider.client.create_snapshot(  # type: ignore[attr-defined]
                zone, {"name": "x", "volume_id": volume, "project": PROJECT_ID}
            )
        assert "stopped" in info.value.message and info.value.code == "precondition_failed"


async def test_failed_image_create_leaves_no_snapshot() -> None:
    async with image_env("scaleway") as env:
        builder = await env.builder()
        await env.provider.power_off(builder.id)
        env.emulator.inject_error("POST", rf"{BASE}/images", 500, "internal_error", "boom")
        with pytest.raises(Exception):  # noqa: B017 - any failure; the point is the cleanup
            await env.provider.create_image(builder.id, name="x", labels=PREBUILD_LABELS)
        assert env.emulator.snapshots == {}


async def test_create_image_waits_for_the_snapshot() -> None:
    async with image_env("scaleway") as env:
        builder = await env.builder()
        await env.provider.power_off(builder.id)
        image = await env.provider.create_image(builder.id, name="p", labels=PREBUILD_LABELS)
        assert image.status in (ImageStatus.CREATING, ImageStatus.AVAILABLE)
        assert sum(env.sleeps) >= env.emulator.snapshot_seconds


async def test_image_from_another_zone_is_refused_before_sending() -> None:
    async with image_env("scaleway") as env:
        request = env.request("x", image="nl-ams-1/00000000-0000-4000-8000-000000000000")
        with pytest.raises(InvalidInput, match="nl-ams-1"):
            await env.provider.create(request)
        assert not env.emulator.calls("POST", r".*/servers")


async def test_unknown_ids() -> None:
    async with image_env("scaleway") as env:
        with pytest.raises(NotFound):
            await env.provider.get_image("fr-par-1/00000000-0000-4000-8000-000000000000")
        with pytest.raises(NotFound):
            await env.provider.get_image("mars-1/00000000-0000-4000-8000-000000000000")
        await env.provider.delete_image("fr-par-1/00000000-0000-4000-8000-000000000000")


async def test_a_misspelt_image_request_is_a_spec_violation() -> None:
    async with image_env("scaleway") as env:
        body = {"root_volume": "x", "arch": "x86_64", "tagz": ["bivy"]}
        await misspelt_is_a_violation(env, "instance/v1/zones/fr-par-1/images", body)


async def test_a_snapshot_left_behind_is_named_in_the_error() -> None:
    async with image_env("scaleway") as env:
        builder = await env.builder()
        await env.provider.power_off(builder.id)
        image = await env.provider.create_image(builder.id, name="p", labels=PREBUILD_LABELS)
        [snapshot_id] = [key[1] for key in env.emulator.snapshots]
        env.emulator.inject_error(
            "DELETE", rf"{BASE}/snapshots/[^/]+", 500, "internal_error", "boom", times=None
        )
        with pytest.raises(BivyError) as info:
            await env.provider.delete_image(image.id)
        assert snapshot_id in info.value.message and snapshot_id in info.value.hint
        assert env.emulator.images == {}
