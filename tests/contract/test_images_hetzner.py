"""Hetzner Cloud images (prebuild snapshots) against the emulator, every request spec-checked:
``poweroff``, ``create_image`` (type snapshot, labels), ``/images`` label-selected, the price per
GB-month from ``/pricing``, a server from the snapshot, delete."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from app.domain import ImageStatus
from app.errors import Conflict, InvalidInput, NotFound
from tests.contract.images import (
    PREBUILD_LABELS,
    PREBUILD_NAME,
    image_env,
    misspelt_is_a_violation,
    round_trip,
)


async def test_round_trip() -> None:
    async with image_env("hetzner") as env:
        builder, image, server = await round_trip(env)
        emu = env.emulator
        [post] = emu.calls("POST", r"/v1/servers/\d+/actions/create_image")
        assert post.body == {
            "type": "snapshot",
            "description": PREBUILD_NAME,
            "labels": PREBUILD_LABELS,
        }
        assert emu.calls("POST", rf"/v1/servers/{builder.id}/actions/poweroff")
        listings = [c for c in emu.calls("GET", r"/v1/images") if "label_selector" in c.query]
        assert listings and all(c.query["type"] == ["snapshot"] for c in listings)
        assert all(c.query["label_selector"] == ["managed-by=bivy"] for c in listings)
        # cx23: a 40 GB disk, 30 % of it used → 12 GB at the gross GB-month price of /pricing
        assert image.size_gb == 12.0
        assert image.monthly_price is not None
        gross = Decimal("0.0110") * Decimal("1.19")
        assert image.monthly_price.monthly == (Decimal(12) * gross).quantize(Decimal("0.0001"))
        assert image.monthly_price.includes_vat and image.monthly_price.currency == "EUR"
        created = emu.calls("POST", r"/v1/servers")[-1]
        assert created.body["image"] == image.id
        assert emu.server_status(int(server.id)) == "running"


async def test_create_image_returns_at_once_while_creating() -> None:
    async with image_env("hetzner") as env:
        builder = await env.builder()
        await env.provider.power_off(builder.id)
        image = await env.provider.create_image(builder.id, name="p", labels=PREBUILD_LABELS)
        assert image.status == ImageStatus.CREATING
        assert image.size_gb is None and image.monthly_price is None
        # a server cannot be made from it before it is available
        with pytest.raises(InvalidInput):
            await env.provider.create(env.request("too-early", image=image.id))
        assert (await env.wait_image(image.id)).status == ImageStatus.AVAILABLE


async def test_foreign_snapshots_are_not_listed() -> None:
    async with image_env("hetzner") as env:
        env.emulator.add_snapshot(labels={})
        env.emulator.add_snapshot(labels={"managed-by": "someone-else"})
        mine = env.emulator.add_snapshot(labels=PREBUILD_LABELS)
        listed = await env.provider.list_images()
        assert [i.id for i in listed] == [str(mine)]
        assert listed[0].status == ImageStatus.AVAILABLE and listed[0].size_gb


async def test_locked_server_is_a_clear_conflict() -> None:
    async with image_env("hetzner") as env:
        builder = await env.builder()
        await env.provider.power_off(builder.id)
        await env.provider.create_image(builder.id, name="first", labels=PREBUILD_LABELS)
        # the first snapshot's action still runs: Hetzner locks the server (423)
        with pytest.raises(Conflict) as info:
            await env.provider.create_image(builder.id, name="second", labels=PREBUILD_LABELS)
        assert info.value.status == 423 and info.value.provider == "hetzner"


async def test_bad_labels_are_refused_before_any_request() -> None:
    async with image_env("hetzner") as env:
        with pytest.raises(InvalidInput):
            await env.provider.create_image("42", name="x", labels={"bivy-repo": "https://x/y"})
        assert env.emulator.requests == []


async def test_unknown_ids() -> None:
    async with image_env("hetzner") as env:
        with pytest.raises(NotFound):
            await env.provider.get_image("161547269999")
        with pytest.raises(NotFound):
            await env.provider.get_image("not-a-number")
        await env.provider.delete_image("161547269999")
        with pytest.raises(NotFound):
            await env.provider.power_off("424242")


def test_real_create_image_answer_parses(data_dir: Path) -> None:
    # hcloud-python's fixture of a create_image answer (a snapshot still creating, minute-only
    # timestamps) and of a finished image.
    from app.providers.hetzner import models as m
    from app.providers.hetzner.images import image_to_domain

    folder = data_dir / "fixtures/hcloud-python"
    created = m.CreateImageResponse.model_validate(
        json.loads((folder / "servers__response_server_create_image.json").read_text())
    )
    image = image_to_domain(created.image, ("EUR", Decimal("0.0131")))
    assert (image.id, image.status, image.name) == ("4711", ImageStatus.CREATING, "my image")
    assert image.created_at is not None and image.created_at.tzinfo is not None
    assert image.size_gb == 2.3 and image.monthly_price is not None
    assert image.monthly_price.monthly == Decimal("0.0301")
    done = m.Image.model_validate(
        json.loads((folder / "images__image_response.json").read_text())["image"]
    )
    assert image_to_domain(done, None).status == ImageStatus.AVAILABLE


async def test_a_misspelt_image_request_is_a_spec_violation() -> None:
    async with image_env("hetzner") as env:
        body = {"type": "snapshot", "descripton": "typo"}
        await misspelt_is_a_violation(env, "servers/1000/actions/create_image", body)


async def test_a_server_type_too_small_for_the_image_is_refused() -> None:
    async with image_env("hetzner") as env:
        big = env.emulator.add_snapshot(labels=PREBUILD_LABELS, disk=160)
        with pytest.raises(InvalidInput, match="disk"):
            await env.provider.create(env.request("small", image=str(big)))
