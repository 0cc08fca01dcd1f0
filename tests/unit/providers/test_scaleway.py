"""Scaleway provider: create order (stopped → user data → poweron), cleanup, terminate vs delete,
zones, prices, error mapping, and the self-delete script run for real."""

from __future__ import annotations

import os
import subprocess
from decimal import Decimal

import httpx
import pytest

from app.domain import CreateServerRequest, ServerStatus
from app.errors import (
    AuthError,
    Conflict,
    InvalidInput,
    NotFound,
    ProviderUnavailable,
    QuotaExceeded,
)
from app.providers.scaleway import ScalewayProvider
from app.providers.scaleway.client import parse_error
from app.providers.scaleway.provider import SELF_DELETE_SCRIPT, labels_to_tags, tags_to_labels
from tests.contract.harness import ssh_public_key
from tests.emulators.base import ManualClock
from tests.emulators.scaleway import PROJECT_ID, SECRET_KEY, MetadataServer, ScalewayEmulator
from tests.support.waits import WAIT_S

OPTIONS = {"secret_key": SECRET_KEY, "project_id": PROJECT_ID}
BASE = "/instance/v1/zones"


def request(
    name: str = "alpha", zone: str = "fr-par-1", size: str = "DEV1-M"
) -> CreateServerRequest:
    return CreateServerRequest(
        name=name,
        region=zone,
        size=size,
        ssh_public_key=ssh_public_key(),
        labels={"managed-by": "bivy", "bivy-workspace": name},
        user_data="#cloud-config\nruncmd: [[true]]\n",
    )


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def emu(clock: ManualClock) -> ScalewayEmulator:
    return ScalewayEmulator(clock=clock)


@pytest.fixture
async def provider(emu: ScalewayEmulator):
    provider = ScalewayProvider(OPTIONS, transport=emu.transport())
    yield provider
    await provider.aclose()
    emu.assert_no_violations()


async def test_user_data_is_set_before_the_first_poweron(
    provider: ScalewayProvider, emu: ScalewayEmulator
) -> None:
    server = await provider.create(request())
    zone, uuid = server.id.split("/")
    steps = [
        (r.method, r.path.rsplit("/", 2)[-2:])
        for r in emu.requests
        if r.method != "GET" and "/servers" in r.path
    ]
    assert [s[0] for s in steps] == ["POST", "PATCH", "POST"]
    assert steps[1][1] == ["user_data", "cloud-init"]
    assert emu.calls("POST", f"{BASE}/{zone}/servers/{uuid}/action")[0].body == {
        "action": "poweron"
    }
    assert emu.booted_with[(zone, uuid)] == request().user_data.encode()
    assert server.status is ServerStatus.STARTING
    create = emu.calls("POST", f"{BASE}/fr-par-1/servers")[0].body
    assert create["project"] == PROJECT_ID
    assert create["tags"] == ["bivy", "bivy-workspace=alpha"]


async def test_servers_get_an_ssh_only_security_group_created_once_per_zone(
    provider: ScalewayProvider, emu: ScalewayEmulator
) -> None:
    first = await provider.create(request("a"))
    await provider.create(request("b"))
    await provider.create(request("c", "nl-ams-1"))
    groups = {k: g for k, g in emu.security_groups.items() if k[0] == "fr-par-1"}
    assert len(groups) == 1 and len(emu.security_groups) == 2
    (zone, group_id), group = next(iter(groups.items()))
    assert group["inbound_default_policy"] == "drop" and group["stateful"]
    assert emu.inbound_open_ports(zone, group_id) == {("TCP", 22, "0.0.0.0/0"), ("TCP", 22, "::/0")}
    uuid = first.id.split("/")[1]
    assert emu.servers[(zone, uuid)]["security_group"]["id"] == group_id
    # a fresh provider (next app start) finds the group by name instead of making another
    again = ScalewayProvider(OPTIONS, transport=emu.transport())
    await again.create(request("d"))
    await again.aclose()
    assert len(emu.security_groups) == 2


async def test_a_group_whose_rule_failed_is_removed(
    provider: ScalewayProvider, emu: ScalewayEmulator
) -> None:
    emu.inject_error("POST", r".*/security_groups/[^/]+/rules", 500, "internal", "boom")
    with pytest.raises(ProviderUnavailable):
        await provider.create(request())
    assert emu.security_groups == {} and emu.servers == {}


async def test_failed_poweron_removes_the_stopped_server_and_its_volume(
    provider: ScalewayProvider, emu: ScalewayEmulator
) -> None:
    emu.inject_error("POST", rf"{BASE}/fr-par-1/servers/[^/]+/action", 500, "internal", "boom")
    with pytest.raises(ProviderUnavailable):
        await provider.create(request())
    assert emu.servers == {}
    assert emu.volumes == {}


async def test_running_server_is_terminated_with_its_volumes(
    provider: ScalewayProvider, emu: ScalewayEmulator, clock: ManualClock
) -> None:
    server = await provider.create(request())
    clock.advance(10)
    assert (await provider.get(server.id)).status is ServerStatus.RUNNING
    await provider.delete(server.id)
    assert emu.calls("POST", rf"{BASE}/fr-par-1/servers/[^/]+/action")[-1].body == {
        "action": "terminate"
    }
    clock.advance(10)
    with pytest.raises(NotFound):
        await provider.get(server.id)
    assert emu.volumes == {}


async def test_stopped_server_is_deleted_then_its_volumes(
    provider: ScalewayProvider, emu: ScalewayEmulator, clock: ManualClock
) -> None:
    server = await provider.create(request())
    zone, uuid = server.id.split("/")
    emu.servers[(zone, uuid)]["state"] = "stopped"  # e.g. powered off from the console
    await provider.delete(server.id)
    assert emu.calls("DELETE", rf"{BASE}/{zone}/servers/{uuid}")
    assert len(emu.calls("DELETE", rf"{BASE}/{zone}/volumes/[^/]+")) == 1
    assert emu.servers == {} and emu.volumes == {}
    await provider.delete(server.id)  # gone: not an error


async def test_servers_in_any_zone_are_listed(
    provider: ScalewayProvider, emu: ScalewayEmulator
) -> None:
    a = await provider.create(request("a", "fr-par-1"))
    b = await provider.create(request("b", "nl-ams-1"))
    listed = {s.id: s for s in await provider.list()}
    assert set(listed) == {a.id, b.id}
    assert listed[b.id].region == "nl-ams-1"
    assert b.id.startswith("nl-ams-1/")
    assert (await provider.get(b.id)).name == "b"


async def test_sizes_have_eur_prices_in_the_zone(provider: ScalewayProvider) -> None:
    sizes = {s.name: s for s in await provider.sizes("nl-ams-1")}
    dev = sizes["DEV1-M"]
    assert (dev.cores, dev.memory_gb, dev.disk_gb) == (3, 4.0, 40)
    price = dev.price_in("nl-ams-1")
    assert price is not None and price.currency == "EUR"
    assert price.hourly == Decimal("0.01980") and price.monthly == Decimal("14.45")
    assert sizes["COPARM1-2C-8G"].architecture == "arm"


async def test_out_of_stock_types_are_hidden_and_refused(
    provider: ScalewayProvider, emu: ScalewayEmulator
) -> None:
    emu.out_of_stock.add("DEV1-M")
    assert "DEV1-M" not in {s.name for s in await provider.sizes()}
    with pytest.raises(ProviderUnavailable):
        await provider.create(request())


async def test_unknown_zone_is_refused_before_any_request(
    provider: ScalewayProvider, emu: ScalewayEmulator
) -> None:
    with pytest.raises(InvalidInput):
        await provider.create(request(zone="xx-yyy-9"))
    assert emu.requests == []


def _response(status: int, body: dict) -> httpx.Response:
    return httpx.Response(status, json=body, headers={"X-Request-Id": "req-1"})


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (401, {"type": "denied_authentication", "message": "invalid authentication"}, AuthError),
        (403, {"type": "permissions_denied", "message": "insufficient permissions"}, AuthError),
        (403, {"type": "quotas_exceeded", "message": "quota exceeded"}, QuotaExceeded),
        (
            400,
            {"type": "invalid_request_error", "message": "Quota exceeded for this resource"},
            QuotaExceeded,
        ),
        (400, {"type": "out_of_stock", "message": "DEV1-M is out of stock"}, ProviderUnavailable),
        (409, {"type": "transient_state", "message": "server is stopping"}, Conflict),
        (404, {"type": "unknown_resource", "message": "not found"}, NotFound),
        (
            400,
            {
                "type": "invalid_arguments",
                "message": "invalid argument(s)",
                "details": [
                    {"argument_name": "name", "reason": "constraint", "help_message": "too long"}
                ],
            },
            InvalidInput,
        ),
    ],
)
def test_error_mapping(status: int, body: dict, expected: type) -> None:
    error = parse_error(_response(status, body))
    assert isinstance(error, expected)
    assert error.request_id == "req-1" and error.provider == "scaleway"


def test_tags_round_trip() -> None:
    labels = {"managed-by": "bivy", "bivy-workspace": "x", "bivy-max-hours": "12"}
    assert tags_to_labels(labels_to_tags(labels)) == labels
    assert tags_to_labels(["unrelated", "a=b=c"]) == {"a": "b=c"}


def test_self_delete_env_carries_the_key_and_default_zone() -> None:
    env = ScalewayProvider({**OPTIONS, "zone": "pl-waw-1"}).self_delete_env()
    assert env == {"BIVY_SCALEWAY_SECRET_KEY": SECRET_KEY, "BIVY_SCALEWAY_ZONE": "pl-waw-1"}


async def test_missing_project_raises_invalid_input() -> None:
    provider = ScalewayProvider({"secret_key": SECRET_KEY})
    with pytest.raises(InvalidInput):
        await provider.list()
    await provider.aclose()


@pytest.mark.needs_root("curl --local-port 1-1023")
async def test_self_delete_script_terminates_its_own_server() -> None:
    emu = ScalewayEmulator(strict=False, stop_seconds=0)
    provider = ScalewayProvider(OPTIONS, transport=emu.transport())
    mine = await provider.create(request("mine", "fr-par-2"))
    other = await provider.create(request("other", "fr-par-2"))
    zone, uuid = mine.id.split("/")
    metadata = MetadataServer(uuid, zone)
    with emu.serve() as api, metadata.serve() as meta:
        env = {"PATH": os.environ["PATH"], "BIVY_METADATA_URL": meta, "BIVY_API_URL": api}
        bad = subprocess.run(
            ["sh", "-c", SELF_DELETE_SCRIPT],
            env={**env, "BIVY_SCALEWAY_SECRET_KEY": "00000000-0000-4000-8000-000000000000"},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert bad.returncode != 0 and "HTTP 401" in bad.stderr
        done = subprocess.run(
            ["sh", "-c", SELF_DELETE_SCRIPT],
            env={**env, **provider.self_delete_env()},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
    await provider.aclose()
    assert metadata.refused == 0  # every metadata read came from a privileged port
    emu._tick()
    assert (zone, uuid) not in emu.servers
    assert (zone, other.id.split("/")[1]) in emu.servers
    emu.assert_no_violations()


async def test_emulator_rejects_requests_the_spec_rejects() -> None:
    from tests.emulators.base import SpecViolation

    emu = ScalewayEmulator()
    async with httpx.AsyncClient(
        transport=emu.transport(), base_url="https://api.scaleway.com"
    ) as client:
        headers = {"X-Auth-Token": SECRET_KEY}
        with pytest.raises(SpecViolation, match="boot_type"):
            await client.post(
                f"{BASE}/fr-par-1/servers",
                json={"name": "x", "commercial_type": "DEV1-S", "boot_type": "floppy"},
                headers=headers,
            )
        with pytest.raises(SpecViolation, match="zone"):
            await client.get(f"{BASE}/mars-1/servers", headers=headers)
    assert len(emu.take_violations()) == 2  # provoked on purpose


async def test_cancel_between_create_and_poweron_leaves_nothing(
    provider: ScalewayProvider, emu: ScalewayEmulator
) -> None:
    import asyncio

    # The user data upload is held (an emulated delay the cancel ends): the cancel lands
    # between the server's creation and its power-on, whatever the machine's speed.
    emu.inject_latency("PATCH", r".*/user_data/cloud-init", 600.0)
    task = asyncio.create_task(provider.create(request()))
    async with asyncio.timeout(WAIT_S):
        while not emu.calls("PATCH", r".*/user_data/cloud-init"):
            await asyncio.sleep(0.01)  # the provider's own awaits: nothing to wait on but its log
    assert emu.servers  # created, not yet powered on
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert emu.servers == {} and emu.volumes == {}
    assert not emu.calls("POST", r".*/action")
