"""``bivy prebuild ls`` / ``rm`` as a separate process against the Hetzner emulator served on
127.0.0.1 (a real private keyring): a recorded prebuild listed with its size and monthly cost
from the provider, an image made elsewhere listed as unrecorded, ``rm`` refused without ``-y``
outside a terminal, then deleting at the provider and in the registry; one that no account has
is a clean error; an image deleted at the provider is forgotten."""

from __future__ import annotations

import json

from app.services.prebuild_hash import repo_key
from app.services.prebuild_registry import PrebuildRecord, PrebuildRegistry
from tests.support.fixtures import CliRunner, ServedHetzner
from tests.support.secret_service import SecretServiceSession

REPO = "https://github.com/example/project"


def test_prebuild_ls_and_rm(
    cli: CliRunner, hetzner_api: ServedHetzner, secret_service: SecretServiceSession
) -> None:
    env = secret_service.env(hetzner_api.env())
    key = repo_key(REPO, None)
    labels = {"managed-by": "bivy", "bivy-prebuild": key, "bivy-config-hash": "0" * 16}
    ours = hetzner_api.emulator.add_snapshot(labels, size=4.0)
    theirs = hetzner_api.emulator.add_snapshot({**labels, "bivy-prebuild": "f" * 16}, size=2.0)
    gone = "999999"
    registry = PrebuildRegistry()
    for image_id in (str(ours), gone):
        registry.put(PrebuildRecord(id=image_id, account="hetzner", provider="hetzner",
                                    repo=REPO, repo_key=key, config_hash="0" * 16))  # fmt: skip

    listed = cli("prebuild", "ls", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    rows = {row["id"]: row for row in json.loads(listed.stdout)}
    assert set(rows) == {str(ours), str(theirs)}  # the one gone at the provider is forgotten
    assert rows[str(ours)]["repo"] == REPO and rows[str(ours)]["recorded"] is True
    assert rows[str(ours)]["size_gb"] == 4.0
    assert float(rows[str(ours)]["monthly_price"]) > 0 and rows[str(ours)]["currency"] == "EUR"
    assert rows[str(theirs)]["recorded"] is False and rows[str(theirs)]["repo"] == ""
    assert [r.id for r in registry.all()] == [str(ours)]

    table = cli("prebuild", "ls", env=env)
    assert table.returncode == 0 and str(ours) in table.stdout and REPO in table.stdout

    refused = cli("prebuild", "rm", str(ours), env=env)
    assert refused.returncode != 0 and "--yes" in refused.stderr
    removed = cli("prebuild", "rm", str(ours), "-y", env=env)
    assert removed.returncode == 0, removed.stderr
    assert hetzner_api.emulator.calls("DELETE", rf"/v1/images/{ours}$")
    assert registry.all() == []
    missing = cli("prebuild", "rm", "12345", "-y", env=env)
    assert missing.returncode == 1 and "no prebuild '12345'" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_prebuild_of_an_unknown_workspace_or_nothing_is_a_clean_error(
    cli: CliRunner, secret_service: SecretServiceSession
) -> None:
    env = secret_service.env({})
    unknown = cli("prebuild", "nosuch", env=env)
    assert unknown.returncode == 1 and "no workspace named 'nosuch'" in unknown.stderr
    nothing = cli("prebuild", env=env)
    assert nothing.returncode == 1 and "give a workspace NAME or --repo" in nothing.stderr
    no_id = cli("prebuild", "rm", env=env)
    assert no_id.returncode == 1 and "bivy prebuild rm ID" in no_id.stderr
    for result in (unknown, nothing, no_id):
        assert "Traceback" not in result.stderr
