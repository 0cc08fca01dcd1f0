"""Two ``bivy create`` of one name at once on a provider without unique names (issue 13):
DigitalOcean lets two droplets share a name, so Bivy must not make two workspaces of one.

Two real CLI processes against the DigitalOcean emulator served on 127.0.0.1, with the name
check (the droplet list) held long enough that both are past it before either asks for a droplet
unless something stops them:

- one installation (one data folder): the name's create lock lets one through, the other is
  told at once that the name is being created;
- two installations on one account (each its own data folder and keychain): both create, then
  each looks again, and the newer droplet's creator deletes it; one droplet is left, and it is
  the one the winner's record points at.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from app.services.registry import Registry
from tests.emulators.base import EmuRequest, EmuResponse
from tests.emulators.digitalocean import DigitalOceanEmulator
from tests.support.fixtures import REPO_ROOT
from tests.support.secret_service import SecretServiceSession, secret_service_session
from tests.support.waits import WAIT_S

pytestmark = pytest.mark.slow

REPO = "https://github.com/example/project.git"
ARGV = ["create", "demo", "--repo", REPO, "--provider", "digitalocean", "--region", "fra1"]
ARGV += ["--size", "s-2vcpu-4gb"]


def hold_name_checks(emulator: DigitalOceanEmulator, until: threading.Event) -> None:
    """Hold the first two name checks (the droplet lists) until ``until`` is set; the second
    one to arrive sets it (both processes are then inside the check-then-create window at
    once, however slowly each started)."""
    handle = emulator.handle
    arrived = 0
    lock = threading.Lock()

    def held(request: EmuRequest) -> tuple[EmuResponse | None, float, str]:
        nonlocal arrived
        if request.method == "GET" and request.path == "/v2/droplets":
            with lock:
                arrived += 1
                mine = arrived
            if mine == 2:
                until.set()
            if mine <= 2:
                until.wait(WAIT_S * 2)
        return handle(request)

    emulator.handle = held  # type: ignore[method-assign]


def start(env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "app", *ARGV],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO_ROOT,
    )


def finish(process: subprocess.Popen[str]) -> tuple[int, str]:
    try:
        _out, err = process.communicate(timeout=WAIT_S * 4)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    return process.returncode, err


def base_env(
    keyring: SecretServiceSession, url: str, emulator: DigitalOceanEmulator
) -> dict[str, str]:
    env = keyring.env(dict(os.environ))
    env.pop("PYTEST_CURRENT_TEST", None)
    env.update({"BIVY_DIGITALOCEAN_API_URL": url, "DIGITALOCEAN_TOKEN": emulator.token})
    return env


def other_install(env: dict[str, str], root: Path) -> dict[str, str]:
    """The same account from another installation: its own home, config and data folders."""
    home = root / "home"
    home.mkdir(parents=True)
    return env | {
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_DATA_HOME": str(home / ".local" / "share"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "BIVY_CONFIG_DIR": str(root / "config"),
        "BIVY_DATA_DIR": str(root / "data"),
    }


def live(emulator: DigitalOceanEmulator) -> list[dict[str, Any]]:
    with emulator.lock:
        return [dict(d) for d in emulator.droplets.values()]


def test_one_installation_two_processes_make_one_droplet(
    secret_service: SecretServiceSession,
) -> None:
    emulator = DigitalOceanEmulator(strict=False, boot_seconds=0.3)
    # The first name check is held until one process has ended: whichever took the name's
    # lock is inside its check-then-create window while the other tries.
    one_ended = threading.Event()
    hold_name_checks(emulator, one_ended)
    with emulator.serve() as url:
        env = base_env(secret_service, url, emulator)
        first, second = start(env), start(env)
        deadline = time.monotonic() + WAIT_S * 2
        while first.poll() is None and second.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        one_ended.set()
        results = [finish(first), finish(second)]
    emulator.assert_no_violations()
    codes = sorted(code for code, _ in results)
    assert codes[0] == 0 and codes[1] != 0, results
    loser = next(err for code, err in results if code != 0)
    assert "being created by another Bivy process" in loser or "already exists" in loser, loser
    assert "Traceback" not in loser
    droplets = live(emulator)
    assert len(droplets) == 1, droplets
    assert len(emulator.calls("POST", r"/v2/droplets")) == 1
    record = Registry().get("demo")
    assert record is not None and record.state == "ready"
    assert record.server_id == str(droplets[0]["id"])


def test_two_installations_on_one_account_keep_the_older_droplet(
    secret_service: SecretServiceSession, tmp_path: Path
) -> None:
    emulator = DigitalOceanEmulator(strict=False, boot_seconds=0.3)
    hold_name_checks(emulator, threading.Event())
    with emulator.serve() as url, secret_service_session() as other_keyring:
        env = base_env(secret_service, url, emulator)
        env_b = other_install(base_env(other_keyring, url, emulator), tmp_path / "b")
        first, second = start(env), start(env_b)
        results = [finish(first), finish(second)]
        # Both asked for a droplet: the lock of one installation cannot stop the other.
        posts = emulator.calls("POST", r"/v2/droplets")
        deletes = emulator.calls("DELETE", r"/v2/droplets/\d+")
    emulator.assert_no_violations()
    assert len(posts) == 2, results
    codes = [code for code, _ in results]
    assert sorted(codes)[0] == 0 and sorted(codes)[1] != 0, results
    loser = next(err for code, err in results if code != 0)
    assert "created at the same time" in loser and "Traceback" not in loser, loser
    droplets = live(emulator)
    assert len(droplets) == 1, droplets
    kept = droplets[0]
    deleted = [int(c.path.rsplit("/", 1)[1]) for c in deletes]
    assert deleted and all(d > kept["id"] for d in deleted), (deleted, kept["id"])  # newer lost
    winner_dir = Path(os.environ["BIVY_DATA_DIR"]) if codes[0] == 0 else tmp_path / "b" / "data"
    loser_dir = tmp_path / "b" / "data" if codes[0] == 0 else Path(os.environ["BIVY_DATA_DIR"])
    record = Registry(winner_dir / "workspaces.json").get("demo")
    assert record is not None and record.server_id == str(kept["id"]), (record, kept)
    assert Registry(loser_dir / "workspaces.json").get("demo") is None
