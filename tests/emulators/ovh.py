"""OVHcloud API 1.0 emulator (Public Cloud project, operations, public catalogue), signed requests.

Requests are validated against a hand-written schema of the endpoints Bivy uses (``SCHEMA`` in
``tests.emulators.ovh_data``, with the credentials, regions and flavours; re-exported here).
Every signed request's ``X-Ovh-Signature`` is recomputed and its timestamp checked against the
emulator's clock (which may be skewed from the client's: ``GET /auth/time`` reports it).

Instance create answers an operation that completes after ``operation_polls`` polls; the
instance then goes ``BUILD`` → ``ACTIVE`` ``boot_seconds`` later. ``max_instances`` refuses a
create with OVH's 400 quota message; a flavor named in ``unavailable`` is refused as unavailable.
A consumer key may carry ``access_rules`` (method + path glob), enforced with NOT_GRANTED_CALL.

Routes: project-level ones in ``tests.emulators.ovh_project``, instances and operations in
``tests.emulators.ovh_instances``, stop and snapshots in ``tests.emulators.ovh_images``.

``MetadataEmulator`` serves ``/openstack/latest/meta_data.json`` for self-delete tests.

Manual run: ``python -m tests.emulators.ovh --port 8084``.
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import itertools
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
from tests.emulators.ovh_data import (
    APPLICATION_KEY,
    APPLICATION_SECRET,
    BASE_PATH,
    CONSUMER_KEY,
    FLAVORS,
    PROJECT_ID,
    REGIONS,
    SCHEMA,
    sign,
    validate_request,
)
from tests.emulators.ovh_images import OvhImagesMixin
from tests.emulators.ovh_instances import OvhInstancesMixin
from tests.emulators.ovh_project import OvhProjectMixin

__all__ = [
    "APPLICATION_KEY",
    "APPLICATION_SECRET",
    "BASE_PATH",
    "CONSUMER_KEY",
    "FLAVORS",
    "PROJECT_ID",
    "REGIONS",
    "SCHEMA",
    "MetadataEmulator",
    "OvhEmulator",
    "main",
    "sign",
    "validate_request",
]


class OvhEmulator(OvhProjectMixin, OvhInstancesMixin, OvhImagesMixin, Emulator):
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
