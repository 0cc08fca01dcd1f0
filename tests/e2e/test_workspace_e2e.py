"""End to end: ``bivy create --provider local`` boots a real guest (QEMU, systemd, cloud-init with
Bivy's unmodified user data) and the workspace comes up for real: phases, pinned SSH, the terminal
through the tunnel, ``bivy exec`` in the devcontainer, the idle self-delete, nothing left
behind. (Sessions, and a long ``bivy exec`` as activity: tests/e2e/test_prebuild_e2e.py, on the
VM started from a prebuild.)

Slow (minutes per VM under TCG): ``pytest -m e2e`` runs only these, ``-m 'not e2e'`` skips them.
Set ``BIVY_E2E_WAIT_SECONDS`` to change how long a workspace may take to reach ``ready``.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.harness import (
    AGENT_IMAGE,
    E2E,
    OpenTerminal,
    assert_a_long_exec_is_activity,
    log,
    make_bare_clone,
    make_repo,
)
from tests.e2e.harness import workspace_secrets as keychain_items
from tests.e2e.phases import PhaseReport, report
from tests.e2e.served_repo import serve_repository
from tests.support.secret_service import SecretServiceSession

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

WAIT_SECONDS = float(os.environ.get("BIVY_E2E_WAIT_SECONDS", "2400"))
#: From the last activity to the VM gone: idle window (1 min) + timer period (1 min) + poweroff
#: and reaping, with room for a slow emulated guest.
SELF_DELETE_SECONDS = 600


def _print_phases(name: str, phases: PhaseReport) -> None:
    log(f"phases of {name} (seconds)")
    log(PhaseReport.header())
    log(phases.line(name))
    if phases.steps:
        log(f"bootstrap steps: {phases.steps_line()}")


def _assert_pinned_host_key(e2e: E2E, name: str) -> None:
    """The key sshd really presents is the one Bivy generated and pinned; OpenSSH (bivy ssh,
    StrictHostKeyChecking yes with Bivy's known_hosts) logs in with it."""
    entry = e2e.entry(name)
    assert entry is not None
    port = int(str(entry["ssh_port"]))
    assert entry.get("host") == "127.0.0.1", entry
    scanned = subprocess.run(
        ["ssh-keyscan", "-t", "ed25519", "-p", str(port), "127.0.0.1"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    ).stdout.split()
    assert "ssh-ed25519" in scanned, scanned
    presented = scanned[scanned.index("ssh-ed25519") + 1]
    from app.services.registry import Registry

    record = Registry().get(name)
    assert record is not None and record.host_public_key
    assert record.host_public_key.split()[1] == presented
    assert e2e.must("ssh", name, "--", "id", "-un", timeout=120).strip() == "dev"


def _assert_container(e2e: E2E, name: str, user: str, folder: str) -> str:
    """``bivy exec`` runs in the devcontainer as ``user`` in ``folder``; Claude Code is there;
    git works on the workspace. Returns ``git status`` output."""
    assert e2e.must("exec", name, "--", "id", "-un").strip() == user
    assert e2e.must("exec", name, "--", "pwd").strip() == folder
    version = e2e.must("exec", name, "--", "claude", "--version", timeout=300)
    assert re.search(r"\d+\.\d+\.\d+", version), version
    log(f"claude --version in the container: {version.strip()}")
    status = e2e.must("exec", name, "--", "git", "status", "--branch", "--porcelain=v1")
    assert status.startswith("## main"), status
    # the exit code of the command passes through
    assert e2e.bivy("exec", name, "--", "sh", "-c", "exit 7", timeout=300).returncode == 7
    return status


def _assert_nothing_left(e2e: E2E, name: str) -> None:
    assert e2e.entry(name) is None, e2e.ls()
    assert e2e.qemu_processes() == [], "QEMU processes left running"
    assert e2e.vm_dirs() == [], f"VM folders left: {e2e.vm_dirs()}"
    assert keychain_items(name) == [], "keychain items of the workspace left"


def _wait_ready(e2e: E2E, name: str, interval: float = 2.0) -> None:
    result = e2e.wait(name, WAIT_SECONDS, interval)
    assert result.returncode == 0, f"{name} did not reach ready:\n{result.text[-6000:]}"
    phases = [line.split()[0] for _, line in result.lines if line.strip()]
    assert "ready" in phases, result.text


@pytest.mark.timeout(WAIT_SECONDS + SELF_DELETE_SECONDS + 900)
def test_a_local_checkout_comes_up_and_the_idle_vm_deletes_itself(
    e2e: E2E, tmp_path: Path, secret_service: SecretServiceSession
) -> None:
    name = "e2e-main"
    repo = make_repo(tmp_path / "repos", "e2e-user", "user")
    (repo / "notes.txt").write_text("not committed yet\n")  # rides along: --include-uncommitted
    e2e.create(name, str(repo), "--idle-minutes", "1", "--include-uncommitted")
    entry = e2e.entry(name)
    assert entry is not None and entry.get("provider") == "local", entry

    _wait_ready(e2e, name)
    _assert_pinned_host_key(e2e, name)
    # With the terminal open (activity: the 1-minute idle window must not run out while the
    # slow emulated guest answers bivy exec, which is not an interactive session).
    with OpenTerminal(name, secret_service.backend()) as terminal:
        status = e2e.status(name)
        _print_phases(name, report(status, e2e.created_at[name], terminal.shown_at))
        git_status = _assert_container(e2e, name, "node", "/workspaces/e2e-user")
        assert "?? notes.txt" in git_status, git_status
        assert e2e.must("exec", name, "--", "cat", "notes.txt") == "not committed yet\n"

    # Terminal closed, no SSH session, no agent activity: the VM powers itself off after the
    # idle window and the local provider reaps it (bivy ls is the app's status read).
    idle_from = time.monotonic()
    deadline = idle_from + SELF_DELETE_SECONDS
    while e2e.entry(name) is not None:
        assert time.monotonic() < deadline, f"{name} still there after {SELF_DELETE_SECONDS} s idle"
        time.sleep(15)  # a VM under emulation: nothing to wait on but its listing
    log(f"{name} deleted itself {time.monotonic() - idle_from:.0f} s after the last activity")
    _assert_nothing_left(e2e, name)


ALL_KINDS = {
    # kind of repository → (remote user, how it reaches the VM)
    # Docker Compose (the app service and a second one), the devcontainer running as root
    "compose-root": ("root", "path"),
    "root": ("root", "path"),  # an image devcontainer running as root
    "compose": ("node", "path"),  # Docker Compose with a non-root remote user
    "none": ("node", "url"),  # no devcontainer (Bivy's default), cloned over HTTPS from the host
}
#: CI runs compose-root (the other two kinds CI needs — no devcontainer, cloned by URL — are the
#: prebuild run's repository); BIVY_E2E_MATRIX_KINDS=root,compose,none runs others by hand.
MATRIX = {
    kind: value
    for kind, value in ALL_KINDS.items()
    if kind in os.environ.get("BIVY_E2E_MATRIX_KINDS", "compose-root").split(",")
}
#: This one gets a 1-minute idle window and runs a `bivy exec` longer than the idle monitor
#: needs to delete an idle VM (harness.assert_a_long_exec_is_activity).
KEEPALIVE_KIND = "none"
#: One vCPU each: an emulated guest runs all its vCPUs on one host thread, so a second vCPU
#: adds no speed, only scheduling work (and 2 GB more memory per VM).
MATRIX_SIZE = os.environ.get("BIVY_E2E_MATRIX_SIZE", "local-1cpu-2gb")
#: With BIVY_E2E_SCREENSHOT_DIR set, the window with this workspace's terminal tab is saved there.
SCREENSHOT_KIND = "compose-root"
SCREENSHOT_ENV = "BIVY_E2E_SCREENSHOT_DIR"


def _contents_check(e2e: E2E, name: str, user: str, folder: str) -> str:
    """One ``bivy exec`` (each costs 20-50 s of emulated node start-up): the remote user, the
    folder, Claude Code, and ``git status``. Returns the ``git status`` output."""
    script = (
        "id -un; pwd; echo '--'; claude --version; echo '--'; git status --branch --porcelain=v1"
    )
    out = e2e.must("exec", name, "--", "sh", "-c", script, timeout=600)
    head, version, status = (part.strip("\n") for part in out.split("--\n", 2))
    assert head.split("\n") == [user, folder], out
    assert re.search(r"\d+\.\d+\.\d+", version), out
    log(f"{name}: claude --version in the container: {version.strip()}")
    assert status.startswith("## main"), out
    return status


def _screenshot(e2e: E2E, name: str) -> None:
    folder = os.environ.get(SCREENSHOT_ENV)
    if not folder:
        return
    out = Path(folder) / f"{name}-terminal.png"
    result = subprocess.run(
        [sys.executable, "-m", "tests.e2e.screenshot", name, str(out), "--timeout", "420"],
        env=e2e.env,
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0 and out.is_file(), (
        f"screenshot of {name} failed ({result.returncode}):\n"
        f"{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    )
    log(f"{name}: {result.stdout.strip()}")


def _run_kind(e2e: E2E, kind: str, keychain: object) -> PhaseReport:
    """One matrix workspace from ``bivy wait`` to ``bivy rm``; returns its phase figures."""
    user, _ = MATRIX[kind]
    name = f"e2e-{kind}"
    _wait_ready(e2e, name, interval=5.0)
    with OpenTerminal(name, keychain) as terminal:  # tunnel + ttyd + a keystroke shown
        phases = report(e2e.status(name), e2e.created_at[name], terminal.shown_at)
    _print_phases(name, phases)
    if kind == SCREENSHOT_KIND:
        _screenshot(e2e, name)
    git_status = _contents_check(e2e, name, user, f"/workspaces/{kind}-repo")
    assert "??" not in git_status, git_status
    if kind in ("compose", "compose-root"):
        services = e2e.must("ssh", name, "--", "sudo", "-n", "docker", "ps", "--format={{.Names}}")
        assert len(services.split()) >= 2, services  # the app and the cache service run
    if kind == KEEPALIVE_KIND:
        assert_a_long_exec_is_activity(e2e, name)
    e2e.must("rm", "-y", name, timeout=300)
    return phases


@pytest.mark.e2e_matrix
@pytest.mark.timeout(len(MATRIX) * (WAIT_SECONDS + 1200))
def test_other_repository_kinds_come_up(
    e2e: E2E, tmp_path: Path, secret_service: SecretServiceSession
) -> None:
    """Another kind of repository than the main run's, one VM at a time (CI runs this beside the
    main and the prebuild runs: each emulated guest keeps one of the 2 host cores busy). CI's
    kind: a Docker Compose devcontainer whose remote user is root — a second service runs
    beside the app, and git works for root on a workspace cloned by the VM's user. (No
    devcontainer, cloned by URL from a git server on the host, is the prebuild run's
    repository.) Each: phases to ready, a keystroke through the tunnel and ttyd, one ``bivy
    exec`` (remote user, folder, ``claude --version``, ``git status``), then ``bivy rm``.

    Honest about what differs from the main run: these devcontainers use
    ``bivy-test/claude:latest`` (the Compose one for its app service, the no-devcontainer one
    as Bivy's default image), which tests/e2e/image.py builds at host speed with Claude Code
    already installed by npm, so the bootstrap's agent install takes its "already installed"
    path (as on a VM from a prebuild) instead of the 4-15 min npm install under emulation.
    The main run above keeps proving the real npm install inside the guest.
    """
    started = time.monotonic()
    repos = tmp_path / "repos"
    keychain = secret_service.backend()
    failures: dict[str, BaseException] = {}
    reports: dict[str, PhaseReport] = {}
    with contextlib.ExitStack() as stack:
        served = None
        for kind, (_, source) in MATRIX.items():
            repo = make_repo(repos, f"{kind}-repo", kind, image=AGENT_IMAGE)
            if source == "url":
                bare = make_bare_clone(repo, tmp_path / "served" / f"{kind}-repo.git")
                served = stack.enter_context(serve_repository(bare))
                where = served.url_for_guest
            else:
                where = str(repo)
            extra = ("--idle-minutes", "1") if kind == KEEPALIVE_KIND else ()
            try:
                e2e.create(f"e2e-{kind}", where, *extra, size=MATRIX_SIZE, timeout=WAIT_SECONDS)
                reports[kind] = _run_kind(e2e, kind, keychain)
            except Exception as error:  # the next kind still runs; all failures are reported
                log(f"e2e-{kind} failed: {error!r:.2000}")
                failures[kind] = error
                e2e.bivy("rm", "-y", f"e2e-{kind}", timeout=300)
        if served is not None and "none" not in failures:
            assert any("info/refs" in line for line in served.requests), served.requests

    log(f"phases of the matrix (seconds; one VM at a time, {os.cpu_count()} host cores)")
    log(PhaseReport.header())
    for kind, phases in reports.items():
        log(phases.line(f"e2e-{kind}"))
    log(f"matrix: {time.monotonic() - started:.0f} s from the first create to the last rm")
    if failures:
        kind, error = next(iter(failures.items()))
        others = ", ".join(f"{k}: {e!r:.300}" for k, e in failures.items() if k != kind)
        raise AssertionError(f"e2e-{kind} failed ({others or 'the only failure'})") from error
    for kind in MATRIX:
        _assert_nothing_left(e2e, f"e2e-{kind}")
