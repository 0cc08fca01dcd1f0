"""`bivy --smoke-test` starts offscreen, shows the window and exits 0."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_smoke_test_exits_zero(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "QT_QPA_PLATFORM"}
    result = subprocess.run(
        [sys.executable, "-m", "app", "--smoke-test"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "window shown=True" in result.stdout
