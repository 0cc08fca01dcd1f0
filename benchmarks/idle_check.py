"""One idle check on a 200,000-file workspace with a large node_modules, beside the naive check.

Usage: python benchmarks/idle_check.py [--files 200000] [--runs 5]

Builds a workspace (about 95 % of the files under node_modules, the rest in src/, .git/objects
and build/) in a temp dir, renders the real VM scripts, then times, warm cache, median of runs:
  ours   the idle monitor's whole decision (`idle-monitor --decide`: status, lease, agent,
         connections, and the pruned `find -newer STAMP -quit` over the workspace), and its file
         scan alone;
  naive  the original design's `find WORKSPACE -mmin -30`, which walks every file.
Both find that nothing changed, which is the expensive case (nothing to stop early at).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.cloudinit import PRUNE_NAMES  # noqa: E402
from app.domain import WorkspaceSpec  # noqa: E402
from tests.unit.cloudinit.vmtree import render_tree  # noqa: E402

OLD = time.time() - 3 * 3600  # every file was last written three hours ago


def build_workspace(repo: Path, files: int) -> None:
    """``files`` files: node_modules packages, a source tree, git objects and a build dir."""
    plan = {
        "node_modules": int(files * 0.95),
        ".git/objects": int(files * 0.02),
        "build": int(files * 0.01),
    }
    plan["src"] = files - sum(plan.values())
    for top, count in plan.items():
        per_dir = 20
        for i in range(count):
            if top == "node_modules":
                sub = repo / top / f"pkg{i // 400}" / "lib" / f"d{(i // per_dir) % 20}"
            else:
                sub = repo / top / f"d{i // per_dir // 50}" / f"e{(i // per_dir) % 50}"
            if i % per_dir == 0:
                sub.mkdir(parents=True, exist_ok=True)
            path = sub / f"f{i}.js"
            path.write_bytes(b"x")
            os.utime(path, (OLD, OLD))


def timed(cmd: list[str], env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bivy-idle-bench-") as tmp:
        root = Path(tmp)
        repo = root / "workspace"
        started = time.perf_counter()
        build_workspace(repo, args.files)
        print(f"workspace: {args.files} files built in {time.perf_counter() - started:.1f} s")
        spec = WorkspaceSpec(name="bench", repo_url="https://github.com/o/r.git")
        env = render_tree(spec, root / "vm")
        with (root / "vm" / "etc" / "workspace.env").open("a") as handle:
            handle.write(f"BIVY_REPO_DIR={repo}\n")
        state = root / "vm" / "state"
        (state / "status.json").write_text('{"phase": "ready"}')
        (state / "deadline").write_text(f"{int(time.time()) + 3600}\n")
        # The VM's own python3 and tools, as on Ubuntu (not a development shim earlier on PATH).
        env.update(BIVY_SS_CMD="true", BIVY_WHO_CMD="true", PATH="/usr/bin:/bin")
        monitor = ["bash", str(root / "vm" / "lib" / "idle-monitor"), "--decide"]
        prune: list[str] = []
        for name in PRUNE_NAMES:
            prune += ["-name", name, "-o"]
        stamp = state / "files.stamp"
        scan = ["find", str(repo), "-xdev", "(", *prune, "-false", ")", "-prune", "-o",
                "-newer", str(stamp), "-print", "-quit"]  # fmt: skip
        naive = ["find", str(repo), "-mmin", "-30"]

        timed(monitor, env)  # takes the first stamp; warms the cache
        timed(naive)
        ours_full = statistics.median(timed(monitor, env) for _ in range(args.runs))
        ours_scan = statistics.median(timed(scan) for _ in range(args.runs))
        naive_s = statistics.median(timed(naive) for _ in range(args.runs))
        decision = subprocess.run(monitor, env=env, capture_output=True, text=True, check=True)
        print(f"decision: {decision.stdout.strip()}")
        print(f"ours, whole idle check:      {ours_full * 1000:8.1f} ms")
        print(f"ours, pruned file scan only: {ours_scan * 1000:8.1f} ms")
        print(f"naive find -mmin:            {naive_s * 1000:8.1f} ms")
        print(f"file scan: {ours_scan / naive_s:.1%} of the naive check's time")
    return 0


if __name__ == "__main__":
    sys.exit(main())
