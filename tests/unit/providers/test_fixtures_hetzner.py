"""Real Hetzner JSON (spec examples, hcloud-python's data) parses into the wire models."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from app.domain import ServerStatus
from app.providers.hetzner import models as m
from app.providers.hetzner.provider import map_status

# file stem → (top-level key or None for the whole document, model, is-a-list)
SPEC_EXAMPLES: dict[str, tuple[str | None, type[BaseModel], bool]] = {
    "post_servers_201": (None, m.CreateServerResponse, False),
    "get_servers_200.synth-from-schema": ("servers", m.Server, True),
    "get_servers_id_200.synth-from-schema": ("server", m.Server, False),
    "get_server_types_200.synth-from-schema": ("server_types", m.ServerType, True),
    "get_locations_200.synth-from-schema": ("locations", m.Location, True),
    "get_pricing_200.synth-from-schema": ("pricing", m.Pricing, False),
    "get_ssh_keys_200.synth-from-schema": ("ssh_keys", m.SSHKey, True),
    "get_actions_id_200.synth-from-schema": ("action", m.Action, False),
    "delete_servers_id_200.synth-from-schema": ("action", m.Action, False),
    "get_servers_id_actions_action_id_200": ("action", m.Action, False),
}

HCLOUD: dict[str, tuple[str | None, type[BaseModel], bool]] = {
    "servers__response_simple_server": ("server", m.Server, False),
    "servers__response_full_server": ("server", m.Server, False),
    "servers__response_simple_servers": ("servers", m.Server, True),
    "servers__response_update_server": ("server", m.Server, False),
    "servers__response_create_simple_server": (None, m.CreateServerResponse, False),
    "servers__response_get_actions": ("actions", m.Action, True),
    "server_types__server_type_response": ("server_type", m.ServerType, False),
    "server_types__one_server_types_response": ("server_types", m.ServerType, True),
    "server_types__two_server_types_response": ("server_types", m.ServerType, True),
    "locations__location_response": ("location", m.Location, False),
    "locations__one_locations_response": ("locations", m.Location, True),
    "locations__two_locations_response": ("locations", m.Location, True),
    "images__image_response": ("image", m.Image, False),
    "images__one_images_response": ("images", m.Image, True),
    "images__two_images_response": ("images", m.Image, True),
    "ssh_keys__ssh_key_response": ("ssh_key", m.SSHKey, False),
    "ssh_keys__one_ssh_keys_response": ("ssh_keys", m.SSHKey, True),
    "ssh_keys__two_ssh_keys_response": ("ssh_keys", m.SSHKey, True),
    "common__action1_running": (None, m.Action, False),
    "common__action2_running": (None, m.Action, False),
}


def _load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _parse(doc: Any, key: str | None, model: type[BaseModel], many: bool) -> list[BaseModel]:
    data = doc if key is None else doc[key]
    items = data if many else [data]
    return [model.model_validate(item) for item in items]


@pytest.mark.parametrize("stem", sorted(SPEC_EXAMPLES))
def test_spec_examples_parse(data_dir: Path, stem: str) -> None:
    key, model, many = SPEC_EXAMPLES[stem]
    parsed = _parse(_load(data_dir / "fixtures/hetzner-spec-examples" / f"{stem}.json"),
                    key, model, many)  # fmt: skip
    assert parsed


@pytest.mark.parametrize("stem", sorted(HCLOUD))
def test_hcloud_python_data_parses(data_dir: Path, stem: str) -> None:
    key, model, many = HCLOUD[stem]
    parsed = _parse(_load(data_dir / "fixtures/hcloud-python" / f"{stem}.json"), key, model, many)
    assert parsed


def test_every_hetzner_fixture_is_covered(data_dir: Path) -> None:
    covered = set(SPEC_EXAMPLES) | set(HCLOUD)
    spec = {p.stem for p in (data_dir / "fixtures/hetzner-spec-examples").glob("*.json")}
    assert spec - covered == {"error_4xx_example"}  # parsed below as an error body
    hcloud = {p.stem for p in (data_dir / "fixtures/hcloud-python").glob("*.json")}
    # the rest are answers to calls Bivy never makes; what they hold still parses
    by_key: dict[str, tuple[type[BaseModel], bool]] = {
        "action": (m.Action, False),
        "actions": (m.Action, True),
        "image": (m.Image, False),
        "ssh_key": (m.SSHKey, False),
    }
    ignored = {"metrics", "root_password", "wss_url", "password"}
    for stem in sorted(hcloud - covered - {"_PROVENANCE"}):
        doc = _load(data_dir / "fixtures/hcloud-python" / f"{stem}.json")
        assert set(doc) <= set(by_key) | ignored, stem
        for key, (model, many) in by_key.items():
            if key in doc:
                assert _parse(doc, key, model, many), stem


def test_timestamps_without_seconds(data_dir: Path) -> None:
    doc = _load(data_dir / "fixtures/hcloud-python/servers__response_simple_server.json")
    assert doc["server"]["created"] == "2016-01-30T23:50+00:00"
    server = m.Server.model_validate(doc["server"])
    assert server.created == datetime(2016, 1, 30, 23, 50, tzinfo=UTC)
    assert m.Action.model_validate(
        {"id": 1, "command": "x", "status": "running", "started": "2016-01-30T23:50Z"}
    ).started == datetime(2016, 1, 30, 23, 50, tzinfo=UTC)
    naive = m.SSHKey.model_validate(
        {"id": 1, "name": "k", "fingerprint": "f", "public_key": "p",
         "created": "2016-01-30 23:50:07"}
    )  # fmt: skip
    assert naive.created is not None and naive.created.tzinfo is not None


def test_legacy_server_type(data_dir: Path) -> None:
    doc = _load(data_dir / "fixtures/hcloud-python/servers__response_simple_server.json")
    server = m.Server.model_validate(doc["server"])
    legacy = server.server_type
    assert legacy.name == "cx11" and legacy.locations is None and legacy.architecture == "x86"
    assert legacy.available_in("fsn1") and not legacy.available_in("ash")
    assert legacy.prices[0].price_hourly.gross == Decimal("1.1900000000000000")
    st = m.ServerType.model_validate(
        _load(data_dir / "fixtures/hcloud-python/server_types__server_type_response.json")[
            "server_type"
        ]
    )
    assert st.is_deprecated and st.available_in("nbg1")


def test_spec_create_response(data_dir: Path) -> None:
    doc = _load(data_dir / "fixtures/hetzner-spec-examples/post_servers_201.json")
    created = m.CreateServerResponse.model_validate(doc)
    assert created.action.command == "create_server"
    assert [a.command for a in created.next_actions] == ["start_server"]
    assert created.server.public_net.ipv4 is not None
    assert created.server.public_net.ipv4.ip == "1.2.3.4"
    assert map_status(created.server.status) is ServerStatus.INITIALIZING
    assert created.root_password == "YItygq1v3GYjjMomLaKc"
    assert "YItygq" not in repr(created)  # a secret: kept out of reprs and logs


def test_pricing_is_decimal(data_dir: Path) -> None:
    doc = _load(data_dir / "fixtures/hetzner-spec-examples/get_pricing_200.synth-from-schema.json")
    pricing = m.Pricing.model_validate(doc["pricing"])
    assert pricing.currency == "EUR" and pricing.vat_rate == Decimal("19.00")
    price = pricing.server_types[0].prices[0]
    assert isinstance(price.price_hourly.net, Decimal)
    assert price.price_hourly.gross == Decimal("1.1900")


def test_error_example(data_dir: Path) -> None:
    doc = _load(data_dir / "fixtures/hetzner-spec-examples/error_4xx_example.json")
    body = m.ErrorBody.model_validate(doc["error"])
    assert (body.code, body.details) == ("unauthorized", None)


def test_nulls_are_tolerated() -> None:
    server = m.Server.model_validate(
        {
            "id": 5, "name": "n", "status": "off", "created": None, "labels": None,
            "public_net": {"ipv4": None, "ipv6": None, "floating_ips": [], "firewalls": []},
            "server_type": {"id": 1, "name": "cx23", "cores": 2, "memory": 4, "disk": 40},
            "location": None, "datacenter": None, "image": None,
        }
    )  # fmt: skip
    assert server.labels == {} and server.location_name == ""
