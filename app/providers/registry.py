"""The provider kinds Bivy ships, in display order. Each provider package adds itself here."""

from __future__ import annotations

from app.providers.base import Provider
from app.providers.hetzner import HetznerProvider

PROVIDERS: dict[str, type[Provider]] = {
    HetznerProvider.kind: HetznerProvider,
}
