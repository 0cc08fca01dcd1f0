"""DigitalOcean emulator: droplet actions (power off, snapshot), snapshot images and tags.

Mixed into ``DigitalOceanEmulator``. Behaviour:
- ``POST /v2/droplets/{id}/actions`` ``power_off``/``power_on``/``snapshot`` answer an
  ``in-progress`` action that completes ``action_seconds`` (power) or ``snapshot_seconds``
  later (``GET /v2/actions/{id}``); while one runs, another is refused with DigitalOcean's 422
  "Droplet already has a pending event". A completed ``power_off`` leaves the droplet ``off``.
- A completed snapshot is a private image (``type: snapshot``, no tags) whose
  ``size_gigabytes`` is the droplet's disk × ``snapshot_used_fraction`` and ``min_disk_size``
  the disk; it is listed by ``GET /v2/droplets/{id}/snapshots`` and ``GET /v2/images``
  (``private``, ``tag_name``, ``type`` filters), read and deleted under ``/v2/images/{id}``
  (deleted: 404), and a droplet can be created from its integer id (too small a size: 422).
- ``POST /v2/tags`` creates a tag (an existing one is answered as created);
  ``POST /v2/tags/{tag}/resources`` tags images and droplets (unknown tag or resource: 404).
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

from tests.emulators.base import EmuRequest, EmuResponse, json_response, route

if TYPE_CHECKING:
    from tests.emulators.digitalocean import DigitalOceanEmulator as _Base
else:
    _Base = object

_PENDING = "Droplet already has a pending event."


class DigitalOceanImagesMixin(_Base):
    """Actions, snapshot images and tags for ``DigitalOceanEmulator``."""

    action_seconds: float = 5.0
    snapshot_seconds: float = 60.0
    snapshot_used_fraction: float = 0.25

    def _init_images(self) -> None:
        self.actions: dict[int, dict[str, Any]] = {}
        self.images: dict[int, dict[str, Any]] = {}
        self.tags: set[str] = set()
        self._image_ids = itertools.count(185000000)

    # -- state ---------------------------------------------------------------------------------

    def _settle(self) -> None:
        """Complete the actions whose time has come (and what they do)."""
        now = self.clock()
        for action in self.actions.values():
            if action["status"] != "in-progress" or now < action["_done_at"]:
                continue
            action["status"] = "completed"
            action["completed_at"] = self._iso(action["_done_at"])
            droplet = self.droplets.get(action["resource_id"])
            if droplet is None:
                continue
            if action["type"] == "power_off":
                droplet["status"] = "off"
            elif action["type"] == "power_on":
                droplet["status"] = "active"
            elif action["type"] == "snapshot":
                self._snapshot(droplet, action["_name"], action["_done_at"])

    def _snapshot(self, droplet: dict[str, Any], name: str, when: float) -> None:
        iid = next(self._image_ids)
        self.images[iid] = {
            "id": iid,
            "name": name,
            "distribution": "Ubuntu",
            "slug": None,
            "public": False,
            "regions": [droplet["region"]["slug"]],
            "created_at": self._iso(when),
            "type": "snapshot",
            "min_disk_size": droplet["disk"],
            "size_gigabytes": round(droplet["disk"] * self.snapshot_used_fraction, 2),
            "description": "",
            "tags": [],
            "status": "available",
            "error_message": "",
            "_droplet": droplet["id"],
        }
        droplet["snapshot_ids"].append(iid)

    @staticmethod
    def _public(item: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in item.items() if not k.startswith("_")}

    def _not_found(self) -> EmuResponse:
        return self.error(404, "not_found", "The resource you were accessing could not be found.")

    def image_for_droplet(
        self, ref: Any, disk: int, region: str
    ) -> dict[str, Any] | EmuResponse | None:
        """The snapshot a droplet is created from (``ref`` an integer id), an error when it
        cannot be used (unknown, not in ``region``, larger than the size's disk), or None for a
        public image slug."""
        if not isinstance(ref, int):
            return None
        self._settle()
        image = self.images.get(ref)
        if image is None or region not in image["regions"]:
            return self.error(
                422, "unprocessable_entity", "You specified an invalid image for Droplet creation."
            )
        if image["min_disk_size"] > disk:
            return self.error(
                422, "unprocessable_entity", "The image's min_disk_size exceeds the size's disk."
            )
        return self._public(image)

    # -- routes --------------------------------------------------------------------------------

    @route("POST", "/v2/droplets/{droplet_id}/actions")
    def droplet_action(self, request: EmuRequest) -> EmuResponse:
        self._settle()
        found = self._find(request)
        if isinstance(found, EmuResponse):
            return found
        body = request.json() or {}
        kind = body.get("type")
        if kind not in ("power_off", "power_on", "snapshot"):
            return self.error(422, "unprocessable_entity", f"The emulator has no {kind} action.")
        if any(
            a["resource_id"] == found["id"] and a["status"] == "in-progress"
            for a in self.actions.values()
        ):
            return self.error(422, "unprocessable_entity", _PENDING)
        now = self.clock()
        seconds = self.snapshot_seconds if kind == "snapshot" else self.action_seconds
        action_id = next(self._action_ids)
        self.actions[action_id] = {
            "id": action_id,
            "status": "in-progress",
            "type": kind,
            "started_at": self._iso(now),
            "completed_at": None,
            "resource_id": found["id"],
            "resource_type": "droplet",
            "region": found["region"],
            "region_slug": found["region"]["slug"],
            "_done_at": now + seconds,
            "_name": body.get("name") or f"{found['name']}-{int(now)}",
        }
        return json_response(201, {"action": self._public(self.actions[action_id])})

    @route("GET", "/v2/actions/{action_id}")
    def get_action(self, request: EmuRequest) -> EmuResponse:
        self._settle()
        action = self.actions.get(int(request.params["action_id"]))
        if action is None:
            return self._not_found()
        return json_response(200, {"action": self._public(action)})

    @route("GET", "/v2/droplets/{droplet_id}/snapshots")
    def droplet_snapshots(self, request: EmuRequest) -> EmuResponse:
        self._settle()
        droplet_id = int(request.params["droplet_id"])
        if droplet_id not in self.droplets:
            return self._not_found()
        items = [
            {k: i[k] for k in ("id", "name", "created_at", "regions", "min_disk_size",
                               "size_gigabytes", "type")}
            for i in self.images.values()
            if i["_droplet"] == droplet_id
        ]  # fmt: skip
        return self._page(request, "snapshots", items)

    @route("GET", "/v2/images")
    def list_images(self, request: EmuRequest) -> EmuResponse:
        self._settle()
        tag = request.arg("tag_name")
        kind = request.arg("type")
        if kind in ("application", "distribution"):
            items: list[dict[str, Any]] = []  # the emulator keeps no public images
        else:
            items = [self._public(i) for i in self.images.values() if not tag or tag in i["tags"]]
        return self._page(request, "images", items)

    @route("GET", "/v2/images/{image_id}")
    def get_image(self, request: EmuRequest) -> EmuResponse:
        self._settle()
        image = self.images.get(int(request.params["image_id"]))
        if image is None:
            return self._not_found()
        return json_response(200, {"image": self._public(image)})

    @route("DELETE", "/v2/images/{image_id}")
    def delete_image(self, request: EmuRequest) -> EmuResponse:
        image = self.images.pop(int(request.params["image_id"]), None)
        if image is None:
            return self._not_found()
        droplet = self.droplets.get(image["_droplet"])
        if droplet is not None and image["id"] in droplet["snapshot_ids"]:
            droplet["snapshot_ids"].remove(image["id"])
        return EmuResponse(204)

    @route("POST", "/v2/tags")
    def create_tag(self, request: EmuRequest) -> EmuResponse:
        name = (request.json() or {})["name"]
        self.tags.add(name)
        return json_response(201, {"tag": {"name": name, "resources": {"count": 0}}})

    @route("POST", "/v2/tags/{tag_id}/resources")
    def tag_resources(self, request: EmuRequest) -> EmuResponse:
        tag = request.params["tag_id"]
        if tag not in self.tags:
            return self._not_found()
        for resource in (request.json() or {})["resources"]:
            kind, rid = resource.get("resource_type"), resource.get("resource_id", "")
            target = {"image": self.images, "droplet": self.droplets}.get(kind or "", {})
            item = target.get(int(rid)) if rid.isdigit() else None
            if item is None:
                return self._not_found()
            if tag not in item["tags"]:
                item["tags"].append(tag)
        return EmuResponse(204)
