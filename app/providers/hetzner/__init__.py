"""Hetzner Cloud: REST client, wire models and the ``HetznerProvider``."""

from __future__ import annotations

from app.providers.hetzner.provider import HetznerProvider

__all__ = ["HetznerProvider"]
