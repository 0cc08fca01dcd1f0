"""Real Hetzner JSON (spec examples, hcloud-python's data) parses into the wire models."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from enum import Enum
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, SecretStr

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


def _items(doc: Any, key: str | None, many: bool) -> list[Any]:
    data = doc if key is None else doc[key]
    return list(data) if many else [data]


def _same(parsed: Any, raw: Any, where: str) -> int:
    """Assert every value the model kept equals the document's; returns how many were compared.

    Fields the model does not define are not compared (Bivy reads only what it needs), but each
    one it does define and the document has must hold the document's value: a misnamed alias or a
    lossy type would read as a default (None, 0, "") and pass a parse-only test.
    """
    if isinstance(parsed, BaseModel):
        assert isinstance(raw, dict), f"{where}: {raw!r} is not an object"
        compared = 0
        for name, info in type(parsed).model_fields.items():
            key = info.alias or name
            if key in raw:
                compared += _same(getattr(parsed, name), raw[key], f"{where}.{key}")
        return compared
    if raw is None:
        assert parsed in (None, {}, [], ""), f"{where}: null read as {parsed!r}"
        return 1
    if isinstance(parsed, list):
        assert isinstance(raw, list) and len(parsed) == len(raw), f"{where}: {raw!r}"
        return sum(
            _same(p, r, f"{where}[{i}]") for i, (p, r) in enumerate(zip(parsed, raw, strict=True))
        )
    if isinstance(parsed, datetime):
        expected = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        if expected.tzinfo is None:
            expected = expected.replace(tzinfo=UTC)
        assert parsed == expected, f"{where}: {parsed!r} != {raw!r}"
        return 1
    if isinstance(parsed, Decimal):
        assert parsed == Decimal(str(raw)), f"{where}: {parsed!r} != {raw!r}"
        return 1
    if isinstance(parsed, Enum):
        assert parsed.value == raw, f"{where}: {parsed!r} != {raw!r}"
        return 1
    if isinstance(parsed, SecretStr):
        assert parsed.get_secret_value() == raw, f"{where}: the secret differs"
        return 1
    assert parsed == raw, f"{where}: {parsed!r} != {raw!r}"
    return 1


def _check_values(doc: Any, key: str | None, model: type[BaseModel], many: bool) -> None:
    parsed = _parse(doc, key, model, many)
    raw = _items(doc, key, many)
    assert len(parsed) == len(raw) >= 1
    for i, (item, source) in enumerate(zip(parsed, raw, strict=True)):
        # Every item carries at least its id or name and a few more values Bivy reads.
        assert _same(item, source, f"[{i}]") >= 3, f"[{i}]: almost nothing was compared"


@pytest.mark.parametrize("stem", sorted(SPEC_EXAMPLES))
def test_spec_examples_parse_with_their_values(data_dir: Path, stem: str) -> None:
    key, model, many = SPEC_EXAMPLES[stem]
    doc = _load(data_dir / "fixtures/hetzner-spec-examples" / f"{stem}.json")
    _check_values(doc, key, model, many)


@pytest.mark.parametrize("stem", sorted(HCLOUD))
def test_hcloud_python_data_parses_with_its_values(data_dir: Path, stem: str) -> None:
    key, model, many = HCLOUD[stem]
    doc = _load(data_dir / "fixtures/hcloud-python" / f"{stem}.json")
    _check_values(doc, key, model, many)


def test_every_field_the_models_read_is_in_some_fixture(data_dir: Path) -> None:
    """A field whose name (or alias) the API never sends would parse as its default everywhere
    and pass the value checks above unseen: every field of every model reached must be found."""
    seen: set[str] = set()
    defined: set[str] = set()

    def walk(parsed: Any, raw: Any) -> None:
        if isinstance(parsed, BaseModel) and isinstance(raw, dict):
            for name, info in type(parsed).model_fields.items():
                field_name = f"{type(parsed).__name__}.{info.alias or name}"
                defined.add(field_name)
                if (info.alias or name) in raw:
                    seen.add(field_name)
                    walk(getattr(parsed, name), raw[info.alias or name])
        elif isinstance(parsed, list) and isinstance(raw, list):
            for item, source in zip(parsed, raw, strict=True):
                walk(item, source)

    for folder, table in (("hetzner-spec-examples", SPEC_EXAMPLES), ("hcloud-python", HCLOUD)):
        for stem, (key, model, many) in table.items():
            doc = _load(data_dir / "fixtures" / folder / f"{stem}.json")
            for item, source in zip(
                _parse(doc, key, model, many), _items(doc, key, many), strict=True
            ):
                walk(item, source)
    assert len(defined) > 40
    assert defined - seen == set()


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
