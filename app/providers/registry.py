"""The provider kinds Bivy ships, in display order. Each provider package adds itself here."""

from __future__ import annotations

from app.providers.base import Provider
from app.providers.digitalocean import DigitalOceanProvider
from app.providers.hetzner import HetznerProvider
from app.providers.local import LocalProvider
from app.providers.ovh import OvhProvider
from app.providers.scaleway import ScalewayProvider

PROVIDERS: dict[str, type[Provider]] = {
    HetznerProvider.kind: HetznerProvider,
    DigitalOceanProvider.kind: DigitalOceanProvider,
    ScalewayProvider.kind: ScalewayProvider,
    OvhProvider.kind: OvhProvider,
    LocalProvider.kind: LocalProvider,
}
