"""End to end, prebuilds (issue 14) with the local provider and the real CLI:

1. ``bivy prebuild --repo <local checkout>`` boots a builder VM in prebuild mode (tools, clone,
   devcontainer, Claude Code installed by npm inside the guest), seals it, images it (a flattened
   qcow2) and deletes it: nothing of the builder is left (VM folder, QEMU, registry, keychain).
   ``bivy create`` of the same checkout (with a commit made after the prebuild) starts from the
   image and reaches ``ready``: the terminal answers through the tunnel, ``bivy exec … claude
   --version`` works, the new commit is checked out. The phase seconds of the builder (a cold
   start of that repository) and of the VM from the prebuild are printed side by side.
   Committing a change to the checkout's ``.devcontainer`` makes ``bivy prebuild ls`` call the
   prebuild stale (the host hashes a local checkout); ``bivy prebuild rm`` deletes the image.
2. Stale config the app cannot see (a repository cloned by URL): prebuild it, change its
   devcontainer upstream, create from the prebuild: the VM rebuilds the devcontainer, reports
   ``prebuild_stale``, and the prebuild turns stale in ``bivy prebuild ls``.

Run under ``flock /work/notes/vm.lock`` on shared machines (one VM run at a time).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.harness import (
    AGENT_IMAGE,
    E2E,
    SIZE,
    OpenTerminal,
    log,
    make_bare_clone,
    make_repo,
)
from tests.e2e.phases import COLUMNS, PhaseReport, report
from tests.e2e.served_repo import serve_repository
from tests.support.secret_service import SecretServiceSession

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

WAIT_SECONDS = float(os.environ.get("BIVY_E2E_WAIT_SECONDS", "2400"))


def _git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "E2E", "GIT_AUTHOR_EMAIL": "e2e@bivy.invalid",
           "GIT_COMMITTER_NAME": "E2E", "GIT_COMMITTER_EMAIL": "e2e@bivy.invalid"}  # fmt: skip
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                          text=True, env=env).stdout  # fmt: skip


def prebuild(e2e: E2E, repo: str) -> tuple[dict[str, object], float]:
    """``bivy prebuild --repo REPO`` on the local provider; returns its record and seconds."""
    started = time.monotonic()
    result = e2e.bivy("prebuild", "--repo", repo, "--provider", "local", "--size", SIZE,
                      "--json", timeout=WAIT_SECONDS + 900)  # fmt: skip
    seconds = time.monotonic() - started
    for line in result.stderr.splitlines():
        log(f"  prebuild: {line}")
    assert result.returncode == 0, result.stderr[-6000:]
    record = json.loads(result.stdout)
    assert isinstance(record, dict)
    log(f"prebuild {record['id']} of {repo}: {seconds:.0f} s, {record['size_gb']} GB")
    return record, seconds


def prebuilds(e2e: E2E) -> list[dict[str, object]]:
    value = json.loads(e2e.must("prebuild", "ls", "--json", timeout=120))
    assert isinstance(value, list)
    return value


def builder_phases(record: dict[str, object], started_at: float) -> PhaseReport:
    """The builder's phases from its recorded timings (a cold start of the repository, up to
    ``prebuilt``, which stands in for ``ready``: no terminal on a builder)."""
    timings = dict(record.get("build_timings") or {})  # type: ignore[call-overload]
    if "prebuilt" in timings:
        timings["ready"] = timings.pop("prebuilt")
    out = report({"timings": timings, "steps": record.get("build_steps") or {}}, started_at, None)
    if "ready" in timings:
        out.seconds["total"] = float(timings["ready"]) - started_at  # create → prebuilt
    return out


def nothing_of_builders_left(e2e: E2E) -> None:
    assert e2e.vm_dirs() == [], f"VM folders left: {e2e.vm_dirs()}"
    assert e2e.qemu_processes() == [], "QEMU processes left"
    assert e2e.ls() == [], e2e.ls()
    registry = e2e.data_dir / "workspaces.json"
    if registry.exists():
        assert json.loads(registry.read_text()).get("workspaces") == [], registry.read_text()
    import secretstorage

    connection = secretstorage.dbus_init()
    try:
        collection = secretstorage.get_default_collection(connection)
        users = [i.get_attributes().get("username", "") for i in
                 collection.search_items({"service": "bivy"})]  # fmt: skip
    finally:
        connection.close()
    assert not [u for u in users if u.startswith("workspace/pb-")], users


def image_dirs(e2e: E2E) -> list[Path]:
    images = e2e.data_dir / "local" / "images"
    return sorted(p for p in images.iterdir() if p.is_dir()) if images.is_dir() else []


def print_comparison(cold: PhaseReport, warm: PhaseReport) -> None:
    log("phases (seconds): builder = a cold start of the repository, prebuilt = from the image")
    log(PhaseReport.header())
    log(cold.line("builder (cold)"))
    log(warm.line("from prebuild"))
    cells = []
    for column in COLUMNS:
        a, b = cold.seconds.get(column), warm.seconds.get(column)
        cells.append(f"{a / b:7.2f}" if a and b else "      -")
    log(f"{'cold/prebuilt':<14}" + " ".join(cells))
    if cold.steps:
        log(f"builder steps: {cold.steps_line()}")
    if warm.steps:
        log(f"prebuilt steps: {warm.steps_line()}")


@pytest.mark.timeout(2 * WAIT_SECONDS + 1800)
def test_prebuild_a_local_checkout_then_create_from_it(
    e2e: E2E, tmp_path: Path, secret_service: SecretServiceSession
) -> None:
    repo = make_repo(tmp_path / "repos", "pb-user", "user")
    built_from = time.time()
    record, _ = prebuild(e2e, str(repo))
    assert record["provider"] == "local" and record["repo"] == str(repo)
    assert record["status"] == "available" and not record["stale"]
    assert re.fullmatch(r"[0-9a-f]{16}", str(record["config_hash"])), record
    assert record["commit"] == _git(repo, "rev-parse", "HEAD").strip()
    nothing_of_builders_left(e2e)
    (image,) = image_dirs(e2e)
    assert image.name == record["id"]
    listed = prebuilds(e2e)
    assert [p["id"] for p in listed] == [record["id"]] and listed[0]["size_gb"]
    cold = builder_phases(record, built_from)

    # A commit after the prebuild: the VM from the image must update its clone.
    (repo / "after.txt").write_text("committed after the prebuild\n")
    _git(repo, "add", "after.txt")
    _git(repo, "commit", "-q", "-m", "after the prebuild")
    name = "e2e-pb"
    e2e.created_at[name] = time.time()
    created = e2e.bivy("create", name, "--provider", "local", "--size", SIZE, "--repo",
                       str(repo), "--idle-minutes", "5", timeout=900)  # fmt: skip
    assert created.returncode == 0, created.stderr[-4000:]
    assert f"Starting from the prebuild {record['id']}" in created.stderr, created.stderr
    result = e2e.wait(name, WAIT_SECONDS)
    assert result.returncode == 0, f"{name} did not reach ready:\n{result.text[-6000:]}"
    with OpenTerminal(name, secret_service.backend()) as terminal:
        status = e2e.status(name)
        warm = report(status, e2e.created_at[name], terminal.shown_at)
        assert status.get("from_prebuild") in (True, "true"), status
        assert not status.get("prebuild_stale"), status
        version = e2e.must("exec", name, "--", "claude", "--version", timeout=600)
        assert re.search(r"\d+\.\d+\.\d+", version), version
        assert e2e.must("exec", name, "--", "cat", "after.txt") == "committed after the prebuild\n"
        head = e2e.must("exec", name, "--", "git", "rev-parse", "HEAD").strip()
        assert head == _git(repo, "rev-parse", "HEAD").strip()
    print_comparison(cold, warm)
    e2e.must("rm", "-y", name, timeout=300)
    assert [p["stale"] for p in prebuilds(e2e)] == [False]

    # The checkout's devcontainer changes: the host sees it, the prebuild is stale, not used.
    config = repo / ".devcontainer" / "devcontainer.json"
    data = json.loads(config.read_text())
    data["containerEnv"] = {"CHANGED": "1"}
    config.write_text(json.dumps(data, indent=2))
    # Not committed: a new workspace gets the commit, whose config is the prebuild's.
    assert [p["stale"] for p in prebuilds(e2e)] == [False]
    _git(repo, "commit", "-q", "-am", "devcontainer: CHANGED=1")
    assert [p["stale"] for p in prebuilds(e2e)] == [True]

    e2e.must("prebuild", "rm", str(record["id"]), "-y", timeout=120)
    assert image_dirs(e2e) == [] and prebuilds(e2e) == []


@pytest.mark.timeout(2 * WAIT_SECONDS + 1800)
def test_a_changed_devcontainer_rebuilds_and_marks_the_prebuild_stale(
    e2e: E2E, tmp_path: Path
) -> None:
    """A URL repository (the app cannot hash it): the VM from the prebuild finds another config
    hash after fetching, rebuilds its devcontainer and says so; the prebuild turns stale."""
    repo = make_repo(tmp_path / "repos", "pb-url", "user", image=AGENT_IMAGE)
    bare = make_bare_clone(repo, tmp_path / "served" / "pb-url.git")
    with serve_repository(bare) as served:
        url = served.url_for_guest
        record, _ = prebuild(e2e, url)
        nothing_of_builders_left(e2e)
        # Upstream, the devcontainer changes.
        config = repo / ".devcontainer" / "devcontainer.json"
        data = json.loads(config.read_text())
        data["containerEnv"] = {"CHANGED": "1"}
        config.write_text(json.dumps(data, indent=2))
        _git(repo, "commit", "-q", "-am", "devcontainer: CHANGED=1")
        _git(repo, "push", "-q", str(bare), "HEAD:main")
        subprocess.run(["git", "-C", str(bare), "update-server-info"], check=True)

        name = "e2e-stale"
        e2e.created_at[name] = time.time()
        created = e2e.bivy("create", name, "--provider", "local", "--size", SIZE, "--repo",
                           url, "--idle-minutes", "5", timeout=900)  # fmt: skip
        assert created.returncode == 0, created.stderr[-4000:]
        assert f"Starting from the prebuild {record['id']}" in created.stderr, created.stderr
        result = e2e.wait(name, WAIT_SECONDS)
        assert result.returncode == 0, f"{name} did not reach ready:\n{result.text[-6000:]}"
        status = e2e.status(name)
        assert status.get("prebuild_stale") in (True, "true"), status
        env = e2e.must("exec", name, "--", "printenv", "CHANGED", timeout=600)
        assert env.strip() == "1"  # the rebuilt container has the new config
        e2e.ls()  # the app's status read marks the prebuild stale
        (listed,) = prebuilds(e2e)
        assert listed["id"] == record["id"] and listed["stale"] is True, listed
        e2e.must("rm", "-y", name, timeout=300)
    e2e.must("prebuild", "rm", str(record["id"]), "-y", timeout=120)
    assert image_dirs(e2e) == []
