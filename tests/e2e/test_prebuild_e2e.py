"""End to end, prebuilds (issue 14) and sessions (issue 15) with the local provider and the real
CLI, on a repository without a devcontainer (Bivy's default one) served by URL from this
computer:

1. ``bivy prebuild --repo URL`` boots a builder VM in prebuild mode (tools, clone by URL,
   devcontainer, agent), seals it, images it (a flattened qcow2) and deletes it: nothing of the
   builder is left (VM folder, QEMU, registry, keychain).
2. A commit is pushed; ``bivy create`` of the same URL, with a 1-minute idle window, starts from
   the image and reaches ``ready``: the terminal answers through the tunnel, ``bivy exec``
   runs as the default devcontainer's user in the repository folder, ``claude --version``
   works, the new commit is checked out. The phase seconds of the builder (a cold start of
   that repository) and of the VM from the prebuild are printed side by side.
3. On that VM: a ``bivy exec`` longer than the idle window keeps it; ``bivy session new`` starts
   a second session (worktree, branch, tmux session in the devcontainer) whose agent works —
   hook events from inside the container — while main's is idle: the VM stays long past its
   idle window and the last command's lease; once s1 is idle too, the VM deletes itself.
4. ``bivy prebuild rm`` deletes the image.

The default devcontainer's image has Claude Code preinstalled (the test guest makes it from
``bivy-test/claude:latest``), so the builder's agent install takes its "already installed" path:
the npm install inside the guest is proven by the main e2e (tests/e2e/test_workspace_e2e.py),
which CI runs beside this one. A configuration changed since the prebuild (the VM rebuilds and
reports ``prebuild_stale``) runs with the real bootstrap, Docker and devcontainer CLI in
tests/integration/cloudinit/test_prebuild_real.py, and the host-side stale check of a local
checkout in tests/integration/test_prebuild_service.py.
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
    E2E,
    SIZE,
    OpenTerminal,
    assert_a_long_exec_is_activity,
    log,
    make_bare_clone,
    make_repo,
)
from tests.e2e.harness import workspace_secrets as keychain_items
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


#: How long the second session's agent "works" (a hook event every BEAT seconds): well past the
#: keep-alive lease of the command that starts it (2 min) and several 1-minute idle windows.
WORK_SECONDS = 480
BEAT = 20
#: From s1's last hook event to the VM gone: idle window (1 min) + timer period (1 min) +
#: poweroff and reaping, with room for a slow emulated guest.
SELF_DELETE_SECONDS = 900


def _push(repo: Path, bare: Path, message: str) -> None:
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", message)
    _git(repo, "push", "-q", str(bare), "HEAD:main")
    subprocess.run(["git", "-C", str(bare), "update-server-info"], check=True)


def _sessions(e2e: E2E, name: str) -> dict[str, dict[str, object]]:
    """``bivy session ls --json``: the app's SSH read, which is no activity for the VM."""
    rows = json.loads(e2e.must("session", "ls", name, "--json", timeout=300))
    return {str(r["name"]): r for r in rows}


def _new_session(e2e: E2E, name: str) -> str:
    """``bivy session new NAME s1``: its worktree, branch and tmux session inside the
    devcontainer. Returns the worktree."""
    assert list(_sessions(e2e, name)) == ["main"]
    log(e2e.must("session", "new", name, "s1", "--agent", "claude", timeout=900))
    sessions = _sessions(e2e, name)
    assert list(sessions) == ["main", "s1"], sessions
    assert sessions["s1"]["branch"] == "bivy/s1", sessions
    worktree = str(sessions["s1"]["worktree"])
    assert worktree.endswith("/.bivy/worktrees/s1"), worktree
    return worktree


def _start_s1_working(e2e: E2E, name: str, worktree: str) -> float:
    """s1's agent works for WORK_SECONDS: a hook event from inside the container into s1's
    state dir every BEAT seconds, then the end of its turn (Stop). Started in the background by
    one ``bivy exec``, whose keep-alive lease runs out 2 minutes after it. Returns when."""
    hook = "BIVY_AGENT_STATE_DIR=/bivy/state/s1 /bivy/hook/agent-hook"
    # (inside the outer sh's double quotes: the loop's own $ is escaped for it)
    loop = (
        f"i=0; while [ \\$i -lt {WORK_SECONDS // BEAT} ]; do echo '{{}}' | {hook} PreToolUse; "
        f"sleep {BEAT}; i=\\$((i+1)); done; echo '{{}}' | {hook} Stop"
    )
    e2e.must(
        "exec", name, "--", "sh", "-c",
        f"cd {worktree} && setsid nohup sh -c \"{loop}\" >/dev/null 2>&1 &",
        timeout=600,
    )  # fmt: skip
    return time.monotonic()


@pytest.mark.timeout(2 * WAIT_SECONDS + WORK_SECONDS + SELF_DELETE_SECONDS + 1800)
def test_prebuild_then_a_workspace_from_it_with_sessions(
    e2e: E2E, tmp_path: Path, secret_service: SecretServiceSession
) -> None:
    repo = make_repo(tmp_path / "repos", "pb-url", "none")
    bare = make_bare_clone(repo, tmp_path / "served" / "pb-url.git")
    with serve_repository(bare) as served:
        url = served.url_for_guest
        built_from = time.time()
        record, _ = prebuild(e2e, url)
        assert record["provider"] == "local" and record["repo"] == url
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
        _push(repo, bare, "after the prebuild")
        name = "e2e-pb"
        e2e.created_at[name] = time.time()
        created = e2e.bivy("create", name, "--provider", "local", "--size", SIZE, "--repo", url,
                           "--idle-minutes", "1", timeout=900)  # fmt: skip
        assert created.returncode == 0, created.stderr[-4000:]
        assert f"Starting from the prebuild {record['id']}" in created.stderr, created.stderr
        result = e2e.wait(name, WAIT_SECONDS, 5.0)
        assert result.returncode == 0, f"{name} did not reach ready:\n{result.text[-6000:]}"
        # With the terminal open (activity, while the slow emulated guest answers).
        with OpenTerminal(name, secret_service.backend()) as terminal:
            status = e2e.status(name)
            warm = report(status, e2e.created_at[name], terminal.shown_at)
            assert status.get("from_prebuild") in (True, "true"), status
            assert not status.get("prebuild_stale"), status
            script = (
                "id -un; pwd; echo '--'; claude --version; echo '--'; cat after.txt; "
                "echo '--'; git rev-parse HEAD"
            )
            out = e2e.must("exec", name, "--", "sh", "-c", script, timeout=600)
            who, version, after, head = (part.strip() for part in out.split("--\n", 3))
            assert who.split("\n") == ["node", "/workspaces/pb-url"], out
            assert re.search(r"\d+\.\d+\.\d+", version), out
            assert after == "committed after the prebuild", out
            assert head == _git(repo, "rev-parse", "HEAD").strip(), out
            worktree = _new_session(e2e, name)
        print_comparison(cold, warm)
        assert any("info/refs" in line for line in served.requests), served.requests

    # Terminal closed, no SSH session, idle agents: a running bivy exec alone keeps the VM.
    assert_a_long_exec_is_activity(e2e, name)
    # Then s1's agent works (main's stays idle): that alone keeps the VM.
    work_started = _start_s1_working(e2e, name, worktree)
    time.sleep(max(0.0, work_started + WORK_SECONDS - 120 - time.monotonic()))
    sessions = _sessions(e2e, name)
    assert sessions["s1"]["state"] == "working", sessions
    assert sessions["main"]["state"] != "working", sessions
    entry = e2e.entry(name)
    assert entry is not None and entry.get("phase") == "ready", entry
    log(f"{name}: alive {time.monotonic() - work_started:.0f} s on s1's work alone")
    # s1 idle too: the VM powers itself off and the local provider reaps it.
    deadline = work_started + WORK_SECONDS + SELF_DELETE_SECONDS
    while e2e.entry(name) is not None:
        assert time.monotonic() < deadline, f"{name} still there with every session idle"
        time.sleep(15)
    gone = time.monotonic() - work_started
    log(f"{name} deleted itself {gone:.0f} s after s1 started working ({WORK_SECONDS} s of work)")
    assert gone > WORK_SECONDS - 30
    nothing_of_builders_left(e2e)  # and nothing of the workspace: no VM, QEMU, registry entry
    assert keychain_items(name) == [], "keychain items of the workspace left"

    assert [p["stale"] for p in prebuilds(e2e)] == [False]
    e2e.must("prebuild", "rm", str(record["id"]), "-y", timeout=120)
    assert image_dirs(e2e) == [] and prebuilds(e2e) == []
