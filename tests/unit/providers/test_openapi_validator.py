"""The OpenAPI request validator, both ways, on the Hetzner, DigitalOcean and Scaleway specs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.emulators.base import Emulator, json_response, route
from tests.emulators.hetzner import HetznerEmulator
from tests.emulators.openapi import OpenAPISpec, SpecViolation


@pytest.fixture(scope="module")
def hetzner_spec(data_dir: Path) -> OpenAPISpec:
    return OpenAPISpec.load(data_dir / "specs" / "hetzner-cloud.spec.json")


@pytest.fixture(scope="module")
def do_spec(data_dir: Path) -> OpenAPISpec:
    return OpenAPISpec.load(data_dir / "specs" / "digitalocean-droplets.bundled.yaml")


@pytest.fixture(scope="module")
def scw_spec(data_dir: Path) -> OpenAPISpec:
    return OpenAPISpec.load(data_dir / "specs" / "scaleway-instance-v1-2022.yml")


def body(value: Any) -> bytes:
    return json.dumps(value).encode()


GOOD_CREATE = {
    "name": "ws1",
    "server_type": "cx23",
    "image": "ubuntu-24.04",
    "location": "fsn1",
    "ssh_keys": ["12"],
    "firewalls": [{"firewall": 7}],
    "labels": {"managed-by": "bivy"},
    "user_data": "#cloud-config\n",
}


def test_load_is_cached(data_dir: Path, hetzner_spec: OpenAPISpec) -> None:
    assert OpenAPISpec.load(data_dir / "specs" / "hetzner-cloud.spec.json") is hetzner_spec
    assert hetzner_spec.base_path == "/v1"


@pytest.mark.parametrize(
    ("method", "path", "query", "payload", "template"),
    [
        ("GET", "/servers", {"label_selector": ["managed-by=bivy"], "page": ["2"],
                             "per_page": ["50"]}, None, "/servers"),
        ("GET", "/servers", {"status": ["running", "off"]}, None, "/servers"),
        ("GET", "/servers/42", {}, None, "/servers/{id}"),
        ("POST", "/servers", {}, GOOD_CREATE, "/servers"),
        ("DELETE", "/servers/42", {}, None, "/servers/{id}"),
        ("GET", "/images", {"type": ["app"], "name": ["docker-ce"],
                            "architecture": ["x86"]}, None, "/images"),
        ("GET", "/actions/9", {}, None, "/actions/{id}"),
        ("GET", "/pricing", {}, None, "/pricing"),
    ],
)  # fmt: skip
def test_hetzner_accepts(
    hetzner_spec: OpenAPISpec,
    method: str,
    path: str,
    query: dict[str, list[str]],
    payload: Any,
    template: str,
) -> None:
    raw = body(payload) if payload is not None else None
    op = hetzner_spec.validate_request(method, path, query=query, body=raw)
    assert op.template == template


@pytest.mark.parametrize(
    ("method", "path", "query", "payload", "needle"),
    [
        ("GET", "/nowhere", {}, None, "no such path"),
        ("PATCH", "/servers", {}, None, "method not allowed"),
        ("GET", "/servers", {"per_page": ["many"]}, None, "not an integer"),
        ("GET", "/servers", {"label_selectors": ["x"]}, None, "unknown query parameter"),
        ("GET", "/servers", {"status": ["exploded"]}, None, "is not one of"),
        ("GET", "/servers/0", {}, None, "less than the minimum"),
        ("GET", "/servers/abc", {}, None, "not an integer"),
        ("POST", "/servers", {}, {"name": "x"}, "'server_type' is a required property"),
        ("POST", "/servers", {}, {**GOOD_CREATE, "labels": {"a": 1}}, "labels/a"),
        ("POST", "/servers", {}, {**GOOD_CREATE, "firewalls": [{"id": 7}]}, "'firewall'"),
        ("POST", "/servers", {}, None, "body is required"),
        ("DELETE", "/servers/4", {}, {"force": True}, "takes no request body"),
    ],
)
def test_hetzner_rejects(
    hetzner_spec: OpenAPISpec,
    method: str,
    path: str,
    query: dict[str, list[str]],
    payload: Any,
    needle: str,
) -> None:
    raw = body(payload) if payload is not None else None
    with pytest.raises(SpecViolation) as info:
        hetzner_spec.validate_request(method, path, query=query, body=raw)
    assert needle in str(info.value)
    assert isinstance(info.value, AssertionError)  # so it fails a test where it is raised


def test_body_must_be_json(hetzner_spec: OpenAPISpec) -> None:
    with pytest.raises(SpecViolation, match="not JSON"):
        hetzner_spec.validate_request("POST", "/servers", body=b"{name:")


def test_digitalocean_spec(do_spec: OpenAPISpec) -> None:
    assert do_spec.base_path == ""
    op = do_spec.validate_request(
        "GET", "/v2/droplets", query={"tag_name": ["bivy"], "page": ["1"], "per_page": ["200"]}
    )
    assert op.template == "/v2/droplets"
    do_spec.validate_request(
        "POST",
        "/v2/droplets",
        body=body({"name": "ws1", "size": "s-2vcpu-4gb", "image": "ubuntu-24-04-x64",
                   "region": "fra1", "tags": ["bivy"], "user_data": "#cloud-config"}),
    )  # fmt: skip
    with pytest.raises(SpecViolation):
        do_spec.validate_request("POST", "/v2/droplets", body=body({"name": "ws1"}))
    with pytest.raises(SpecViolation, match="unknown query parameter"):
        do_spec.validate_request("GET", "/v2/droplets", query={"label_selector": ["x"]})


def test_scaleway_spec(scw_spec: OpenAPISpec) -> None:
    # a literal segment wins over a parameter at the same place
    op = scw_spec.validate_request(
        "GET", "/instance/v1/zones/fr-par-1/security_groups/default/rules"
    )
    assert op.template.endswith("/security_groups/default/rules")
    scw_spec.validate_request(
        "PATCH",
        "/instance/v1/zones/fr-par-1/servers/abc/user_data/cloud-init",
        body=b"#cloud-config\n",
        content_type="text/plain",
    )
    with pytest.raises(SpecViolation, match="commercial_type"):
        scw_spec.validate_request(
            "POST", "/instance/v1/zones/fr-par-1/servers", body=body({"name": "x"})
        )


def test_response_schema_check(hetzner_spec: OpenAPISpec) -> None:
    op = hetzner_spec.operation("GET", "/pricing")
    assert hetzner_spec.response_errors(op, 200, {"pricing": {"currency": "EUR"}})
    op = hetzner_spec.operation("GET", "/locations")
    pagination = {"page": 1, "per_page": 25, "previous_page": None, "next_page": None,
                  "last_page": 1, "total_entries": 0}  # fmt: skip
    good = {"locations": [], "meta": {"pagination": pagination}}
    assert hetzner_spec.response_errors(op, 200, good) == []


# -- the emulator: a rejected request fails the test -------------------------------------------


async def test_emulator_raises_spec_violation_through_the_transport() -> None:
    emu = HetznerEmulator(token="t")
    async with httpx.AsyncClient(
        transport=emu.transport(), base_url="http://emu/v1/", headers={"Authorization": "Bearer t"}
    ) as client:
        with pytest.raises(SpecViolation, match="server_type"):
            await client.post("servers", json={"name": "x"})
        assert (await client.get("locations")).status_code == 200
    assert len(emu.violations) == 1
    with pytest.raises(AssertionError, match="spec violations"):
        emu.assert_no_violations()
    assert len(emu.take_violations()) == 1  # provoked on purpose: not the autouse check's


async def test_served_emulator_answers_400_and_records() -> None:
    emu = HetznerEmulator(token="t", strict=False)
    with emu.serve() as url:
        async with httpx.AsyncClient(
            base_url=url + "/", headers={"Authorization": "Bearer t"}
        ) as c:
            bad = await c.get("servers", params={"bogus": "1"})
            good = await c.get("servers")
    assert bad.status_code == 400
    assert bad.json()["error"]["code"] == "spec_violation"
    assert "spec violation" in bad.json()["error"]["message"]
    assert good.status_code == 200
    assert emu.take_violations() == [
        "GET /servers violates the spec: unknown query parameter 'bogus'"
    ]


class _Broken(Emulator):
    provider = "hetzner"
    base_path = "/v1"
    spec_file = "hetzner-cloud.spec.json"

    @route("GET", "/v1/pricing")
    def pricing(self, req: Any) -> Any:
        return json_response(200, {"pricing": {"currency": "EUR"}})


async def test_emulator_answers_are_checked_too() -> None:
    emu = _Broken()
    async with httpx.AsyncClient(transport=emu.transport(), base_url="http://emu/v1/") as client:
        with pytest.raises(SpecViolation, match="emulator's 200 answer"):
            await client.get("pricing")
    violations = emu.take_violations()
    assert violations and "'vat_rate' is a required property" in violations[0]
