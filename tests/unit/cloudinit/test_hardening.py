"""Hardening of the rendered VM: the metadata guard runs before Docker, any container and the
bootstrap; secrets live only in root-only files; sshd takes keys only."""

from __future__ import annotations

import configparser
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from app.cloudinit import BackupInputs, render_user_data
from app.domain import WorkspaceSpec
from tests.unit.cloudinit.vmtree import file_content, inputs_for, write_files

SPEC = WorkspaceSpec(name="demo", repo_url="https://github.com/owner/repo.git")
UNITS = "/etc/systemd/system/"
SECRETS = {
    "ttyd": "pw-0123456789abcdef",
    "provider": "hcloud-token-0123456789",
    "agent": "sk-ant-test-0123456789abcdefghij",
    "host key": "b3BlbnNzaC1rZXktdjEAAAAA",
    "git": "ghp_onetimetoken0123456789",
    "restic": "restic-password-0123456789",
    "storage": "storage-secret-0123456789",
}


def _config() -> str:
    backup = BackupInputs(
        repository="s3:https://s3.example.org/bucket/bivy/demo",
        keys={"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": SECRETS["storage"]},
        password=SECRETS["restic"],
    )
    inputs = inputs_for(
        SPEC,
        ttyd_password=SECRETS["ttyd"],
        self_delete_env={"HCLOUD_TOKEN": SECRETS["provider"]},
        agent_env={"ANTHROPIC_API_KEY": SECRETS["agent"]},
        git_token=SECRETS["git"],
        backup=backup,
    )
    return render_user_data(inputs).cloud_config


def _unit(cloud_config: str, name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(file_content(cloud_config, UNITS + name))
    return parser


def test_metadata_guard_is_ordered_before_docker_and_the_bootstrap() -> None:
    config = _config()
    guard = _unit(config, "bivy-metadata-guard.service")
    before = guard["Unit"]["Before"].split()
    assert {"docker.service", "containerd.service", "bivy-bootstrap.service"} <= set(before)
    assert {"bivy-ttyd.service", "network-pre.target"} <= set(before)
    assert guard["Unit"]["DefaultDependencies"] == "no"  # early in every boot
    assert guard["Install"]["RequiredBy"] == "docker.service"  # no guard, no Docker
    assert guard["Service"]["ExecStart"] == "/usr/local/lib/bivy/metadata-guard"
    assert guard["Service"]["RemainAfterExit"] == "yes"
    for name in ("bivy-bootstrap.service", "bivy-ttyd.service"):
        unit = _unit(config, name)["Unit"]
        assert "bivy-metadata-guard.service" in unit["After"].split()
        wants = unit.get("Requires", "") + " " + unit.get("Wants", "")
        assert "bivy-metadata-guard.service" in wants.split()
    # First boot: enabled and started before the bootstrap (which installs Docker) starts.
    runcmd = [" ".join(map(str, cmd)) for cmd in yaml.safe_load(config)["runcmd"]]
    guard_at = runcmd.index("systemctl enable --now --no-reload bivy-metadata-guard.service")
    assert guard_at < runcmd.index("systemctl start --no-block bivy-bootstrap.service")
    # The bootstrap itself refuses to go on without it, before any Docker or agent step.
    bootstrap = file_content(config, "/usr/local/lib/bivy/bootstrap").splitlines()
    start = next(i for i, line in enumerate(bootstrap) if "start bivy-metadata-guard" in line)
    runs = [
        i
        for i, line in enumerate(bootstrap)
        if re.match(r"\s*(run_job|docker|devcontainer|systemctl is-active --quiet docker)\b", line)
    ]
    assert len(runs) >= 4 and start < min(runs)
    assert "fail " in bootstrap[start + 1]


def test_metadata_rules_cover_every_provider_and_both_paths() -> None:
    rules = file_content(_config(), "/usr/local/lib/bivy/metadata-guard.nft")
    assert "169.254.169.254" in rules and "169.254.42.42" in rules and "fd00:42::42" in rules
    output = rules.split("chain output", 1)[1].split("}", 1)[0]
    forward = rules.split("chain forward", 1)[1].split("}", 1)[0]
    assert "hook output" in output and output.count("meta skuid != 0") == 2
    assert "hook forward" in forward and "skuid" not in forward  # all forwarded traffic
    # Re-loading replaces the table (every boot, and a manual restart of the unit).
    table = "table inet bivy_guard"
    assert rules.index(f"delete {table}") < rules.index(f"{table} {{")


def test_secrets_only_in_root_only_files_and_the_host_key() -> None:
    config = _config()
    data = yaml.safe_load(config)
    holders: dict[str, set[str]] = {name: set() for name in SECRETS}
    for entry in write_files(config):
        for name, secret in SECRETS.items():
            if secret in entry["content"]:
                holders[name].add(entry["path"])
                assert entry["permissions"] == "0600", entry["path"]
                assert entry["path"].startswith("/etc/bivy/"), entry["path"]
    assert all(holders[name] for name in SECRETS if name != "host key")
    assert SECRETS["host key"] in data["ssh_keys"]["ed25519_private"]
    # Nothing else carries one: commands (cloud-init logs and keeps them), users, packages.
    rest = {k: v for k, v in data.items() if k not in ("write_files", "ssh_keys")}
    text = yaml.safe_dump(rest)
    assert not [name for name, secret in SECRETS.items() if secret in text]


def test_sshd_takes_keys_only() -> None:
    config = _config()
    sshd = file_content(config, "/etc/ssh/sshd_config.d/10-bivy.conf")
    settings = dict(line.split(None, 1) for line in sshd.splitlines() if line and line[0] != "#")
    assert settings["PasswordAuthentication"] == "no"
    assert settings["KbdInteractiveAuthentication"] == "no"
    assert settings["PermitRootLogin"] == "no"
    assert settings["AuthenticationMethods"] == "publickey"
    assert settings["AllowUsers"] == "dev"
    assert settings["X11Forwarding"] == "no"
    data = yaml.safe_load(config)
    assert data["ssh_pwauth"] is False and data["disable_root"] is True
    assert data["users"][0]["lock_passwd"] is True


@pytest.mark.skipif(not Path("/usr/sbin/sshd").exists(), reason="needs openssh-server")
def test_sshd_reads_the_drop_in_as_meant(tmp_path: Path) -> None:
    # Ubuntu's sshd_config includes sshd_config.d/*.conf first, then says "yes" to several of
    # these: the first value read wins, so ours must hold against later contrary ones.
    drop_in = tmp_path / "10-bivy.conf"
    drop_in.write_text(file_content(_config(), "/etc/ssh/sshd_config.d/10-bivy.conf"))
    key = tmp_path / "host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    config = tmp_path / "sshd_config"
    config.write_text(
        f"Include {drop_in}\nHostKey {key}\nPasswordAuthentication yes\n"
        "KbdInteractiveAuthentication yes\nPermitRootLogin yes\nX11Forwarding yes\n"
    )
    result = subprocess.run(
        ["/usr/sbin/sshd", "-T", "-f", str(config), "-C", "user=dev,host=h,addr=192.0.2.1"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    effective = dict(line.split(" ", 1) for line in result.stdout.splitlines() if " " in line)
    assert effective["passwordauthentication"] == "no"
    assert effective["kbdinteractiveauthentication"] == "no"
    assert effective["permitrootlogin"] == "no"
    assert effective["authenticationmethods"] == "publickey"
    assert effective["allowusers"] == "dev"
    assert effective["x11forwarding"] == "no"
