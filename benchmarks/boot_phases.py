"""Seconds per phase from ``bivy create`` to a terminal that answers: bare guest, tools guest,
and a workspace started from a prebuild (issue 14).

Usage: python benchmarks/boot_phases.py [--variant bare|tools|prebuild ...] [--timeout S]

For each guest variant of the e2e test image (tests/e2e/image.py: ``bare`` has nothing of the
bootstrap's tools preinstalled, ``tools`` has Docker, git, tmux, node, the devcontainer CLI and
ttyd), it runs one workspace through the real CLI with the local provider, in a throw-away
installation (own HOME, config and data dirs, a private gnome-keyring): create → ``bivy wait`` →
a keystroke echoed by ttyd through the SSH tunnel → ``bivy rm``. It prints the seconds of each
phase (boot, installing, cloning, building, starting, ready) and the total, from the VM's
status.json ``timings`` and the host's clock, then the bare/tools ratio: the share of start-up
time that preinstalled tools save, which carries over to cloud images.

The ``prebuild`` variant (tools guest) runs ``bivy prebuild`` of the same repository first (its
builder's phases are printed as "builder": a cold start up to ``prebuilt``, without the
terminal), then creates the workspace from that image ("from prebuild"), and prints the
cold/prebuilt ratio per phase against the tools run (or the builder when tools did not run).

Needs root, QEMU, mmdebstrap and gnome-keyring (the e2e's requirements). Minutes per variant
under TCG.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.e2e.harness import E2E, SIZE, log, make_repo, terminal_check  # noqa: E402
from tests.e2e.image import build  # noqa: E402
from tests.e2e.phases import COLUMNS, PhaseReport, report  # noqa: E402
from tests.support.secret_service import secret_service_session  # noqa: E402


def run_variant(variant: str, timeout: float) -> dict[str, PhaseReport]:
    """One variant's rows: ``{variant: report}``; prebuild: ``{"builder", "from prebuild"}``."""
    manifest = build("tools" if variant == "prebuild" else variant)
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
                rows: dict[str, PhaseReport] = {}
                image_id = ""
                try:
                    if variant == "prebuild":
                        image_id, rows["builder"] = _prebuild(e2e, str(repo), timeout)
                    e2e.create(name, str(repo))
                    result = e2e.wait(name, timeout)
                    if result.returncode != 0:
                        raise RuntimeError(f"{name} did not reach ready:\n{result.text[-4000:]}")
                    terminal_at = terminal_check(name, keyring_session.backend())
                    status = e2e.status(name)
                    if variant == "prebuild" and status.get("from_prebuild") not in (True, "true"):
                        raise RuntimeError(f"{name} did not start from the prebuild: {status}")
                    label = "from prebuild" if variant == "prebuild" else variant
                    rows[label] = report(status, e2e.created_at[name], terminal_at)
                    return rows
                finally:
                    e2e.bivy("rm", "-y", name, timeout=300)
                    if image_id:
                        e2e.bivy("prebuild", "rm", image_id, "-y", timeout=300)
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def _prebuild(e2e: E2E, repo: str, timeout: float) -> tuple[str, PhaseReport]:
    """``bivy prebuild`` of ``repo``: the image id and the builder's phases (``prebuilt``
    counted as ``ready``, total = create → prebuilt; sealing, imaging and deleting the builder
    come after that and are logged apart)."""
    started = time.time()
    out = e2e.must("prebuild", "--repo", repo, "--provider", "local", "--size", SIZE, "--json",
                   timeout=timeout + 900)  # fmt: skip
    record = json.loads(out)
    timings = dict(record.get("build_timings") or {})
    if "prebuilt" in timings:
        timings["ready"] = timings.pop("prebuilt")
        log(f"benchmark: seal, image and builder delete took {time.time() - timings['ready']:.0f}"
            f" s; the image is {record.get('size_gb')} GB")  # fmt: skip
    rows = report({"timings": timings, "steps": record.get("build_steps") or {}}, started, None)
    if "ready" in timings:
        rows.seconds["total"] = timings["ready"] - started
    return str(record["id"]), rows


def _ratio_line(label: str, cold: PhaseReport, warm: PhaseReport) -> str:
    cells = []
    for column in COLUMNS:
        a, b = cold.seconds.get(column), warm.seconds.get(column)
        cells.append(f"{a / b:7.2f}" if a and b else "      -")
    return f"{label:<14}" + " ".join(cells)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--variant",
        action="append",
        choices=("bare", "tools", "prebuild"),
        help="default: all three",
    )
    parser.add_argument("--timeout", type=float, default=3600, help="seconds to reach ready")
    args = parser.parse_args()
    variants = args.variant or ["bare", "tools", "prebuild"]
    results: dict[str, PhaseReport] = {}
    for variant in variants:
        started = time.monotonic()
        log(f"benchmark: {variant} guest")
        results.update(run_variant(variant, args.timeout))
        log(f"benchmark: {variant} done in {time.monotonic() - started:.0f} s")
    print(PhaseReport.header())
    for variant, phases in results.items():
        print(phases.line(variant))
    for variant, phases in results.items():
        if phases.steps:
            print(f"steps ({variant}): {phases.steps_line()}")
    if "bare" in results and "tools" in results:
        print(_ratio_line("bare/tools", results["bare"], results["tools"]))
    if "from prebuild" in results:
        cold_label = "tools" if "tools" in results else "builder"
        print(_ratio_line("cold/prebuilt", results[cold_label], results["from prebuild"]))
        print(f"(cold: the {cold_label} row)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
