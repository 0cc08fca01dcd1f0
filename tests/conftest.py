"""Test isolation and the suite's run policy.

- Isolation: no test touches the real home, config dir, keychain or network.
- Emulators: every provider emulator created during a test ends the test with its spec
  violations checked (``emulators_checked``): a request the real API would reject (or ignore,
  like a misspelt field) fails the test even if the app caught the error and showed it as text.
- CI (``CI=true``): a skipped test, or an xfail that is not ``strict``, is a failure with its
  reason printed (a green run proves every test really ran); tests that need root carry
  ``@pytest.mark.needs_root`` (skipped, so failed in CI, when not root: CI runs as root).
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import keyring
import pytest

from tests.emulators import base as emulator_base
from tests.support.docker_engine import docker_engine as docker_engine  # one session engine
from tests.support.memory_keyring import MemoryKeyring

#: Shared fixtures (real Secret Service, served emulators, CLI runner): see that module.
pytest_plugins = ["tests.support.fixtures"]

#: The tests' data: ``specs/`` (official API specs) and ``fixtures/`` (example payloads), both
#: inside the repository (their provenance is in the README beside them).
DATA_DIR = Path(__file__).resolve().parent

_SCRUBBED_ENV = (
    "BIVY_HETZNER_TOKEN",
    "HCLOUD_TOKEN",
    "BIVY_HETZNER_API_URL",
    "BIVY_DIGITALOCEAN_TOKEN",
    "DIGITALOCEAN_TOKEN",
    "BIVY_DIGITALOCEAN_API_URL",
    "BIVY_SCALEWAY_API_URL",
    "SCW_SECRET_KEY",
    "BIVY_SCALEWAY_SECRET_KEY",
    "BIVY_OVH_APPLICATION_KEY",
    "BIVY_OVH_APPLICATION_SECRET",
    "BIVY_OVH_CONSUMER_KEY",
    "OVH_APPLICATION_KEY",
    "OVH_APPLICATION_SECRET",
    "OVH_CONSUMER_KEY",
    "BIVY_SCALEWAY_PROJECT_ID",
    "SCW_DEFAULT_PROJECT_ID",
    "BIVY_SCALEWAY_ZONE",
    "SCW_DEFAULT_ZONE",
    "BIVY_OVH_PROJECT_ID",
    "OVH_CLOUD_PROJECT_SERVICE",
    "BIVY_OVH_REGION",
    "BIVY_OVH_ENDPOINT",
    "BIVY_OVH_API_URL",
    "ANTHROPIC_API_KEY",
    "CLAUDE_CODE_OAUTH_TOKEN",
    "BIVY_BACKUP_ACCESS_KEY_ID",
    "BIVY_BACKUP_SECRET_ACCESS_KEY",
    "BIVY_LOCAL_IMAGE",
    "BIVY_LOCAL_IMAGE_BASE_URL",
    "BIVY_LOCAL_ACCEL",
    "BIVY_QEMU",
)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The folder holding ``specs/`` and ``fixtures/`` (tests/, inside the checkout)."""
    return DATA_DIR


@pytest.fixture(autouse=True)
def isolated_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[MemoryKeyring]:
    """Point HOME, XDG and Bivy's dirs into tmp_path and use an in-memory keychain."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / ".local" / "share"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    monkeypatch.setenv("BIVY_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("BIVY_DATA_DIR", str(tmp_path / "data"))
    # Bivy's tools sent to an emulated server (nobody's address) reach a stand-in VM inbox, in
    # this process and in child processes talking to a served emulator: tests/support/emulated_vm.
    from app.services import toolkit_send
    from tests.support import emulated_vm

    monkeypatch.setattr(toolkit_send, "send_toolkit", emulated_vm.install())
    site = str(Path(__file__).resolve().parent / "support" / "emulated_site")
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [site, os.environ.get("PYTHONPATH")]))
    )
    for name in _SCRUBBED_ENV:
        monkeypatch.delenv(name, raising=False)
    previous = keyring.get_keyring()
    backend = MemoryKeyring()
    keyring.set_keyring(backend)
    try:
        yield backend
    finally:
        keyring.set_keyring(previous)


@pytest.fixture(autouse=True)
def emulators_checked(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fail the test when any emulator created during it recorded a spec violation.

    The check runs after the test and its other fixtures (served emulators included) are done,
    on the emulators' own records, so an app-level ``except Exception`` that turned the
    ``SpecViolation`` (or the 400 ``spec_violation``) into UI text cannot hide it. A test that
    provokes violations on purpose takes them with ``emulator.take_violations()``. Emulators
    started as child processes must validate too (``BIVY_EMULATOR_VALIDATION``).
    """
    monkeypatch.setenv("BIVY_EMULATOR_VALIDATION", "required")
    yield
    problems = []
    for emulator in emulator_base.take_created():
        problems += [f"{type(emulator).__name__}: {v}" for v in emulator.take_violations()]
    if problems:
        pytest.fail(
            "spec violations (a request the real API would reject or ignore, or an emulator "
            "answer the real API would not give):\n" + "\n".join(problems),
            pytrace=False,
        )


# -- run policy: CI fails on skips; root-only tests say so ----------------------------------------


def _ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "needs_root(reason): the test needs root (network namespaces, privileged ports, other "
        "users' files); skipped otherwise, which fails a CI run (CI runs as root)",
    )
    config.stash[_TURNED] = []


_TURNED = pytest.StashKey[list[str]]()


def pytest_runtest_setup(item: pytest.Item) -> None:
    marker = item.get_closest_marker("needs_root")
    if marker is not None and os.geteuid() != 0:
        why = marker.args[0] if marker.args else marker.kwargs.get("reason", "")
        pytest.skip(f"needs root{': ' + why if why else ''} (CI runs as root)")


def _skip_reason(longrepr: Any) -> str:
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        path, line, message = longrepr
        return f"{str(message).removeprefix('Skipped: ')} ({path}:{line})"
    return str(longrepr)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Under CI=true: a skip or a non-strict xfail becomes a failure, reason printed."""
    report = yield
    if not _ci() or not report.skipped:
        return report
    if hasattr(report, "wasxfail"):
        marker = item.get_closest_marker("xfail")
        if marker is not None and marker.kwargs.get("strict", False):
            return report  # an expected failure that must keep failing: a real assertion
        reason = f"xfail (not strict): {report.wasxfail or 'no reason given'}"
    else:
        reason = f"skipped: {_skip_reason(report.longrepr)}"
    message = f"CI=true: a test that does not run is a failure. {reason}"
    report.outcome = "failed"
    report.longrepr = message
    if hasattr(report, "wasxfail"):
        del report.wasxfail
    item.config.stash[_TURNED].append(f"{item.nodeid} [{report.when}]: {reason}")
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(
    collector: pytest.Collector,
) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
    """Under CI=true: a whole module skipped at collection is a failure too."""
    report = yield
    if _ci() and report.skipped:
        reason = f"skipped at collection: {_skip_reason(report.longrepr)}"
        report.outcome = "failed"
        report.longrepr = f"CI=true: a test that does not run is a failure. {reason}"
        collector.config.stash[_TURNED].append(f"{collector.nodeid}: {reason}")
    return report


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    turned = config.stash.get(_TURNED, [])
    if turned:
        terminalreporter.section("CI=true: skipped tests counted as failures", sep="=", red=True)
        for line in turned:
            terminalreporter.line(line)
