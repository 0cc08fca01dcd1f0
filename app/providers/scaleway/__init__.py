"""Scaleway Instances behind the ``Provider`` interface."""

from __future__ import annotations

from app.providers.scaleway.provider import ScalewayProvider

__all__ = ["ScalewayProvider"]
