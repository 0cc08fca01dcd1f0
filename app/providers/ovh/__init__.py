"""OVHcloud Public Cloud instances behind the ``Provider`` interface."""

from __future__ import annotations

from app.providers.ovh.provider import OvhProvider

__all__ = ["OvhProvider"]
