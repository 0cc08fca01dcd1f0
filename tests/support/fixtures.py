"""Shared pytest fixtures, registered for the whole suite by tests/conftest.py.

- ``secret_service`` → ``SecretServiceSession``: a real, private Secret Service (D-Bus session
  + gnome-keyring-daemon, unlocked) for this test; ``DBUS_SESSION_BUS_ADDRESS`` points at it
  while the test runs; ``.backend()`` is keyring's SecretService backend, ``.env()`` the
  environment for a child process. Skips when gnome-keyring/dbus are not installed.
- ``keychain`` → ``SecretStore``: that Secret Service made this process's keychain, so code
  that calls ``SecretStore()`` (the CLI in-process, the tunnel) uses it too.
- ``hetzner_api`` → ``ServedHetzner``: the Hetzner emulator (tests/emulators/hetzner.py) served
  on 127.0.0.1 in a thread, with short real-time lifecycle durations; ``.env()`` gives
  BIVY_HETZNER_API_URL (and BIVY_HETZNER_TOKEN unless ``with_token=False``) for a child
  process; ``.emulator`` accepts error/latency injection. Fails the test on any spec violation.
- ``cli`` → ``CliRunner``: runs ``python -m app …`` as a separate process with the test's
  isolated HOME/BIVY_* environment (plus anything you pass) and returns the CompletedProcess.

Hypothesis runs under the profile ``ci`` when ``CI`` is set, else ``dev`` (``HYPOTHESIS_PROFILE``
picks another): both without the 200 ms per-example deadline and the too-slow health check,
which a loaded 2-core machine breaks for reasons that are not the code's (tests that care about
speed measure it themselves);
``ci`` also keeps no example database in the checkout and prints the reproduction blob.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keyring
import pytest
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

from app.settings import SecretStore
from tests.support.secret_service import SecretServiceSession, available, secret_service_session

REPO_ROOT = Path(__file__).resolve().parents[2]

_SLOW_MACHINE_OK = [HealthCheck.too_slow]  # generating examples is slow when the CPU is busy
hypothesis_settings.register_profile("dev", deadline=None, suppress_health_check=_SLOW_MACHINE_OK)
hypothesis_settings.register_profile(
    "ci", deadline=None, suppress_health_check=_SLOW_MACHINE_OK, database=None, print_blob=True
)
hypothesis_settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev")
)


@pytest.fixture
def secret_service(monkeypatch: pytest.MonkeyPatch) -> Iterator[SecretServiceSession]:
    """A real private Secret Service for one test (see the module docstring)."""
    if not available():
        pytest.skip("dbus-run-session and gnome-keyring-daemon are needed (apt: gnome-keyring)")
    with secret_service_session() as session:
        monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", session.address)
        yield session


@pytest.fixture
def keychain(secret_service: SecretServiceSession) -> Iterator[SecretStore]:
    """The real private Secret Service as this process's keychain: ``SecretStore()`` (the app's
    default) and the returned store both use keyring's SecretService backend on its bus."""
    previous = keyring.get_keyring()
    backend = secret_service.backend()
    keyring.set_keyring(backend)
    try:
        yield SecretStore(backend)
    finally:
        keyring.set_keyring(previous)


@dataclass
class ServedHetzner:
    """A Hetzner emulator served on 127.0.0.1.

    Attributes:
        emulator: the ``HetznerEmulator`` (inject errors/latency, inspect ``requests``).
        url: its base URL (``http://127.0.0.1:PORT/v1``).
        token: the token it accepts.
    """

    emulator: Any
    url: str
    token: str

    def env(self, *, with_token: bool = True) -> dict[str, str]:
        env = {"BIVY_HETZNER_API_URL": self.url}
        if with_token:
            env["BIVY_HETZNER_TOKEN"] = self.token
        return env


@pytest.fixture
def hetzner_api() -> Iterator[ServedHetzner]:
    """The Hetzner emulator on 127.0.0.1 with servers running ~1 s after create."""
    from tests.emulators.hetzner import HetznerEmulator

    token = "emulator-token-for-tests"
    emulator = HetznerEmulator(
        token=token, create_seconds=0.4, start_seconds=0.4, delete_seconds=0.2, strict=False
    )
    with emulator.serve() as url:
        yield ServedHetzner(emulator=emulator, url=url, token=token)
    emulator.assert_no_violations()


@dataclass
class CliRunner:
    """Runs the ``bivy`` CLI in a child process (``python -m app``).

    Attributes:
        env: the environment every run starts from (the test's isolated one).
        timeout: seconds before a run is killed and the test fails.
    """

    env: dict[str, str] = field(default_factory=dict)
    timeout: float = 60.0

    def __call__(
        self,
        *args: str,
        input: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        full_env = dict(self.env)
        full_env.update(env or {})
        return subprocess.run(
            [sys.executable, "-m", "app", *args],
            input=input,
            capture_output=True,
            text=True,
            env=full_env,
            cwd=REPO_ROOT,
            timeout=self.timeout,
            check=False,
        )


@pytest.fixture
def cli() -> CliRunner:
    """A ``CliRunner`` over the test's isolated environment (HOME, BIVY_CONFIG_DIR, …)."""
    env = dict(os.environ)
    env.pop("PYTEST_CURRENT_TEST", None)
    env["PYTHONUNBUFFERED"] = "1"
    return CliRunner(env=env)
