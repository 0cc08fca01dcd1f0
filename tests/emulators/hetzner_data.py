"""Hetzner emulator data and helpers: the catalogue (locations, server types with prices in the
API's format, system/app images), the label-selector language, timestamps and fingerprints."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

MAX_USER_DATA = 32768
_NAME_RE = re.compile(r"^(?=.{1,63}$)[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$")
_LABEL_NAME = r"[a-zA-Z0-9]([a-zA-Z0-9_.-]{0,61}[a-zA-Z0-9])?"
_LABEL_KEY_RE = re.compile(rf"^([a-z0-9]([a-z0-9.-]{{0,251}}[a-z0-9])?/)?{_LABEL_NAME}$")
_LABEL_VALUE_RE = re.compile(rf"^({_LABEL_NAME})?$")


def iso(ts: float) -> str:
    """An epoch second as the API writes timestamps ("2016-01-30T23:55:00Z")."""
    return datetime.fromtimestamp(int(ts), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def fingerprint(public_key: str) -> str:
    """Hetzner's SSH key fingerprint: MD5 of the key blob, colon-separated hex."""
    parts = public_key.split()
    blob = base64.b64decode(parts[1]) if len(parts) > 1 else public_key.encode()
    digest = hashlib.md5(blob, usedforsecurity=False).hexdigest()
    return ":".join(digest[i : i + 2] for i in range(0, 32, 2))


# -- label selectors ---------------------------------------------------------------------------


class LabelSelector:
    """Hetzner's label-selector language: ``k=v``, ``k==v``, ``k!=v``, ``k``, ``!k``,
    ``k in (a,b)``, ``k notin (a,b)``; expressions joined by commas are ANDed."""

    _EXPR = re.compile(
        r"\s*(?:(?P<neg>!)\s*(?P<nkey>[^\s,=!()]+)"
        r"|(?P<key>[^\s,=!()]+)\s*(?:(?P<op>==|=|!=)\s*(?P<value>[^\s,()]*)"
        r"|\s+(?P<setop>in|notin)\s*\((?P<set>[^()]*)\))?)\s*(?:,|$)"
    )

    def __init__(self, text: str) -> None:
        self.text = text
        self.terms: list[Callable[[dict[str, str]], bool]] = []
        pos = 0
        text = text.strip()
        while pos < len(text):
            m = self._EXPR.match(text, pos)
            if not m or m.end() == pos:
                raise ValueError(f"invalid label selector {self.text!r}")
            pos = m.end()
            self.terms.append(self._term(m))

    @staticmethod
    def _term(m: re.Match[str]) -> Callable[[dict[str, str]], bool]:
        if m.group("neg"):
            key = m.group("nkey")
            return lambda labels: key not in labels
        key = m.group("key")
        op, value = m.group("op"), m.group("value")
        if op in ("=", "=="):
            return lambda labels: labels.get(key) == value
        if op == "!=":
            return lambda labels: labels.get(key) != value
        if m.group("setop"):
            values = {v.strip() for v in m.group("set").split(",") if v.strip()}
            if m.group("setop") == "in":
                return lambda labels: labels.get(key) in values
            return lambda labels: labels.get(key) not in values
        return lambda labels: key in labels

    def matches(self, labels: dict[str, str]) -> bool:
        return all(term(labels) for term in self.terms)


# -- catalogue (the emulator's "cloud"; prices are emulator data in the API's format) -----------

LOCATIONS: list[dict[str, Any]] = [
    {"id": 1, "name": "fsn1", "description": "Falkenstein DC Park 1", "country": "DE",
     "city": "Falkenstein", "latitude": 50.47612, "longitude": 12.370071,
     "network_zone": "eu-central"},
    {"id": 2, "name": "nbg1", "description": "Nuremberg DC Park 1", "country": "DE",
     "city": "Nuremberg", "latitude": 49.452102, "longitude": 11.076665,
     "network_zone": "eu-central"},
    {"id": 3, "name": "hel1", "description": "Helsinki DC Park 1", "country": "FI",
     "city": "Helsinki", "latitude": 60.169855, "longitude": 24.938379,
     "network_zone": "eu-central"},
    {"id": 4, "name": "ash", "description": "Ashburn, VA", "country": "US",
     "city": "Ashburn, VA", "latitude": 39.043757, "longitude": -77.487442,
     "network_zone": "us-east"},
]  # fmt: skip

# name, id, cores, memory GB, disk GB, cpu_type, arch, category, net hourly EUR, net monthly EUR,
# locations where orderable, deprecated
SERVER_TYPES: list[tuple[Any, ...]] = [
    ("cx23", 101, 2, 4.0, 40, "shared", "x86", "Cost-Optimized", "0.0056", "3.49",
     ("fsn1", "nbg1", "hel1"), False),
    ("cx33", 102, 4, 8.0, 80, "shared", "x86", "Cost-Optimized", "0.0088", "5.49",
     ("fsn1", "nbg1", "hel1"), False),
    ("cax11", 103, 2, 4.0, 40, "shared", "arm", "Cost-Optimized", "0.0064", "3.99",
     ("fsn1", "nbg1", "hel1"), False),
    ("cpx22", 104, 2, 4.0, 80, "shared", "x86", "Regular Purpose", "0.0112", "6.99",
     ("fsn1", "nbg1", "hel1", "ash"), False),
    ("ccx13", 105, 2, 8.0, 80, "dedicated", "x86", "General Purpose", "0.0224", "13.99",
     ("fsn1", "nbg1", "hel1", "ash"), False),
    ("cx11", 1, 1, 2.0, 20, "shared", "x86", "Shared vCPU", "0.0052", "3.29",
     (), True),
]  # fmt: skip

VAT_RATE = Decimal("19.00")


def _money(net: str) -> dict[str, str]:
    gross = (Decimal(net) * (1 + VAT_RATE / 100)).quantize(Decimal("0.0000000001"))
    return {"net": f"{Decimal(net):.10f}", "gross": f"{gross:.10f}"}


def _type_prices(hourly: str, monthly: str, where: Iterable[str]) -> list[dict[str, Any]]:
    # Prices differ a little outside Germany, as at the real provider, so tests can tell them apart.
    out = []
    for loc in where:
        factor = Decimal("1.0") if loc in ("fsn1", "nbg1") else Decimal("1.1")
        h = (Decimal(hourly) * factor).quantize(Decimal("0.0001"))
        mo = (Decimal(monthly) * factor).quantize(Decimal("0.01"))
        out.append(
            {
                "location": loc,
                "price_hourly": _money(str(h)),
                "price_monthly": _money(str(mo)),
                "included_traffic": 21990232555520 if loc != "ash" else 1099511627776,
                "price_per_tb_traffic": _money("1.00"),
            }
        )
    return out


def _server_type(row: tuple[Any, ...]) -> dict[str, Any]:
    name, tid, cores, mem, disk, cpu, arch, category, hourly, monthly, where, dep = row
    deprecation = (
        {"announced": "2023-06-01T00:00:00Z", "unavailable_after": "2023-09-01T00:00:00Z"}
        if dep
        else None
    )
    return {
        "id": tid,
        "name": name,
        "description": name.upper(),
        "cores": cores,
        "memory": mem,
        "disk": disk,
        "deprecated": dep,
        "prices": _type_prices(hourly, monthly, where),
        "storage_type": "local",
        "cpu_type": cpu,
        "category": category,
        "architecture": arch,
        "deprecation": deprecation,
        "locations": [
            {
                "id": loc["id"],
                "name": loc["name"],
                "deprecation": None,
                "available": loc["name"] in where,
                "recommended": loc["name"] in where and cpu == "shared",
            }
            for loc in LOCATIONS
        ],
    }


def _image(
    iid: int, name: str | None, kind: str, desc: str, arch: str, flavor: str
) -> dict[str, Any]:
    return {
        "id": iid,
        "type": kind,
        "status": "available",
        "name": name,
        "description": desc,
        "image_size": None,
        "disk_size": 5,
        "created": "2024-04-25T10:00:00Z",
        "created_from": None,
        "bound_to": None,
        "os_flavor": flavor,
        "os_version": "24.04",
        "rapid_deploy": True,
        "protection": {"delete": False},
        "deprecated": None,
        "deleted": None,
        "labels": {},
        "architecture": arch,
    }


IMAGES: list[dict[str, Any]] = [
    _image(161547269, "ubuntu-24.04", "system", "Ubuntu 24.04", "x86", "ubuntu"),
    _image(161547270, "ubuntu-24.04", "system", "Ubuntu 24.04", "arm", "ubuntu"),
    _image(179498042, "debian-12", "system", "Debian 12", "x86", "debian"),
    _image(180053452, "docker-ce", "app", "Docker CE", "x86", "ubuntu"),
    _image(180053453, "docker-ce", "app", "Docker CE", "arm", "ubuntu"),
]
