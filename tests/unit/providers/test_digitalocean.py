"""DigitalOcean provider: wire models on the spec's own examples, tag encoding, error mapping,
create/list/delete against the emulator, and the self-delete script run for real."""

from __future__ import annotations

import json
import os
import re
import subprocess
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.domain import CreateServerRequest, ServerStatus
from app.errors import (
    AuthError,
    InvalidInput,
    NotFound,
    ProviderUnavailable,
    QuotaExceeded,
    RateLimited,
)
from app.providers.digitalocean import DigitalOceanProvider
from app.providers.digitalocean import client as do_client
from app.providers.digitalocean import models as m
from app.providers.digitalocean.provider import (
    SELF_DELETE_SCRIPT,
    droplet_to_server,
    labels_to_tags,
    size_to_domain,
    ssh_md5_fingerprint,
    tags_to_labels,
)
from tests.contract.harness import ssh_public_key
from tests.emulators.base import ManualClock
from tests.emulators.digitalocean import DigitalOceanEmulator, MetadataEmulator


def fixture(data_dir: Path, name: str) -> dict:
    return json.loads((data_dir / "fixtures" / "digitalocean-spec-examples" / name).read_text())


def request(name: str = "alpha", user_data: str = "#cloud-config\n{}\n") -> CreateServerRequest:
    return CreateServerRequest(
        name=name,
        region="fra1",
        size="s-2vcpu-4gb",
        ssh_public_key=ssh_public_key(),
        labels={"managed-by": "bivy", "bivy-workspace": name, "bivy-idle-minutes": "30"},
        user_data=user_data,
    )


# -- wire models on the spec's examples -----------------------------------------------------


def test_droplet_fixture_maps_to_server(data_dir: Path) -> None:
    body = fixture(data_dir, "get_v2_droplets_droplet_id_200.json")
    server = droplet_to_server(m.Droplet.model_validate(body["droplet"]))
    assert server.id == "3164444"
    assert server.status is ServerStatus.RUNNING
    assert server.ipv4 == "192.241.165.154"  # the public one, not 10.128.x
    assert server.ipv6 == "2604:a880:0:1010::18a:a001"
    assert server.region == "nyc3"
    assert server.size == "s-1vcpu-1gb"
    assert server.created_at is not None and server.created_at.year == 2020
    assert server.price is not None and server.price.currency == "USD"
    assert server.price.monthly == Decimal("5.00")


@pytest.mark.parametrize(
    "name", ["get_v2_droplets_200.json", "get_v2_droplets_200_1.json", "get_v2_droplets_200_2.json"]
)
def test_droplet_lists_parse(data_dir: Path, name: str) -> None:
    body = fixture(data_dir, name)
    listed = m.DropletList.model_validate(body)
    assert len(listed.droplets) == body["meta"]["total"]
    for droplet, raw in zip(listed.droplets, body["droplets"], strict=True):
        server = droplet_to_server(droplet)
        assert server.status is not ServerStatus.UNKNOWN
        # The values, not just the shape: what Bivy shows and acts on comes from these.
        assert (server.id, server.name) == (str(raw["id"]), raw["name"])
        assert server.region == raw["region"]["slug"]
        assert server.size == raw["size_slug"]
        assert server.created_at is not None
        assert server.created_at.isoformat().startswith(raw["created_at"][:19])
        public = [n["ip_address"] for n in raw["networks"]["v4"] if n["type"] == "public"]
        assert server.ipv4 == (public[0] if public else None)


def test_create_response_fixtures_parse(data_dir: Path) -> None:
    created = m.DropletCreated.model_validate(fixture(data_dir, "post_v2_droplets_202.json"))
    assert created.links.actions[0].rel == "create"
    assert droplet_to_server(created.droplet).status is ServerStatus.INITIALIZING


def test_sizes_fixture_prices_are_decimals_per_region(data_dir: Path) -> None:
    sizes = m.SizeList.model_validate(fixture(data_dir, "get_v2_sizes_200.json"))
    size = size_to_domain(sizes.sizes[0])
    assert (size.name, size.cores, size.memory_gb, size.disk_gb) == ("s-1vcpu-1gb", 1, 1.0, 25)
    assert size.cpu_type == "shared"
    price = size.price_in("fra1")
    assert price is not None
    assert price.hourly == Decimal("0.00744")  # float noise 0.00743999984… rounded away
    assert price.monthly == Decimal("5.00")
    assert size.price_in("xyz1") is None


def test_request_examples_are_accepted_by_the_emulator_validator(data_dir: Path) -> None:
    emu = DigitalOceanEmulator()
    body = fixture(data_dir, "post_v2_droplets_request_Single_Droplet_Create_Request.json")
    assert emu.spec is not None
    emu.spec.validate_request(
        "POST", "/v2/droplets", body=json.dumps(body).encode(), content_type="application/json"
    )


# -- errors --------------------------------------------------------------------------------


def _response(status: int, body: dict, headers: dict | None = None) -> httpx.Response:
    return httpx.Response(status, json=body, headers=headers or {})


def test_error_fixtures_map_to_typed_errors(data_dir: Path) -> None:
    auth = do_client.parse_error(_response(401, fixture(data_dir, "get_v2_droplets_401.json")))
    assert isinstance(auth, AuthError) and auth.code == "unauthorized"
    limited = do_client.parse_error(_response(429, fixture(data_dir, "get_v2_droplets_429.json")))
    assert isinstance(limited, RateLimited)


def test_error_mapping_of_422s_and_request_ids() -> None:
    quota = do_client.parse_error(
        _response(
            422,
            {
                "id": "unprocessable_entity",
                "message": "creating this/these droplet(s) will exceed your droplet limit",
                "request_id": "abc-123",
            },
        )
    )
    assert isinstance(quota, QuotaExceeded) and quota.request_id == "abc-123"
    unavailable = do_client.parse_error(
        _response(
            422, {"id": "unprocessable_entity", "message": "Size is not available in this region."}
        )
    )
    assert isinstance(unavailable, ProviderUnavailable)
    missing = do_client.parse_error(
        _response(404, {"id": "not_found", "message": "gone"}, {"x-request-id": "hdr-9"})
    )
    assert isinstance(missing, NotFound) and missing.request_id == "hdr-9"


# -- tags ----------------------------------------------------------------------------------

_TAG_RE = re.compile(r"^[A-Za-z0-9:_-]{1,255}$")


def test_labels_become_readable_tags() -> None:
    tags = labels_to_tags({"managed-by": "bivy", "bivy-workspace": "my-ws"})
    assert tags == ["bivy", "bivy-workspace:my-ws"]


@given(
    st.dictionaries(
        st.text(st.characters(codec="utf-8"), min_size=1, max_size=20),
        st.text(st.characters(codec="utf-8"), max_size=30),
        max_size=5,
    )
)
def test_any_labels_round_trip_through_valid_tags(labels: dict[str, str]) -> None:
    try:
        tags = labels_to_tags(labels)
    except InvalidInput:
        assert any(len(k.encode()) + len(v.encode()) > 60 for k, v in labels.items())
        return
    for tag in tags:
        assert _TAG_RE.match(tag), tag
    assert tags_to_labels(tags) == labels


def test_fingerprint_matches_ssh_keygen(tmp_path: Path) -> None:
    key = ssh_public_key()
    (tmp_path / "k.pub").write_text(key + "\n")
    out = subprocess.run(
        ["ssh-keygen", "-l", "-E", "md5", "-f", str(tmp_path / "k.pub")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "MD5:" + ssh_md5_fingerprint(key) in out


# -- against the emulator --------------------------------------------------------------------


@pytest.fixture
def emu() -> DigitalOceanEmulator:
    return DigitalOceanEmulator(clock=ManualClock())


async def test_create_sends_plain_user_data_tags_and_reuses_the_key(
    emu: DigitalOceanEmulator,
) -> None:
    provider = DigitalOceanProvider({"token": emu.token}, transport=emu.transport())
    user_data = "#cloud-config\nwrite_files: []\n# é ünïcode\n"
    first = await provider.create(request("alpha", user_data))
    await provider.create(request("beta"))
    await provider.aclose()
    assert emu.user_data[int(first.id)] == user_data  # not gzipped, not base64
    posts = emu.calls("POST", "/v2/droplets")
    assert posts[0].body["tags"] == ["bivy", "bivy-workspace:alpha", "bivy-idle-minutes:30"]
    assert posts[0].body["ssh_keys"] == [ssh_md5_fingerprint(ssh_public_key())]
    assert len(emu.calls("POST", "/v2/account/keys")) == 1
    assert first.labels["bivy-idle-minutes"] == "30"


async def test_list_follows_pages(
    emu: DigitalOceanEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(do_client, "PER_PAGE", 2)
    provider = DigitalOceanProvider({"token": emu.token}, transport=emu.transport())
    for name in ("a", "b", "c", "d", "e"):
        await provider.create(request(name))
    listed = await provider.list()
    await provider.aclose()
    assert sorted(s.workspace_name or "" for s in listed) == ["a", "b", "c", "d", "e"]
    assert len(emu.calls("GET", "/v2/droplets")) == 3


async def test_rate_limit_headers_are_tracked(emu: DigitalOceanEmulator) -> None:
    provider = DigitalOceanProvider({"token": emu.token}, transport=emu.transport())
    await provider.list()
    state = provider.client.api.rate_limit
    await provider.aclose()
    assert state.limit == 5000 and state.remaining == 4999 and state.reset_at is not None


def test_token_never_in_repr() -> None:
    provider = DigitalOceanProvider({"token": "dop_v1_secretsecretsecret"})
    assert "secretsecret" not in repr(provider)


def test_delete_token_is_what_the_vm_gets() -> None:
    provider = DigitalOceanProvider({"token": "dop_v1_main", "delete_token": "dop_v1_delete"})
    assert provider.self_delete_env() == {"BIVY_DIGITALOCEAN_TOKEN": "dop_v1_delete"}
    assert DigitalOceanProvider({"token": "dop_v1_main"}).self_delete_env() == {
        "BIVY_DIGITALOCEAN_TOKEN": "dop_v1_main"
    }


# -- the self-delete script, run by /bin/sh against the served emulator ----------------------


def _run_script(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", "-c", SELF_DELETE_SCRIPT],
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_self_delete_script_deletes_its_own_droplet() -> None:
    emu = DigitalOceanEmulator(strict=False)
    provider = DigitalOceanProvider({"token": emu.token}, transport=emu.transport())
    mine = await provider.create(request("mine"))
    other = await provider.create(request("other"))
    metadata = MetadataEmulator(int(mine.id))
    with emu.serve() as api, metadata.serve() as meta:
        base = {"BIVY_METADATA_URL": meta, "BIVY_API_URL": api}
        refused = _run_script({**base, "BIVY_DIGITALOCEAN_TOKEN": "dop_v1_wrong"})
        assert refused.returncode != 0 and "HTTP 401" in refused.stderr
        assert int(mine.id) in emu.droplets
        done = _run_script({**base, **provider.self_delete_env()})
        assert done.returncode == 0, done.stderr
    await provider.aclose()
    assert int(mine.id) not in emu.droplets
    assert int(other.id) in emu.droplets
    assert emu.token not in refused.stderr + done.stderr
    emu.assert_no_violations()


async def test_emulator_rejects_requests_the_spec_rejects() -> None:
    from tests.emulators.base import SpecViolation

    emu = DigitalOceanEmulator()
    async with httpx.AsyncClient(
        transport=emu.transport(), base_url="https://api.digitalocean.com"
    ) as client:
        headers = {"Authorization": f"Bearer {emu.token}"}
        with pytest.raises(SpecViolation, match="name"):
            await client.post(
                "/v2/droplets",
                json={"name": "bad name!", "size": "s-1vcpu-1gb", "image": "ubuntu-24-04-x64"},
                headers=headers,
            )
        with pytest.raises(SpecViolation, match="per_page"):
            await client.get("/v2/droplets", params={"per_page": 500}, headers=headers)
    assert len(emu.take_violations()) == 2  # provoked on purpose


async def test_declared_token_scopes_suffice_and_each_is_needed() -> None:
    clock = ManualClock()
    emu = DigitalOceanEmulator(clock=clock)
    scoped = "dop_v1_" + "5" * 64
    emu.scoped[scoped] = set(DigitalOceanProvider.token_scopes)

    async def lifecycle(provider: DigitalOceanProvider) -> None:
        await provider.validate()
        await provider.regions()
        await provider.sizes("fra1")
        server = await provider.create(request("scoped"))
        clock.advance(10)
        assert [s.id for s in await provider.list()] == [server.id]
        await provider.get(server.id)
        await provider.delete(server.id)

    provider = DigitalOceanProvider({"token": scoped}, transport=emu.transport())
    await lifecycle(provider)
    await provider.aclose()
    emu.assert_no_violations()

    for scope in DigitalOceanProvider.token_scopes:
        if scope == "ssh_key:create":
            continue  # only needed the first time; the key exists now
        emu.scoped[scoped] = set(DigitalOceanProvider.token_scopes) - {scope}
        provider = DigitalOceanProvider({"token": scoped}, transport=emu.transport())
        with pytest.raises(AuthError, match="missing scope"):
            await lifecycle(provider)
        await provider.aclose()


async def test_self_delete_works_with_a_delete_only_token() -> None:
    emu = DigitalOceanEmulator(strict=False)
    delete_only = "dop_v1_" + "d" * 64
    emu.scoped[delete_only] = set(DigitalOceanProvider.delete_token_scopes)
    provider = DigitalOceanProvider(
        {"token": emu.token, "delete_token": delete_only}, transport=emu.transport()
    )
    mine = await provider.create(request("mine"))
    with emu.serve() as api, MetadataEmulator(int(mine.id)).serve() as meta:
        done = _run_script(
            {"BIVY_METADATA_URL": meta, "BIVY_API_URL": api, **provider.self_delete_env()}
        )
    await provider.aclose()
    assert done.returncode == 0, done.stderr
    assert emu.droplets == {}
    emu.assert_no_violations()


async def test_regions_carry_city_and_country(emu: DigitalOceanEmulator) -> None:
    provider = DigitalOceanProvider({"token": emu.token}, transport=emu.transport())
    regions = {r.id: r for r in await provider.regions()}
    await provider.aclose()
    assert (regions["fra1"].city, regions["fra1"].country) == ("Frankfurt", "DE")
    assert regions["nyc3"].city == "New York"
