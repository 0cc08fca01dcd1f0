"""Builds the frozen one-folder bundle, smoke-tests it, and on Linux packs a .deb and a tarball.

Prints the figures that matter to users: bundle size, package sizes, cold start time.

    python packaging/build.py                 # bundle + smoke test (+ .deb and tarball on Linux)
    python packaging/build.py --skip-build    # re-test and re-pack an existing bundle
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGING = ROOT / "packaging"
DIST = PACKAGING / "dist"
WORK = PACKAGING / "build"
sys.path.insert(0, str(ROOT))

from app import __version__ as VERSION  # noqa: E402

#: Debian packages the bundle's Qt (xcb, EGL, WebEngine) needs from the system.
DEB_DEPENDS = [
    "libc6",
    "libgl1",
    "libegl1",
    "libfontconfig1",
    "libglib2.0-0",
    "libdbus-1-3",
    "libxkbcommon0",
    "libxkbcommon-x11-0",
    "libxcb-cursor0",
    "libxcb-icccm4",
    "libxcb-keysyms1",
    "libxcb-image0",
    "libxcb-render-util0",
    "libxcb-shape0",
    "libxcb-randr0",
    "libxcb-xinerama0",
    "libxcb-xkb1",
    "libnss3",
    "libxcomposite1",
    "libxdamage1",
    "libxrandr2",
    "libxtst6",
    "libxkbfile1",
    "libxshmfence1",
    "libgbm1",
    "libasound2 | libasound2t64",
    "openssh-client",
]
#: stderr lines a healthy offscreen start may print; anything else fails the smoke test.
ALLOWED_STDERR = ("propagateSizeHints",)
#: What Chromium says on a machine without a GPU or a system bus (CI, containers): it falls back
#: to software rendering, which the WebEngine check then proves works.
ALLOWED_WEBENGINE_STDERR = (
    "Sandboxing disabled by user",
    "QRhiGles2: Failed to create",
    "Failed to create RHI for backend",
    "createPlatformVulkanInstance",
    "QVulkanInstance: Failed to initialize Vulkan",
    "Fallback to software rendering",
    "Failed to connect to the bus",
    "GPUInfo not initialized",
)


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def tree_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def run(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    print("+", " ".join(cmd), flush=True)
    return subprocess.run(cmd, check=True, text=True, **kw)  # type: ignore[call-overload, no-any-return]


def frozen_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env.update(QT_QPA_PLATFORM="offscreen", DBUS_SESSION_BUS_ADDRESS="disabled:")
    env.setdefault("QTWEBENGINE_DISABLE_SANDBOX", "1")
    return env


def bundle_dir() -> Path:
    return DIST / "bivy"


def executable(bundle: Path) -> Path:
    return bundle / ("bivy.exe" if sys.platform == "win32" else "bivy")


def build_bundle() -> float:
    run([sys.executable, str(PACKAGING / "render_icons.py")])
    started = time.monotonic()
    run(
        [
            sys.executable,
            "-m",
            "PyInstaller",
            "--noconfirm",
            "--log-level=WARN",
            f"--distpath={DIST}",
            f"--workpath={WORK}",
            str(PACKAGING / "bivy.spec"),
        ]
    )
    return time.monotonic() - started


def check_qt_libraries(bundle: Path) -> int:
    """Every Qt library a bundled binary links to must be bundled (the spec prunes Qt modules).

    Returns how many ELF files were checked; raises SystemExit naming what is missing.
    """
    if not sys.platform.startswith("linux"):
        return 0
    present = {p.name for p in bundle.rglob("libQt6*")}
    missing: dict[str, set[str]] = {}
    checked = 0
    for path in bundle.rglob("*"):
        if not path.is_file() or path.is_symlink():
            continue
        with path.open("rb") as handle:
            if handle.read(4) != b"\x7fELF":
                continue
        checked += 1
        dynamic = subprocess.run(
            ["readelf", "-d", str(path)], capture_output=True, text=True, check=False
        ).stdout
        for line in dynamic.splitlines():
            if "(NEEDED)" in line and "libQt6" in line:
                needed = line.split("[", 1)[1].rstrip("]")
                if needed not in present:
                    missing.setdefault(needed, set()).add(path.name)
    if missing:
        details = "; ".join(
            f"{lib} (needed by {', '.join(sorted(users)[:3])})" for lib, users in missing.items()
        )
        raise SystemExit(f"the bundle lacks Qt libraries its binaries link to: {details}")
    return checked


def check_smoke_output(
    proc: subprocess.CompletedProcess[str], allowed: tuple[str, ...] = ALLOWED_STDERR
) -> None:
    """A smoke run must exit 0 and print nothing unexpected on stderr."""
    unexpected = [
        line
        for line in proc.stderr.splitlines()
        if line.strip() and not any(ok in line for ok in allowed)
    ]
    if proc.returncode != 0 or unexpected:
        raise SystemExit(
            f"smoke test failed (exit {proc.returncode}):\n{proc.stderr}\n{proc.stdout}"
        )


def smoke_test(exe: Path, home: Path) -> float:
    """Start the frozen app offscreen; it must exit 0 with no unexpected stderr. Returns seconds."""
    env = frozen_env()
    # A throwaway home: the smoke test must not read or write the builder's settings.
    env.update(
        HOME=str(home), BIVY_CONFIG_DIR=str(home / "config"), BIVY_DATA_DIR=str(home / "data")
    )
    started = time.monotonic()
    proc = subprocess.run(
        [str(exe), "--smoke-test"], env=env, capture_output=True, text=True, timeout=120
    )
    elapsed = time.monotonic() - started
    check_smoke_output(proc)
    # Again with QtWebEngine rendering a page: proves the pruned bundle can show the terminal tab.
    webengine = subprocess.run(
        [str(exe), "--smoke-test"],
        env={**env, "BIVY_SMOKE_WEBENGINE": "1"},
        capture_output=True,
        text=True,
        timeout=180,
    )
    check_smoke_output(webengine, ALLOWED_STDERR + ALLOWED_WEBENGINE_STDERR)
    if "webengine ok" not in webengine.stdout + webengine.stderr:
        raise SystemExit(f"QtWebEngine check did not report success:\n{webengine.stdout}")
    for line in (webengine.stdout + webengine.stderr).splitlines():
        if "webengine ok" in line:
            print(f"webengine:      {line.split('webengine ok:', 1)[1].strip()}")
    out = subprocess.run(
        [
            str(exe),
            "render-user-data",
            "--provider",
            "hetzner",
            "--repo",
            "https://github.com/octocat/Hello-World.git",
            "--name",
            "smoke",
            "--placeholder-secrets",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if out.returncode != 0 or not out.stdout.startswith("#cloud-config"):
        raise SystemExit(f"render-user-data from the bundle failed:\n{out.stderr}")
    return elapsed


def deb_architecture() -> str:
    return subprocess.run(
        ["dpkg", "--print-architecture"], check=True, capture_output=True, text=True
    ).stdout.strip()


def build_deb(bundle: Path, level: int) -> Path:
    """Pack the bundle as a .deb: /opt/bivy, /usr/bin/bivy, desktop entry, icons, AppStream."""
    arch = deb_architecture()
    stage = WORK / "deb-root"
    shutil.rmtree(stage, ignore_errors=True)
    shutil.copytree(bundle, stage / "opt" / "bivy", symlinks=True)
    (stage / "usr" / "bin").mkdir(parents=True)
    (stage / "usr" / "bin" / "bivy").symlink_to("/opt/bivy/bivy")
    apps = stage / "usr" / "share" / "applications"
    apps.mkdir(parents=True)
    shutil.copy(PACKAGING / "linux" / "bivy.desktop", apps / "bivy.desktop")
    icons = ROOT / "resources" / "icons"
    for size in (16, 24, 32, 48, 64, 128, 256, 512):
        target = stage / "usr/share/icons/hicolor" / f"{size}x{size}" / "apps"
        target.mkdir(parents=True)
        shutil.copy(icons / "generated" / f"bivy-{size}.png", target / "bivy.png")
    scalable = stage / "usr/share/icons/hicolor/scalable/apps"
    scalable.mkdir(parents=True)
    shutil.copy(icons / "bivy.svg", scalable / "bivy.svg")
    metainfo = stage / "usr/share/metainfo"
    metainfo.mkdir(parents=True)
    template = (PACKAGING / "linux" / "io.github.bivy.Bivy.metainfo.xml.in").read_text()
    (metainfo / "io.github.bivy.Bivy.metainfo.xml").write_text(
        template.replace("@VERSION@", VERSION).replace("@DATE@", dt.date.today().isoformat())
    )
    debian = stage / "DEBIAN"
    debian.mkdir()
    installed_kib = tree_size(stage) // 1024
    (debian / "control").write_text(
        "\n".join(
            [
                "Package: bivy",
                f"Version: {VERSION.replace('+', '~')}",
                f"Architecture: {arch}",
                "Maintainer: Bivy developers <bivy@users.noreply.github.com>",
                f"Installed-Size: {installed_kib}",
                f"Depends: {', '.join(DEB_DEPENDS)}",
                "Section: devel",
                "Priority: optional",
                "Homepage: https://github.com/bivy/bivy",
                "Description: disposable cloud workspaces for AI coding agents",
                " Bivy creates a VM on your own cloud account for a git repository, builds its",
                " devcontainer with Claude Code inside and opens the agent's terminal through an",
                " SSH tunnel. The VM deletes itself when idle.",
                "",
            ]
        )
    )
    for path in stage.rglob("*"):
        if not path.is_symlink():
            path.chmod(0o755 if path.is_dir() or os.access(path, os.X_OK) else 0o644)
    out = DIST / f"bivy_{VERSION.replace('+', '~')}_{arch}.deb"
    run(["dpkg-deb", "--root-owner-group", "-Zgzip", f"-z{level}", "--build", str(stage), str(out)])
    return out


def build_tarball(bundle: Path, level: int) -> Path:
    """A relocatable tarball for other distributions: the bundle plus desktop entry and icon."""
    arch = platform.machine()
    out = DIST / f"bivy-{VERSION}-linux-{arch}.tar.gz"
    with tarfile.open(out, "w:gz", compresslevel=level) as tar:
        tar.add(bundle, arcname=f"bivy-{VERSION}")
        tar.add(PACKAGING / "linux" / "bivy.desktop", arcname=f"bivy-{VERSION}/bivy.desktop")
        tar.add(ROOT / "resources/icons/bivy.svg", arcname=f"bivy-{VERSION}/bivy.svg")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--skip-build", action="store_true", help="reuse packaging/dist/bivy")
    parser.add_argument("--no-packages", action="store_true", help="bundle and smoke test only")
    parser.add_argument(
        "--compress-level",
        type=int,
        default=9,
        choices=range(1, 10),
        help="gzip level for the .deb and tarball (the test suite uses 1 to save CI time)",
    )
    args = parser.parse_args()

    build_seconds = 0.0 if args.skip_build else build_bundle()
    bundle = bundle_dir()
    exe = executable(bundle)
    if not exe.exists():
        raise SystemExit(f"no bundle at {bundle}: build it first")
    elf_count = check_qt_libraries(bundle)
    home = WORK / "smoke-home"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    start_seconds = smoke_test(exe, home)

    print(f"version:        {VERSION}")
    if build_seconds:
        print(f"build time:     {build_seconds:.1f} s")
    print(f"bundle size:    {human(tree_size(bundle))} ({bundle})")
    print(f"linkage:        {elf_count} binaries checked, every Qt library they need is bundled")
    print(f"cold start:     {start_seconds:.2f} s to main window shown and closed (--smoke-test)")
    if sys.platform.startswith("linux") and not args.no_packages:
        deb = build_deb(bundle, args.compress_level)
        tarball = build_tarball(bundle, args.compress_level)
        print(f"deb:            {human(deb.stat().st_size)} ({deb})")
        print(f"tarball:        {human(tarball.stat().st_size)} ({tarball})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
