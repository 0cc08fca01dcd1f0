"""The local provider: workspace VMs on this computer with QEMU (no account, no cloud)."""

from __future__ import annotations

from app.providers.local.provider import LocalProvider

__all__ = ["LocalProvider"]
