"""OVHcloud provider: request signing (checked against sha1sum), server clock, operation polling,
catalogue prices, name-prefix labels, access rules, error mapping, and the self-delete script."""

from __future__ import annotations

import os
import subprocess
from decimal import Decimal

import httpx
import pytest

from app.domain import CreateServerRequest, ServerStatus
from app.errors import ActionFailed, AuthError, InvalidInput, ProviderUnavailable, QuotaExceeded
from app.providers.ovh import OvhProvider
from app.providers.ovh import models as m
from app.providers.ovh.client import parse_error, signature
from app.providers.ovh.provider import (
    SELF_DELETE_SCRIPT,
    catalog_prices,
    flavor_price,
    instance_name,
    labels_from_name,
)
from tests.contract.harness import ssh_public_key
from tests.emulators import ovh as emu_mod
from tests.emulators.base import ManualClock
from tests.emulators.ovh import MetadataEmulator, OvhEmulator

OPTIONS = {
    "application_key": emu_mod.APPLICATION_KEY,
    "application_secret": emu_mod.APPLICATION_SECRET,
    "consumer_key": emu_mod.CONSUMER_KEY,
    "project_id": emu_mod.PROJECT_ID,
}


def request(name: str = "alpha", size: str = "d2-4") -> CreateServerRequest:
    return CreateServerRequest(
        name=name,
        region="GRA11",
        size=size,
        ssh_public_key=ssh_public_key(),
        labels={"managed-by": "bivy", "bivy-workspace": name},
        user_data="#cloud-config\n{}\n",
    )


class Env:
    def __init__(self, skew: float = 0.0) -> None:
        self.clock = ManualClock()
        self.clock.advance(skew)
        self.emu = OvhEmulator(clock=self.clock)
        self.provider = OvhProvider(OPTIONS, transport=self.emu.transport(), sleep=self.sleep)

    async def sleep(self, seconds: float) -> None:
        self.clock.advance(seconds)


def test_signature_matches_the_shell_implementation() -> None:
    url = "https://eu.api.ovh.com/1.0/cloud/project/abc/instance/x?region=GRA11"
    body = b'{"name":"bivy-x"}'
    shell = subprocess.run(
        [
            "sh",
            "-c",
            "printf '%s+%s+%s+%s+%s+%s' \"$@\" | sha1sum | cut -d' ' -f1",
            "sh",
            "AS",
            "CK",
            "POST",
            url,
            body.decode(),
            "1700000000",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert signature("AS", "CK", "post", url, body, 1700000000) == "$1$" + shell


async def test_server_clock_is_used_when_the_desktop_clock_is_off() -> None:
    env = Env(skew=-7200)  # the API's clock is two hours behind this machine
    assert (await env.provider.validate()).provider == "ovh"
    await env.provider.regions()
    assert len(env.emu.calls("GET", "/1.0/auth/time")) == 1
    assert env.provider.signer.delta is not None and abs(env.provider.signer.delta + 7200) <= 1
    await env.provider.aclose()


async def test_clock_jump_is_resynced_once() -> None:
    env = Env()
    await env.provider.regions()
    env.clock.advance(1000)  # e.g. the laptop slept; the delta is now wrong
    await env.provider.regions()
    assert len(env.emu.calls("GET", "/1.0/auth/time")) == 2
    await env.provider.aclose()


async def test_create_polls_the_operation_then_returns_the_instance() -> None:
    env = Env()
    server = await env.provider.create(request())
    assert server.name == "bivy-alpha"
    assert server.labels == {"managed-by": "bivy", "bivy-workspace": "alpha"}
    assert server.status is ServerStatus.INITIALIZING and server.size == "d2-4"
    assert len(env.emu.calls("GET", r"/1.0/cloud/project/\w+/operation/[^/]+")) == 2
    body = env.emu.calls("POST", r"/1.0/cloud/project/\w+/region/GRA11/instance")[0].body
    assert body["userData"] == "#cloud-config\n{}\n"  # plain text
    assert body["billingPeriod"] == "hourly"
    image = next(i for i in env.emu.images if i["id"] == body["bootFrom"]["imageId"])
    assert image["name"] == "Ubuntu 24.04"
    # the SSH key is uploaded once and reused by its public key
    await env.provider.create(request("beta"))
    assert len(env.emu.calls("POST", r"/1.0/cloud/project/\w+/sshkey")) == 1
    await env.provider.aclose()


async def test_operation_in_error_raises_action_failed() -> None:
    env = Env()
    env.emu.fail_operations = 1
    with pytest.raises(ActionFailed):
        await env.provider.create(request())
    assert await env.provider.list() == []
    await env.provider.aclose()


async def test_list_shows_only_bivy_instances() -> None:
    env = Env()
    await env.provider.create(request())
    env.emu.instances["foreign"] = {
        **next(iter(env.emu.instances.values())),
        "id": "foreign",
        "name": "web-1",
    }
    names = [s.name for s in await env.provider.list()]
    assert names == ["bivy-alpha"]
    await env.provider.aclose()


async def test_unavailable_flavor_is_refused_before_create() -> None:
    env = Env()
    env.emu.unavailable.add("d2-4")
    with pytest.raises(ProviderUnavailable):
        await env.provider.create(request())
    assert env.emu.calls("POST", r".*/instance") == []
    await env.provider.aclose()


async def test_access_rules_refusal_is_an_auth_error_with_a_hint() -> None:
    env = Env()
    env.emu.consumer_keys[emu_mod.CONSUMER_KEY] = [("GET", "/cloud/project/*")]
    await env.provider.list()
    with pytest.raises(AuthError) as info:
        await env.provider.delete("0c3c5f2e-0000-4000-8000-000000000000")
    assert info.value.code == "NOT_GRANTED_CALL" and "access rules" in info.value.hint
    await env.provider.aclose()


async def test_sizes_priced_from_the_public_catalogue() -> None:
    env = Env()
    sizes = {s.name: s for s in await env.provider.sizes()}
    d2 = sizes["d2-4"]
    assert (d2.cores, d2.memory_gb, d2.disk_gb) == (2, 4.0, 50)
    price = d2.price_in("GRA11")
    assert price is not None and price.currency == "EUR"
    assert price.hourly == Decimal("0.01650")
    assert price.monthly == Decimal("12.05")  # no monthly plan: 730 h
    b3 = sizes["b3-8"].price_in("GRA11")
    assert b3 is not None and b3.monthly == Decimal("37.00")  # its monthly plan code
    await env.provider.aclose()


def test_catalogue_prices_scale() -> None:
    catalog = m.Catalog.model_validate(
        {
            "locale": {"currencyCode": "CAD"},
            "addons": [
                {
                    "planCode": "x.consumption",
                    "pricings": [{"price": 123_456_789, "intervalUnit": "hour"}],
                },
                {
                    "planCode": "x.monthly.postpaid",
                    "pricings": [{"price": 9_000_000_000, "intervalUnit": "month"}],
                },
            ],
        }
    )
    prices = catalog_prices(catalog)
    assert prices["x.consumption"] == ("hour", Decimal("1.23456789"))
    flavor = m.Flavor.model_validate(
        {
            "id": "f",
            "name": "x",
            "region": "BHS5",
            "vcpus": 1,
            "ram": 2000,
            "planCodes": {"hourly": "x.consumption", "monthly": "x.monthly.postpaid"},
        }
    )
    price = flavor_price(flavor, prices, "CAD")
    assert price is not None and price.monthly == Decimal("90.00") and price.currency == "CAD"
    unpriced = flavor.model_copy(update={"planCodes": m.PlanCodes(hourly="nope")})
    assert flavor_price(unpriced, prices, "CAD") is None


def test_names_carry_the_workspace() -> None:
    assert instance_name(request("ws-1")) == "bivy-ws-1"
    assert labels_from_name("bivy-ws-1") == {"managed-by": "bivy", "bivy-workspace": "ws-1"}
    assert labels_from_name("web") == {} and labels_from_name("bivy-") == {}


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (403, {"message": "Invalid key", "errorCode": "INVALID_KEY"}, AuthError),
        (
            403,
            {"message": "This credential does not exist", "errorCode": "INVALID_CREDENTIAL"},
            AuthError,
        ),
        (
            400,
            {"message": "Quota exceeded: instances", "class": "Client::BadRequest"},
            QuotaExceeded,
        ),
        (
            400,
            {"message": "Flavor d2-4 is not available", "class": "Client::BadRequest"},
            ProviderUnavailable,
        ),
        (400, {"message": "Invalid name", "class": "Client::BadRequest"}, InvalidInput),
        (460, {"message": "Service expired"}, ProviderUnavailable),
    ],
)
def test_error_mapping(status: int, body: dict, expected: type) -> None:
    error = parse_error(httpx.Response(status, json=body, headers={"X-OVH-QUERYID": "FR.q1"}))
    assert isinstance(error, expected) and error.request_id == "FR.q1"


def test_endpoint_choice_and_unknown_endpoint() -> None:
    assert OvhProvider({**OPTIONS, "endpoint": "ca"}).endpoint_url == "https://ca.api.ovh.com/1.0"
    with pytest.raises(InvalidInput):
        OvhProvider({**OPTIONS, "endpoint": "mars"})


def test_secrets_not_in_repr_and_delete_key_for_the_vm() -> None:
    provider = OvhProvider({**OPTIONS, "delete_consumer_key": "deleteOnlyConsumerKey0123"})
    assert emu_mod.APPLICATION_SECRET not in repr(provider)
    env = provider.self_delete_env()
    assert env["BIVY_OVH_CONSUMER_KEY"] == "deleteOnlyConsumerKey0123"
    assert env["BIVY_OVH_PROJECT_ID"] == emu_mod.PROJECT_ID


async def test_self_delete_script_with_a_delete_only_consumer_key() -> None:
    clock = ManualClock()
    emu = OvhEmulator(clock=clock, strict=False)
    delete_ck = "deleteOnlyConsumerKey0123"
    emu.consumer_keys[delete_ck] = [("DELETE", f"/cloud/project/{emu_mod.PROJECT_ID}/instance/*")]
    provider = OvhProvider(
        {**OPTIONS, "delete_consumer_key": delete_ck},
        transport=emu.transport(),
        sleep=_advance(clock),
    )
    mine = await provider.create(request("mine"))
    other = await provider.create(request("other"))
    metadata = MetadataEmulator(mine.id)
    with emu.serve() as api, metadata.serve() as meta:
        env = {"PATH": os.environ["PATH"], "BIVY_METADATA_URL": meta, "BIVY_API_URL": api}
        bad = subprocess.run(
            ["sh", "-c", SELF_DELETE_SCRIPT],
            env={
                **env,
                **provider.self_delete_env(),
                "BIVY_OVH_APPLICATION_SECRET": "wrongSecret00",
            },
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert bad.returncode != 0 and "HTTP 400" in bad.stderr
        assert mine.id in emu.instances
        done = subprocess.run(
            ["sh", "-c", SELF_DELETE_SCRIPT],
            env={**env, **provider.self_delete_env()},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
    await provider.aclose()
    assert mine.id not in emu.instances and other.id in emu.instances
    emu.assert_no_violations()


def _advance(clock: ManualClock):
    async def sleep(seconds: float) -> None:
        clock.advance(seconds)

    return sleep


async def test_emulator_rejects_requests_outside_its_schema() -> None:
    from tests.emulators.base import SpecViolation

    env = Env()
    base = f"cloud/project/{emu_mod.PROJECT_ID}"
    with pytest.raises(SpecViolation, match="flavorId"):
        await env.provider.client.api.send_json(
            "POST", f"{base}/region/GRA11/instance", {"name": "x", "flavorId": "f", "bootFrom": {}}
        )
    with pytest.raises(SpecViolation, match="unknown query parameter"):
        await env.provider.client.api.get_json(f"{base}/instance", {"status": "ACTIVE"})
    with pytest.raises(SpecViolation, match="no such path"):
        await env.provider.client.api.get_json(f"{base}/volume")
    await env.provider.aclose()
    assert len(env.emu.take_violations()) == 3  # provoked on purpose


async def test_declared_access_rules_are_enough_and_no_more() -> None:
    env = Env()
    rules = OvhProvider.access_rules(emu_mod.PROJECT_ID)
    env.emu.consumer_keys[emu_mod.CONSUMER_KEY] = [(r["method"], r["path"]) for r in rules]
    await env.provider.validate()
    await env.provider.sizes()
    server = await env.provider.create(request())
    env.clock.advance(10)
    assert [s.id for s in await env.provider.list()] == [server.id]
    await env.provider.delete(server.id)
    assert env.emu.instances == {}
    only_delete = OvhProvider.access_rules(emu_mod.PROJECT_ID, self_delete=True)
    env.emu.consumer_keys[emu_mod.CONSUMER_KEY] = [(r["method"], r["path"]) for r in only_delete]
    with pytest.raises(AuthError):
        await env.provider.list()
    await env.provider.aclose()


async def test_regions_carry_their_city() -> None:
    env = Env()
    regions = {r.id: r for r in await env.provider.regions()}
    assert regions["GRA11"].city == "Gravelines" and regions["GRA11"].country == "FR"
    assert regions["BHS5"].name == "Beauharnois (BHS5)"
    await env.provider.aclose()
