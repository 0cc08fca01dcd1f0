"""`bivy render-user-data`: prints valid placeholder user data, refuses to print real secrets."""

from __future__ import annotations

import base64
import gzip
import io
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from app.cli import main


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(["render-user-data", *argv], out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_prints_cloud_config_with_placeholders(tmp_path: Path) -> None:
    code, out, err = run(
        "--provider", "hetzner", "--repo", "https://github.com/o/r.git", "--name", "demo",
        "--branch", "feat/x", "--idle-minutes", "45", "--max-hours", "6", "--placeholder-secrets",
    )  # fmt: skip
    assert code == 0, err
    assert out.startswith("#cloud-config\n")
    data = yaml.safe_load(out)
    files = {f["path"]: f["content"] for f in data["write_files"]}
    assert "BIVY_IDLE_MINUTES=45\n" in files["/etc/bivy/workspace.env"]
    assert "OnBootSec=6h" in files["/etc/systemd/system/bivy-lifetime.timer"]
    assert "HCLOUD_TOKEN=PLACEHOLDER" in files["/etc/bivy/provider.env"]
    assert "bytes as sent" in err


def test_printed_cloud_config_passes_cloud_inits_schema(tmp_path: Path) -> None:
    # A real skip (a failure under CI=true), not a check that quietly switches itself off.
    cloud_init = shutil.which("cloud-init")
    if cloud_init is None:
        pytest.skip("needs Debian's cloud-init for its schema check (apt: cloud-init)")
    code, out, err = run(
        "--provider", "hetzner", "--repo", "https://github.com/o/r.git", "--name", "demo",
        "--placeholder-secrets",
    )  # fmt: skip
    assert code == 0, err
    path = tmp_path / "ud.yaml"
    path.write_text(out)
    check = subprocess.run(
        [cloud_init, "schema", "-c", str(path)], capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_as_sent_is_what_the_provider_gets() -> None:
    code, out, _ = run(
        "--repo", "git@github.com:o/r.git", "--name", "demo", "--placeholder-secrets", "--as-sent"
    )
    assert code == 0
    text = out.strip()
    if not text.startswith("#cloud-config"):
        text = gzip.decompress(base64.b64decode(text)).decode()
    assert text.startswith("#cloud-config\n")
    assert len(out.strip().encode()) <= 32768


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--repo", "https://github.com/o/r.git", "--name", "demo"], "placeholder"),
        (
            ["--repo", "http://github.com/o/r.git", "--name", "demo", "--placeholder-secrets"],
            "not supported",
        ),
        (
            ["--repo", "https://github.com/o/r.git", "--name", "Bad Name", "--placeholder-secrets"],
            "name",
        ),
        (
            [
                "--repo",
                "https://github.com/o/r.git",
                "--name",
                "d",
                "--branch",
                "a..b",
                "--placeholder-secrets",
            ],
            "..",
        ),
        (
            [
                "--repo",
                "https://github.com/o/r.git",
                "--name",
                "d",
                "--provider",
                "nope",
                "--placeholder-secrets",
            ],
            "nope",
        ),
    ],
)
def test_refusals_are_one_clear_line(argv: list[str], message: str) -> None:
    code, out, err = run(*argv)
    assert code != 0
    assert out == ""
    assert message in err
    assert "Traceback" not in err
