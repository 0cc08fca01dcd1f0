"""Cold start of `bivy --smoke-test` to main window shown, and its peak memory (RSS).

Usage: python benchmarks/startup.py [--runs N]
Each run is a fresh process (offscreen Qt, empty config/data dirs); the figure is the median.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def command() -> list[str]:
    """The installed `bivy` entry point next to this interpreter, else `python -m app`."""
    bivy = Path(sys.executable).with_name("bivy")
    return [str(bivy)] if bivy.exists() else [sys.executable, "-m", "app"]


def one_run(cmd: list[str]) -> tuple[float, float, int]:
    """(wall seconds to exit, seconds to window shown as reported, peak RSS in KiB)."""
    with tempfile.TemporaryDirectory(prefix="bivy-bench-") as tmp:
        env = dict(os.environ)
        env.update(
            QT_QPA_PLATFORM="offscreen",
            HOME=tmp,
            BIVY_CONFIG_DIR=f"{tmp}/config",
            BIVY_DATA_DIR=f"{tmp}/data",
        )
        started_at = time.time()
        start = time.perf_counter()
        proc = subprocess.Popen(
            [*cmd, "--smoke-test"],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None and proc.stderr is not None
        out = proc.stdout.read()
        err = proc.stderr.read()
        # wait4 reports this child's own peak RSS (KiB on Linux).
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(f"bivy --smoke-test exited {proc.returncode}: {err}")
        match = re.search(r"shown_at=([0-9.]+)", out)
        shown = float(match.group(1)) - started_at if match else float("nan")
        return wall, shown, usage.ru_maxrss


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    cmd = command()
    one_run(cmd)  # warm the OS file cache: "cold" means a fresh process, not a cold disk
    walls, shown, rss = [], [], []
    for _ in range(args.runs):
        w, s, r = one_run(cmd)
        walls.append(w)
        shown.append(s)
        rss.append(r)
    print(f"command: {' '.join(cmd)} --smoke-test ({args.runs} runs, fresh process each)")
    print(f"cold start to main window shown: median {statistics.median(shown):.3f} s")
    print(
        f"cold start to exit (wall, incl. interpreter): median {statistics.median(walls):.3f} s, "
        f"max {max(walls):.3f} s"
    )
    print(f"peak RSS: {max(rss) / 1024:.1f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
