"""The idle monitor's decisions, run for real in bash against a fake clock and a temp workspace."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from app.domain import WorkspaceSpec
from tests.unit.cloudinit.vmtree import render_tree

pytestmark = pytest.mark.skipif(shutil.which("python3") is None, reason="needs python3")

T0 = 1_800_000_000
WINDOW = 30 * 60


class Vm:
    """A rendered VM laid out under a temp dir, with a workspace tree and a fake clock."""

    def __init__(self, root: Path) -> None:
        spec = WorkspaceSpec(name="w", repo_url="https://github.com/o/r.git", idle_minutes=30)
        self.env = render_tree(spec, root)
        self.root = root
        self.state = root / "state"
        self.lib = root / "lib"
        self.repo = root / "workspace"
        (self.repo / "src").mkdir(parents=True)
        (self.repo / "node_modules" / "pkg").mkdir(parents=True)
        (self.repo / ".git" / "objects").mkdir(parents=True)
        with (root / "etc" / "workspace.env").open("a") as env_file:
            env_file.write(f"BIVY_REPO_DIR={self.repo}\n")
        (self.state / "deadline").write_text(f"{T0 + 12 * 3600}\n")
        self.status({"phase": "ready"})
        self.now = T0
        self.env.update(BIVY_SS_CMD="true", BIVY_PS_CMD="true")

    def status(self, data: dict[str, object]) -> None:
        (self.state / "status.json").write_text(json.dumps(data))

    def agent(self, state: str, at: int, background: int = 0) -> None:
        stamp = datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        record = {"state": state, "event": "x", "background_tasks": background, "updated_at": stamp}
        (self.state / "agent" / "agent.json").write_text(json.dumps(record))

    def touch(self, relative: str, at: int) -> None:
        path = self.repo / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
        os.utime(path, (at, at))

    def run(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(self.lib / "idle-monitor"), *args],
            env={**self.env, "BIVY_NOW": str(self.now), **env},
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    def decide(self, **env: str) -> str:
        result = self.run("--decide", **env)
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()


@pytest.fixture
def vm(tmp_path: Path) -> Vm:
    return Vm(tmp_path)


def test_nothing_going_on_becomes_idle_after_the_window(vm: Vm) -> None:
    assert vm.decide() == f"idle {WINDOW}"
    vm.now += WINDOW - 60
    assert vm.decide() == "idle 60"
    vm.now += 60
    assert vm.decide() == "delete idle"


def test_bootstrap_keeps_alive(vm: Vm) -> None:
    vm.status({"phase": "building"})
    assert vm.decide() == "active bootstrapping (building)"


def test_a_finished_prebuild_is_idle(vm: Vm) -> None:
    # A builder the app forgot (never sealed) deletes itself like any idle VM (issue 14).
    vm.status({"phase": "prebuilt"})
    assert vm.decide() == f"idle {WINDOW}"
    vm.now += WINDOW
    assert vm.decide() == "delete idle"


def test_working_agent_keeps_alive_waiting_agent_does_not(vm: Vm) -> None:
    vm.agent("working", T0 - 60)
    assert vm.decide() == "active agent working"
    vm.agent("waiting", T0 - 60)
    assert vm.decide().startswith("idle")
    vm.now += WINDOW
    assert vm.decide() == "delete idle"


def test_stale_working_state_and_background_tasks(vm: Vm) -> None:
    vm.agent("working", T0 - WINDOW - 1)  # a crashed agent's last word is not activity forever
    assert vm.decide().startswith("idle")
    vm.agent("idle", T0 - 60, background=2)
    assert vm.decide() == "active agent has 2 background task(s)"


def test_background_task_counts_expire_like_working(vm: Vm) -> None:
    # The Stop hook's count is the agent's last word; an agent that died with tasks running
    # never lowers it (issue 11 §5.7).
    vm.agent("idle", T0 - WINDOW - 1, background=2)
    assert vm.decide() == f"idle {WINDOW}"


def test_injected_websocket_and_ssh_session(vm: Vm) -> None:
    ss = "echo '0 0 127.0.0.1:7681 127.0.0.1:40000'"
    assert vm.decide(BIVY_SS_CMD=ss) == "active 1 web terminal connection(s)"
    ps = "printf '%s\\n' '/usr/sbin/sshd -D' 'sshd: dev [priv]' 'sshd: dev@pts/0' 'bash'"
    assert vm.decide(BIVY_PS_CMD=ps) == "active 1 interactive SSH session(s)"
    ps = "printf '%s\\n' 'sshd-session: dev [priv]' 'sshd-session: dev@pts/1'"  # OpenSSH >= 9.8
    assert vm.decide(BIVY_PS_CMD=ps) == "active 1 interactive SSH session(s)"


def test_only_sshd_sessions_count_not_utmp(vm: Vm) -> None:
    # The host-tmux fallback writes a utmp entry (`who` lists it under pts/N) and the app's
    # status reads are exec channels ("dev@notty"): neither keeps the VM alive (§5.4).
    who = "echo 'dev pts/3 2026-11-27 10:00 (tmux(4242).%0)'"
    ps = (
        "printf '%s\\n' 'tmux new -A -s agent devcontainer exec bash -l' "
        "'sshd: dev@notty' 'sshd: dev [priv]'"
    )
    assert vm.decide(BIVY_WHO_CMD=who, BIVY_PS_CMD=ps) == f"idle {WINDOW}"


SSHD_PTY_SESSION = re.compile(r"^sshd(-session)?: [^ ]+@pts/")


def _sshd_pty_sessions() -> int:
    """Such sessions on this machine right now (other tests may hold some)."""
    listing = subprocess.run(["ps", "-eo", "args="], capture_output=True, text=True).stdout
    return sum(1 for line in listing.splitlines() if SSHD_PTY_SESSION.match(line))


def _sessions(decision: str) -> int:
    match = re.fullmatch(r"active (\d+) interactive SSH session\(s\)", decision)
    return int(match.group(1)) if match else 0


def test_real_sshd_process_titles_are_read_from_ps(vm: Vm) -> None:
    # A process titled like sshd's session child, found by the default `ps` probe.
    before = _sshd_pty_sessions()
    process = subprocess.Popen(["bash", "-c", 'exec -a "sshd: dev@pts/9" sleep 30'])
    try:
        assert _sessions(vm.decide(BIVY_PS_CMD="")) == before + 1
    finally:
        process.kill()
        process.wait()


@pytest.mark.skipif(os.geteuid() != 0, reason="a real sshd with ptys for any user needs root")
def test_a_real_ssh_login_with_a_pty_counts_and_an_exec_channel_does_not(
    vm: Vm, tmp_path: Path
) -> None:
    from tests.support.sshd import start_sshd

    server = start_sshd(tmp_path / "sshd")
    key = tmp_path / "id"
    key.write_text(server.client_private_key)
    key.chmod(0o600)
    ssh = ["ssh", "-i", str(key), "-p", str(server.port), "-o", "BatchMode=yes",
           "-o", "StrictHostKeyChecking=no", "-o", f"UserKnownHostsFile={tmp_path / 'kh'}",
           f"{server.user}@127.0.0.1"]  # fmt: skip
    clients = []
    try:
        # The app's status reads: a command without a pty ("sshd: user@notty").
        before = _sshd_pty_sessions()
        clients.append(subprocess.Popen([*ssh, "-T", "sleep 30"], stdin=subprocess.DEVNULL))
        deadline = time.monotonic() + 20
        while len(server.connection_pids()) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _sessions(vm.decide(BIVY_PS_CMD="")) == before
        # A person's login: a pty.
        clients.append(subprocess.Popen([*ssh, "-tt", "sleep 30"], stdin=subprocess.PIPE))
        while _sshd_pty_sessions() == before and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _sessions(vm.decide(BIVY_PS_CMD="")) == before + 1, server.log()
    finally:
        for client in clients:
            client.kill()
            client.wait()
            if client.stdin is not None:
                client.stdin.close()
        server.stop()


def test_a_bootstrap_interrupted_by_a_reboot_is_failed_and_idle(vm: Vm) -> None:
    # A hard reset during the build runs no ExecStopPost: the boot id tells (§5.6).
    vm.status({"phase": "building"})
    (vm.state / "bootstrap.boot").write_text("boot-a\n")
    assert vm.decide(BIVY_BOOT_ID="boot-a") == "active bootstrapping (building)"
    result = vm.run(BIVY_BOOT_ID="boot-b")
    assert result.returncode == 0, result.stderr
    status = json.loads((vm.state / "status.json").read_text())
    assert status["phase"] == "failed"
    assert "restarted while the bootstrap was running (building)" in status["error"]
    assert vm.decide(BIVY_BOOT_ID="boot-b") == f"idle {WINDOW}"


def test_a_stopped_bootstrap_is_marked_failed_by_its_unit(vm: Vm) -> None:
    # bivy-bootstrap.service's ExecStopPost, as systemd runs it after a timeout kill.
    vm.status({"phase": "building"})
    env = {**vm.env, "SERVICE_RESULT": "timeout", "EXIT_CODE": "killed", "EXIT_STATUS": "TERM"}
    subprocess.run(["bash", str(vm.lib / "bootstrap-stopped")], env=env, check=True)
    status = json.loads((vm.state / "status.json").read_text())
    assert status["phase"] == "failed"
    assert status["error"] == "the bootstrap was stopped before it finished (timeout, killed TERM)"
    assert vm.decide() == f"idle {WINDOW}"
    # A bootstrap that reported its own end is left alone.
    vm.status({"phase": "ready"})
    subprocess.run(["bash", str(vm.lib / "bootstrap-stopped")], env=env, check=True)
    assert json.loads((vm.state / "status.json").read_text())["phase"] == "ready"


def test_real_established_connection_to_the_terminal_port(vm: Vm) -> None:
    if shutil.which("ss") is None:
        pytest.skip("needs ss (iproute2)")
    listener = socket.create_server(("127.0.0.1", 0))
    port = str(listener.getsockname()[1])
    env = {"BIVY_SS_CMD": "", "BIVY_TTYD_PORT": port}
    try:
        assert vm.decide(**env).startswith("idle")
        client = socket.create_connection(("127.0.0.1", int(port)))
        server_side, _ = listener.accept()
        try:
            assert vm.decide(**env) == "active 1 web terminal connection(s)"
        finally:
            client.close()
            server_side.close()
        assert vm.decide(**env).startswith("idle")
    finally:
        listener.close()


def test_changed_file_keeps_alive_but_node_modules_and_git_do_not(vm: Vm) -> None:
    assert vm.decide().startswith("idle")  # first check takes the stamp
    vm.now += 60
    vm.touch("node_modules/pkg/index.js", vm.now - 1)
    vm.touch(".git/objects/ab", vm.now - 1)
    vm.touch("build/out.o", vm.now - 1)
    assert vm.decide().startswith("idle")
    vm.now += 60
    vm.touch("src/main.py", vm.now - 1)
    assert vm.decide() == "active workspace files changed"
    vm.now += 60
    assert vm.decide() == f"idle {WINDOW}"  # the idle clock restarted with the change


def test_status_polling_is_not_activity(vm: Vm) -> None:
    assert vm.decide().startswith("idle")
    for _ in range(3):
        # What the app does every few seconds: an exec channel without a pty reading two files.
        subprocess.run(
            ["cat", str(vm.state / "status.json"), str(vm.state / "agent.json")],
            capture_output=True,
            check=False,
        )
        vm.now += WINDOW // 3
        decision = vm.decide()
    assert decision == "delete idle"


def test_lease_keeps_alive_until_it_expires(vm: Vm) -> None:
    (vm.state / "lease").write_text(f"{T0 + 3600}\n")
    assert vm.decide() == "active keep-alive lease"
    vm.now = T0 + 3600
    assert vm.decide().startswith("idle")


def test_max_lifetime_wins_over_everything(vm: Vm) -> None:
    vm.agent("working", T0 - 1, background=1)
    (vm.state / "lease").write_text(f"{T0 + 10**6}\n")
    vm.touch("src/a.py", T0)
    ss = "echo '0 0 127.0.0.1:7681 127.0.0.1:40000'"
    assert vm.decide(BIVY_SS_CMD=ss) == "active keep-alive lease"
    vm.now = T0 + 12 * 3600
    assert vm.decide(BIVY_SS_CMD=ss) == "delete lifetime"


def _fake_delete(vm: Vm, exit_code: int) -> Path:
    calls = vm.root / "delete-calls"
    script = vm.lib / "self-delete"
    script.write_text(f'#!/bin/sh\necho "$BIVY_ENV_FILE" >> {calls}\nexit {exit_code}\n')
    script.chmod(0o755)
    return calls


def test_idle_run_reports_then_deletes(vm: Vm) -> None:
    calls = _fake_delete(vm, 0)
    assert vm.run().returncode == 0
    status = json.loads((vm.state / "status.json").read_text())
    assert status["idle_since"] == "2027-01-15T08:00:00Z"
    assert status["idle_deadline"] == "2027-01-15T08:30:00Z"
    assert not calls.exists()
    vm.now += WINDOW
    result = vm.run()
    assert result.returncode == 0, result.stdout + result.stderr
    assert calls.read_text().strip() == str(vm.root / "etc" / "provider.env")
    assert json.loads((vm.state / "status.json").read_text())["phase"] == "deleting"
    vm.now += 60  # the next tick, while the provider deletes: no second request
    assert vm.run().returncode == 0
    assert len(calls.read_text().splitlines()) == 1


def test_failed_final_backup_blocks_the_idle_delete(vm: Vm) -> None:
    calls = _fake_delete(vm, 0)
    hook = vm.lib / "pre-delete"
    hook.write_text("#!/bin/sh\necho 'bucket unreachable' >&2\nexit 1\n")
    hook.chmod(0o755)
    vm.now += WINDOW
    vm.run()
    vm.now += WINDOW
    assert vm.run().returncode == 0
    assert not calls.exists()
    status = json.loads((vm.state / "status.json").read_text())
    assert "bucket unreachable" in status["backup_error"]
    assert status["detail"].startswith("idle, but the final backup failed: this VM is kept")
    vm.now = T0 + 12 * 3600  # the hard lifetime deletes anyway
    vm.run()
    assert calls.exists()


def test_delete_keeps_failing_then_powers_off(vm: Vm) -> None:
    calls = _fake_delete(vm, 5)
    marker = vm.root / "powered-off"
    result = vm.run(
        "--lifetime",
        BIVY_DELETE_ATTEMPTS="3",
        BIVY_DELETE_RETRY_SECONDS="0",
        BIVY_POWEROFF_CMD=f"touch {marker}",
    )
    assert result.returncode == 1
    assert len(calls.read_text().splitlines()) == 3
    assert marker.exists()
    status = json.loads((vm.state / "status.json").read_text())
    assert status["phase"] == "failed"
    assert "self-delete failed" in status["error"]


def test_expiring_phase_shortly_before_the_lifetime(vm: Vm) -> None:
    vm.now = T0 + 12 * 3600 - 600
    vm.agent("working", vm.now)
    vm.run()
    status = json.loads((vm.state / "status.json").read_text())
    assert status["phase"] == "expiring"
    assert status["lifetime_deadline"] == "2027-01-15T20:00:00Z"


def test_timers_firing_together_delete_once(vm: Vm) -> None:
    calls = vm.root / "delete-calls"
    script = vm.lib / "self-delete"
    script.write_text(f"#!/bin/sh\necho call >> {calls}\nsleep 0.5\nexit 0\n")
    script.chmod(0o755)
    env = {**vm.env, "BIVY_NOW": str(T0)}
    runs = [
        subprocess.Popen(["bash", str(vm.lib / "idle-monitor"), "--lifetime"], env=env)
        for _ in range(3)
    ]
    assert [run.wait(timeout=30) for run in runs] == [0, 0, 0]
    assert calls.read_text().splitlines() == ["call"]


@pytest.mark.parametrize("kind", ["fifo", "device", "huge"])
def test_the_container_cannot_stall_the_monitor_through_agent_json(vm: Vm, kind: str) -> None:
    # agent.json is the container's to write: a FIFO there once blocked the check (and with its
    # lock the hard lifetime) forever. Now it reads as "no agent state" and the clock runs on.
    path = vm.state / "agent" / "agent.json"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "device":
        path.symlink_to("/dev/zero")
    else:
        path.write_text('{"state": "working", "pad": "' + "x" * 200_000 + '"}')
    assert vm.decide() == f"idle {WINDOW}"
    vm.now += WINDOW
    assert vm.decide() == "delete idle"


# Issue 13 §3: the final backup takes minutes; whoever came back meanwhile keeps the VM.
TERMINAL = "echo '0 0 127.0.0.1:7681 127.0.0.1:40000'"
SSH_PTY = "printf '%s\\n' 'sshd: dev [priv]' 'sshd: dev@pts/0'"


def _backup_hook(vm: Vm, body: str) -> Path:
    """A pre-delete hook (the final backup) that runs ``body`` and leaves a trace."""
    ran = vm.root / "backup-ran"
    hook = vm.lib / "pre-delete"
    hook.write_text(f"#!/bin/bash\nset -e\ntouch {ran}\n{body}\n")
    hook.chmod(0o755)
    return ran


def _comes_back(vm: Vm, how: str) -> tuple[str, dict[str, str]]:
    """What happens during the backup for ``how``, and the probes that can see it."""
    marker = vm.root / "came-back"
    probe = f"test -e {marker} && "
    match how:
        case "terminal":
            return f"touch {marker}", {"BIVY_SS_CMD": probe + TERMINAL}
        case "ssh":
            return f"touch {marker}", {"BIVY_PS_CMD": probe + SSH_PTY}
        case "lease":  # the app's Keep alive: the lease file over an exec channel
            return f"echo {T0 + 3600} > {vm.state / 'lease'}", {}
        case "file":  # saved after the check began (the fake clock stands still meanwhile)
            path = vm.repo / "src" / "saved.py"
            return f"echo x > {path}; touch -d @{vm.now + WINDOW + 1} {path}", {}
        case "agent":
            stamp = datetime.fromtimestamp(vm.now + WINDOW, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            record = json.dumps({"state": "working", "event": "x", "updated_at": stamp})
            return f"echo '{record}' > {vm.state / 'agent' / 'agent.json'}", {}
    raise AssertionError(how)


@pytest.mark.parametrize("how", ["terminal", "ssh", "lease", "file", "agent"])
def test_activity_during_the_final_backup_keeps_the_vm(vm: Vm, how: str) -> None:
    calls = _fake_delete(vm, 0)
    body, probes = _comes_back(vm, how)
    ran = _backup_hook(vm, body)
    assert vm.run(**probes).returncode == 0  # takes the idle clock and the file stamp
    vm.now += WINDOW
    assert vm.decide(**probes) == "delete idle"  # nobody there when the check starts
    result = vm.run(**probes)
    assert result.returncode == 0, result.stdout + result.stderr
    assert ran.exists(), "the final backup ran"
    assert not calls.exists(), "deleted although someone came back during the final backup"
    assert "during the final backup; not deleting" in result.stdout
    status = json.loads((vm.state / "status.json").read_text())
    assert status["idle_since"] is None and status["idle_deadline"] is None
    assert status["phase"] == "ready"
    assert not (vm.state / "idle-since").exists()  # the idle clock restarts from now
    assert not (vm.state / "deleted").exists()


def test_no_activity_during_the_final_backup_deletes(vm: Vm) -> None:
    calls = _fake_delete(vm, 0)
    marker = vm.root / "came-back"
    probes = {"BIVY_SS_CMD": f"test -e {marker} && {TERMINAL}"}
    ran = _backup_hook(vm, "true")  # the same probes, but nobody comes
    vm.run(**probes)
    vm.now += WINDOW
    result = vm.run(**probes)
    assert result.returncode == 0, result.stdout + result.stderr
    assert ran.exists()
    assert calls.read_text().strip() == str(vm.root / "etc" / "provider.env")
    assert json.loads((vm.state / "status.json").read_text())["phase"] == "deleting"


def test_a_real_terminal_connection_opened_during_the_final_backup_keeps_the_vm(vm: Vm) -> None:
    # The real probe (ss) against a real listener on the terminal port: the backup hook opens
    # a connection that outlives it, as a browser tab opened meanwhile would.
    if shutil.which("ss") is None:
        pytest.skip("needs ss (iproute2)")
    calls = _fake_delete(vm, 0)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(20)
    port = listener.getsockname()[1]
    probes = {"BIVY_SS_CMD": "", "BIVY_TTYD_PORT": str(port)}
    pid_file = vm.root / "client.pid"
    _backup_hook(
        vm,
        f"(exec 3<>/dev/tcp/127.0.0.1/{port}; exec sleep 60) >/dev/null 2>&1 &\n"
        f"echo $! > {pid_file}\n"
        f"for _ in $(seq 100); do ss -Htn state established '( dport = :{port} )' | grep -q . "
        "&& exit 0; sleep 0.1; done; exit 1",
    )
    try:
        vm.run(**probes)
        vm.now += WINDOW
        result = vm.run(**probes)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "1 web terminal connection(s) during the final backup" in result.stdout
        assert not calls.exists()
    finally:
        if pid_file.exists():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid_file.read_text()), 9)
        listener.close()


def test_the_app_reads_the_idle_deadline_the_monitor_publishes(vm: Vm) -> None:
    # The real monitor writes status.json; the app's parser (what it reads over SSH) sees the
    # idle deadline while idle and none once the VM is in use again.
    from app.services.status import parse_files

    vm.run()
    vm.now += 600
    vm.run()
    report, _ = parse_files((vm.state / "status.json").read_text())
    assert report is not None and report.idle_since is not None
    assert report.idle_deadline is not None
    assert int(report.idle_since.timestamp()) == T0
    assert int(report.idle_deadline.timestamp()) == T0 + WINDOW
    (vm.state / "lease").write_text(f"{vm.now + 3600}\n")  # the app's Keep alive
    vm.run()
    report, _ = parse_files((vm.state / "status.json").read_text())
    assert report is not None and report.idle_since is None and report.idle_deadline is None
