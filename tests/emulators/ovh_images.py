"""OVHcloud emulator: instance stop and snapshots (``/instance/{id}/stop|snapshot``,
``/snapshot``), with the hand-written schema of those endpoints (``IMAGE_SCHEMA``).

Mixed into ``OvhEmulator``. Behaviour:
- ``POST /instance/{id}/stop``: an ``ACTIVE`` instance reads ``SHUTOFF`` ``stop_seconds`` later
  (one not active: 400). Answers nothing (``null``), like OVH.
- ``POST /instance/{id}/snapshot {snapshotName}``: a private snapshot of the instance's region
  appears ``queued``, is ``saving`` after a second and ``active`` ``snapshot_seconds`` after the
  request, with ``size`` (GB) = the flavour's disk × ``snapshot_used_fraction`` (0 until then)
  and ``minDisk`` the disk. A second snapshot while one of the instance is in progress: 409.
  Answers ``null``.
- ``GET /snapshot`` (``region``, ``flavorType`` filters), ``GET``/``DELETE /snapshot/{id}``
  (``DELETE`` answers the deleted snapshot; gone: 404).
- An instance created with ``bootFrom.imageId`` must name a public image or an ``active``
  snapshot of that region (else 400).
- The public catalogue lists ``snapshot.consumption`` (product ``publiccloud-snapshot``) per
  GB-hour.

Facts (OVH's ``/cloud`` schema is not vendored): paths, ``snapshotName`` and the snapshot fields
(``id``, ``name``, ``region``, ``status``, ``size``, ``minDisk``, ``creationDate``, ``planCode``,
``visibility``, ``type``, ``user``) follow OVH's ``cloud.image.Image`` as used by the OVHcloud CLI
and Terraform provider; check them against https://eu.api.ovh.com/console/?section=%2Fcloud.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from tests.emulators.base import EmuRequest, EmuResponse, json_response, route

if TYPE_CHECKING:
    from tests.emulators.ovh import OvhEmulator as _Base
else:
    _Base = object

IMAGE_SCHEMA: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", "/cloud/project/{serviceName}/instance/{instanceId}/stop"): {},
    ("POST", "/cloud/project/{serviceName}/instance/{instanceId}/snapshot"): {
        "body": {
            "type": "object",
            "required": ["snapshotName"],
            "additionalProperties": False,
            "properties": {"snapshotName": {"type": "string", "minLength": 1, "maxLength": 255}},
        }
    },
    ("GET", "/cloud/project/{serviceName}/snapshot"): {
        "query": {"region": False, "flavorType": False}
    },
    ("GET", "/cloud/project/{serviceName}/snapshot/{imageId}"): {},
    ("DELETE", "/cloud/project/{serviceName}/snapshot/{imageId}"): {},
}

_PROJECT = "/1.0/cloud/project/{serviceName}"
#: EUR 1e-8 per GB-hour: 0.00001389 €/GB/h, about 0.01 € per GB-month.
SNAPSHOT_HOURLY = 1389


class OvhImagesMixin(_Base):
    """Stop and snapshots for ``OvhEmulator``."""

    stop_seconds: float = 4.0
    snapshot_seconds: float = 60.0
    snapshot_used_fraction: float = 0.2

    def _init_images(self) -> None:
        self.snapshots: dict[str, dict[str, Any]] = {}

    def _snapshot_view(self, snapshot: dict[str, Any]) -> dict[str, Any]:
        elapsed = self.clock() - snapshot["_since"]
        if snapshot["status"] in ("queued", "saving"):
            if elapsed >= self.snapshot_seconds:
                snapshot["status"] = "active"
                snapshot["size"] = snapshot["_size"]
            elif elapsed >= 1:
                snapshot["status"] = "saving"
        return {k: v for k, v in snapshot.items() if not k.startswith("_")}

    def instance_status(self, instance: dict[str, Any]) -> None:
        """Move a stopping instance to ``SHUTOFF`` when its time has come (``_view`` calls)."""
        stop_at = instance.get("_stop_at")
        if stop_at is not None and self.clock() >= stop_at and instance["status"] == "ACTIVE":
            instance["status"] = "SHUTOFF"

    def boot_image_error(
        self, region: str, image_id: str | None, flavor: dict[str, Any]
    ) -> EmuResponse | None:
        """400 when ``image_id`` is neither a public image nor an active snapshot in ``region``
        whose ``minDisk`` fits the flavour's disk."""
        if image_id is None:
            return None
        if any(i["id"] == image_id and i["region"] == region for i in self.images):
            return None
        snapshot = self.snapshots.get(image_id)
        if snapshot is not None and snapshot["region"] == region:
            if snapshot["minDisk"] > flavor["disk"]:
                return self.error(400, "", f"Flavor disk is smaller than image {image_id} minDisk")
            if self._snapshot_view(snapshot)["status"] == "active":
                return None
            return self.error(400, "", f"Image {image_id} is not active")
        return self.error(400, "", f"Image {image_id} does not exist in region {region}")

    def catalog_snapshot_addon(self) -> dict[str, Any]:
        return {
            "planCode": "snapshot.consumption",
            "product": "publiccloud-snapshot",
            "pricingType": "consumption",
            "pricings": [
                {
                    "capacities": ["consumption"],
                    "interval": 1,
                    "intervalUnit": "hour",
                    "price": SNAPSHOT_HOURLY,
                    "tax": 0,
                    "description": "Snapshot storage, per GB and hour",
                }
            ],
        }

    # -- routes --------------------------------------------------------------------------------

    @route("POST", _PROJECT + "/instance/{instanceId}/stop")
    def stop_instance(self, request: EmuRequest) -> EmuResponse:
        found = self._instance(request)
        if isinstance(found, EmuResponse):
            return found
        self._view(found)
        if found["status"] == "SHUTOFF":
            return json_response(200, None)
        if found["status"] != "ACTIVE":
            return self.error(400, "", f"Instance is {found['status']}, it cannot be stopped")
        found.setdefault("_stop_at", self.clock() + self.stop_seconds)
        return json_response(200, None)

    @route("POST", _PROJECT + "/instance/{instanceId}/snapshot")
    def snapshot_instance(self, request: EmuRequest) -> EmuResponse:
        found = self._instance(request)
        if isinstance(found, EmuResponse):
            return found
        busy = [
            s
            for s in self.snapshots.values()
            if s["_instance"] == found["id"] and self._snapshot_view(s)["status"] != "active"
        ]
        if busy:
            return self.error(409, "", "A snapshot of this instance is already in progress")
        flavor = next(f for f in self.flavors if f["id"] == found["flavorId"])
        now = self.clock()
        sid = str(uuid.uuid4())
        self.snapshots[sid] = {
            "id": sid,
            "name": request.json()["snapshotName"],
            "region": found["region"],
            "status": "queued",
            "size": 0,
            "minDisk": flavor["disk"],
            "minRam": 0,
            "creationDate": self._iso(now),
            "planCode": "snapshot.consumption",
            "visibility": "private",
            "type": "linux",
            "user": "ubuntu",
            "flavorType": None,
            "tags": None,
            "_since": now,
            "_size": round(flavor["disk"] * self.snapshot_used_fraction, 2),
            "_instance": found["id"],
        }
        return json_response(200, None)

    @route("GET", _PROJECT + "/snapshot")
    def list_snapshots(self, request: EmuRequest) -> EmuResponse:
        if error := self._project(request):
            return error
        region = request.arg("region")
        items = [
            self._snapshot_view(s)
            for s in self.snapshots.values()
            if not region or s["region"] == region
        ]
        return json_response(200, items)

    def _snapshot(self, request: EmuRequest) -> dict[str, Any] | EmuResponse:
        if error := self._project(request):
            return error
        snapshot = self.snapshots.get(request.params["imageId"])
        if snapshot is None:
            return self.error(404, "", f"Snapshot {request.params['imageId']} not found")
        return snapshot

    @route("GET", _PROJECT + "/snapshot/{imageId}")
    def get_snapshot(self, request: EmuRequest) -> EmuResponse:
        found = self._snapshot(request)
        if isinstance(found, EmuResponse):
            return found
        return json_response(200, self._snapshot_view(found))

    @route("DELETE", _PROJECT + "/snapshot/{imageId}")
    def delete_snapshot(self, request: EmuRequest) -> EmuResponse:
        found = self._snapshot(request)
        if isinstance(found, EmuResponse):
            return found
        view = self._snapshot_view(found)
        del self.snapshots[found["id"]]
        return json_response(200, view)
