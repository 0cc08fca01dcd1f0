"""``bivy wait``, ``bivy exec``, ``bivy ssh -- CMD`` and ``bivy ls --json`` against a real sshd.

The "VM" is the test sshd on 127.0.0.1 with its files in a temporary folder: status.json written
over time by a thread (as the bootstrap does), and for ``exec`` the root-only files the bootstrap
leaves (workspace.env, container.env). The registry record carries the sshd's port and pinned
key; only the login user differs from a VM's ``dev`` (the test sshd logs in as the current user):
asyncssh targets get it by a patched ``SSHTarget.from_record``, OpenSSH by a wrapper on PATH.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app import cli
from app.cli import remote
from app.services import status as status_module
from app.services.registry import Registry, WorkspaceRecord
from app.services.tunnels import SSHTarget
from app.settings import SecretKeys, SecretStore
from tests.support.sshd import SshServer, new_keypair, start_sshd


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[SshServer]:
    server = start_sshd(tmp_path / "sshd")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def vm(sshd: SshServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Workspace "demo" on the test sshd; returns the VM's state folder (status.json's home)."""
    state = tmp_path / "vm" / "state"
    state.mkdir(parents=True)
    Registry().put(
        WorkspaceRecord(
            name="demo",
            account="hetzner",
            provider="hetzner",
            ipv4=sshd.host,
            ssh_port=sshd.port,
            host_public_key=sshd.host_public_key,
        )
    )
    SecretStore().set(SecretKeys.SSH_PRIVATE_KEY, sshd.client_private_key)

    def from_record(cls: type[SSHTarget], record: WorkspaceRecord) -> SSHTarget:
        assert record.ipv4
        return cls(record.name, record.ipv4, record.host_public_key, record.ssh_port, sshd.user)

    monkeypatch.setattr(SSHTarget, "from_record", classmethod(from_record))

    class VmStatus(status_module.StatusService):
        def __init__(self, *args: Any, **kw: Any) -> None:
            kw.setdefault("status_path", str(state / "status.json"))
            kw.setdefault("agent_path", str(state / "agent.json"))
            super().__init__(*args, **kw)

    monkeypatch.setattr(status_module, "StatusService", VmStatus)
    # OpenSSH reads Bivy's generated config (host, port, pinned key); only the user differs.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    real_ssh = shutil.which("ssh")
    assert real_ssh is not None
    wrapper = bin_dir / "ssh"
    wrapper.write_text(f'#!/bin/sh\nexec {real_ssh} -o BatchMode=yes -o User={sshd.user} "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    yield state


def write_status(state: Path, **values: Any) -> None:
    """Atomically, like the VM's status writer."""
    partial = state / "status.json.tmp"
    partial.write_text(json.dumps(values))
    partial.replace(state / "status.json")


def play(
    state: Path, steps: list[tuple[float, dict[str, Any]]], sshd: SshServer | None = None
) -> threading.Thread:
    """Write each status after its delay, in a thread (the CLI runs its own event loop); with
    ``sshd``, the clock starts once the CLI runs its second read, so it has seen the first
    status whatever the machine's load."""

    def run() -> None:
        deadline = time.monotonic() + 60
        while sshd is not None and sshd.log().count("Starting session: command") < 2:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        for delay, values in steps:
            time.sleep(delay)
            write_status(state, **values)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def phases(t0: float, *entered: tuple[str, float]) -> dict[str, float]:
    return {phase: t0 + at for phase, at in entered}


def test_wait_follows_the_phases_to_ready(vm: Path, capsys: pytest.CaptureFixture[str]) -> None:
    t0 = 1_800_000_000.0
    write_status(vm, phase="booting", detail="booting", timings=phases(t0, ("booting", 0)))
    journey = [
        ("installing", "installing packages", 3.0),
        ("cloning", "waiting for the repository from the app", 9.5),
        ("building", "building the devcontainer", 20.25),
        ("starting", "starting the agent's terminal", 80.0),
        ("ready", "ready", 85.0),
    ]
    steps = []
    entered: list[tuple[str, float]] = [("booting", 0)]
    for phase, detail, at in journey:
        entered.append((phase, at))
        steps.append((0.4, {"phase": phase, "detail": detail, "timings": phases(t0, *entered)}))
    writer = play(vm, steps)
    code = cli.main(["wait", "demo", "--timeout", "60", "--interval", "0.1"])
    writer.join()
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    expected = [
        "booting 0.0 booting",
        "installing 3.0 installing packages",
        "cloning 9.5 waiting for the repository from the app",
        "building 20.2 building the devcontainer",
        "starting 80.0 starting the agent's terminal",
        "ready 85.0 ready",
    ]
    # A phase the CLI only learnt from the timings (it moved on between two reads on a busy
    # machine) is printed without its detail; the order and the seconds are always there.
    assert len(out) == len(expected)
    for line, full in zip(out, expected, strict=True):
        assert line in (full, " ".join(full.split()[:2]))
    assert out[-1] == "ready 85.0 ready"


def test_wait_prints_phases_it_missed_from_the_timings(
    vm: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    t0 = 1_800_000_000.0
    write_status(
        vm,
        phase="ready",
        detail="ready",
        timings=phases(t0, ("booting", 0), ("cloning", 5), ("installing", 2), ("ready", 40)),
    )
    assert cli.main(["wait", "demo", "--timeout", "30"]) == 0
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()] == [
        "booting",
        "installing",
        "cloning",
        "ready",
    ]


def test_wait_reports_a_failure_with_the_log_tail(
    vm: Path, sshd: SshServer, capsys: pytest.CaptureFixture[str]
) -> None:
    write_status(vm, phase="building", detail="building the devcontainer")
    play(
        vm,
        [
            (
                0.5,
                {
                    "phase": "failed",
                    "detail": "building the devcontainer failed",
                    "error": "building the devcontainer failed",
                    "log_tail": "step 3/7\nERROR: no such image\n",
                },
            )
        ],
        sshd,
    )
    code = cli.main(["wait", "demo", "--timeout", "30", "--interval", "0.1"])
    captured = capsys.readouterr()
    assert code == 1
    assert captured.out.splitlines()[0].startswith("building ")
    assert captured.out.splitlines()[-1].startswith("failed ")
    assert "bivy: workspace demo failed: building the devcontainer failed" in captured.err
    assert captured.err.rstrip().endswith("step 3/7\nERROR: no such image")


def test_wait_times_out_with_its_own_exit_code(
    vm: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_status(vm, phase="building", detail="building the devcontainer")
    started = time.monotonic()
    code = cli.main(["wait", "demo", "--timeout", "1.5", "--interval", "0.2"])
    assert code == 2
    assert 1.4 < time.monotonic() - started < 15
    captured = capsys.readouterr()
    # no timings from the VM: seconds since `bivy wait` started
    phase, seconds, detail = captured.out.rstrip("\n").split(" ", 2)
    assert (phase, detail) == ("building", "building the devcontainer")
    assert 0 <= float(seconds) < 1.5
    assert "timed out after 1.5 s waiting for workspace demo (phase: building)" in captured.err


def test_wait_on_a_vm_whose_sshd_is_not_up_times_out_saying_why(
    vm: Path, sshd: SshServer, capsys: pytest.CaptureFixture[str]
) -> None:
    sshd.stop()
    assert cli.main(["wait", "demo", "--timeout", "1", "--interval", "0.2"]) == 2
    err = capsys.readouterr().err
    assert "Waiting for workspace demo's SSH server" in err
    assert "(phase: unknown); last error: cannot reach workspace 'demo'" in err


def test_wait_refuses_another_host_key_at_once(
    vm: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, other = new_keypair()
    Registry().update("demo", host_public_key=other)
    started = time.monotonic()
    assert cli.main(["wait", "demo", "--timeout", "60"]) == 1
    assert time.monotonic() - started < 20
    assert "not the host key Bivy generated" in capsys.readouterr().err


def test_wait_for_an_unknown_workspace(vm: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["wait", "nosuch", "--timeout", "5"]) == 1
    assert "no workspace named 'nosuch'" in capsys.readouterr().err


@pytest.fixture
def container(vm: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The bootstrap's root-only files and a recording ``devcontainer`` that runs the command
    in the workspace folder (the real CLI is exercised by the devcontainer integration test)."""
    etc = tmp_path / "vm" / "etc"
    etc.mkdir()
    repo_dir = tmp_path / "vm" / "workspaces" / "project"
    repo_dir.mkdir(parents=True)
    (etc / "workspace.env").write_text(
        f"BIVY_NAME=demo\nBIVY_REPO_DIR='{repo_dir}'\nBIVY_TTYD_PASSWORD='not-exported'\n"
    )
    (etc / "workspace.env").chmod(0o600)
    (vm / "container.env").write_text(
        "BIVY_CONTAINER_ID=0123abcd\nBIVY_REMOTE_USER=node\n"
        "BIVY_REMOTE_WORKSPACE=/workspaces/project\nBIVY_DEVCONTAINER_OVERRIDE=''\n"
    )
    record = tmp_path / "vm" / "devcontainer-argv"
    fake = tmp_path / "vm" / "devcontainer"
    fake.write_text(
        "#!/bin/sh\n"
        f"printf '%s\\n' \"$@\" > '{record}'\n"
        'test "$1" = exec || exit 99\nshift\n'
        "while :; do case $1 in\n"
        "  --workspace-folder) dir=$2; shift 2;;\n"
        "  --container-id|--override-config) shift 2;;\n"
        "  *) break;; esac; done\n"
        'cd "$dir" && exec "$@"\n'
    )
    fake.chmod(0o755)
    monkeypatch.setattr(remote, "VM_WORKSPACE_ENV", str(etc / "workspace.env"))
    monkeypatch.setattr(remote, "VM_CONTAINER_ENV", str(vm / "container.env"))
    monkeypatch.setattr(remote, "DEVCONTAINER", str(fake))
    return record


def test_exec_passes_every_word_and_the_exit_status(
    container: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    words = ["a b", "$HOME", "it's", "*", "", "--x", "\\n;|&"]
    assert cli.main(["exec", "demo", "--", "printf", "[%s]\\n", *words]) == 0
    out = capfd.readouterr().out
    assert out.splitlines() == [f"[{w}]" for w in words]
    argv = container.read_text().splitlines()
    assert argv[:5] == ["exec", "--container-id", "0123abcd", "--workspace-folder", argv[4]]
    assert argv[4].endswith("/workspaces/project")
    assert "--override-config" not in argv  # the repository had its own devcontainer.json
    # in the repository folder, with the agent's env file loaded the terminal's way
    assert cli.main(["exec", "demo", "--", "pwd"]) == 0
    assert capfd.readouterr().out.strip() == argv[4]
    assert cli.main(["exec", "demo", "--", "sh", "-c", "exit 7"]) == 7
    assert cli.main(["exec", "demo", "--", "sh", "-c", "echo $BIVY_TTYD_PASSWORD"]) == 0
    assert capfd.readouterr().out.strip() == ""  # root's env files are not exported


def test_exec_uses_the_bootstraps_override_config(
    container: Path, vm: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    with (vm / "container.env").open("a") as handle:
        handle.write("BIVY_DEVCONTAINER_OVERRIDE='/usr/local/lib/bivy/devcontainer.json'\n")
    assert cli.main(["exec", "demo", "--", "true"]) == 0
    argv = container.read_text().splitlines()
    index = argv.index("--override-config")
    assert argv[index + 1] == "/usr/local/lib/bivy/devcontainer.json"


def test_exec_before_the_container_is_up(
    container: Path, vm: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    (vm / "container.env").unlink()
    assert cli.main(["exec", "demo", "--", "true"]) == 125
    assert "the workspace's devcontainer is not up yet" in capfd.readouterr().err
    assert cli.main(["exec", "demo"]) == 1
    assert "give the command to run" in capfd.readouterr().err


def test_ssh_runs_one_command_on_the_vm(vm: Path, capfd: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["ssh", "demo", "--", "echo", "on-the-vm:$((6*7))"]) == 0
    assert capfd.readouterr().out.strip() == "on-the-vm:42"
    assert cli.main(["ssh", "demo", "--", "exit", "4"]) == 4


def test_ls_json_shows_each_workspace_phase(
    vm: Path, sshd: SshServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from app.domain import Server, ServerStatus, Workspace
    from app.services.workspaces import WorkspaceList, WorkspaceService

    write_status(vm, phase="building", detail="building the devcontainer")

    def server(name: str, port: int) -> Server:
        return Server(
            provider="hetzner",
            id=name,
            name=f"bivy-{name}",
            status=ServerStatus.RUNNING,
            ipv4="127.0.0.1",
            ssh_port=port,
            labels={"managed-by": "bivy", "bivy-workspace": name},
        )

    async def listing(self: WorkspaceService) -> WorkspaceList:
        names = {"demo": sshd.port, "gone": 1}
        return WorkspaceList(
            workspaces=[
                Workspace(name=n, account="hetzner", provider="hetzner", server=server(n, p))
                for n, p in names.items()
            ]
        )

    Registry().put(
        WorkspaceRecord(
            name="gone",
            account="hetzner",
            provider="hetzner",
            ipv4="127.0.0.1",
            ssh_port=1,
            host_public_key=sshd.host_public_key,
        )
    )
    monkeypatch.setattr(WorkspaceService, "list_workspaces", listing)
    monkeypatch.setenv("BIVY_HETZNER_TOKEN", "T" * 64)
    assert cli.main(["ls", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    demo = rows["demo"]
    assert (demo["phase"], demo["detail"]) == ("building", "building the devcontainer")
    assert (demo["host"], demo["ssh_port"], demo["provider"], demo["status"]) == (
        "127.0.0.1",
        sshd.port,
        "hetzner",
        "running",
    )
    assert rows["gone"]["phase"] is None
    assert "cannot reach workspace 'gone'" in rows["gone"]["detail"]


# -- exec/ssh commands are use of the workspace: the keep-alive lease while they run --------------


class IdleMonitor:
    """The real rendered idle monitor (``--decide``, the VM's own clock) on a VM tree under a
    temp dir, whose lease file is the one ``bivy exec``/``bivy ssh`` keep on the test "VM"."""

    def __init__(self, root: Path, repo_dir: Path) -> None:
        from app.domain import WorkspaceSpec
        from app.providers.local.provider import SELF_DELETE_SCRIPT
        from tests.unit.cloudinit.vmtree import render_tree

        spec = WorkspaceSpec(name="demo", repo_url="https://github.com/o/r.git", idle_minutes=1)
        self.env = render_tree(
            spec,
            root,
            provider="local",
            self_delete_script=SELF_DELETE_SCRIPT,
            self_delete_env={},
            user_data_limit=1 << 20,
        )
        self.env.update(BIVY_SS_CMD="true", BIVY_PS_CMD="true")  # no terminal, no pty session
        with (root / "etc" / "workspace.env").open("a") as env_file:
            env_file.write(f"BIVY_REPO_DIR={repo_dir}\n")
        self.state = root / "state"
        (self.state / "status.json").write_text(json.dumps({"phase": "ready"}))
        self.lease = self.state / "lease"
        self.lease.write_text("0\n")  # as the bootstrap leaves it (dev may write it)
        self.lib = root / "lib"

    def decide(self) -> str:
        import subprocess

        result = subprocess.run(
            ["bash", str(self.lib / "idle-monitor"), "--decide"],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()


@pytest.fixture
def monitor(container: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> IdleMonitor:
    vm_monitor = IdleMonitor(tmp_path / "vmtree", tmp_path / "vm" / "workspaces" / "project")
    monkeypatch.setattr(remote, "VM_LEASE", str(vm_monitor.lease))
    monkeypatch.setattr(remote, "COMMAND_LEASE_REFRESH", 1)
    return vm_monitor


def _lease_value(path: Path) -> int:
    text = path.read_text().strip()
    return int(text) if text.isdigit() else 0


@pytest.mark.parametrize("verb", ["exec", "ssh"])
def test_a_running_command_keeps_the_vm_from_idling(
    verb: str, monitor: IdleMonitor, capfd: pytest.CaptureFixture[str]
) -> None:
    """While ``bivy exec``/``bivy ssh -- CMD`` runs, the VM's own idle monitor sees activity
    (the lease, kept ahead and renewed); once it has ended, nothing renews it any more."""
    assert monitor.decide().startswith("idle ")  # nothing going on before
    decisions: list[str] = []
    values: set[int] = set()
    done = threading.Event()

    def watch() -> None:
        # wait for the command's marker and the keeper's first write (they start together),
        # then ask the monitor while the command still runs
        deadline = time.monotonic() + 60
        while not (monitor.state / "running").exists() or not _lease_value(monitor.lease):
            if time.monotonic() > deadline or done.is_set():
                return  # the test fails on no decisions
            time.sleep(0.05)
        while not done.is_set():
            values.add(_lease_value(monitor.lease))
            decisions.append(monitor.decide())
            time.sleep(0.3)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    started = time.time()
    marker = monitor.state / "running"
    script = f"touch '{marker}'; sleep 4; rm '{marker}'; echo out; exit 3"
    code = cli.main(
        [verb, "demo", "--", "sh", "-c", shlex.quote(script) if verb == "ssh" else script]
    )
    ended = time.time()
    done.set()
    watcher.join(30)
    assert code == 3  # the exit status still passes through
    assert capfd.readouterr().out.strip() == "out"  # the keeper prints nothing
    assert decisions and all(d == "active keep-alive lease" for d in decisions), decisions
    written = sorted(v for v in values if v)
    assert len(written) >= 2, written  # renewed while the command ran (every 1 s here)
    assert started + remote.COMMAND_LEASE_SECONDS - 2 <= written[0]
    assert written[-1] <= ended + remote.COMMAND_LEASE_SECONDS + 2
    # the keeper ends with the command: the lease is no longer renewed
    time.sleep(2.5)
    last = _lease_value(monitor.lease)
    time.sleep(2.5)
    assert _lease_value(monitor.lease) == last


def test_the_keeper_never_shortens_a_longer_lease(
    monitor: IdleMonitor, capfd: pytest.CaptureFixture[str]
) -> None:
    longer = int(time.time()) + 3600  # the window's "Keep alive for an hour"
    monitor.lease.write_text(f"{longer}\n")
    assert cli.main(["exec", "demo", "--", "sleep", "2"]) == 0
    assert _lease_value(monitor.lease) == longer


def test_a_command_returns_at_once_whatever_the_keeper_does(
    monitor: IdleMonitor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The keeper sleeps between renewals with its stdio on /dev/null: SSH's channel closes
    when the command ends, not when the keeper's sleep does."""
    monkeypatch.setattr(remote, "COMMAND_LEASE_REFRESH", 60)
    for verb in ("ssh", "exec"):
        monitor.lease.write_text("0\n")
        started = time.monotonic()
        assert cli.main([verb, "demo", "--", "sleep", "1"]) == 0
        assert time.monotonic() - started < 30
        assert _lease_value(monitor.lease) > time.time() + 60  # it did run meanwhile
