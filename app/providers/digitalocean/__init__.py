"""DigitalOcean droplets behind the ``Provider`` interface."""

from __future__ import annotations

from app.providers.digitalocean.provider import DigitalOceanProvider

__all__ = ["DigitalOceanProvider"]
