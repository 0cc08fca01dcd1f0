"""Prebuild matching and the prebuild registry: which prebuild a new workspace starts from
(account, region, repository + branch, agent, not stale, available; a local checkout also by its
config hash now), the registry file (atomic, locked, a broken file kept aside), staleness from a
VM's report, and the CLI's parsing of ``bivy prebuild``."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest

from app.cli import build_parser
from app.domain import ImageStatus, Phase, StatusReport, WorkspaceSpec, utcnow
from app.services.prebuild_hash import devcontainer_config_hash, repo_key
from app.services.prebuild_match import with_local_staleness
from app.services.prebuild_registry import PrebuildRecord, PrebuildRegistry, prebuilds_path
from app.services.prebuilds import builder_name, mark_stale_from_status, match_prebuild
from app.services.registry import WorkspaceRecord

URL = "https://git.example.org/o/r.git"


def record(image_id: str, repo: str = URL, **kw: object) -> PrebuildRecord:
    values: dict[str, object] = {
        "id": image_id,
        "account": "hetzner",
        "provider": "hetzner",
        "repo": repo,
        "repo_key": repo_key(repo, kw.get("branch")),  # type: ignore[arg-type]
        "created_at": utcnow(),
    }
    values.update(kw)
    return PrebuildRecord.model_validate(values)


def spec(repo: str = URL, **kw: object) -> WorkspaceSpec:
    return WorkspaceSpec.model_validate({"name": "demo", "repo_url": repo, **kw})


def test_the_newest_matching_prebuild_wins() -> None:
    old = record("1", created_at=utcnow() - timedelta(days=2))
    new = record("2")
    assert match_prebuild([old, new], spec(), "hetzner", "fsn1") == new
    assert match_prebuild([old], spec(), "hetzner", "fsn1") == old


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"account": "hetzner-2"}, "another account"),
        ({"agent": "codex"}, "another agent"),
        ({"stale": True}, "stale"),
        ({"status": ImageStatus.CREATING}, "not available yet"),
        ({"unrecorded": True}, "unknown repository"),
        ({"region": "nbg1"}, "another region"),
        ({"repo_key": repo_key(URL, "dev")}, "another branch"),
        ({"repo_key": repo_key(URL + "x", None)}, "another repository"),
    ],
)
def test_what_does_not_match(change: dict[str, object], why: str) -> None:
    assert match_prebuild([record("1", **change)], spec(), "hetzner", "fsn1") is None, why


def test_region_free_prebuilds_match_every_region() -> None:
    assert match_prebuild([record("1", region="")], spec(), "hetzner", "nbg1") is not None
    assert match_prebuild([record("1", region="fsn1")], spec(), "hetzner", "fsn1") is not None


def test_branches_are_keys() -> None:
    dev = record("1", branch="dev")
    assert match_prebuild([dev], spec(branch="dev"), "hetzner", None) == dev
    assert match_prebuild([dev], spec(), "hetzner", None) is None


def _git(repo: Path, *args: str) -> None:
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@x", "PATH": os.environ["PATH"], "HOME": str(repo)}  # fmt: skip
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, env=env)


def test_a_local_checkout_also_matches_by_the_config_hash_its_vm_gets(tmp_path: Path) -> None:
    repo = tmp_path / "project"
    (repo / ".devcontainer").mkdir(parents=True)
    config = repo / ".devcontainer" / "devcontainer.json"
    config.write_text('{"image": "a"}\n')
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "one")
    built = record("1", repo=str(repo), config_hash=devcontainer_config_hash(repo))
    assert match_prebuild([built], spec(str(repo)), "hetzner", None) == built
    # An uncommitted change does not go to the VM (unless sent along): still a match.
    config.write_text('{"image": "b"}\n')
    assert match_prebuild([built], spec(str(repo)), "hetzner", None) == built
    with_changes = spec(str(repo), include_uncommitted=True)
    assert match_prebuild([built], with_changes, "hetzner", None) is None
    assert [r.stale for r in with_local_staleness([built])] == [False]
    # Committed: the VM would rebuild, so no match, and the prebuild shows stale.
    _git(repo, "commit", "-q", "-am", "two")
    assert match_prebuild([built], spec(str(repo)), "hetzner", None) is None
    assert [r.stale for r in with_local_staleness([built])] == [True]
    # A branch that still has the old config matches it.
    _git(repo, "branch", "old", "HEAD~1")
    old = record("2", repo=str(repo), branch="old", config_hash=built.config_hash)
    assert match_prebuild([old], spec(str(repo), branch="old"), "hetzner", None) == old


def test_registry_round_trip_update_remove_and_a_broken_file_kept(tmp_path: Path) -> None:
    registry = PrebuildRegistry()
    assert registry.path == prebuilds_path() and registry.all() == []
    first, second = record("1"), record("2", account="hetzner-2")
    registry.put(first)
    registry.put(second)
    assert [r.id for r in registry.all()] == ["1", "2"]
    assert registry.get("hetzner-2", "2") == second and registry.get("hetzner", "2") is None
    assert registry.update("hetzner", "1", stale=True) is not None
    assert registry.get("hetzner", "1").stale  # type: ignore[union-attr]
    assert registry.remove("hetzner", "1") and not registry.remove("hetzner", "1")
    document = json.loads(registry.path.read_text())
    assert [r["id"] for r in document["prebuilds"]] == ["2"]
    registry.path.write_text("{ not json")
    assert registry.all() == []
    kept = list(registry.path.parent.glob("prebuilds.json.corrupt-*"))
    assert len(kept) == 1 and kept[0].read_text() == "{ not json"
    registry.put(first)
    assert [r.id for r in registry.all()] == ["1"]


async def test_a_vms_prebuild_stale_report_marks_its_prebuild() -> None:
    registry = PrebuildRegistry()
    registry.put(record("7"))
    workspace = WorkspaceRecord(name="demo", account="hetzner", provider="hetzner", prebuild="7")
    fresh = StatusReport(phase=Phase.READY)
    assert not await mark_stale_from_status(workspace, fresh, registry)
    assert not await mark_stale_from_status(None, fresh, registry)
    stale = StatusReport.model_validate({"phase": "ready", "prebuild_stale": True})
    plain = workspace.model_copy(update={"prebuild": ""})
    assert not await mark_stale_from_status(plain, stale, registry)
    assert await mark_stale_from_status(workspace, stale, registry)
    assert registry.get("hetzner", "7").stale  # type: ignore[union-attr]
    assert not await mark_stale_from_status(workspace, stale, registry)  # once


def test_builder_names_are_workspace_names() -> None:
    name = builder_name(repo_key(URL, None))
    WorkspaceSpec(name=name, repo_url=URL)
    assert name.startswith("pb-") and len(name) <= 40


def test_cli_parses_prebuild_forms() -> None:
    parser = build_parser()
    args = parser.parse_args(["prebuild", "--repo", URL, "--provider", "local", "--branch", "dev"])
    assert (args.target, args.repo, args.provider, args.branch) == (None, URL, "local", "dev")
    args = parser.parse_args(["prebuild", "ls", "--json"])
    assert (args.target, args.json) == ("ls", True)
    args = parser.parse_args(["prebuild", "rm", "123", "-y"])
    assert (args.target, args.id, args.yes) == ("rm", "123", True)
    args = parser.parse_args(["create", "demo", "--repo", URL, "--no-prebuild"])
    assert args.no_prebuild is True
