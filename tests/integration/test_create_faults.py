"""Crash safety of ``bivy create`` and ``bivy rm`` (issue 13): the real CLI runs as a process
against the Hetzner emulator served on 127.0.0.1 and is SIGKILLed at each API request of its
path in turn — once when the request arrives (the CLI had the answer to the one before and did
its local work), once after the emulator acted on it (the answer is lost). Then ``bivy ls`` runs
(in-process, for speed) and the state must be whole:

- ``bivy ls`` lists exactly the Bivy servers that exist, no name twice (no duplicate server);
- each is either reachable — a ``ready`` record with its server id and the host key that went
  to that very server in its user data — or listed as unrecorded, with ``bivy rm`` as the way out;
- no keychain item of a workspace without its record, no record without its server;
- ``bivy rm`` then removes whatever is left, down to nothing.

Every process uses the real private gnome-keyring (``secret_service``).
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import io
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest

from app import cli
from app.services.registry import Registry, WorkspaceRecord
from app.settings import SecretStore
from tests.emulators.base import CONTROL_PREFIX, EmuRequest, EmuResponse
from tests.emulators.hetzner import HetznerEmulator
from tests.support.fixtures import REPO_ROOT
from tests.support.secret_service import SecretServiceSession
from tests.support.waits import WAIT_S

REPO = "https://github.com/example/project"
NAME = "demo"
TOKEN = "emulator-token-for-tests"

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class KillAt:
    """Where to kill: API request ``index`` (0-based, control calls not counted), either when it
    arrives (``applied`` False) or after the emulator acted on it, its answer never sent."""

    index: int
    applied: bool

    def __str__(self) -> str:
        return f"request {self.index + 1} {'applied, unanswered' if self.applied else 'arrived'}"


class Killer:
    """Wraps the emulator's ``handle``: counts API requests and SIGKILLs ``pid`` at ``at``."""

    def __init__(self, emulator: HetznerEmulator, at: KillAt | None) -> None:
        self.at = at
        self.pid: int | None = None
        self.count = 0
        self.fired = threading.Event()
        self.seen: list[str] = []
        self._lock = threading.Lock()
        self._handle = emulator.handle
        emulator.handle = self.handle  # type: ignore[method-assign]

    def _kill(self) -> tuple[EmuResponse | None, float, str]:
        assert self.pid is not None
        os.kill(self.pid, signal.SIGKILL)
        self.fired.set()
        return None, 0.0, "connect"  # the connection is closed unanswered

    def handle(self, request: EmuRequest) -> tuple[EmuResponse | None, float, str]:
        if request.path.startswith(CONTROL_PREFIX + "/") or self.fired.is_set():
            return self._handle(request)
        with self._lock:
            index = self.count
            self.count += 1
            self.seen.append(f"{request.method} {request.path}")
        hit = self.at is not None and index == self.at.index
        if hit and self.at is not None and not self.at.applied:
            return self._kill()
        result = self._handle(request)
        if hit:
            return self._kill()
        return result


@contextmanager
def served(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[HetznerEmulator, dict[str, str]]]:
    """A fresh emulator (a fresh project: the SSH key and firewall are created again), its
    environment set for in-process runs and returned for child processes."""
    emulator = HetznerEmulator(
        token=TOKEN, create_seconds=0.2, start_seconds=0.2, delete_seconds=0.2, strict=False
    )
    with emulator.serve() as url:
        env = {"BIVY_HETZNER_API_URL": url, "BIVY_HETZNER_TOKEN": TOKEN}
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        yield emulator, env
    emulator.assert_no_violations()


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def run_process(
    argv: list[str], env: dict[str, str], killer: Killer
) -> subprocess.CompletedProcess[str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "app", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO_ROOT,
    )
    killer.pid = process.pid
    try:
        out, err = process.communicate(timeout=WAIT_S * 4)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def child_env(secret_service: SecretServiceSession, api_env: dict[str, str]) -> dict[str, str]:
    env = secret_service.env(dict(os.environ))
    env.pop("PYTEST_CURRENT_TEST", None)
    env.update(api_env)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def workspace_items() -> set[str]:
    """Every keychain item of a workspace (``workspace/<name>/…``) in the private keyring."""
    import secretstorage

    with contextlib.closing(secretstorage.dbus_init()) as connection:
        collection = secretstorage.get_default_collection(connection)
        keys = [item.get_attributes().get("username", "") for item in collection.get_all_items()]
    return {key for key in keys if key.startswith("workspace/")}


def user_data_of(server: Any) -> str:
    text = server.user_data or ""
    return text if text.startswith("#cloud") else gzip.decompress(base64.b64decode(text)).decode()


def host_key_blob(public_openssh: str) -> str:
    return public_openssh.split()[1]


def check_whole(emulator: HetznerEmulator, keychain: SecretStore, when: str) -> list[int]:
    """``bivy ls`` against what exists; returns the ids of the servers that exist."""

    def existing_now() -> dict[int, Any]:
        with emulator.lock:
            ids = [s for s in sorted(emulator.project.servers) if emulator.server_status(s)]
            return {s: emulator.project.servers[s] for s in ids}

    # A server being deleted may go while ls runs: it lists what existed before and still after.
    before = existing_now()
    code, out, err = run("ls")
    servers = existing_now()
    assert code == 0, f"{when}: {err}"
    assert "Traceback" not in err, when
    rows = [line for line in out.splitlines()[1:] if line.strip()]
    listed = sorted(row.split()[0] for row in rows)

    def names(found: dict[int, Any]) -> list[str]:
        return sorted(server.labels.get("bivy-workspace", "") for server in found.values())

    assert len(listed) == len(set(listed)), f"{when}: duplicate servers {listed}"
    assert set(names(servers)) <= set(listed) <= set(names(before)), f"{when}: ls {out!r}"
    assert len(names(before)) == len(set(names(before))), f"{when}: duplicates {before}"
    records = {r.name: r for r in Registry().all()}
    for sid, server in servers.items():
        name = server.labels.get("bivy-workspace", "")
        row = next(r for r in rows if r.split()[0] == name)
        record: WorkspaceRecord | None = records.get(name)
        if "(unrecorded" in row:
            assert record is None or record.server_id != str(sid), f"{when}: {row}"
            assert f"bivy rm {name}" in err, f"{when}: no way out shown: {err}"
        else:
            # Reachable: a settled record pinning the key that went to this very server.
            # (``deleting``: an rm was cut short before the server went; rm again finishes it)
            assert record is not None and record.state in ("ready", "deleting"), f"{when}: {record}"
            assert record.server_id == str(sid), f"{when}: {record} vs {sid}"
            assert host_key_blob(record.host_public_key) in user_data_of(server), when
            assert record.ipv4 == server.ipv4, when
    # No record without its server (as ls saw it), no keychain item without its record.
    for record in records.values():
        assert record.server_id in {str(s) for s in before}, f"{when}: stray {record}"
    items = workspace_items()
    assert {key.split("/")[1] for key in items} <= set(records), f"{when}: stray {items}"
    for name in records:
        assert f"workspace/{name}/ttyd-password" in items, f"{when}: {name} lost its password"
    return list(servers)


def alive(emulator: HetznerEmulator) -> list[int]:
    with emulator.lock:
        return [s for s in sorted(emulator.project.servers) if emulator.server_status(s)]


def remove_all(emulator: HetznerEmulator, keychain: SecretStore, when: str) -> None:
    """``bivy rm`` of whatever is left; then nothing at all remains."""
    if alive(emulator) or Registry().all():
        code, _, err = run("rm", NAME, "--yes")
        # A server whose DELETE the killed rm sent (its registry entry already gone) may finish
        # going between the check above and this rm's listing: then there is nothing to remove
        # and rm says so, which is right.
        gone_meanwhile = "there is no workspace named" in err and not Registry().all()
        assert code == 0 or (gone_meanwhile and not alive(emulator)), f"{when}: rm: {err}"
    assert not alive(emulator), when
    code, out, err = run("ls")
    assert code == 0 and not out.strip(), f"{when}: {out} {err}"
    assert Registry().all() == [], when
    assert workspace_items() == set(), when


def test_create_killed_at_each_request_leaves_nothing_lost_or_orphaned(
    monkeypatch: pytest.MonkeyPatch,
    secret_service: SecretServiceSession,
    keychain: SecretStore,
) -> None:
    started = time.monotonic()
    argv = ["create", NAME, "--repo", REPO, "--region", "fsn1"]
    # The path without a fault: how many requests, and the state it leaves.
    with served(monkeypatch) as (emulator, api_env):
        killer = Killer(emulator, None)
        done = run_process(argv, child_env(secret_service, api_env), killer)
        assert done.returncode == 0, done.stderr
        path = list(killer.seen)
        assert any(p == "POST /v1/servers" for p in path), path
        assert len(check_whole(emulator, keychain, "after a clean create")) == 1
        remove_all(emulator, keychain, "after a clean create")
    outcomes: dict[str, str] = {}
    # Each distinct step once: the status polls repeat a number of times that depends on timing.
    points = [i for i, step in enumerate(path) if i == 0 or step != path[i - 1]]
    for index in points:
        for applied in (False, True):
            at = KillAt(index, applied)
            when = f"create killed at {at} ({path[index]})"
            with served(monkeypatch) as (emulator, api_env):
                killer = Killer(emulator, at)
                result = run_process(argv, child_env(secret_service, api_env), killer)
                if not killer.fired.is_set():  # this run's path was shorter: it finished
                    assert result.returncode == 0, f"{when}: {result.stderr}"
                    assert index > path.index("POST /v1/servers"), f"{when}: {killer.seen}"
                else:
                    assert result.returncode == -signal.SIGKILL, f"{when}: {result.stderr}"
                existing = check_whole(emulator, keychain, when)
                _code, out, _ = run("ls")
                outcomes[when] = (
                    "no server, nothing kept"
                    if not existing
                    else "server listed as unrecorded (delete only)"
                    if "(unrecorded" in out
                    else "server adopted, reachable with its pinned key"
                    if killer.fired.is_set()
                    else "finished before this point"
                )
                remove_all(emulator, keychain, when)
    # Killed once the create's answer is in, the record holds the server: always adopted.
    post = path.index("POST /v1/servers")
    adopted = [w for w, o in outcomes.items() if o.startswith("server adopted")]
    assert adopted and all(
        outcomes[f"create killed at {KillAt(i, False)} ({path[i]})"].startswith(
            ("server adopted", "finished")
        )
        for i in points
        if i > post
    ), outcomes
    # Killed before the create call reached the provider: nothing exists, nothing is kept.
    assert all(
        outcomes[f"create killed at {KillAt(i, a)} ({path[i]})"] == "no server, nothing kept"
        for i in points
        if i < post
        for a in (False, True)
    ), outcomes
    print(f"\n{len(outcomes)} kill points in {time.monotonic() - started:.1f} s:")
    for when, outcome in outcomes.items():
        print(f"  {when}: {outcome}")


def test_rm_killed_at_each_request_leaves_nothing_lost_or_orphaned(
    monkeypatch: pytest.MonkeyPatch,
    secret_service: SecretServiceSession,
    keychain: SecretStore,
) -> None:
    argv = ["rm", NAME, "--yes"]
    path: list[str] = []
    index = 0
    outcomes: dict[str, str] = {}
    while True:
        for applied in (False, True):
            at = KillAt(index, applied)
            with served(monkeypatch) as (emulator, api_env):
                code, _, err = run("create", NAME, "--repo", REPO, "--region", "fsn1")
                assert code == 0, err
                killer = Killer(emulator, at)
                result = run_process(argv, child_env(secret_service, api_env), killer)
                path = path if len(path) > len(killer.seen) else list(killer.seen)
                if not killer.fired.is_set():
                    assert result.returncode == 0, result.stderr
                    remove_all(emulator, keychain, "after a clean rm")
                    assert index >= 2, path  # the list, then the delete at least
                    print(f"\nrm path: {path}")
                    for when, outcome in outcomes.items():
                        print(f"  {when}: {outcome}")
                    return
                when = f"rm killed at {at} ({killer.seen[-1]})"
                assert result.returncode == -signal.SIGKILL, f"{when}: {result.stderr}"
                existing = check_whole(emulator, keychain, when)
                outcomes[when] = "server still there, reachable" if existing else "all gone"
                remove_all(emulator, keychain, when)
        index += 1
