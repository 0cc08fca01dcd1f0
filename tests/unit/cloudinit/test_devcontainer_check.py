"""The static host-network check (cloudinit/scripts/devcontainer-check.py) on JSONC and Compose."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from app.domain import WorkspaceSpec
from tests.unit.cloudinit.vmtree import render_tree


@pytest.fixture
def check(tmp_path: Path) -> Path:
    render_tree(WorkspaceSpec(name="w", repo_url="https://github.com/o/r.git"), tmp_path / "vm")
    return tmp_path / "vm" / "lib" / "devcontainer-check"


def _run(check: Path, config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(check), str(config)], capture_output=True, text=True, check=False
    )


@pytest.mark.parametrize(
    ("text", "refused"),
    [
        ('{"image": "x", // comment with "--network=host"\n "runArgs": ["--init"],}', False),
        ('{"image": "x", /* "--net=host" */ "runArgs": ["--network", "bridge"]}', False),
        ('{"runArgs": ["--cap-add=SYS_PTRACE", "--network=HOST"]}', True),
        ('{"runArgs": ["--net", "host"]}', True),
        ('{"build": {"dockerfile": "D", "options": ["--network=host",]},}', True),
        ('{"image": "a//b", "runArgs": ["--label=x//y", "--network=host"]}', True),
    ],
)
def test_run_args(check: Path, tmp_path: Path, text: str, refused: bool) -> None:
    config = tmp_path / "devcontainer.json"
    config.write_text(text)
    result = _run(check, config)
    assert result.returncode == (1 if refused else 0), result.stdout + result.stderr
    assert ("host networking" in result.stdout) is refused


def test_compose_files_relative_to_the_config(check: Path, tmp_path: Path) -> None:
    folder = tmp_path / ".devcontainer"
    folder.mkdir()
    (tmp_path / "compose.yml").write_text("services:\n  app:\n    image: x\n")
    (folder / "extra.yml").write_text(
        "services:\n  db:\n    image: y\n    network_mode: 'host'\n"
        "  web:\n    build:\n      context: .\n      network: host\n"
    )
    config = folder / "devcontainer.json"
    config.write_text(json.dumps({"dockerComposeFile": ["../compose.yml", "extra.yml"]}))
    result = _run(check, config)
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        "extra.yml: service db uses network_mode: host",
        "extra.yml: service web builds with network: host",
    ]
    (folder / "extra.yml").write_text("services:\n  db:\n    network_mode: bridge\n")
    assert _run(check, config).returncode == 0
