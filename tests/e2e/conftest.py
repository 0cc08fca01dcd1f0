"""Fixtures of the e2e tests: the test guest image, the isolated installation, the e2e marker."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import E2E
from tests.support.secret_service import SecretServiceSession

#: Host tools the e2e needs, with the Debian package that has each.
TOOLS = {
    "qemu-system-x86_64": "qemu-system-x86",
    "qemu-img": "qemu-utils",
    "mmdebstrap": "mmdebstrap",
    "mkfs.ext4": "e2fsprogs",
    "npm": "npm",
    "ssh": "openssh-client",
    "ssh-keyscan": "openssh-client",
    "git": "git",
}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "e2e: boots a real VM (QEMU) or engine; select with -m e2e, skip with -m 'not e2e'",
    )
    config.addinivalue_line(
        "markers",
        "e2e_matrix: the other repository kinds (Compose as root, none over a URL), one VM "
        "after the other in one test; part of .ci/test's default run; alone: -m e2e_matrix",
    )


def missing_tools() -> list[str]:
    return [f"{tool} ({package})" for tool, package in TOOLS.items() if not shutil.which(tool)]


def require_tools() -> None:
    missing = missing_tools()
    if os.geteuid() != 0:
        missing.append("root (mmdebstrap, mkfs of a rootfs owned by root)")
    if missing:
        message = "the e2e needs: " + ", ".join(missing)
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="session")
def tools_image() -> Path:
    """The ``tools`` test guest's manifest (built once, then cached across runs)."""
    require_tools()
    from tests.e2e.image import build

    return build("tools")


@pytest.fixture(scope="session")
def bare_image() -> Path:
    """The ``bare`` test guest's manifest (nothing preinstalled: the bootstrap installs all)."""
    require_tools()
    from tests.e2e.image import build

    return build("bare")


@pytest.fixture
def e2e(tools_image: Path, secret_service: SecretServiceSession) -> Iterator[E2E]:
    """An isolated installation (the test's HOME/BIVY dirs, a real keyring) using the tools guest.

    Whatever the test leaves running is deleted at the end (``bivy rm -y``), and the QEMU
    processes of this installation are checked to be gone."""
    installation = E2E.from_environment(secret_service.env(os.environ), tools_image)
    try:
        yield installation
    finally:
        for workspace in _safe_ls(installation):
            installation.bivy("rm", "-y", str(workspace.get("name")), timeout=300)


def _safe_ls(installation: E2E) -> list[dict[str, object]]:
    try:
        return installation.ls()
    except Exception:
        return []
