"""Rendered systemd units and scripts: retry limits, the bootstrap's end, apt's dpkg lock."""

from __future__ import annotations

import configparser
import re

import pytest

from app.cloudinit import BackupInputs, render_cloud_config
from app.domain import WorkspaceSpec
from tests.unit.cloudinit.vmtree import inputs_for, write_files

SPEC = WorkspaceSpec(name="w", repo_url="https://github.com/o/r.git")


def _files() -> dict[str, str]:
    backup = BackupInputs("s3:https://s3.example/b/x", {"AWS_ACCESS_KEY_ID": "k"}, "p")
    config = render_cloud_config(inputs_for(SPEC, backup=backup))
    return {entry["path"]: entry["content"] for entry in write_files(config)}


def _unit(text: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(text)
    return parser


def test_the_terminal_service_never_stops_retrying() -> None:
    # systemd's default start limit (5 starts in 10 s) leaves it down for good (§5.10).
    unit = _unit(_files()["/etc/systemd/system/bivy-ttyd.service"])
    assert unit["Unit"]["StartLimitIntervalSec"] == "0"
    assert unit["Service"]["Restart"] == "always"


def test_a_killed_bootstrap_reports_its_end() -> None:
    unit = _unit(_files()["/etc/systemd/system/bivy-bootstrap.service"])
    assert unit["Service"]["ExecStopPost"] == "/usr/local/lib/bivy/bootstrap-stopped"
    assert "/usr/local/lib/bivy/bootstrap-stopped" in _files()


@pytest.mark.parametrize(
    "path",
    [
        "/usr/local/lib/bivy/bootstrap",
        "/usr/local/lib/bivy/metadata-guard",
        "/usr/local/lib/bivy/backup",
        "/usr/local/lib/bivy/agent-install",
        "/usr/local/lib/bivy/lib.sh",
    ],
)
def test_every_apt_get_waits_for_the_dpkg_lock(path: str) -> None:
    # Ubuntu runs apt at first boot; a held lock must not fail the bootstrap at once (§5.2).
    # Each apt-get command is either our wrapper (bivy_apt, an "apt" array) or carries the option.
    text = _files()[path]
    calls = [
        line
        for line in text.splitlines()
        if re.search(r"(^|[\s;(&|{\"=])apt-get\s", line) and "command -v apt-get" not in line
    ]
    uses = re.findall(r'(?:bivy_apt|"\$\{apt\[@\]\}"|\$apt) (?:install|update)', text)
    assert calls or uses, f"{path} installs nothing?"
    for line in calls:
        assert "DPkg::Lock::Timeout=" in line, f"{path}: {line.strip()}"


def test_no_ghcr_feature_and_no_readonly_mount() -> None:
    files = _files()
    up = files["/usr/local/lib/bivy/devcontainer-up"]
    mounts = [line for line in up.splitlines() if "--mount " in line]
    assert len(mounts) == 3 and not [m for m in mounts if "readonly" in m]
    assert "--additional-features" not in up
    for content in files.values():
        assert "ghcr.io" not in content
