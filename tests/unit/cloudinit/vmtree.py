"""Test helpers: render user data for a spec and lay its write_files out under a temp root."""

from __future__ import annotations

import base64
import gzip
import os
from pathlib import Path
from typing import Any

import yaml

from app.cloudinit import UserDataInputs, render_user_data
from app.domain import WorkspaceSpec

#: VM directories → their place under the temp root (the scripts honour BIVY_*_DIR).
LAYOUT = {
    "/usr/local/lib/bivy/": "lib/",
    "/etc/bivy/": "etc/",
    "/var/lib/bivy/": "state/",
}


def inputs_for(spec: WorkspaceSpec, **overrides: Any) -> UserDataInputs:
    """Realistic inputs with fake secrets (never real ones in tests)."""
    values: dict[str, Any] = {
        "spec": spec,
        "provider": "hetzner",
        "ssh_authorized_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeFakeFake app",
        "host_key_private": (
            "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n"
            "-----END OPENSSH PRIVATE KEY-----\n"
        ),
        "host_key_public": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostHostHost host",
        "ttyd_password": "pw-0123456789abcdef",
        "self_delete_script": _hetzner_script(),
        "self_delete_env": {"HCLOUD_TOKEN": "t0k"},
        "agent_env": {"ANTHROPIC_API_KEY": "sk-ant-test-0123456789abcdefghij"},
    }
    values.update(overrides)
    return UserDataInputs(**values)


def _hetzner_script() -> str:
    from app.providers.hetzner.provider import SELF_DELETE_SCRIPT

    return SELF_DELETE_SCRIPT


def write_files(cloud_config: str) -> list[dict[str, Any]]:
    """The write_files entries, contents decoded as cloud-init would (``gz+b64``)."""
    data = yaml.safe_load(cloud_config)
    files: list[dict[str, Any]] = data["write_files"]
    for entry in files:
        if entry.get("encoding") == "gz+b64":
            entry["content"] = gzip.decompress(base64.b64decode(entry["content"])).decode()
            del entry["encoding"]
    return files


def file_content(cloud_config: str, path: str) -> str:
    for entry in write_files(cloud_config):
        if entry["path"] == path:
            content: str = entry["content"]
            return content
    raise KeyError(path)


def materialize(cloud_config: str, root: Path) -> dict[str, str]:
    """Write the VM's files under ``root``; returns the BIVY_*_DIR environment for the scripts."""
    for entry in write_files(cloud_config):
        for prefix, local in LAYOUT.items():
            if entry["path"].startswith(prefix):
                target = root / local / entry["path"][len(prefix) :]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(entry["content"])
                target.chmod(int(entry["permissions"], 8))
    (root / "state" / "agent").mkdir(parents=True, exist_ok=True)
    return {
        "BIVY_LIB_DIR": str(root / "lib"),
        "BIVY_ETC_DIR": str(root / "etc"),
        "BIVY_STATE_DIR": str(root / "state"),
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "LANG": "C.UTF-8",
    }


def render_tree(spec: WorkspaceSpec, root: Path, **overrides: Any) -> dict[str, str]:
    rendered = render_user_data(inputs_for(spec, **overrides))
    return materialize(rendered.cloud_config, root)
