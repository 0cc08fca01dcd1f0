"""Per-provider glue for the contract suite: how to build each emulator and provider, and how
to provoke each error scenario at that provider's API (its own paths, codes and limits)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from app.domain import LABEL_MANAGED_BY, LABEL_WORKSPACE, CreateServerRequest
from app.providers.base import Provider
from tests.emulators.base import Emulator, ManualClock


@cache
def ssh_public_key() -> str:
    key = Ed25519PrivateKey.generate().public_key()
    raw = key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return raw.decode() + " bivy-test"


@dataclass
class Harness:
    """One provider under contract.

    Attributes:
        kind: the provider kind.
        make: (clock) → (emulator, options accepted by it).
        provider_cls: the Provider class.
        region, size: a valid region and size for create.
        list_path, create_path, get_path: regexes of the API paths (for injection/counting).
        rate_limit_code: the provider's 429 code.
        set_quota: make the next create exceed the account's limit.
        make_unavailable: make ``size`` unavailable in ``region``.
        bad_options: options with a wrong credential.
    """

    kind: str
    make: Callable[[ManualClock], tuple[Emulator, dict[str, str]]]
    provider_cls: Callable[..., Provider]
    region: str
    size: str
    list_path: str
    create_path: str
    get_path: str
    rate_limit_code: str
    set_quota: Callable[[Any], None]
    make_unavailable: Callable[[Any], None]
    bad_options: Callable[[dict[str, str]], dict[str, str]]

    def request(self, name: str, user_data: str = "#cloud-config\n{}\n") -> CreateServerRequest:
        return CreateServerRequest(
            name=name,
            region=self.region,
            size=self.size,
            ssh_public_key=ssh_public_key(),
            ssh_key_name="bivy",
            labels={LABEL_MANAGED_BY: "bivy", LABEL_WORKSPACE: name},
            user_data=user_data,
        )


def _hetzner(clock: ManualClock) -> tuple[Emulator, dict[str, str]]:
    from tests.emulators.hetzner import HetznerEmulator

    return HetznerEmulator(token="contract-token", clock=clock), {"token": "contract-token"}


def _digitalocean(clock: ManualClock) -> tuple[Emulator, dict[str, str]]:
    from tests.emulators.digitalocean import DigitalOceanEmulator

    emu = DigitalOceanEmulator(clock=clock)
    return emu, {"token": emu.token}


def _scaleway(clock: ManualClock) -> tuple[Emulator, dict[str, str]]:
    from tests.emulators.scaleway import PROJECT_ID, SECRET_KEY, ScalewayEmulator

    return ScalewayEmulator(clock=clock), {"secret_key": SECRET_KEY, "project_id": PROJECT_ID}


def _ovh(clock: ManualClock) -> tuple[Emulator, dict[str, str]]:
    from tests.emulators import ovh

    return ovh.OvhEmulator(clock=clock), {
        "application_key": ovh.APPLICATION_KEY,
        "application_secret": ovh.APPLICATION_SECRET,
        "consumer_key": ovh.CONSUMER_KEY,
        "project_id": ovh.PROJECT_ID,
    }


def _provider(module: str, name: str) -> Callable[..., Provider]:
    def build(*args: Any, **kwargs: Any) -> Provider:
        import importlib

        cls = getattr(importlib.import_module(module), name)
        return cls(*args, **kwargs)  # type: ignore[no-any-return]

    return build


def _hetzner_unavailable(emu: Any) -> None:
    emu.set_availability("cx23", "nbg1", False)


HARNESSES = [
    Harness(
        kind="hetzner",
        make=_hetzner,
        provider_cls=_provider("app.providers.hetzner", "HetznerProvider"),
        region="nbg1",
        size="cx23",
        list_path=r"/v1/servers",
        create_path=r"/v1/servers",
        get_path=r"/v1/servers/\d+",
        rate_limit_code="rate_limit_exceeded",
        set_quota=lambda emu: setattr(emu, "server_limit", len(emu.project.servers)),
        make_unavailable=_hetzner_unavailable,
        bad_options=lambda o: {**o, "token": "wrong-token-123"},
    ),
    Harness(
        kind="digitalocean",
        make=_digitalocean,
        provider_cls=_provider("app.providers.digitalocean", "DigitalOceanProvider"),
        region="fra1",
        size="s-2vcpu-4gb",
        list_path=r"/v2/droplets",
        create_path=r"/v2/droplets",
        get_path=r"/v2/droplets/\d+",
        rate_limit_code="too_many_requests",
        set_quota=lambda emu: setattr(emu, "droplet_limit", len(emu.droplets)),
        make_unavailable=lambda emu: emu.unavailable.add(("s-2vcpu-4gb", "fra1")),
        bad_options=lambda o: {**o, "token": "dop_v1_" + "0" * 64},
    ),
    Harness(
        kind="scaleway",
        make=_scaleway,
        provider_cls=_provider("app.providers.scaleway", "ScalewayProvider"),
        region="fr-par-1",
        size="DEV1-M",
        list_path=r"/instance/v1/zones/fr-par-1/servers",
        create_path=r"/instance/v1/zones/[^/]+/servers",
        get_path=r"/instance/v1/zones/[^/]+/servers/[^/]+",
        rate_limit_code="too_many_requests",
        set_quota=lambda emu: setattr(emu, "max_servers", len(emu.servers)),
        make_unavailable=lambda emu: emu.out_of_stock.add("DEV1-M"),
        bad_options=lambda o: {**o, "secret_key": "00000000-0000-4000-8000-000000000000"},
    ),
    Harness(
        kind="ovh",
        make=_ovh,
        provider_cls=_provider("app.providers.ovh", "OvhProvider"),
        region="GRA11",
        size="d2-4",
        list_path=r"/1.0/cloud/project/[^/]+/instance",
        create_path=r"/1.0/cloud/project/[^/]+/region/[^/]+/instance",
        get_path=r"/1.0/cloud/project/[^/]+/instance/[^/]+",
        rate_limit_code="",
        set_quota=lambda emu: setattr(emu, "max_instances", len(emu.instances)),
        make_unavailable=lambda emu: emu.unavailable.add("d2-4"),
        bad_options=lambda o: {**o, "consumer_key": "wrongConsumerKey0000000000000000"},
    ),
]


def now_header() -> str:
    return str(int(time.time()))
