"""DigitalOcean tags standing in for Bivy's labels (droplets and snapshot images alike)."""

from __future__ import annotations

import re
from collections.abc import Mapping

from app.domain import LABEL_MANAGED_BY, LABEL_MANAGED_BY_VALUE
from app.errors import InvalidInput
from app.providers.digitalocean.client import KIND

#: The tag every Bivy droplet carries; ``GET /v2/droplets?tag_name=bivy`` lists them.
MANAGED_TAG = "bivy"
MAX_TAG_LENGTH = 255

# Tags allow letters, digits, ':', '-' and '_'. Labels become ``key:value``; a value character
# outside [A-Za-z0-9-] is written ``_xx`` (hex), so ``_`` itself is escaped and decoding is exact.
_TAG_SAFE = re.compile(r"[A-Za-z0-9-]")
_TAG_ESCAPE_SPLIT = re.compile(r"(_[0-9a-f]{2})")


def _escape(text: str) -> str:
    out = []
    for ch in text:
        if _TAG_SAFE.fullmatch(ch):
            out.append(ch)
        else:
            out.extend(f"_{b:02x}" for b in ch.encode("utf-8"))
    return "".join(out)


def _unescape(text: str) -> str:
    out = bytearray()
    for part in _TAG_ESCAPE_SPLIT.split(text):
        if _TAG_ESCAPE_SPLIT.fullmatch(part):
            out.append(int(part[1:], 16))
        else:
            out += part.encode("utf-8")
    return out.decode("utf-8")


def labels_to_tags(labels: Mapping[str, str]) -> list[str]:
    """Bivy labels as DigitalOcean tags: ``bivy`` for managed-by, ``key:value`` for the rest.

    Raises ``InvalidInput`` when an encoded tag would exceed DigitalOcean's 255 characters.
    """
    tags = []
    for key, value in labels.items():
        if key == LABEL_MANAGED_BY and value == LABEL_MANAGED_BY_VALUE:
            tags.append(MANAGED_TAG)
        else:
            tag = f"{_escape(key)}:{_escape(value)}"
            if len(tag) > MAX_TAG_LENGTH:
                raise InvalidInput(
                    f"The label {key!r} is too long for a DigitalOcean tag "
                    f"({len(tag)} > {MAX_TAG_LENGTH} characters once encoded)",
                    provider=KIND,
                )
            tags.append(tag)
    return tags


def tags_to_labels(tags: list[str]) -> dict[str, str]:
    """The inverse of ``labels_to_tags``; tags Bivy did not write are ignored."""
    labels: dict[str, str] = {}
    for tag in tags:
        if tag == MANAGED_TAG:
            labels[LABEL_MANAGED_BY] = LABEL_MANAGED_BY_VALUE
        elif ":" in tag:
            key, _, value = tag.partition(":")
            try:
                labels[_unescape(key)] = _unescape(value)
            except UnicodeError:
                continue
    return labels
