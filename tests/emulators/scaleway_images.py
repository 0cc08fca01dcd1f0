"""Scaleway emulator: volume snapshots and images (``/snapshots``, ``/images``), spec-checked.

Mixed into ``ScalewayEmulator``. Behaviour:
- ``POST /snapshots`` of a volume: a local SSD (``l_ssd``) volume of a server that is not
  stopped is refused (412 ``precondition_failed``); the snapshot is ``snapshotting`` for
  ``snapshot_seconds``, then ``available``; its ``size`` is the volume's (what is billed).
- ``POST /images`` from an available snapshot (``root_volume``; one still snapshotting: 400),
  ``creating`` for ``image_seconds`` then ``available``; ``GET /images`` filters by ``tags`` (all
  of the comma-separated ones), ``project``, ``public``, ``name``; ``GET``/``DELETE`` by id.
- A snapshot an image uses cannot be deleted (400, ``precondition_failed``); deleted snapshots
  and images are gone (404 ``unknown_resource``).
- A server created with an image UUID boots from it (unknown: 404; not available: 400).
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from tests.emulators.base import EmuRequest, EmuResponse, json_response, route

if TYPE_CHECKING:
    from tests.emulators.scaleway import ScalewayEmulator as _Base
else:
    _Base = object

_BASE = "/instance/v1/zones/{zone}"


class ScalewayImagesMixin(_Base):
    """Snapshots and images for ``ScalewayEmulator``."""

    snapshot_seconds: float = 40.0
    image_seconds: float = 2.0

    def _init_images(self) -> None:
        self.snapshots: dict[tuple[str, str], dict[str, Any]] = {}
        self.images: dict[tuple[str, str], dict[str, Any]] = {}

    # -- state ---------------------------------------------------------------------------------

    def _settle(self) -> None:
        now = self.clock()
        for snapshot in self.snapshots.values():
            if snapshot["state"] == "snapshotting" and now >= snapshot["_ready"]:
                snapshot["state"] = "available"
        for image in self.images.values():
            if image["state"] == "creating" and now >= image["_ready"]:
                image["state"] = "available"

    def _unknown(self, resource: str, rid: str) -> EmuResponse:
        return self.error(
            404,
            "unknown_resource",
            f'"{rid}" not found',
            {"resource": resource, "resource_id": rid},
        )

    def _image_json(self, image: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in image.items() if not k.startswith("_")}

    def boot_image(self, zone: str, ref: str) -> dict[str, Any] | EmuResponse | None:
        """The image a new server boots from when ``ref`` is a UUID, an error when it cannot
        be used, or None for a label (``ubuntu_noble``)."""
        try:
            uuid.UUID(ref)
        except ValueError:
            return None
        self._settle()
        image = self.images.get((zone, ref))
        if image is None:
            return self._unknown("instance_image", ref)
        if image["state"] != "available":
            return self.error(400, "invalid_request_error", f"image {ref} is not available")
        return {"id": image["id"], "name": image["name"]}

    # -- routes --------------------------------------------------------------------------------

    @route("POST", _BASE + "/snapshots")
    def create_snapshot(self, request: EmuRequest) -> EmuResponse:
        self._tick()
        zone = request.params["zone"]
        body = request.json() or {}
        volume_id = body.get("volume_id") or ""
        volume = self.volumes.get((zone, volume_id))
        if volume is None:
            return self._unknown("instance_volume", volume_id)
        server = next(
            (
                s
                for (z, _), s in self.servers.items()
                if z == zone and any(v["id"] == volume_id for v in s["volumes"].values())
            ),
            None,
        )
        if volume["volume_type"] == "l_ssd" and server is not None and server["state"] != "stopped":
            return self.error(
                412,
                "precondition_failed",
                "a local volume can only be snapshotted while its server is stopped",
                {"precondition": "resource_still_in_use"},
            )
        now = self.clock()
        sid = str(uuid.uuid4())
        snapshot = {
            "id": sid,
            "name": body.get("name") or f"snapshot-{sid[:8]}",
            "organization": body.get("project", ""),
            "project": body.get("project", ""),
            "tags": list(body.get("tags") or []),
            "volume_type": volume["volume_type"],
            "size": volume["size"],
            "state": "snapshotting",
            "base_volume": {"id": volume["id"], "name": volume["name"]},
            "creation_date": self._iso(now),
            "modification_date": self._iso(now),
            "zone": zone,
            "_ready": now + self.snapshot_seconds,
        }
        self.snapshots[(zone, sid)] = snapshot
        task = {
            "id": str(uuid.uuid4()),
            "description": "volume_snapshot",
            "status": "pending",
            "progress": 0,
            "href_from": "/snapshots",
            "href_result": f"snapshots/{sid}",
            "zone": zone,
        }
        return json_response(201, {"snapshot": self._image_json(snapshot), "task": task})

    @route("GET", _BASE + "/snapshots/{snapshot_id}")
    def get_snapshot(self, request: EmuRequest) -> EmuResponse:
        self._settle()
        key = (request.params["zone"], request.params["snapshot_id"])
        snapshot = self.snapshots.get(key)
        if snapshot is None:
            return self._unknown("instance_snapshot", key[1])
        return json_response(200, {"snapshot": self._image_json(snapshot)})

    @route("DELETE", _BASE + "/snapshots/{snapshot_id}")
    def delete_snapshot(self, request: EmuRequest) -> EmuResponse:
        key = (request.params["zone"], request.params["snapshot_id"])
        if key not in self.snapshots:
            return self._unknown("instance_snapshot", key[1])
        users = [
            i["id"]
            for (z, _), i in self.images.items()
            if z == key[0]
            and key[1] in {v["id"] for v in [i["root_volume"], *i["extra_volumes"].values()]}
        ]
        if users:
            return self.error(
                400,
                "precondition_failed",
                f"snapshot is used by image {users[0]}",
                {"precondition": "resource_still_in_use"},
            )
        del self.snapshots[key]
        return EmuResponse(204)

    @route("POST", _BASE + "/images")
    def create_image(self, request: EmuRequest) -> EmuResponse:
        self._settle()
        zone = request.params["zone"]
        body = request.json() or {}
        snapshot = self.snapshots.get((zone, body["root_volume"]))
        if snapshot is None:
            return self._unknown("instance_snapshot", body["root_volume"])
        if snapshot["state"] != "available":
            return self.error(
                400, "invalid_request_error", f"snapshot {snapshot['id']} is not available"
            )
        now = self.clock()
        iid = str(uuid.uuid4())
        image = {
            "id": iid,
            "name": body.get("name") or f"image-{iid[:8]}",
            "arch": body["arch"],
            "creation_date": self._iso(now),
            "modification_date": self._iso(now),
            "extra_volumes": {},
            "from_server": "",
            "organization": body.get("project", ""),
            "public": bool(body.get("public", False)),
            "root_volume": {
                "id": snapshot["id"],
                "name": snapshot["name"],
                "size": snapshot["size"],
                "volume_type": snapshot["volume_type"],
            },
            "state": "creating",
            "project": body.get("project", ""),
            "tags": list(body.get("tags") or []),
            "zone": zone,
            "_ready": now + self.image_seconds,
        }
        self.images[(zone, iid)] = image
        return json_response(201, {"image": self._image_json(image)})

    @route("GET", _BASE + "/images")
    def list_images(self, request: EmuRequest) -> EmuResponse:
        self._settle()
        zone = request.params["zone"]
        wanted = [t for t in (request.arg("tags") or "").split(",") if t]
        project = request.arg("project")
        public = request.arg("public")
        items = [
            self._image_json(i)
            for (z, _), i in self.images.items()
            if z == zone
            and all(t in i["tags"] for t in wanted)
            and (not project or i["project"] == project)
            and (public is None or i["public"] == (public == "true"))
            and request.arg("name") in (None, i["name"])
        ]
        page = int(request.arg("page", "1") or 1)
        per_page = int(request.arg("per_page", "50") or 50)
        chunk = items[(page - 1) * per_page : page * per_page]
        return json_response(200, {"images": chunk}, {"X-Total-Count": str(len(items))})

    @route("GET", _BASE + "/images/{image_id}")
    def get_image(self, request: EmuRequest) -> EmuResponse:
        self._settle()
        key = (request.params["zone"], request.params["image_id"])
        image = self.images.get(key)
        if image is None:
            return self._unknown("instance_image", key[1])
        return json_response(200, {"image": self._image_json(image)})

    @route("DELETE", _BASE + "/images/{image_id}")
    def delete_image(self, request: EmuRequest) -> EmuResponse:
        key = (request.params["zone"], request.params["image_id"])
        if self.images.pop(key, None) is None:
            return self._unknown("instance_image", key[1])
        return EmuResponse(204)
