"""DigitalOcean images (prebuild snapshots) against the emulator, every request spec-checked:
the ``power_off`` and ``snapshot`` droplet actions waited for, the snapshot found by name and
tagged (``bivy`` + ``key:value``), ``/v2/images`` tag-filtered, a droplet from the snapshot's
integer id, delete; the token scopes prebuilds need."""

from __future__ import annotations

from decimal import Decimal

import pytest

from app.domain import ImageStatus
from app.errors import AuthError, Conflict, InvalidInput, NotFound, Timeout
from app.providers.digitalocean.images import SNAPSHOT_PRICE_PER_GB_MONTH
from app.providers.digitalocean.tags import labels_to_tags
from tests.contract.images import (
    PREBUILD_LABELS,
    PREBUILD_NAME,
    image_env,
    misspelt_is_a_violation,
    round_trip,
)


async def test_round_trip() -> None:
    async with image_env("digitalocean") as env:
        builder, image, server = await round_trip(env)
        emu = env.emulator
        actions = [c.body for c in emu.calls("POST", rf"/v2/droplets/{builder.id}/actions")]
        assert actions == [{"type": "power_off"}, {"type": "snapshot", "name": PREBUILD_NAME}]
        tagged = [c.path.rsplit("/", 2)[1] for c in emu.calls("POST", r"/v2/tags/[^/]+/resources")]
        assert tagged[0] == "bivy"
        assert sorted(tagged) == sorted(labels_to_tags(PREBUILD_LABELS))
        listings = [c for c in emu.calls("GET", r"/v2/images") if c.status == 200]
        assert all(c.query["tag_name"] == ["bivy"] for c in listings)
        # s-2vcpu-4gb: an 80 GB disk, a quarter used → 20 GB at $0.06 per GB-month
        assert image.size_gb == 20.0
        assert image.monthly_price is not None
        assert image.monthly_price.monthly == Decimal(20) * SNAPSHOT_PRICE_PER_GB_MONTH
        assert image.monthly_price.currency == "USD"
        assert image.region == "fra1"
        created = emu.calls("POST", r"/v2/droplets")[-1]
        assert created.body["image"] == int(image.id)  # an id, not a slug
        assert emu.droplets[int(server.id)]["image"]["id"] == int(image.id)


async def test_create_image_waits_for_the_snapshot_and_returns_it_available() -> None:
    async with image_env("digitalocean") as env:
        builder = await env.builder()
        await env.provider.power_off(builder.id)
        image = await env.provider.create_image(builder.id, name="p1", labels=PREBUILD_LABELS)
        assert image.status == ImageStatus.AVAILABLE
        assert sum(env.sleeps) >= env.emulator.snapshot_seconds


async def test_untagged_snapshots_are_not_listed() -> None:
    async with image_env("digitalocean") as env:
        builder = await env.builder()
        await env.provider.power_off(builder.id)
        env.emulator._snapshot(env.emulator.droplets[int(builder.id)], "hand-made", 0)
        assert await env.provider.list_images() == []


async def test_pending_event_is_a_clear_error() -> None:
    async with image_env("digitalocean") as env:
        builder = await env.builder()
        env.emulator.inject_error(
            "POST",
            r"/v2/droplets/\d+/actions",
            422,
            "unprocessable_entity",
            "Droplet already has a pending event.",
        )
        with pytest.raises(Conflict) as info:
            await env.provider.power_off(builder.id)
        assert "pending event" in str(info.value) and info.value.status == 422


async def test_running_droplet_is_refused_without_a_snapshot_action() -> None:
    async with image_env("digitalocean") as env:
        builder = await env.builder()
        with pytest.raises(Conflict):
            await env.provider.create_image(builder.id, name="x", labels=PREBUILD_LABELS)
        assert not env.emulator.calls("POST", r"/v2/droplets/\d+/actions")


async def test_unknown_ids() -> None:
    async with image_env("digitalocean") as env:
        with pytest.raises(NotFound):
            await env.provider.get_image("999")
        with pytest.raises(NotFound):
            await env.provider.get_image("ubuntu-24-04-x64")
        await env.provider.delete_image("999")


async def test_prebuild_scopes_are_declared_and_needed() -> None:
    async with image_env("digitalocean") as env:
        emu = env.emulator
        provider_cls = type(env.provider)
        scoped = "dop_v1_" + "7" * 64
        all_scopes = set(provider_cls.token_scopes) | set(provider_cls.image_token_scopes)

        async def prebuild() -> None:
            provider = provider_cls({"token": scoped}, transport=emu.transport(), sleep=env.sleep)
            try:
                builder = await provider.create(env.request("scoped"))
                env.clock.advance(10)
                await provider.power_off(builder.id)
                image = await provider.create_image(builder.id, name="s", labels=PREBUILD_LABELS)
                assert [i.id for i in await provider.list_images()] == [image.id]
                await provider.delete(builder.id)
                await provider.delete_image(image.id)
            finally:
                await provider.aclose()

        emu.scoped[scoped] = all_scopes
        await prebuild()
        for scope in provider_cls.image_token_scopes:
            emu.scoped[scoped] = all_scopes - {scope}
            with pytest.raises(AuthError, match="missing scope"):
                await prebuild()


async def test_a_misspelt_image_request_is_a_spec_violation() -> None:
    async with image_env("digitalocean") as env:
        body = {"resources": [{"resource_id": "1", "resource_typ": "image"}]}
        await misspelt_is_a_violation(env, "v2/tags/bivy/resources", body)


async def test_a_snapshot_that_takes_too_long_says_where_to_find_it() -> None:
    async with image_env("digitalocean") as env:
        builder = await env.builder()
        await env.provider.power_off(builder.id)
        env.emulator.snapshot_seconds = 10 * 3600
        env.provider._clock = env.clock  # type: ignore[attr-defined]
        with pytest.raises(Timeout) as info:
            await env.provider.create_image(builder.id, name="slow-one", labels=PREBUILD_LABELS)
        assert "slow-one" in info.value.hint


async def test_a_snapshot_is_usable_in_its_region_only() -> None:
    async with image_env("digitalocean") as env:
        builder = await env.builder()
        await env.provider.power_off(builder.id)
        image = await env.provider.create_image(builder.id, name="fra", labels=PREBUILD_LABELS)
        elsewhere = env.request("ams", image=image.id).model_copy(update={"region": "ams3"})
        with pytest.raises(InvalidInput, match="invalid image"):
            await env.provider.create(elsewhere)
