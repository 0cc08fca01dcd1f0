"""prebuild-seal (issue 14) run for real in bash on a rendered builder VM under a throwaway root
(``BIVY_SEAL_ROOT``): what it removes and what it keeps. The system commands it calls (systemctl,
systemd-run, docker, apt-get, cloud-init, journalctl, fstrim, chattr) are recorders, so this
machine's services, journal and Docker stay untouched."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from app.domain import WorkspaceSpec
from tests.unit.cloudinit.vmtree import render_tree

RECORDED = ("systemctl", "systemd-run", "docker", "apt-get", "cloud-init", "journalctl", "fstrim",
            "chattr")  # fmt: skip
TIMERS = "bivy-idle.timer bivy-lifetime.timer"


class Builder:
    """A builder VM's files after its bootstrap reached ``prebuilt``, under ``tmp_path``."""

    def __init__(self, tmp_path: Path) -> None:
        spec = WorkspaceSpec(name="pb", repo_url="https://github.com/o/r.git")
        self.vm = tmp_path / "vm"
        self.env = render_tree(spec, self.vm, mode="prebuild", git_token="ghp_once")
        self.sys = tmp_path / "sys"
        self.state = self.vm / "state"
        self.log = tmp_path / "calls.log"
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        for name in RECORDED:
            tool = bin_dir / name
            tool.write_text(
                f'#!/bin/bash\necho "{name} $*" >> "{self.log}"\n'
                f'[ "${{FAIL_{name.replace("-", "_").upper()}:-}}" != 1 ]\n'
            )
            tool.chmod(0o755)
        self.env.update(PATH=f"{bin_dir}:{os.environ['PATH']}", BIVY_SEAL_ROOT=str(self.sys))
        self.files = {
            # removed
            "sys/etc/ssh/ssh_host_ed25519_key": "PRIVATE",
            "sys/etc/ssh/ssh_host_ed25519_key.pub": "ssh-ed25519 AAAA",
            "sys/var/lib/dbus/machine-id": "0123456789abcdef0123456789abcdef\n",
            "sys/home/dev/.ssh/authorized_keys": "ssh-ed25519 APPKEY app\n",
            "sys/home/dev/bivy-incoming/repo.bundle": "bundle",
            "sys/home/dev/.bash_history": "history",
            "sys/root/.npm/_cacache/index": "cache",
            "sys/root/.bash_history": "history",
            "sys/var/lib/apt/lists/deb.debian.org_dists_trixie_InRelease": "lists",
            "sys/var/log/syslog.1": "old",
            "sys/var/log/apt/history.log.2.gz": "old",
            "vm/state/log/bootstrap.log": "log",
            "vm/state/deadline": "1800000000\n",
            "vm/state/bootstrap.done": "",
            "vm/state/lease": "0\n",
            "vm/state/claude/settings.json": "{}",
            "vm/state/container.env": "BIVY_CONTAINER_ID=c0ffee\nBIVY_REMOTE_USER=node\n",
            # kept (emptied where they are logs)
            "sys/etc/machine-id": "0123456789abcdef0123456789abcdef\n",
            "sys/etc/ssh/sshd_config": "Include /etc/ssh/sshd_config.d/*.conf\n",
            "sys/home/dev/.ssh/known_hosts": "github.com ssh-ed25519 AAAA\n",
            "sys/var/lib/apt/lists/lock": "",
            "sys/var/log/syslog": "a log line\n",
            "sys/var/log/journal/abc/system.journal": "journal",
            "vm/state/prebuild.json": json.dumps({"config_hash": "0" * 16, "commit": "a" * 40}),
            "vm/workspaces/r/README.md": "hello\n",
        }
        for relative, content in self.files.items():
            path = tmp_path / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
        (self.sys / "var/lib/apt/lists/partial").mkdir()
        self.status("prebuilt")
        self.root = tmp_path

    def status(self, phase: str) -> None:
        (self.state / "status.json").write_text(json.dumps({"phase": phase}))

    def seal(self, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(self.vm / "lib" / "prebuild-seal")], env={**self.env, **env},
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip

    def exists(self, relative: str) -> bool:
        return (self.root / relative).exists()

    def calls(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []


@pytest.fixture
def builder(tmp_path: Path) -> Builder:
    return Builder(tmp_path)


def test_the_seal_removes_what_is_this_vms_and_keeps_the_prebuild(builder: Builder) -> None:
    result = builder.seal()
    assert result.returncode == 0, result.stderr
    assert result.stdout == "sealed\n"
    # /var/lib/bivy: only prebuild.json; /etc/bivy (the provider token, the git token): empty.
    assert sorted(p.name for p in builder.state.iterdir()) == ["prebuild.json"]
    assert list((builder.vm / "etc").iterdir()) == []
    for relative in (
        "sys/etc/ssh/ssh_host_ed25519_key", "sys/etc/ssh/ssh_host_ed25519_key.pub",
        "sys/var/lib/dbus/machine-id", "sys/home/dev/.ssh/authorized_keys",
        "sys/home/dev/bivy-incoming", "sys/home/dev/.bash_history", "sys/root/.npm",
        "sys/root/.bash_history", "sys/var/lib/apt/lists/deb.debian.org_dists_trixie_InRelease",
        "sys/var/log/syslog.1", "sys/var/log/apt/history.log.2.gz",
    ):  # fmt: skip
        assert not builder.exists(relative), relative
    # An empty machine id: a new one at the next boot, which systemd does not treat as the first
    # (no presets applied: nothing gets enabled behind the user data's back).
    assert (builder.sys / "etc/machine-id").read_text() == ""
    assert (builder.sys / "var/log/syslog").read_text() == ""
    for relative in (
        "sys/etc/ssh/sshd_config", "sys/home/dev/.ssh/known_hosts", "sys/var/lib/apt/lists/lock",
        "sys/var/lib/apt/lists/partial", "sys/var/log/journal/abc/system.journal",
        "vm/workspaces/r/README.md", "vm/lib/bootstrap", "vm/lib/hook/agent-hook",
    ):  # fmt: skip
        assert builder.exists(relative), relative
    assert json.loads((builder.state / "prebuild.json").read_text())["commit"] == "a" * 40
    calls = builder.calls()
    # The timers first (none may delete the VM mid-seal, none fires on the image's first boot
    # before cloud-init has written the new VM's settings) ...
    assert calls[0] == f"systemctl disable --now {TIMERS}"
    # ... the devcontainer cleaned and stopped (kept: the workspaces booted from the image
    # start it again), dangling build cache only ...
    assert calls[1].startswith("docker exec -u root c0ffee sh -c rm -rf /root/.npm")
    assert "docker stop -t 10 c0ffee" in calls
    assert "docker builder prune -f" in calls and not any("prune -a" in c for c in calls)
    # ... the hooks writable again for cloud-init, cloud-init's state gone so it runs again ...
    assert f"chattr -R -i {builder.vm / 'lib' / 'hook'}" in calls
    assert "cloud-init clean --logs --seed" in calls
    assert "apt-get clean" in calls
    # ... and the power-off last, a few seconds later (the app reads "sealed" first).
    assert calls[-1] == (
        "systemd-run --on-active=3 --timer-property=AccuracySec=100ms systemctl poweroff"
    )
    assert not any(c.startswith("systemctl enable") for c in calls)


def test_only_a_finished_prebuild_is_sealed(builder: Builder) -> None:
    builder.status("building")
    result = builder.seal()
    assert result.returncode == 1
    assert "not a finished prebuild (phase: building)" in result.stderr
    assert builder.calls() == []
    assert builder.exists("sys/etc/ssh/ssh_host_ed25519_key")
    assert (builder.vm / "etc" / "provider.env").exists()


def test_a_failed_seal_leaves_a_vm_that_still_deletes_itself(builder: Builder) -> None:
    result = builder.seal(FAIL_CLOUD_INIT="1")
    assert result.returncode != 0
    assert "sealed" not in result.stdout
    calls = builder.calls()
    # The timers are back; the self-delete still has its token and settings.
    assert calls[-1] == f"systemctl enable --now {TIMERS}"
    assert "HCLOUD_TOKEN" in (builder.vm / "etc" / "provider.env").read_text()
    assert (builder.vm / "etc" / "workspace.env").exists()
    assert (builder.state / "status.json").exists()
    assert not any(c.startswith("systemd-run") for c in calls)
