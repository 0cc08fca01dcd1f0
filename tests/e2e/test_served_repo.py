"""The HTTPS git server of the URL scenario: git clones from it trusting only the test CA."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.e2e.harness import make_bare_clone, make_repo
from tests.e2e.served_repo import GUEST_HOST_ADDRESS, e2e_ca_certificate, serve_repository


def _clone(url: str, target: Path, ca: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GIT_SSL_CAINFO": str(ca), "GIT_TERMINAL_PROMPT": "0"}
    return subprocess.run(
        ["git", "clone", "-q", url, str(target)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_git_clones_over_https_with_the_test_ca_only(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "src", "served", "user")
    bare = make_bare_clone(repo, tmp_path / "srv" / "served.git")
    with serve_repository(bare) as served:
        assert served.url_for_guest.startswith(f"https://{GUEST_HOST_ADDRESS}:")
        done = _clone(served.url_for_host, tmp_path / "clone", e2e_ca_certificate())
        assert done.returncode == 0, done.stderr
        assert (tmp_path / "clone" / ".devcontainer" / "devcontainer.json").is_file()
        assert any("info/refs" in line for line in served.requests)
        # the machine's ordinary trust store does not know the test CA
        refused = _clone(
            served.url_for_host, tmp_path / "clone2", Path("/etc/ssl/certs/ca-certificates.crt")
        )
        assert refused.returncode != 0
