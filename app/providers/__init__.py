"""Cloud providers behind one async ``Provider`` interface, and the registry of their kinds."""

from __future__ import annotations

from app.providers.base import BillingRule, Capabilities, Provider, ProviderOption

__all__ = ["BillingRule", "Capabilities", "Provider", "ProviderOption", "provider_classes"]


def provider_classes() -> dict[str, type[Provider]]:
    """Every provider kind Bivy knows, by kind ("hetzner", …), in the order the UI lists them."""
    from app.providers.registry import PROVIDERS

    return dict(PROVIDERS)
