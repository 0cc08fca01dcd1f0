"""OVHcloud images (prebuild snapshots) against the emulator, every request checked against the
hand-written schema: stop waited for, ``/instance/{id}/snapshot`` under a name carrying the
labels, found again in ``/snapshot``, priced from the public catalogue's
``snapshot.consumption``, an instance booted from it, delete; the declared access rules."""

from __future__ import annotations

from decimal import Decimal

import pytest

from app.errors import AuthError, InvalidInput, NotFound
from app.providers.ovh.images import labels_from_snapshot_name, snapshot_name
from tests.contract.images import PREBUILD_LABELS, image_env, misspelt_is_a_violation, round_trip
from tests.emulators import ovh as emu_mod
from tests.emulators.ovh_images import SNAPSHOT_HOURLY

NAME = "bivy-prebuild-0123456789abcdef-fedcba9876543210 bivy-agent=claude bivy-version=0-4-0"


def test_the_name_carries_the_labels() -> None:
    assert snapshot_name(PREBUILD_LABELS) == NAME
    assert labels_from_snapshot_name(NAME) == PREBUILD_LABELS
    assert labels_from_snapshot_name("my own snapshot") == {}
    assert labels_from_snapshot_name("bivy-prebuild-") == {}
    assert labels_from_snapshot_name("bivy-prebuild-abc-") == {}
    no_hash = {"managed-by": "bivy", "bivy-prebuild": "0123456789abcdef", "bivy-agent": "codex"}
    assert labels_from_snapshot_name(snapshot_name(no_hash)) == no_hash
    with pytest.raises(InvalidInput):
        snapshot_name({"bivy-agent": "claude"})  # no repo key
    with pytest.raises(InvalidInput):
        snapshot_name({**PREBUILD_LABELS, "bivy-agent": "two words"})


async def test_round_trip() -> None:
    async with image_env("ovh") as env:
        builder, image, server = await round_trip(env)
        emu = env.emulator
        [stop] = emu.calls("POST", rf"/1.0/cloud/project/[^/]+/instance/{builder.id}/stop")
        assert stop.body in (None, "")
        [snap] = emu.calls("POST", rf"/1.0/cloud/project/[^/]+/instance/{builder.id}/snapshot")
        assert snap.body == {"snapshotName": NAME}
        assert image.name == NAME and image.region == "GRA11"
        # d2-4: a 50 GB disk, a fifth used → 10 GB at 0.00001389 €/GB-hour × 730
        assert image.size_gb == 10.0
        assert image.monthly_price is not None and image.monthly_price.currency == "EUR"
        per_gb = Decimal(SNAPSHOT_HOURLY) / 10**8 * 730
        assert image.monthly_price.monthly == (10 * per_gb).quantize(Decimal("0.0001"))
        created = emu.calls("POST", r"/1.0/cloud/project/[^/]+/region/GRA11/instance")[-1]
        assert created.body["bootFrom"] == {"imageId": image.id}
        assert emu.instances[server.id]["imageId"] == image.id


async def test_foreign_snapshots_are_not_listed() -> None:
    async with image_env("ovh") as env:
        builder = await env.builder()
        await env.provider.power_off(builder.id)
        await env.provider.client.snapshot_instance(builder.id, "hand made")  # type: ignore[attr-defined]
        assert await env.provider.list_images() == []


async def test_snapshot_in_another_region_is_refused_before_creating() -> None:
    async with image_env("ovh") as env:
        builder = await env.builder()
        await env.provider.power_off(builder.id)
        image = await env.provider.create_image(builder.id, name="x", labels=PREBUILD_LABELS)
        request = env.request("elsewhere", image=image.id).model_copy(update={"region": "SBG5"})
        with pytest.raises(InvalidInput, match="GRA11"):
            await env.provider.create(request)


async def test_unknown_ids() -> None:
    async with image_env("ovh") as env:
        with pytest.raises(NotFound):
            await env.provider.get_image("0c3c5f2e-0000-4000-8000-000000000000")
        await env.provider.delete_image("0c3c5f2e-0000-4000-8000-000000000000")


async def test_declared_access_rules_cover_prebuilds() -> None:
    async with image_env("ovh") as env:
        provider_cls = type(env.provider)
        rules = provider_cls.access_rules(emu_mod.PROJECT_ID)  # type: ignore[attr-defined]
        env.emulator.consumer_keys[emu_mod.CONSUMER_KEY] = [(r["method"], r["path"]) for r in rules]
        await round_trip(env)
        # without the snapshot rule the same flow stops with a clear AuthError
        env.emulator.consumer_keys[emu_mod.CONSUMER_KEY] = [
            (r["method"], r["path"]) for r in rules if not r["path"].endswith("/snapshot")
        ]
        builder = await env.builder("second")
        await env.provider.power_off(builder.id)
        with pytest.raises(AuthError, match="access rules"):
            await env.provider.create_image(builder.id, name="x", labels=PREBUILD_LABELS)


async def test_a_misspelt_image_request_is_a_spec_violation() -> None:
    async with image_env("ovh") as env:
        path = f"cloud/project/{emu_mod.PROJECT_ID}/instance/x/snapshot"
        await misspelt_is_a_violation(env, path, {"name": "bivy-prebuild-x"})


async def test_a_snapshot_that_never_shows_up_is_a_clear_error() -> None:
    async with image_env("ovh") as env:
        builder = await env.builder()
        await env.provider.power_off(builder.id)
        env.emulator.inject_error(
            "GET", r"/1.0/cloud/project/[^/]+/snapshot", 200, times=None, body=[]
        )
        with pytest.raises(NotFound, match="does not list"):
            await env.provider.create_image(builder.id, name="x", labels=PREBUILD_LABELS)
        assert len(env.emulator.calls("GET", r"/1.0/cloud/project/[^/]+/snapshot")) == 1 + 15
        assert 50 <= sum(env.sleeps[-14:]) <= 70  # about a minute of the provider's time


async def test_a_second_prebuild_of_the_same_name_is_a_new_image() -> None:
    async with image_env("ovh") as env:
        builder = await env.builder()
        await env.provider.power_off(builder.id)
        first = await env.provider.create_image(builder.id, name="x", labels=PREBUILD_LABELS)
        await env.wait_image(first.id)
        second = await env.provider.create_image(builder.id, name="x", labels=PREBUILD_LABELS)
        assert second.id != first.id and second.name == first.name
        assert {i.id for i in await env.provider.list_images()} == {first.id, second.id}


async def test_a_flavor_too_small_for_the_snapshot_is_refused() -> None:
    async with image_env("ovh") as env:
        builder = await env.builder()  # d2-4: 50 GB
        await env.provider.power_off(builder.id)
        image = await env.wait_image(
            (await env.provider.create_image(builder.id, name="x", labels=PREBUILD_LABELS)).id
        )
        small = env.request("small", image=image.id).model_copy(update={"size": "d2-2"})
        with pytest.raises(InvalidInput, match="minDisk"):
            await env.provider.create(small)
