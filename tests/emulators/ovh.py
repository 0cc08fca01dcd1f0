"""OVHcloud API 1.0 emulator (Public Cloud project, operations, public catalogue), signed requests.

OVH's ``/cloud`` OpenAPI schema (~10.7 MB) is not vendored in tests/specs, so requests are validated
against ``SCHEMA`` below: a hand-written description of only the endpoints Bivy uses (method,
path template, allowed and required query parameters, JSON body schema), derived from
the project's provider notes (python-ovh, terraform-provider-ovh, ovhcloud-cli facts).
Every signed request's ``X-Ovh-Signature`` is recomputed and its timestamp checked against the
emulator's clock (which may be skewed from the client's: ``GET /auth/time`` reports it).

Instance create answers an operation that completes after ``operation_polls`` polls; the
instance then goes ``BUILD`` → ``ACTIVE`` ``boot_seconds`` later. ``max_instances`` refuses a
create with OVH's 400 quota message; a flavor named in ``unavailable`` is refused as unavailable.
A consumer key may carry ``access_rules`` (method + path glob), enforced with NOT_GRANTED_CALL.

Stop and snapshots: see ``tests.emulators.ovh_images``.

``MetadataEmulator`` serves ``/openstack/latest/meta_data.json`` for self-delete tests.

Manual run: ``python -m tests.emulators.ovh --port 8084``.
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import hashlib
import itertools
import re
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from tests.emulators.base import (
    Emulator,
    EmuRequest,
    EmuResponse,
    SpecViolation,
    json_response,
    route,
)
from tests.emulators.ovh_images import IMAGE_SCHEMA, OvhImagesMixin

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


class OvhEmulator(OvhImagesMixin, Emulator):
    """In-memory OVHcloud Public Cloud project.

    Attributes:
        application_key, application_secret: the application accepted.
        consumer_keys: consumer key → access rules (None: everything allowed).
        instances: id → instance JSON; operations: id → operation JSON.
        user_data: instance id → the userData sent.
        max_instances: quota; unavailable: flavor names refused as unavailable.
        operation_polls: operation GETs before an operation completes; its instance shows up
            in lists then, or ``operation_seconds`` after the create anyway.
    """

    provider = "ovh"
    base_path = BASE_PATH
    spec_file = None

    def __init__(
        self,
        *,
        project_id: str = PROJECT_ID,
        max_instances: int = 10,
        boot_seconds: float = 3.0,
        operation_polls: int = 2,
        operation_seconds: float = 5.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.operation_seconds = operation_seconds
        self.application_key = APPLICATION_KEY
        self.application_secret = APPLICATION_SECRET
        self.consumer_keys: dict[str, list[tuple[str, str]] | None] = {CONSUMER_KEY: None}
        self.project_id = project_id
        self.max_instances = max_instances
        self.boot_seconds = boot_seconds
        self.operation_polls = operation_polls
        self.unavailable: set[str] = set()
        #: how many of the next create operations end ``in-error`` (their instance vanishes)
        self.fail_operations = 0
        self.instances: dict[str, dict[str, Any]] = {}
        self.operations: dict[str, dict[str, Any]] = {}
        self.user_data: dict[str, str] = {}
        self.ssh_keys: dict[str, dict[str, Any]] = {}
        self.signed_requests = 0
        self._init_images()
        self._ips = itertools.count(10)
        self.flavors = [
            {
                "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{region}/{name}")),
                "name": name,
                "region": region,
                "vcpus": vcpus,
                "ram": ram,
                "disk": disk,
                "type": kind,
                "osType": "linux",
                "available": True,
                "inboundBandwidth": 250,
                "outboundBandwidth": 250,
                "planCodes": {
                    "hourly": f"{name}.consumption",
                    "monthly": f"{name}.monthly.postpaid" if monthly else None,
                },
            }
            for region in REGIONS
            for name, (vcpus, ram, disk, kind, _h, monthly) in FLAVORS.items()
        ]
        self.images = [
            {
                "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{region}/{name}")),
                "name": name,
                "region": region,
                "type": "linux",
                "status": "active",
            }
            for region in REGIONS
            for name in ("Ubuntu 22.04", "Ubuntu 24.04", "Debian 12")
        ]

    # -- base hooks --------------------------------------------------------------------------

    def error_body(
        self, status: int, code: str, message: str, details: dict[str, Any] | None = None
    ) -> Any:
        body: dict[str, Any] = {"message": message, "class": f"Client::{code or 'Error'}"}
        if code.isupper():
            body["errorCode"] = code
            body["class"] = "Client::Forbidden" if status == 403 else "Client::BadRequest"
        return body

    def extra_headers(self, request: EmuRequest, response: EmuResponse) -> dict[str, str]:
        return {"X-OVH-QUERYID": f"FR.ws-{uuid.uuid4().hex[:8]}.{int(self.clock())}"}

    def handle(self, request: EmuRequest) -> tuple[EmuResponse | None, float, str]:
        if not self.validating:
            return super().handle(request)
        try:
            validate_request(request)
        except SpecViolation as exc:
            with self.lock:
                record = _record(request, 400)
                self.requests.append(record)
                return self.reject(record, exc), 0.0, ""
        return super().handle(request)

    def spec_violation_response(self, exc: SpecViolation) -> EmuResponse:
        return self.error(400, "", f"spec violation (emulator): {exc}")

    def authenticate(self, request: EmuRequest) -> EmuResponse | None:
        path = request.path[len(BASE_PATH) :]
        if path == "/auth/time" or path.startswith("/order/catalog/public/"):
            return None
        headers = request.headers
        if headers.get("x-ovh-application") != self.application_key:
            return self.error(403, "INVALID_KEY", "This application key is invalid")
        consumer = headers.get("x-ovh-consumer", "")
        if consumer not in self.consumer_keys:
            return self.error(403, "INVALID_CREDENTIAL", "This credential does not exist")
        try:
            ts = int(headers.get("x-ovh-timestamp", ""))
        except ValueError:
            return self.error(400, "", "Missing or invalid X-Ovh-Timestamp")
        if abs(ts - int(self.clock())) > 180:
            return self.error(400, "", "Invalid timestamp (too far from the server time)")
        host = headers.get("host", "eu.api.ovh.com")
        scheme = "http" if host.startswith(("127.0.0.1", "localhost")) else "https"
        # EmuRequest keeps the parsed query; re-encoding it gives the sent bytes for the plain
        # values Bivy sends (region codes, osType).
        query = _raw_query(request)
        url = f"{scheme}://{host}{request.path}" + (f"?{query}" if query else "")
        expected = sign(self.application_secret, consumer, request.method, url, request.body, ts)
        if headers.get("x-ovh-signature") != expected:
            return self.error(400, "INVALID_SIGNATURE", "Invalid signature")
        rules = self.consumer_keys[consumer]
        if rules is not None and not any(
            method == request.method and fnmatch.fnmatchcase(path, glob) for method, glob in rules
        ):
            return self.error(403, "NOT_GRANTED_CALL", "This call has not been granted")
        self.signed_requests += 1
        return None

    # -- state -------------------------------------------------------------------------------

    def _iso(self, when: float) -> str:
        return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def _project(self, request: EmuRequest) -> EmuResponse | None:
        if request.params.get("serviceName") != self.project_id:
            return self.error(404, "", f"This service does not exist: {request.params}")
        return None

    def _visible(self, instance: dict[str, Any]) -> bool:
        return not instance["_hidden"] or self.clock() >= instance["_visible_at"]

    def _view(self, instance: dict[str, Any]) -> dict[str, Any]:
        self.instance_status(instance)
        if instance["status"] == "BUILD" and self.clock() - instance["_since"] >= self.boot_seconds:
            instance["status"] = "ACTIVE"
            instance["ipAddresses"] = [
                {
                    "ip": f"127.0.116.{next(self._ips) % 250 + 2}",  # loopback
                    "type": "public",
                    "version": 4,
                    "networkId": "",
                    "gatewayIp": "192.0.2.1",
                }
            ]
        return {k: v for k, v in instance.items() if not k.startswith("_")}

    # -- routes ------------------------------------------------------------------------------

    @route("GET", "/1.0/auth/time")
    def auth_time(self, request: EmuRequest) -> EmuResponse:
        return json_response(200, int(self.clock()))

    @route("GET", "/1.0/cloud/project/{serviceName}")
    def project(self, request: EmuRequest) -> EmuResponse:
        return self._project(request) or json_response(
            200,
            {
                "project_id": self.project_id,
                "projectName": "bivy",
                "description": "bivy",
                "status": "ok",
                "planCode": "project.2018",
            },
        )

    @route("GET", "/1.0/cloud/project/{serviceName}/region")
    def regions(self, request: EmuRequest) -> EmuResponse:
        return self._project(request) or json_response(200, list(REGIONS))

    @route("GET", "/1.0/cloud/project/{serviceName}/flavor")
    def flavors_list(self, request: EmuRequest) -> EmuResponse:
        region = request.arg("region")
        items = [
            {**f, "available": f["name"] not in self.unavailable}
            for f in self.flavors
            if not region or f["region"] == region
        ]
        return self._project(request) or json_response(200, items)

    @route("GET", "/1.0/cloud/project/{serviceName}/image")
    def images_list(self, request: EmuRequest) -> EmuResponse:
        region = request.arg("region")
        items = [i for i in self.images if not region or i["region"] == region]
        return self._project(request) or json_response(200, items)

    @route("GET", "/1.0/cloud/project/{serviceName}/sshkey")
    def sshkeys(self, request: EmuRequest) -> EmuResponse:
        return self._project(request) or json_response(200, list(self.ssh_keys.values()))

    @route("POST", "/1.0/cloud/project/{serviceName}/sshkey")
    def create_sshkey(self, request: EmuRequest) -> EmuResponse:
        if error := self._project(request):
            return error
        body = request.json()
        if any(k["name"] == body["name"] for k in self.ssh_keys.values()):
            return self.error(409, "", f"SSH key {body['name']} already exists")
        key = {
            "id": uuid.uuid4().hex,
            "name": body["name"],
            "publicKey": body["publicKey"],
            "regions": list(REGIONS),
        }
        self.ssh_keys[key["id"]] = key
        return json_response(200, key)

    @route("POST", "/1.0/cloud/project/{serviceName}/region/{regionName}/instance")
    def create_instance(self, request: EmuRequest) -> EmuResponse:
        if error := self._project(request):
            return error
        region = request.params["regionName"]
        body = request.json()
        flavor = next(
            (f for f in self.flavors if f["id"] == body["flavor"]["id"] and f["region"] == region),
            None,
        )
        if flavor is None:
            return self.error(400, "", f"Flavor {body['flavor']['id']} does not exist in {region}")
        if flavor["name"] in self.unavailable:
            return self.error(
                400, "", f"Flavor {flavor['name']} is not available in region {region}"
            )
        if len(self.instances) >= self.max_instances:
            return self.error(400, "", "Quota exceeded: the maximum number of instances is reached")
        if "sshKey" in body and not any(
            k["name"] == body["sshKey"]["name"] for k in self.ssh_keys.values()
        ):
            return self.error(400, "", f"SSH key {body['sshKey']['name']} does not exist")
        if error := self.boot_image_error(region, body["bootFrom"].get("imageId"), flavor):
            return error
        instance_id = str(uuid.uuid4())
        now = self.clock()
        self.instances[instance_id] = {
            "id": instance_id,
            "name": body["name"],
            "status": "BUILD",
            "region": region,
            "flavorId": flavor["id"],
            "imageId": body["bootFrom"].get("imageId"),
            "planCode": flavor["planCodes"]["hourly"],
            "ipAddresses": [],
            "created": self._iso(now),
            "monthlyBilling": None,
            "_since": now,
            "_hidden": True,  # appears once its operation completes (or time passed)
            "_visible_at": now + self.operation_seconds,
        }
        self.user_data[instance_id] = body.get("userData", "")
        operation_id = str(uuid.uuid4())
        self.operations[operation_id] = {
            "id": operation_id,
            "action": "instance#create",
            "status": "created",
            "createdAt": self._iso(now),
            "regions": [region],
            "resourceId": None,
            "subOperations": [],
            "_polls": 0,
            "_instance": instance_id,
            "_fail": self.fail_operations > 0,
        }
        if self.fail_operations > 0:
            self.fail_operations -= 1
            self.instances[instance_id]["_visible_at"] = float("inf")
        return json_response(
            200, {k: v for k, v in self.operations[operation_id].items() if not k.startswith("_")}
        )

    @route("GET", "/1.0/cloud/project/{serviceName}/operation/{operationId}")
    def operation(self, request: EmuRequest) -> EmuResponse:
        if error := self._project(request):
            return error
        op = self.operations.get(request.params["operationId"])
        if op is None:
            return self.error(404, "", "Operation not found")
        op["_polls"] += 1
        if op.get("_fail") and op["_polls"] >= self.operation_polls:
            op["status"] = "in-error"
            self.instances.pop(op["_instance"], None)
        elif op["_polls"] >= self.operation_polls and op["status"] not in ("completed", "in-error"):
            instance_id = op["_instance"]
            op["status"] = "completed"
            op["subOperations"] = [
                {
                    "id": str(uuid.uuid4()),
                    "action": "instance#create",
                    "status": "completed",
                    "resourceId": instance_id,
                }
            ]
            if instance_id in self.instances:
                self.instances[instance_id]["_hidden"] = False
        elif op["status"] == "created":
            op["status"] = "in-progress"
        return json_response(200, {k: v for k, v in op.items() if not k.startswith("_")})

    @route("GET", "/1.0/cloud/project/{serviceName}/instance")
    def instances_list(self, request: EmuRequest) -> EmuResponse:
        if error := self._project(request):
            return error
        region = request.arg("region")
        items = [
            self._view(i)
            for i in self.instances.values()
            if self._visible(i) and (not region or i["region"] == region)
        ]
        return json_response(200, items)

    def _instance(self, request: EmuRequest) -> dict[str, Any] | EmuResponse:
        if error := self._project(request):
            return error
        instance = self.instances.get(request.params["instanceId"])
        if instance is None or not self._visible(instance):
            return self.error(404, "", f"Instance {request.params['instanceId']} not found")
        return instance

    @route("GET", "/1.0/cloud/project/{serviceName}/instance/{instanceId}")
    def get_instance(self, request: EmuRequest) -> EmuResponse:
        found = self._instance(request)
        return found if isinstance(found, EmuResponse) else json_response(200, self._view(found))

    @route("DELETE", "/1.0/cloud/project/{serviceName}/instance/{instanceId}")
    def delete_instance(self, request: EmuRequest) -> EmuResponse:
        found = self._instance(request)
        if isinstance(found, EmuResponse):
            return found
        del self.instances[found["id"]]
        return json_response(200, None)

    @route("GET", "/1.0/order/catalog/public/cloud")
    def catalog(self, request: EmuRequest) -> EmuResponse:
        addons = []
        for name, (_v, _r, _d, _t, hourly, monthly) in FLAVORS.items():
            addons.append(
                {
                    "planCode": f"{name}.consumption",
                    "product": f"publiccloud-instance-{name}",
                    "pricingType": "consumption",
                    "pricings": [
                        {
                            "capacities": ["consumption"],
                            "interval": 1,
                            "intervalUnit": "hour",
                            "price": hourly,
                            "tax": 0,
                            "description": "hourly",
                        }
                    ],
                }
            )
            if monthly:
                addons.append(
                    {
                        "planCode": f"{name}.monthly.postpaid",
                        "product": f"publiccloud-instance-{name}",
                        "pricingType": "rental",
                        "pricings": [
                            {
                                "capacities": ["renew"],
                                "interval": 1,
                                "intervalUnit": "month",
                                "price": monthly,
                                "tax": 0,
                                "description": "monthly",
                            }
                        ],
                    }
                )
        addons.append(self.catalog_snapshot_addon())
        subsidiary = request.arg("ovhSubsidiary", "FR")
        currency = {"CA": "CAD", "US": "USD"}.get(subsidiary or "FR", "EUR")
        return json_response(
            200,
            {
                "catalogId": 1,
                "locale": {"currencyCode": currency, "subsidiary": subsidiary, "taxRate": 20},
                "plans": [],
                "addons": addons,
            },
        )


def _raw_query(request: EmuRequest) -> str:
    from urllib.parse import urlencode

    return urlencode([(k, v) for k, values in request.query.items() for v in values])


def _record(request: EmuRequest, status: int) -> Any:
    from tests.emulators.base import RecordedRequest

    try:
        body = request.json()
    except ValueError:
        body = request.body.decode(errors="replace")
    return RecordedRequest(request.method, request.path, request.query, body, status)


class MetadataEmulator(Emulator):
    """The OpenStack metadata service: ``/openstack/latest/meta_data.json`` with ``uuid``."""

    provider = "ovh-metadata"
    base_path = "/openstack/latest"

    def __init__(self, instance_id: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.instance_id = instance_id

    @route("GET", "/openstack/latest/meta_data.json")
    def meta_data(self, request: EmuRequest) -> EmuResponse:
        return json_response(200, {"uuid": self.instance_id, "name": "bivy", "hostname": "bivy"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8084)
    args = parser.parse_args()
    emulator = OvhEmulator(strict=False)
    with emulator.serve(args.port) as url:
        print(f"OVHcloud emulator on {url} (BIVY_OVH_API_URL={url})", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)


if __name__ == "__main__":
    main()
