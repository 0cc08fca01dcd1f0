"""``bivy create / ls / rm`` in a child process against each new provider's emulator served on
127.0.0.1 (DigitalOcean, Scaleway, OVHcloud), with credentials from the environment and the
install's SSH key in a real private Secret Service."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.emulators import ovh
from tests.emulators.digitalocean import DigitalOceanEmulator
from tests.emulators.scaleway import PROJECT_ID, SECRET_KEY, ScalewayEmulator


@dataclass
class Served:
    kind: str
    emulator: Any
    env: dict[str, str]
    region: str
    size: str
    count: Callable[[], int]


def _digitalocean(url: str, emu: DigitalOceanEmulator) -> dict[str, str]:
    return {"BIVY_DIGITALOCEAN_API_URL": url, "DIGITALOCEAN_TOKEN": emu.token}


def _scaleway(url: str, emu: ScalewayEmulator) -> dict[str, str]:
    return {
        "BIVY_SCALEWAY_API_URL": url,
        "SCW_SECRET_KEY": SECRET_KEY,
        "SCW_DEFAULT_PROJECT_ID": PROJECT_ID,
    }


def _ovh(url: str, emu: ovh.OvhEmulator) -> dict[str, str]:
    return {
        "BIVY_OVH_API_URL": url,
        "OVH_APPLICATION_KEY": ovh.APPLICATION_KEY,
        "OVH_APPLICATION_SECRET": ovh.APPLICATION_SECRET,
        "OVH_CONSUMER_KEY": ovh.CONSUMER_KEY,
        "OVH_CLOUD_PROJECT_SERVICE": ovh.PROJECT_ID,
    }


KINDS = {
    "digitalocean": (
        lambda: DigitalOceanEmulator(strict=False, boot_seconds=0.3),
        _digitalocean,
        "fra1",
        "s-2vcpu-4gb",
        lambda e: len(e.droplets),
    ),
    "scaleway": (
        lambda: ScalewayEmulator(strict=False, boot_seconds=0.3, stop_seconds=0.2),
        _scaleway,
        "fr-par-1",
        "DEV1-M",
        lambda e: len(e.servers),
    ),
    "ovh": (
        lambda: ovh.OvhEmulator(strict=False, boot_seconds=0.3, operation_polls=1),
        _ovh,
        "GRA11",
        "d2-4",
        lambda e: len(e.instances),
    ),
}


@pytest.fixture(params=list(KINDS))
def served(request: pytest.FixtureRequest) -> Iterator[Served]:
    make, env, region, size, count = KINDS[request.param]
    emulator = make()
    with emulator.serve() as url:
        yield Served(
            request.param, emulator, env(url, emulator), region, size, lambda: count(emulator)
        )
    emulator.assert_no_violations()


@pytest.mark.slow
def test_create_ls_rm(served: Served, cli: Any, secret_service: Any) -> None:
    env = secret_service.env(cli.env) | served.env

    created = cli(
        "create", "ws-one", "--repo", "https://github.com/example/project.git",
        "--provider", served.kind, "--region", served.region, "--size", served.size, "--json",
        env=env,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    workspace = json.loads(created.stdout)
    assert workspace["name"] == "ws-one"
    assert served.count() == 1

    listed = cli("ls", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    names = [row["name"] for row in (rows if isinstance(rows, list) else rows["workspaces"])]
    assert names == ["ws-one"]

    removed = cli("rm", "ws-one", "--yes", env=env)
    assert removed.returncode == 0, removed.stderr
    assert served.count() == 0

    after = cli("ls", "--json", env=env)
    assert after.returncode == 0, after.stderr
    assert "ws-one" not in after.stdout
    # no credential ever reaches the terminal
    for value in served.env.values():
        if not value.startswith("http"):
            for out in (created, listed, removed, after):
                assert value not in out.stdout + out.stderr


def test_bad_credentials_fail_with_one_line(served: Served, cli: Any) -> None:
    env = dict(served.env)
    secret_key = next(k for k in env if k.endswith(("TOKEN", "SECRET_KEY", "CONSUMER_KEY")))
    env[secret_key] = (
        "wrongwrongwrongwrong0000-0000-0000"
        if served.kind != "scaleway"
        else ("00000000-0000-4000-8000-000000000000")
    )
    result = cli("ls", env=env)
    assert result.returncode != 0
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert env[secret_key] not in result.stderr
