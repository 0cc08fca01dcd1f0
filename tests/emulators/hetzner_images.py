"""Hetzner emulator: power-off and snapshot images (``create_image``, ``/images``), spec-checked.

Mixed into ``HetznerEmulator``. Behaviour:
- ``POST /servers/{id}/actions/poweroff``: the server goes ``stopping`` for ``poweroff_seconds``
  (its action runs that long), then ``off``.
- ``POST /servers/{id}/actions/create_image``: a snapshot image appears at once, ``creating``
  with ``image_size`` null, and turns ``available`` ``image_seconds`` later (its action ends
  then) with ``image_size`` = the server's disk × ``image_used_fraction`` (what the real API
  bills: the compressed used part of the disk) and ``disk_size`` = the server's disk. While
  another action of the server still runs the server is locked (423 ``locked``).
- ``GET /images`` filters by ``type``, ``status``, ``name``, ``architecture`` and the full
  ``label_selector``; ``GET/DELETE /images/{id}``: deleted images are gone (404); system and
  app images cannot be deleted (422).
- Servers can be created from an available snapshot by its id; one still ``creating`` is
  refused (422 ``invalid_input``), like an unknown image.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

from tests.emulators.base import EmuRequest, EmuResponse, json_response, route

if TYPE_CHECKING:
    from tests.emulators.hetzner import HetznerEmulator as _Base
else:
    _Base = object


class HetznerImagesMixin(_Base):
    """Snapshot images and power-off for ``HetznerEmulator`` (state lives on the emulator)."""

    poweroff_seconds: float = 2.0
    image_seconds: float = 30.0
    image_used_fraction: float = 0.3

    def _init_images(self) -> None:
        self._image_ids = itertools.count(310000000)
        #: image id → the time it becomes available (snapshots only)
        self._image_ready: dict[int, float] = {}

    # -- helpers -------------------------------------------------------------------------------

    def _image_view(self, image: dict[str, Any]) -> dict[str, Any]:
        ready = self._image_ready.get(image["id"])
        if ready is not None and image["status"] == "creating" and self.clock() >= ready:
            image["status"] = "available"
            image["image_size"] = image.pop("_size")
        return {k: v for k, v in image.items() if not k.startswith("_")}

    def _busy(self, server_id: int) -> bool:
        now = self.clock()
        return any(
            a.started + a.duration > now and any(r["id"] == server_id for r in a.resources)
            for a in self.project.actions.values()
            if a.command not in ("create_server", "start_server")
        )

    def _locked(self) -> EmuResponse:
        return self.error(423, "locked", "server is locked: an action is already running")

    def image_usable(self, ref: Any) -> bool:
        """Whether ``ref`` names an image a server can be created from now."""
        for image in self.images:
            if str(image["id"]) == str(ref) or (image["name"] is not None and image["name"] == ref):
                return self._image_view(image)["status"] == "available"
        return False

    def add_snapshot(self, labels: dict[str, str], size: float = 3.5, disk: int = 40) -> int:
        """An available snapshot made outside the test's provider (another tool, the console)."""
        with self.lock:
            iid = next(self._image_ids)
            self.images.append(
                {
                    "id": iid,
                    "type": "snapshot",
                    "status": "available",
                    "name": None,
                    "description": f"snapshot-{iid}",
                    "image_size": size,
                    "disk_size": disk,
                    "created": _iso(self.clock()),
                    "created_from": {"id": 1, "name": "elsewhere"},
                    "bound_to": None,
                    "os_flavor": "ubuntu",
                    "os_version": "24.04",
                    "rapid_deploy": False,
                    "protection": {"delete": False},
                    "deprecated": None,
                    "deleted": None,
                    "labels": dict(labels),
                    "architecture": "x86",
                }
            )
            return iid

    def image_disk(self, ref: Any) -> float:
        """The disk size (GB) an image needs; 0 when unknown."""
        for image in self.images:
            if str(image["id"]) == str(ref) or (image["name"] is not None and image["name"] == ref):
                return float(image["disk_size"] or 0)
        return 0.0

    # -- routes --------------------------------------------------------------------------------

    @route("POST", "/v1/servers/{id}/actions/poweroff")
    def poweroff_server(self, req: EmuRequest) -> EmuResponse:
        server = self._live(int(req.params["id"]))
        if server is None:
            return self.error(404, "not_found", "server not found")
        if self._busy(server.id):
            return self._locked()
        if server.off_at is None:
            server.off_at = self.clock() + self.poweroff_seconds
        action = self._action(
            "stop_server", [{"id": server.id, "type": "server"}], self.poweroff_seconds
        )
        return json_response(201, {"action": action.json(self.clock())})

    @route("POST", "/v1/servers/{id}/actions/create_image")
    def create_image(self, req: EmuRequest) -> EmuResponse:
        server = self._live(int(req.params["id"]))
        if server is None:
            return self.error(404, "not_found", "server not found")
        body = req.json() or {}
        if errors := self._label_errors(body.get("labels")):
            return self._invalid({"labels": errors})
        if self._busy(server.id):
            return self._locked()
        now = self.clock()
        iid = next(self._image_ids)
        disk = server.server_type["disk"]
        image = {
            "id": iid,
            "type": body.get("type", "snapshot"),
            "status": "creating",
            "name": None,
            "description": body.get("description") or f"{server.name}-{iid}",
            "image_size": None,
            "disk_size": disk,
            "created": _iso(now),
            "created_from": {"id": server.id, "name": server.name},
            "bound_to": server.id if body.get("type") == "backup" else None,
            "os_flavor": server.image["os_flavor"],
            "os_version": server.image["os_version"],
            "rapid_deploy": False,
            "protection": {"delete": False},
            "deprecated": None,
            "deleted": None,
            "labels": dict(body.get("labels") or {}),
            "architecture": server.server_type["architecture"],
            "_size": round(disk * self.image_used_fraction, 2),
        }
        self.images.append(image)
        self._image_ready[iid] = now + self.image_seconds
        action = self._action(
            "create_image",
            [{"id": server.id, "type": "server"}, {"id": iid, "type": "image"}],
            self.image_seconds,
        )
        return json_response(
            201, {"image": self._image_view(image), "action": action.json(self.clock())}
        )

    @route("GET", "/v1/images")
    def list_images(self, req: EmuRequest) -> EmuResponse:
        try:
            selector = self._selector(req)
        except ValueError as exc:
            return self._invalid({"label_selector": [str(exc)]})
        types = req.query.get("type") or []
        statuses = req.query.get("status") or []
        items = []
        for image in self.images:
            view = self._image_view(image)
            if (
                (not types or view["type"] in types)
                and (not statuses or view["status"] in statuses)
                and req.arg("name") in (None, view["name"])
                and req.arg("architecture") in (None, view["architecture"])
                and (selector is None or selector.matches(view["labels"]))
            ):
                items.append(view)
        return self._paginate(req, "images", items)

    def _image(self, req: EmuRequest) -> dict[str, Any] | None:
        try:
            iid = int(req.params["id"])
        except ValueError:
            return None
        return next((i for i in self.images if i["id"] == iid), None)

    @route("GET", "/v1/images/{id}")
    def get_image(self, req: EmuRequest) -> EmuResponse:
        image = self._image(req)
        if image is None:
            return self.error(404, "not_found", "image not found")
        return json_response(200, {"image": self._image_view(image)})

    @route("DELETE", "/v1/images/{id}")
    def delete_image(self, req: EmuRequest) -> EmuResponse:
        image = self._image(req)
        if image is None:
            return self.error(404, "not_found", "image not found")
        if image["type"] not in ("snapshot", "backup"):
            return self._invalid({"id": ["only snapshots and backups can be deleted"]})
        self.images.remove(image)
        self._image_ready.pop(image["id"], None)
        return EmuResponse(204)


def _iso(ts: float) -> str:
    from tests.emulators.hetzner import iso

    return iso(ts)
