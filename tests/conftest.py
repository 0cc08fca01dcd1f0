"""Test isolation: no test touches the real home, config dir, keychain or network."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import keyring
import pytest

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
    for name in _SCRUBBED_ENV:
        monkeypatch.delenv(name, raising=False)
    previous = keyring.get_keyring()
    backend = MemoryKeyring()
    keyring.set_keyring(backend)
    try:
        yield backend
    finally:
        keyring.set_keyring(previous)
