"""Hetzner emulator: the server and action routes (mixed into ``HetznerEmulator``; its docstring
describes the behaviour)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tests.emulators.base import EmuRequest, EmuResponse, json_response, route
from tests.emulators.hetzner_data import _NAME_RE, LOCATIONS, MAX_USER_DATA

if TYPE_CHECKING:
    from tests.emulators.hetzner import HetznerEmulator as _Base
else:
    _Base = object


class HetznerServersMixin(_Base):
    """``/servers`` and ``/actions`` routes of ``HetznerEmulator``."""

    # -- routes: servers -----------------------------------------------------------------------

    @route("GET", "/v1/servers")
    def list_servers(self, req: EmuRequest) -> EmuResponse:
        try:
            selector = self._selector(req)
        except ValueError as exc:
            return self._invalid({"label_selector": [str(exc)]})
        statuses = req.query.get("status") or []
        items = []
        for sid in sorted(self.project.servers):
            server = self._live(sid)
            if server is None:
                continue
            if req.arg("name") not in (None, server.name):
                continue
            if selector is not None and not selector.matches(server.labels):
                continue
            if statuses and self._status(server) not in statuses:
                continue
            items.append(self._server_json(server))
        return self._paginate(req, "servers", items)

    @route("GET", "/v1/servers/{id}")
    def get_server(self, req: EmuRequest) -> EmuResponse:
        server = self._live(int(req.params["id"]))
        if server is None:
            return self.error(404, "not_found", "server not found")
        return json_response(200, {"server": self._server_json(server)})

    @route("POST", "/v1/servers")
    def create_server(self, req: EmuRequest) -> EmuResponse:
        body = req.json()
        name = body["name"]
        errors: dict[str, list[str]] = {}
        if not _NAME_RE.match(name):
            errors["name"] = ["must be a valid hostname"]
        user_data = body.get("user_data")
        if user_data is not None and len(user_data.encode()) > MAX_USER_DATA:
            errors["user_data"] = [f"Length must be between 0 and {MAX_USER_DATA}."]
        if label_errors := self._label_errors(body.get("labels")):
            errors["labels"] = label_errors
        st = self._find(self.server_types, body["server_type"])
        if st is None:
            errors["server_type"] = ["server type not found"]
        location = body.get("location") or "fsn1"
        if body.get("location") and body.get("datacenter"):
            errors["location"] = ["must not be used together with datacenter"]
        loc = self._find(LOCATIONS, location)
        if loc is None:
            errors["location"] = ["location not found"]
        image_ref = body["image"]
        if not any(str(i["id"]) == str(image_ref) or i["name"] == image_ref for i in self.images):
            errors["image"] = ["image not found"]
        elif not self.image_usable(image_ref):
            errors["image"] = ["image is not available (still being created)"]
        elif st is not None and self.image_disk(image_ref) > st["disk"]:
            errors["image"] = ["the image's disk is larger than the server type's disk"]
        key_ids = []
        for ref in body.get("ssh_keys") or []:
            found = self._find(self.project.ssh_keys.values(), ref)
            if found is None:
                errors["ssh_keys"] = [f"ssh key {ref} not found"]
            else:
                key_ids.append(found["id"])
        fw_ids = []
        for item in body.get("firewalls") or []:
            if item["firewall"] not in self.project.firewalls:
                errors["firewalls"] = [f"firewall {item['firewall']} not found"]
            else:
                fw_ids.append(item["firewall"])
        if errors:
            return self._invalid(errors)
        assert st is not None and loc is not None
        if any(s.name == name for s in self.project.servers.values() if s.deleted_at is None):
            return self._unique(name)
        if (
            sum(1 for s in self.project.servers.values() if s.deleted_at is None)
            >= self.server_limit
        ):
            return self.error(
                403,
                "resource_limit_exceeded",
                "server limit exceeded",
                {"limits": [{"name": "server_limit"}]},
            )
        if not any(
            loc_entry["name"] == loc["name"] and loc_entry["available"]
            for loc_entry in st["locations"]
        ):
            return self.error(
                412,
                "resource_unavailable",
                f"server type {st['name']} is unavailable in {loc['name']}: error during placement",
            )
        if not any(
            (str(i["id"]) == str(image_ref) or i["name"] == image_ref)
            and i["architecture"] == st["architecture"]
            for i in self.images
        ):
            return self._invalid({"image": ["image architecture does not match server type"]})
        server, create, start = self._new_server(
            name=name,
            server_type=st["name"],
            location=loc["name"],
            image=image_ref,
            labels=body.get("labels") or {},
            user_data=user_data,
            ssh_keys=key_ids,
            firewalls=fw_ids,
        )
        now = self.clock()
        return json_response(
            201,
            {
                "server": self._server_json(server),
                "action": create.json(now),
                "next_actions": [start.json(now)] if body.get("start_after_create", True) else [],
                "root_password": None if key_ids else "emulated-root-password",
            },
        )

    @route("DELETE", "/v1/servers/{id}")
    def delete_server(self, req: EmuRequest) -> EmuResponse:
        server = self._live(int(req.params["id"]))
        if server is None:
            return self.error(404, "not_found", "server not found")
        if server.deleted_at is None:
            server.deleted_at = self.clock()
        action = self._action(
            "delete_server", [{"id": server.id, "type": "server"}], self.delete_seconds
        )
        return json_response(200, {"action": action.json(self.clock())})

    # -- routes: actions -----------------------------------------------------------------------

    @route("GET", "/v1/actions/{id}")
    def get_action(self, req: EmuRequest) -> EmuResponse:
        action = self.project.actions.get(int(req.params["id"]))
        if action is None:
            return self.error(404, "not_found", "action not found")
        return json_response(200, {"action": action.json(self.clock())})

    @route("GET", "/v1/servers/{id}/actions/{action_id}")
    def get_server_action(self, req: EmuRequest) -> EmuResponse:
        action = self.project.actions.get(int(req.params["action_id"]))
        sid = int(req.params["id"])
        if action is None or not any(r["id"] == sid for r in action.resources):
            return self.error(404, "not_found", "action not found")
        return json_response(200, {"action": action.json(self.clock())})
