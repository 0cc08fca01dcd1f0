"""Scaleway names shared by servers and images: zones, tags standing in for labels, ids."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from app.domain import LABEL_MANAGED_BY, LABEL_MANAGED_BY_VALUE

#: Zones the Instance API spec (2022) accepts in its path, with their cities.
ZONES: dict[str, tuple[str, str]] = {
    "fr-par-1": ("Paris 1", "FR"),
    "fr-par-2": ("Paris 2", "FR"),
    "fr-par-3": ("Paris 3", "FR"),
    "nl-ams-1": ("Amsterdam 1", "NL"),
    "nl-ams-2": ("Amsterdam 2", "NL"),
    "pl-waw-1": ("Warsaw 1", "PL"),
}
MANAGED_TAG = "bivy"


def labels_to_tags(labels: Mapping[str, str]) -> list[str]:
    """Bivy labels as Scaleway tags: ``bivy`` for managed-by, ``key=value`` for the rest."""
    return [
        MANAGED_TAG
        if (key, value) == (LABEL_MANAGED_BY, LABEL_MANAGED_BY_VALUE)
        else f"{key}={value}"
        for key, value in labels.items()
    ]


def tags_to_labels(tags: list[str]) -> dict[str, str]:
    """The inverse of ``labels_to_tags``; other tags are ignored."""
    labels: dict[str, str] = {}
    for tag in tags:
        if tag == MANAGED_TAG:
            labels[LABEL_MANAGED_BY] = LABEL_MANAGED_BY_VALUE
        elif "=" in tag:
            key, _, value = tag.partition("=")
            labels[key] = value
    return labels


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def make_id(zone: str, server_id: str) -> str:
    """Bivy's server id: the zone and Scaleway's UUID, since every call needs both."""
    return f"{zone}/{server_id}"
