"""``bivy session ls/new/rm`` and the status read's session list against a real sshd that shows
the VM's paths and user (tests/support/vmroot.py): the app's own command lines (``sudo -n
/usr/local/lib/bivy/session …`` for new/rm, the plain one for ls, which needs no root) through
its pinned-key connection, logged in as ``dev`` with the VM's sudo rule, running the rendered
session script on a VM tree with sessions. Starting a session for real (a container) is in
tests/integration/cloudinit/test_sessions_real.py.
"""

from __future__ import annotations

import asyncio
import io
import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from app import cli
from app.cloudinit import render_cloud_config
from app.domain import AgentState, WorkspaceSpec
from app.services.registry import Registry, WorkspaceRecord
from app.services.status import StatusService
from app.services.tunnels import SSHTarget, TunnelService
from app.settings import SecretKeys, SecretStore
from tests.support.sshd import SshServer
from tests.support.vmroot import VmUser, vm_sshd
from tests.unit.cloudinit.vmtree import inputs_for, materialize

pytestmark = pytest.mark.needs_root("to show the VM's paths and user to an sshd")


@pytest.fixture
def vm() -> Iterator[Path]:
    """A rendered VM tree every user may read (the login user is not root)."""
    folder = Path(tempfile.mkdtemp(prefix="bivy-sessions-", dir="/tmp"))
    folder.chmod(0o755)
    spec = WorkspaceSpec(name="w", repo_url="https://example.invalid/o/r.git")
    materialize(render_cloud_config(inputs_for(spec)), folder)
    for path in folder.rglob("*"):
        if path.is_dir():
            path.chmod(0o755)
    (folder / "etc").chmod(0o700)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _session(vm: Path, name: str, agent: str, state: str | None = None) -> None:
    sessions = vm / "state" / "sessions"
    sessions.mkdir(exist_ok=True, mode=0o755)
    record = {"name": name, "agent": agent, "branch": "main" if name == "main" else f"bivy/{name}",
              "base": "" if name == "main" else "0123abc",
              "worktree": "/workspaces/r" + ("" if name == "main" else f"/.bivy/worktrees/{name}"),
              "created_at": f"2026-12-02T02:0{len(list(sessions.glob('*.json')))}:00Z"}  # fmt: skip
    (sessions / f"{name}.json").write_text(json.dumps(record))
    if state is not None:
        directory = vm / "state" / "agent" / ("" if name == "main" else name)
        directory.mkdir(parents=True, exist_ok=True, mode=0o755)
        stamp = "2026-12-02T02:59:00Z"
        (directory / "agent.json").write_text(
            json.dumps({"state": state, "event": "x", "message": "", "updated_at": stamp})
        )


def _user() -> VmUser:
    import yaml

    spec = WorkspaceSpec(name="w", repo_url="https://example.invalid/o/r.git")
    users = yaml.safe_load(render_cloud_config(inputs_for(spec)))["users"]
    entry = next(u for u in users if isinstance(u, dict) and u.get("sudo"))
    return VmUser(name=entry["name"], sudo=entry["sudo"], shell=entry.get("shell", "/bin/bash"))


def _layout(vm: Path) -> dict[str, Path]:
    return {
        "/usr/local/lib/bivy": vm / "lib",
        "/etc/bivy": vm / "etc",
        "/var/lib/bivy": vm / "state",
    }


def _register(server: SshServer) -> None:
    Registry().put(
        WorkspaceRecord(
            name="demo",
            account="local",
            provider="local",
            repo_url="https://example.invalid/o/r.git",
            ipv4=server.host,
            ssh_port=server.port,
            host_public_key=server.host_public_key,
        )
    )
    SecretStore().set(SecretKeys.SSH_PRIVATE_KEY, server.client_private_key)


def bivy(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_session_commands_and_the_status_read_over_ssh(vm: Path) -> None:
    with vm_sshd(_layout(vm), _user()) as server:
        _register(server)
        # Before the bootstrap made main: nothing listed, and no session can start.
        code, out, err = bivy("session", "ls", "demo", "--json")
        assert (code, json.loads(out)) == (0, []), err
        code, out, err = bivy("session", "new", "demo", "--agent", "codex")
        assert code == 1 and "not ready for sessions yet" in err

        _session(vm, "main", "claude", "waiting")
        _session(vm, "feature", "codex", "working")
        code, out, err = bivy("session", "ls", "demo", "--json")
        assert code == 0, err
        rows = json.loads(out)
        assert [(r["name"], r["agent"], r["state"]) for r in rows] == [
            ("main", "claude", "waiting"),
            ("feature", "codex", "working"),
        ]
        assert rows[1]["branch"] == "bivy/feature"
        code, out, err = bivy("session", "ls", "demo")
        assert code == 0, err
        assert out.splitlines()[0].split() == ["SESSION", "AGENT", "STATE", "BRANCH", "WORKTREE"]
        assert out.splitlines()[2].split()[:4] == ["feature", "codex", "working", "bivy/feature"]

        # The window's status read (as dev, no sudo) carries the same list.
        async def read() -> tuple[str, ...]:
            tunnels = TunnelService(SecretStore(), connect_timeout=15.0)
            try:
                record = Registry().get("demo")
                assert record is not None
                tunnel = await tunnels.open(
                    SSHTarget("demo", server.host, server.host_public_key, server.port, server.user)
                )
                snapshot = await StatusService(tunnels).read(tunnel)
                assert snapshot.session("feature") is not None
                assert snapshot.session("main") is not None
                assert snapshot.session("main").state == AgentState.WAITING  # type: ignore[union-attr]
                return tuple(s.name for s in snapshot.sessions)
            finally:
                await tunnels.close_all()

        assert asyncio.run(read()) == ("main", "feature")

        # new: the name is checked here; the VM (sudo -n, the real script) says why it cannot.
        code, out, err = bivy("session", "new", "demo", "feature", "--agent", "codex")
        assert code == 1 and "has a session called feature already" in err
        code, out, err = bivy("session", "new", "demo", "Bad_Name")
        assert code == 1 and "is not a session name" in err
        code, out, err = bivy("session", "new", "demo", "--agent", "codex", "--prompt", "hi")
        assert code == 1 and "the workspace's devcontainer is not up yet" in err, err

        # rm: main is refused here, an unknown session by the VM, and without -y off a terminal.
        code, out, err = bivy("session", "rm", "demo", "main", "-y")
        assert code == 1 and "cannot be removed" in err
        code, out, err = bivy("session", "rm", "demo", "nope", "-y")
        assert code == 1 and "there is no session called nope" in err, err
        code, out, err = bivy("session", "rm", "demo", "feature")
        assert code == 1 and "--yes" in err
        assert (vm / "state" / "sessions" / "feature.json").exists()
