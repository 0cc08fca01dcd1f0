"""The local workspace registry: atomic JSON under data_dir(), public data only."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from app.errors import InvalidInput
from app.services.keys import generate_host_key
from app.services.registry import Registry, WorkspaceRecord, registry_path
from app.settings import data_dir, take_notices


def record(name: str = "demo", **kw: object) -> WorkspaceRecord:
    values: dict[str, object] = {
        "name": name,
        "account": "hetzner",
        "provider": "hetzner",
        "server_id": "42",
        "repo_url": "https://github.com/example/repo",
        "region": "fsn1",
        "size": "cx23",
        "created_at": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    }
    values.update(kw)
    return WorkspaceRecord.model_validate(values)


def test_lives_in_data_dir() -> None:
    assert registry_path() == data_dir() / "workspaces.json"
    assert Registry().path == registry_path()


def test_put_get_update_remove_round_trip() -> None:
    reg = Registry()
    assert reg.all() == []
    assert reg.get("demo") is None
    host = generate_host_key("demo")
    reg.put(record(host_public_key=host.public_openssh))
    reg.put(record("alpha"))
    assert [r.name for r in reg.all()] == ["alpha", "demo"]
    got = reg.get("demo")
    assert got is not None and got.host_public_key == host.public_openssh
    updated = reg.update("demo", ipv4="203.0.113.7")
    assert updated is not None and updated.ipv4 == "203.0.113.7"
    assert Registry().get("demo") == updated  # persisted, read by a fresh instance
    assert reg.update("missing", ipv4="x") is None
    assert reg.remove("demo") is True
    assert reg.remove("demo") is False
    assert [r.name for r in reg.all()] == ["alpha"]


def test_file_shape_and_permissions() -> None:
    Registry().put(record())
    raw = json.loads(registry_path().read_text())
    assert raw["schema_version"] == 1
    assert raw["workspaces"][0]["name"] == "demo"
    assert raw["workspaces"][0]["created_at"] == "2026-01-02T03:04:05Z"
    assert registry_path().stat().st_mode & 0o777 == 0o600
    names = {p.name for p in registry_path().parent.iterdir()}
    assert names == {"workspaces.json", "workspaces.json.lock"}  # the lock file stays, empty


def test_private_key_material_is_refused() -> None:
    host = generate_host_key("demo")
    with pytest.raises(ValidationError):
        record(host_public_key=host.private_openssh)
    with pytest.raises(ValidationError):
        record(host_public_key="AAAAC3Nza-not-a-key-line")


@pytest.mark.parametrize(
    "content", [b"{broken", b'{"workspaces": [{"name": "x"}]}', b'{"workspaces": 3}']
)
def test_corrupt_file_is_kept_aside_and_reported(content: bytes) -> None:
    registry_path().parent.mkdir(parents=True)
    registry_path().write_bytes(content)
    take_notices()
    assert Registry().all() == []
    (notice,) = take_notices()
    kept = registry_path().parent / notice.kept_at
    assert kept.name.startswith("workspaces.json.corrupt-")
    assert kept.read_bytes() == content
    assert f"kept as {kept}" in notice.text
    Registry().put(record())  # a new registry starts; the kept file is left alone
    assert kept.read_bytes() == content


def test_newer_schema_is_refused() -> None:
    registry_path().parent.mkdir(parents=True)
    registry_path().write_text(json.dumps({"schema_version": 99, "workspaces": []}))
    with pytest.raises(InvalidInput, match="newer Bivy"):
        Registry().all()


async def test_async_twins() -> None:
    reg = Registry()
    await reg.aput(record())
    assert (await reg.aget("demo")) is not None
    assert [r.name for r in await reg.aall()] == ["demo"]
    assert (await reg.aupdate("demo", size="cx33")) is not None
    assert (await reg.aget("demo")).size == "cx33"  # type: ignore[union-attr]
    assert await reg.aremove("demo") is True
