"""End to end: ``bivy create --provider local`` boots a real guest (QEMU, systemd, cloud-init with
Bivy's unmodified user data) and the workspace comes up for real: phases, pinned SSH, the terminal
through the tunnel, ``bivy exec`` in the devcontainer, the idle self-delete, nothing left behind.

Slow (minutes per VM under TCG): ``pytest -m e2e`` runs only these, ``-m 'not e2e'`` skips them.
Set ``BIVY_E2E_WAIT_SECONDS`` to change how long a workspace may take to reach ``ready``.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.harness import E2E, OpenTerminal, log, make_bare_clone, make_repo
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


def _wait_ready(e2e: E2E, name: str) -> None:
    result = e2e.wait(name, WAIT_SECONDS)
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


SCENARIOS = {
    # kind of repository → (remote user, how it reaches the VM)
    "root": ("root", "path"),
    "compose": ("node", "path"),
    "none": ("node", "path"),
    "url": ("node", "url"),
}


@pytest.mark.e2e_matrix
@pytest.mark.timeout(WAIT_SECONDS + 900)
@pytest.mark.parametrize("kind", sorted(SCENARIOS))
def test_other_repositories_come_up(
    kind: str, e2e: E2E, tmp_path: Path, secret_service: SecretServiceSession
) -> None:
    user, source = SCENARIOS[kind]
    name = f"e2e-{kind}"
    repo_name = f"{kind}-repo"
    repo = make_repo(tmp_path / "repos", repo_name, "user" if kind == "url" else kind)
    with contextlib.ExitStack() as stack:
        if source == "url":
            bare = make_bare_clone(repo, tmp_path / "served" / f"{repo_name}.git")
            served = stack.enter_context(serve_repository(bare))
            e2e.create(name, served.url_for_guest)
        else:
            e2e.create(name, str(repo))
        _wait_ready(e2e, name)
        if source == "url":
            assert any("info/refs" in line for line in served.requests), served.requests
    with OpenTerminal(name, secret_service.backend()) as terminal:
        _print_phases(name, report(e2e.status(name), e2e.created_at[name], terminal.shown_at))
        git_status = _assert_container(e2e, name, user, f"/workspaces/{repo_name}")
        assert "??" not in git_status, git_status
        if kind == "compose":
            services = e2e.must(
                "ssh", name, "--", "sudo", "-n", "docker", "ps", "--format={{.Names}}"
            )
            assert len(services.split()) >= 2, services  # the app and the cache service run
    e2e.must("rm", "-y", name, timeout=300)
    _assert_nothing_left(e2e, name)
