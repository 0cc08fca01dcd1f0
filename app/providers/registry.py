"""The provider kinds Bivy ships, in display order. Each provider package adds itself here."""

from __future__ import annotations

from app.providers.base import Provider

PROVIDERS: dict[str, type[Provider]] = {}
