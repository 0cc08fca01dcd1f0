"""OVHcloud emulator: its credentials, regions and flavours, and the request schema it checks.

OVH's ``/cloud`` OpenAPI schema (~10.7 MB) is not vendored in tests/specs, so requests are validated
against ``SCHEMA``: a hand-written description of only the endpoints Bivy uses (method, path
template, allowed and required query parameters, JSON body schema), derived from the project's
provider notes (python-ovh, terraform-provider-ovh, ovhcloud-cli facts); the stop and snapshot
endpoints' part is ``tests.emulators.ovh_images.IMAGE_SCHEMA``. ``sign`` computes OVH's
``X-Ovh-Signature``. All re-exported by ``tests.emulators.ovh``.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from tests.emulators.base import EmuRequest, SpecViolation
from tests.emulators.ovh_images import IMAGE_SCHEMA

APPLICATION_KEY = "bivyAppKey0123456"
APPLICATION_SECRET = "bivyAppSecret0123456789abcdefABCD"
CONSUMER_KEY = "bivyConsumerKey0123456789abcdefAB"
PROJECT_ID = "0123456789abcdef0123456789abcdef"
BASE_PATH = "/1.0"

REGIONS = ["GRA11", "SBG5", "BHS5"]
# name → (vcpus, ram MB, disk GB, type, hourly price, monthly price) in 1e-8 EUR
FLAVORS: dict[str, tuple[int, int, int, str, int, int]] = {
    "d2-2": (1, 2000, 25, "ovh.d2", 880_000, 0),
    "d2-4": (2, 4000, 50, "ovh.d2", 1_650_000, 0),
    "b3-8": (2, 8000, 50, "ovh.b3", 5_080_000, 3_700_000_000),
    "c3-4": (2, 4000, 50, "ovh.c3", 4_340_000, 3_168_000_000),
}

_NAME = {"type": "string", "minLength": 1, "maxLength": 255}
SCHEMA: dict[tuple[str, str], dict[str, Any]] = {
    ("GET", "/auth/time"): {},
    ("GET", "/cloud/project/{serviceName}"): {},
    ("GET", "/cloud/project/{serviceName}/region"): {},
    ("GET", "/cloud/project/{serviceName}/flavor"): {"query": {"region": False}},
    ("GET", "/cloud/project/{serviceName}/image"): {
        "query": {"region": False, "osType": False, "flavorType": False}
    },
    ("GET", "/cloud/project/{serviceName}/sshkey"): {"query": {"region": False}},
    ("POST", "/cloud/project/{serviceName}/sshkey"): {
        "body": {
            "type": "object",
            "required": ["name", "publicKey"],
            "additionalProperties": False,
            "properties": {
                "name": _NAME,
                "publicKey": {"type": "string", "pattern": "^(ssh-|ecdsa-)"},
                "region": {"type": "string"},
            },
        }
    },
    ("GET", "/cloud/project/{serviceName}/instance"): {"query": {"region": False}},
    ("GET", "/cloud/project/{serviceName}/instance/{instanceId}"): {},
    ("DELETE", "/cloud/project/{serviceName}/instance/{instanceId}"): {},
    ("GET", "/cloud/project/{serviceName}/operation/{operationId}"): {},
    ("POST", "/cloud/project/{serviceName}/region/{regionName}/instance"): {
        "body": {
            "type": "object",
            "required": ["name", "flavor", "bootFrom"],
            "additionalProperties": False,
            "properties": {
                "name": _NAME,
                "flavor": {
                    "type": "object",
                    "required": ["id"],
                    "additionalProperties": False,
                    "properties": {"id": {"type": "string"}},
                },
                "bootFrom": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"imageId": {"type": "string"}, "volumeId": {"type": "string"}},
                    "oneOf": [{"required": ["imageId"]}, {"required": ["volumeId"]}],
                },
                "sshKey": {
                    "type": "object",
                    "required": ["name"],
                    "additionalProperties": False,
                    "properties": {"name": {"type": "string"}},
                },
                "sshKeyCreate": {
                    "type": "object",
                    "required": ["name", "publicKey"],
                    "additionalProperties": False,
                    "properties": {"name": {"type": "string"}, "publicKey": {"type": "string"}},
                },
                "userData": {"type": "string"},
                "network": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"public": {"type": "boolean"}, "private": {"type": "object"}},
                },
                "billingPeriod": {"enum": ["hourly", "monthly"]},
                "availabilityZone": {"type": "string"},
                "autobackup": {"type": "object"},
                "bulk": {"type": "integer", "minimum": 1},
                "group": {"type": "object"},
            },
        }
    },
    ("GET", "/order/catalog/public/cloud"): {"query": {"ovhSubsidiary": True}, "unsigned": True},
}


def _template_regex(template: str) -> re.Pattern[str]:
    parts = re.split(r"(\{[^{}]+\})", template)
    return re.compile("".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts))


SCHEMA.update(IMAGE_SCHEMA)

_COMPILED = [(method, _template_regex(t), t, spec) for (method, t), spec in SCHEMA.items()]


def validate_request(request: EmuRequest) -> dict[str, Any]:
    """Check ``request`` against ``SCHEMA``; return the entry or raise ``SpecViolation``."""
    path = request.path[len(BASE_PATH) :] if request.path.startswith(BASE_PATH) else None
    if path is None:
        raise SpecViolation(request.method, request.path, ["outside /1.0"])
    entries = [(m, t, s) for m, rx, t, s in _COMPILED if rx.fullmatch(path)]
    if not entries:
        raise SpecViolation(request.method, path, ["no such path in the OVH schema"])
    entry = next((s for m, _, s in entries if m == request.method), None)
    if entry is None:
        raise SpecViolation(request.method, path, ["method not allowed"])
    errors = []
    allowed = entry.get("query", {})
    for name in request.query:
        if name not in allowed:
            errors.append(f"unknown query parameter {name!r}")
    for name, required in allowed.items():
        if required and name not in request.query:
            errors.append(f"missing required query parameter {name!r}")
    schema = entry.get("body")
    if schema is None and request.body:
        errors.append("the operation takes no request body")
    if schema is not None:
        try:
            body = request.json()
        except ValueError as exc:
            body = None
            errors.append(f"body is not JSON: {exc}")
        if body is None:
            errors.append("a JSON request body is required")
        else:
            import jsonschema  # a test-only package: only imported when validating

            checker = jsonschema.Draft7Validator.FORMAT_CHECKER
            errors += [
                f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
                for e in jsonschema.Draft7Validator(schema, format_checker=checker).iter_errors(
                    body
                )
            ]
    if errors:
        raise SpecViolation(request.method, path, errors)
    return entry


def sign(secret: str, consumer: str, method: str, url: str, body: bytes, ts: int) -> str:
    raw = "+".join([secret, consumer, method, url, body.decode(), str(ts)])
    return "$1$" + hashlib.sha1(raw.encode()).hexdigest()
