"""Builds the frozen bundle and the .deb for real, installs it into a fresh root and removes it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DIST = ROOT / "packaging" / "dist"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the .deb is Linux-only"),
    pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="dpkg-deb is needed"),
]


@pytest.fixture(scope="module")
def built() -> dict[str, Path]:
    """Run packaging/build.py once for the module; it smoke-tests the bundle itself."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "packaging" / "build.py"), "--compress-level", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    print(proc.stdout)
    assert "cold start:" in proc.stdout and "bundle size:" in proc.stdout
    debs = sorted(DIST.glob("bivy_*.deb"))
    tarballs = sorted(DIST.glob("bivy-*-linux-*.tar.gz"))
    assert debs and tarballs
    return {"deb": debs[-1], "tarball": tarballs[-1], "bundle": DIST / "bivy"}


def test_deb_contents(built: dict[str, Path]) -> None:
    listing = subprocess.run(
        ["dpkg-deb", "--contents", str(built["deb"])], capture_output=True, text=True, check=True
    ).stdout
    for path in (
        "./opt/bivy/bivy",
        "./usr/bin/bivy -> /opt/bivy/bivy",
        "./usr/share/applications/bivy.desktop",
        "./usr/share/icons/hicolor/256x256/apps/bivy.png",
        "./usr/share/icons/hicolor/scalable/apps/bivy.svg",
        "./usr/share/metainfo/io.github.bivy.Bivy.metainfo.xml",
        "./opt/bivy/_internal/cloudinit/",
        "./opt/bivy/_internal/resources/icons/bivy.svg",
    ):
        assert path in listing, f"{path} missing from the .deb"
    fields = subprocess.run(
        ["dpkg-deb", "--field", str(built["deb"]), "Package", "Version", "Depends"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "Package: bivy" in fields and "libxcb-cursor0" in fields


def test_apt_can_resolve_the_deb(built: dict[str, Path]) -> None:
    """apt accepts the package and finds every dependency (simulated: the CI host stays as is)."""
    proc = subprocess.run(
        ["apt-get", "install", "--simulate", "-y", str(built["deb"])],
        capture_output=True,
        text=True,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Inst bivy" in proc.stdout or "bivy is already the newest" in proc.stdout


def test_install_into_clean_root_starts_and_removes_cleanly(
    built: dict[str, Path], tmp_path: Path
) -> None:
    root = tmp_path / "root"
    admin = root / "var" / "lib" / "dpkg"
    for sub in ("info", "updates", "triggers"):
        (admin / sub).mkdir(parents=True)
    (admin / "status").write_text("")
    (admin / "available").write_text("")
    dpkg = ["dpkg", f"--root={root}", "--force-depends", "--force-not-root"]
    subprocess.run([*dpkg, "-i", str(built["deb"])], check=True, capture_output=True)
    exe = root / "opt" / "bivy" / "bivy"
    assert exe.is_file() and os.access(exe, os.X_OK)
    assert (root / "usr/share/applications/bivy.desktop").is_file()

    home = tmp_path / "installed-home"
    home.mkdir()
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "BIVY_CONFIG_DIR": str(home / "config"),
        "BIVY_DATA_DIR": str(home / "data"),
        "QT_QPA_PLATFORM": "offscreen",
        "DBUS_SESSION_BUS_ADDRESS": "disabled:",
        "QTWEBENGINE_DISABLE_SANDBOX": "1",
    }
    proc = subprocess.run([str(exe), "--smoke-test"], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    version = subprocess.run([str(exe), "--version"], env=env, capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.strip()

    subprocess.run([*dpkg, "--purge", "bivy"], check=True, capture_output=True)
    leftovers = [p for p in root.rglob("*") if p.is_file() and not p.is_relative_to(admin)]
    assert leftovers == [], f"files left after removal: {leftovers[:10]}"


def test_tarball_holds_the_bundle(built: dict[str, Path]) -> None:
    import tarfile

    with tarfile.open(built["tarball"]) as tar:
        names = tar.getnames()
    top = names[0].split("/")[0]
    assert f"{top}/bivy" in names and f"{top}/bivy.desktop" in names
