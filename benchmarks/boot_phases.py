"""Seconds per phase from ``bivy create`` to a terminal that answers, bare guest vs tools guest.

Usage: python benchmarks/boot_phases.py [--variant bare|tools ...] [--timeout S] [--keep-going]

For each guest variant of the e2e test image (tests/e2e/image.py: ``bare`` has nothing of the
bootstrap's tools preinstalled, ``tools`` has Docker, git, tmux, node, the devcontainer CLI and
ttyd), it runs one workspace through the real CLI with the local provider, in a throw-away
installation (own HOME, config and data dirs, a private gnome-keyring): create → ``bivy wait`` →
a keystroke echoed by ttyd through the SSH tunnel → ``bivy rm``. It prints the seconds of each
phase (boot, installing, cloning, building, starting, ready) and the total, from the VM's
status.json ``timings`` and the host's clock, then the bare/tools ratio: the share of start-up
time that preinstalled tools save, which carries over to cloud images.

Needs root, QEMU, mmdebstrap and gnome-keyring (the e2e's requirements). Minutes per variant
under TCG.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.e2e.harness import E2E, log, make_repo, terminal_check  # noqa: E402
from tests.e2e.image import build  # noqa: E402
from tests.e2e.phases import COLUMNS, PhaseReport, report  # noqa: E402
from tests.support.secret_service import secret_service_session  # noqa: E402


def run_variant(variant: str, timeout: float) -> PhaseReport:
    manifest = build(variant)
    with tempfile.TemporaryDirectory(prefix=f"bivy-bench-{variant}-") as tmp:
        root = Path(tmp)
        home = root / "home"
        home.mkdir()
        isolated = {
            "HOME": str(home),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "XDG_DATA_HOME": str(home / ".local" / "share"),
            "XDG_CACHE_HOME": str(home / ".cache"),
            "BIVY_CONFIG_DIR": str(root / "config"),
            "BIVY_DATA_DIR": str(root / "data"),
        }
        saved = {key: os.environ.get(key) for key in (*isolated, "DBUS_SESSION_BUS_ADDRESS")}
        os.environ.update(isolated)  # the in-process tunnel reads the registry from here
        try:
            with secret_service_session() as keyring_session:
                os.environ["DBUS_SESSION_BUS_ADDRESS"] = keyring_session.address
                e2e = E2E.from_environment(keyring_session.env(os.environ), manifest)
                name = f"bench-{variant}"
                repo = make_repo(root / "repos", "bench-repo", "user")
                try:
                    e2e.create(name, str(repo))
                    result = e2e.wait(name, timeout)
                    if result.returncode != 0:
                        raise RuntimeError(f"{name} did not reach ready:\n{result.text[-4000:]}")
                    terminal_at = terminal_check(name, keyring_session.backend())
                    return report(e2e.status(name), e2e.created_at[name], terminal_at)
                finally:
                    e2e.bivy("rm", "-y", name, timeout=300)
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--variant", action="append", choices=("bare", "tools"), help="default: both"
    )
    parser.add_argument("--timeout", type=float, default=3600, help="seconds to reach ready")
    args = parser.parse_args()
    variants = args.variant or ["bare", "tools"]
    results: dict[str, PhaseReport] = {}
    for variant in variants:
        started = time.monotonic()
        log(f"benchmark: {variant} guest")
        results[variant] = run_variant(variant, args.timeout)
        log(f"benchmark: {variant} done in {time.monotonic() - started:.0f} s")
    print(PhaseReport.header())
    for variant, phases in results.items():
        print(phases.line(variant))
    for variant, phases in results.items():
        if phases.steps:
            print(f"steps ({variant}): {phases.steps_line()}")
    if "bare" in results and "tools" in results:
        bare, tools = results["bare"].seconds, results["tools"].seconds
        cells = []
        for column in COLUMNS:
            if column in bare and column in tools and tools[column] > 0:
                cells.append(f"{bare[column] / tools[column]:7.2f}")
            else:
                cells.append("      -")
        print(f"{'bare/tools':<14}" + " ".join(cells))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
