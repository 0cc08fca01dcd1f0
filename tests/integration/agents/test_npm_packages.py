"""Every agent's npm package installs from the registry and its version command works.

One slow test (about a minute and 1.3 GB in a temporary prefix, see docs/agents.md): all five
packages in one ``npm install``, then each agent's ``version_command`` from the prefix's bin.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from app.agents import AGENTS


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_each_package_installs_and_reports_its_version(tmp_path: Path) -> None:
    npm = shutil.which("npm")
    assert npm, "npm is needed (CI: apt-get install npm)"
    prefix = tmp_path / "prefix"
    env = {**os.environ, "npm_config_cache": str(tmp_path / "npm-cache")}
    started = time.monotonic()
    result = subprocess.run(
        [npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund", "--loglevel=error",
         *(a.npm_package for a in AGENTS.values())],
        env=env, capture_output=True, text=True, timeout=840, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    print(f"npm install of {len(AGENTS)} agents: {time.monotonic() - started:.0f} s")
    bin_dir = prefix / "node_modules" / ".bin"
    for agent in AGENTS.values():
        binary, *args = agent.version_command
        assert (bin_dir / binary).exists(), f"{agent.npm_package} has no {binary} command"
        # A home of its own: nothing the agent writes on first run lands in the test's HOME.
        home = tmp_path / f"home-{agent.name}"
        home.mkdir()
        run = subprocess.run(
            [str(bin_dir / binary), *args],
            env={**env, "HOME": str(home), "PATH": f"{bin_dir}:{os.environ['PATH']}"},
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert run.returncode == 0, f"{agent.name}: {run.stderr[-1000:]}"
        assert re.search(r"\d+\.\d+\.\d+", run.stdout), f"{agent.name}: {run.stdout!r}"
