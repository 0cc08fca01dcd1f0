"""Hetzner emulator: SSH keys, firewalls and the VM's metadata service (mixed into
``HetznerEmulator``; its docstring describes the behaviour)."""

from __future__ import annotations

import ipaddress
import re
from typing import TYPE_CHECKING, Any

from tests.emulators.base import EmuRequest, EmuResponse, json_response, route
from tests.emulators.hetzner_data import fingerprint, iso

if TYPE_CHECKING:
    from tests.emulators.hetzner import HetznerEmulator as _Base
else:
    _Base = object


class HetznerProjectMixin(_Base):
    """SSH keys, firewalls and metadata routes of ``HetznerEmulator``."""

    # -- routes: ssh keys ----------------------------------------------------------------------

    @route("GET", "/v1/ssh_keys")
    def list_ssh_keys(self, req: EmuRequest) -> EmuResponse:
        try:
            selector = self._selector(req)
        except ValueError as exc:
            return self._invalid({"label_selector": [str(exc)]})
        items = [
            k
            for k in self.project.ssh_keys.values()
            if req.arg("name") in (None, k["name"])
            and req.arg("fingerprint") in (None, k["fingerprint"])
            and (selector is None or selector.matches(k["labels"]))
        ]
        return self._paginate(req, "ssh_keys", items)

    @route("POST", "/v1/ssh_keys")
    def create_ssh_key(self, req: EmuRequest) -> EmuResponse:
        body = req.json()
        key = body["public_key"].strip()
        if not re.match(r"^(ssh-(ed25519|rsa)|ecdsa-sha2-nistp\d+) [A-Za-z0-9+/=]+( .*)?$", key):
            return self._invalid({"public_key": ["invalid public key"]})
        try:
            fp = fingerprint(key)
        except ValueError:
            return self._invalid({"public_key": ["invalid public key"]})
        for existing in self.project.ssh_keys.values():
            if existing["name"] == body["name"]:
                return self._unique(body["name"], "name")
            if existing["fingerprint"] == fp:
                return self.error(
                    409,
                    "uniqueness_error",
                    "SSH key with the same fingerprint already exists",
                    {"fields": [{"name": "public_key"}]},
                )
        if errors := self._label_errors(body.get("labels")):
            return self._invalid({"labels": errors})
        sid = next(self._ids)
        record = {
            "id": sid,
            "name": body["name"],
            "fingerprint": fp,
            "public_key": key,
            "labels": dict(body.get("labels") or {}),
            "created": iso(self.clock()),
        }
        self.project.ssh_keys[sid] = record
        return json_response(201, {"ssh_key": record})

    @route("DELETE", "/v1/ssh_keys/{id}")
    def delete_ssh_key(self, req: EmuRequest) -> EmuResponse:
        if self.project.ssh_keys.pop(int(req.params["id"]), None) is None:
            return self.error(404, "not_found", "ssh key not found")
        return EmuResponse(204)

    # -- routes: firewalls ---------------------------------------------------------------------

    @route("GET", "/v1/firewalls")
    def list_firewalls(self, req: EmuRequest) -> EmuResponse:
        try:
            selector = self._selector(req)
        except ValueError as exc:
            return self._invalid({"label_selector": [str(exc)]})
        items = [
            self._firewall_json(f)
            for f in self.project.firewalls.values()
            if req.arg("name") in (None, f["name"])
            and (selector is None or selector.matches(f["labels"]))
        ]
        return self._paginate(req, "firewalls", items)

    def _firewall_json(self, fw: dict[str, Any]) -> dict[str, Any]:
        applied = [
            {"type": "server", "server": {"id": s.id}}
            for s in self.project.servers.values()
            if fw["id"] in s.firewalls and s.deleted_at is None
        ]
        return {**fw, "applied_to": applied}

    @route("POST", "/v1/firewalls")
    def create_firewall(self, req: EmuRequest) -> EmuResponse:
        body = req.json()
        if any(f["name"] == body["name"] for f in self.project.firewalls.values()):
            return self._unique(body["name"])
        if errors := self._label_errors(body.get("labels")):
            return self._invalid({"labels": errors})
        rules = []
        for rule in body.get("rules") or []:
            ips = rule.get("source_ips" if rule["direction"] == "in" else "destination_ips") or []
            try:
                for ip in ips:
                    ipaddress.ip_network(ip, strict=False)
            except ValueError:
                return self._invalid({"rules": [f"invalid CIDR in {ips!r}"]})
            if rule["protocol"] in ("tcp", "udp") and not rule.get("port"):
                return self._invalid({"rules": ["port is required for tcp and udp"]})
            rules.append(
                {
                    "description": rule.get("description"),
                    "direction": rule["direction"],
                    "source_ips": rule.get("source_ips") or [],
                    "destination_ips": rule.get("destination_ips") or [],
                    "protocol": rule["protocol"],
                    "port": rule.get("port"),
                }
            )
        fid = next(self._ids)
        record = {
            "id": fid,
            "name": body["name"],
            "labels": dict(body.get("labels") or {}),
            "created": iso(self.clock()),
            "rules": rules,
        }
        self.project.firewalls[fid] = record
        action = self._action("set_firewall_rules", [{"id": fid, "type": "firewall"}], 1.0)
        return json_response(
            201,
            {"firewall": self._firewall_json(record), "actions": [action.json(self.clock())]},
        )

    # -- metadata service (not part of the API) ------------------------------------------------

    @route("GET", "/_metadata/{server_id}/hetzner/v1/metadata")
    def metadata_summary(self, req: EmuRequest) -> EmuResponse:
        server = self._live(int(req.params["server_id"]))
        if server is None:
            return EmuResponse(404, "not found\n")
        return EmuResponse(
            200,
            f"availability-zone: {server.location['name']}-dc14\nhostname: {server.name}\n"
            f"instance-id: {server.id}\npublic-ipv4: {server.ipv4}\n"
            f"region: {server.location['network_zone']}\n",
        )

    @route("GET", "/_metadata/{server_id}/hetzner/v1/metadata/{key}")
    def metadata_key(self, req: EmuRequest) -> EmuResponse:
        server = self._live(int(req.params["server_id"]))
        if server is None:
            return EmuResponse(404, "not found\n")
        values = {
            "instance-id": str(server.id),
            "hostname": server.name,
            "public-ipv4": server.ipv4,
            "availability-zone": f"{server.location['name']}-dc14",
            "region": server.location["network_zone"],
        }
        value = values.get(req.params["key"])
        return EmuResponse(404, "not found\n") if value is None else EmuResponse(200, value)
