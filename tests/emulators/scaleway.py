"""Scaleway Instance API v1 emulator (servers, user data, actions, products), spec-validated.

Every request is checked against ``tests/specs/scaleway-instance-v1-2022.yml``. Servers are
created ``stopped``; ``poweron`` makes them ``starting`` and then ``running`` (public IPv4)
``boot_seconds`` later; ``terminate`` stops them and removes server and volumes
``stop_seconds`` later; ``DELETE`` is refused unless the server is stopped. ``max_servers``
refuses creates with a 403 ``quotas_exceeded``; types in ``out_of_stock`` are refused.
``poweroff`` makes a server ``stopping``, then ``stopped`` ``stop_seconds`` later. Snapshots and
images: see ``tests.emulators.scaleway_images``.

``MetadataServer`` is the instance-local metadata service at 169.254.42.42 stand-in: it answers
``/conf?format=json`` only to source ports below 1024, like Scaleway's.

Manual run: ``python -m tests.emulators.scaleway --port 8083 --secret-key K``.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.emulators.base import Emulator, EmuRequest, EmuResponse, json_response, route
from tests.emulators.scaleway_images import ScalewayImagesMixin

SECRET_KEY = "11111111-2222-4333-8444-555555555555"
PROJECT_ID = "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee"

# name → (ncpus, ram GiB, local disk GB, hourly EUR, monthly EUR, arch)
PRODUCTS: dict[str, tuple[int, int, int, float, float, str]] = {
    "DEV1-S": (2, 2, 20, 0.0088, 6.42, "x86_64"),
    "DEV1-M": (3, 4, 40, 0.0198, 14.45, "x86_64"),
    "PLAY2-NANO": (2, 4, 0, 0.0154, 11.24, "x86_64"),
    "GP1-XS": (4, 16, 150, 0.0910, 66.43, "x86_64"),
    "COPARM1-2C-8G": (2, 8, 0, 0.0426, 31.10, "arm"),
}
GIB = 2**30


class ScalewayEmulator(ScalewayImagesMixin, Emulator):
    """In-memory Scaleway Instance API.

    Attributes:
        secret_key: the X-Auth-Token accepted.
        servers: (zone, id) → server JSON.
        volumes: (zone, id) → volume JSON.
        user_data: (zone, id) → key → bytes.
        booted_with: (zone, id) → the cloud-init user data present at the first poweron.
        max_servers: quota of servers per project.
        out_of_stock: commercial types refused with ``out_of_stock``.
    """

    provider = "scaleway"
    base_path = ""
    spec_file = "scaleway-instance-v1-2022.yml"
    errors_undocumented = True  # the 2022 spec documents no error answers: only 2xx are checked

    def __init__(
        self,
        *,
        secret_key: str = SECRET_KEY,
        max_servers: int = 10,
        boot_seconds: float = 3.0,
        stop_seconds: float = 2.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.secret_key = secret_key
        self.max_servers = max_servers
        self.boot_seconds = boot_seconds
        self.stop_seconds = stop_seconds
        self.out_of_stock: set[str] = set()
        self.servers: dict[tuple[str, str], dict[str, Any]] = {}
        self.volumes: dict[tuple[str, str], dict[str, Any]] = {}
        self.user_data: dict[tuple[str, str], dict[str, bytes]] = {}
        self.booted_with: dict[tuple[str, str], bytes | None] = {}
        self.security_groups: dict[tuple[str, str], dict[str, Any]] = {}
        self.security_group_rules: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self._ips = itertools.count(10)
        self._init_images()

    # -- base hooks --------------------------------------------------------------------------

    def error_body(
        self, status: int, code: str, message: str, details: dict[str, Any] | None = None
    ) -> Any:
        body: dict[str, Any] = {"type": code, "message": message}
        body.update(details or {})
        return body

    def authenticate(self, request: EmuRequest) -> EmuResponse | None:
        if request.headers.get("x-auth-token") != self.secret_key:
            return self.error(401, "denied_authentication", "invalid authentication")
        return None

    def extra_headers(self, request: EmuRequest, response: EmuResponse) -> dict[str, str]:
        return {"X-Request-Id": str(uuid.uuid4())}

    # -- state -------------------------------------------------------------------------------

    def _iso(self, when: float) -> str:
        return datetime.fromtimestamp(when, UTC).isoformat()

    def _tick(self) -> None:
        now = self.clock()
        for key, server in list(self.servers.items()):
            if server["state"] == "starting" and now - server["_since"] >= self.boot_seconds:
                server["state"] = "running"
                server["public_ip"] = {
                    "id": str(uuid.uuid4()),
                    "address": f"127.0.115.{next(self._ips) % 250 + 2}",  # loopback
                    "dynamic": True,
                }
            if (
                server["state"] == "stopping"
                and not server.get("_terminating")
                and now - server["_since"] >= self.stop_seconds
            ):
                server["state"] = "stopped"
            if server.get("_terminating") and now - server["_since"] >= self.stop_seconds:
                del self.servers[key]
                for volume in server["volumes"].values():
                    self.volumes.pop((key[0], volume["id"]), None)

    def _view(self, server: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in server.items() if not k.startswith("_")}

    def _find(self, request: EmuRequest) -> dict[str, Any] | EmuResponse:
        self._tick()
        key = (request.params["zone"], request.params["server_id"])
        server = self.servers.get(key)
        if server is None:
            return self.error(
                404,
                "unknown_resource",
                f'"{key[1]}" not found',
                {"resource": "instance_server", "resource_id": key[1]},
            )
        return server

    # -- routes ------------------------------------------------------------------------------

    @route("GET", "/instance/v1/zones/{zone}/servers")
    def list_servers(self, request: EmuRequest) -> EmuResponse:
        self._tick()
        zone = request.params["zone"]
        wanted = [t for t in (request.arg("tags") or "").split(",") if t]
        project = request.arg("project")
        items = [
            self._view(s)
            for (z, _), s in self.servers.items()
            if z == zone
            and all(t in s["tags"] for t in wanted)
            and (not project or s["project"] == project)
        ]
        page = int(request.arg("page", "1") or 1)
        per_page = int(request.arg("per_page", "50") or 50)
        chunk = items[(page - 1) * per_page : page * per_page]
        return json_response(200, {"servers": chunk}, {"X-Total-Count": str(len(items))})

    @route("POST", "/instance/v1/zones/{zone}/servers")
    def create_server(self, request: EmuRequest) -> EmuResponse:
        self._tick()
        zone = request.params["zone"]
        body = request.json()
        kind = body["commercial_type"]
        if kind not in PRODUCTS:
            return self.error(
                400,
                "invalid_arguments",
                "invalid argument(s)",
                {
                    "details": [
                        {
                            "argument_name": "commercial_type",
                            "reason": "constraint",
                            "help_message": f"{kind} is not a valid commercial type",
                        }
                    ]
                },
            )
        if kind in self.out_of_stock:
            return self.error(400, "out_of_stock", f"{kind} is out of stock in {zone}")
        project = body.get("project", "")
        if sum(1 for s in self.servers.values() if s["project"] == project) >= self.max_servers:
            return self.error(
                403,
                "quotas_exceeded",
                "quota(s) exceeded for this resource",
                {
                    "details": [
                        {
                            "resource": "instances_servers",
                            "quota": self.max_servers,
                            "current": self.max_servers,
                        }
                    ]
                },
            )
        group_id = body.get("security_group")
        if group_id and (zone, group_id) not in self.security_groups:
            return self.error(404, "not_found", f"security group {group_id} not found")
        boot = self.boot_image(zone, body.get("image", ""))
        if isinstance(boot, EmuResponse):
            return boot
        server_id = str(uuid.uuid4())
        volume_id = str(uuid.uuid4())
        now = self.clock()
        disk = PRODUCTS[kind][2]
        volume = {
            "id": volume_id,
            "name": f"{body['name']}-vol-0",
            "volume_type": "l_ssd" if disk else "b_ssd",
            "size": (disk or 20) * 10**9,
            "state": "available",
            "zone": zone,
        }
        self.volumes[(zone, volume_id)] = volume
        server = {
            "id": server_id,
            "name": body["name"],
            "organization": project,
            "project": project,
            "commercial_type": kind,
            "tags": list(body.get("tags") or []),
            "creation_date": self._iso(now),
            "modification_date": self._iso(now),
            "dynamic_ip_required": bool(body.get("dynamic_ip_required", True)),
            "enable_ipv6": bool(body.get("enable_ipv6", False)),
            "hostname": body["name"],
            "image": boot or {"id": str(uuid.uuid4()), "name": body.get("image", "")},
            "protected": False,
            "state": "stopped",
            "state_detail": "",
            "arch": PRODUCTS[kind][5],
            "boot_type": body.get("boot_type", "local"),
            "volumes": {"0": volume},
            "security_group": (
                {"id": group_id, "name": self.security_groups[(zone, group_id)]["name"]}
                if group_id
                else {"id": "default", "name": "Default security group"}
            ),
            "zone": zone,
            "_since": now,
        }
        self.servers[(zone, server_id)] = server
        self.user_data[(zone, server_id)] = {}
        return json_response(201, {"server": self._view(server)})

    @route("GET", "/instance/v1/zones/{zone}/servers/{server_id}")
    def get_server(self, request: EmuRequest) -> EmuResponse:
        found = self._find(request)
        if isinstance(found, EmuResponse):
            return found
        return json_response(200, {"server": self._view(found)})

    @route("DELETE", "/instance/v1/zones/{zone}/servers/{server_id}")
    def delete_server(self, request: EmuRequest) -> EmuResponse:
        found = self._find(request)
        if isinstance(found, EmuResponse):
            return found
        if found["state"] != "stopped":
            return self.error(400, "invalid_request_error", "server should be stopped")
        del self.servers[(request.params["zone"], found["id"])]
        return EmuResponse(204)

    @route("DELETE", "/instance/v1/zones/{zone}/volumes/{volume_id}")
    def delete_volume(self, request: EmuRequest) -> EmuResponse:
        key = (request.params["zone"], request.params["volume_id"])
        if key not in self.volumes:
            return self.error(404, "unknown_resource", "volume not found")
        in_use = any(
            v["id"] == key[1] for s in self.servers.values() for v in s["volumes"].values()
        )
        if in_use:
            return self.error(400, "invalid_request_error", "volume is attached to a server")
        del self.volumes[key]
        return EmuResponse(204)

    @route("PATCH", "/instance/v1/zones/{zone}/servers/{server_id}/user_data/{key}")
    def set_user_data(self, request: EmuRequest) -> EmuResponse:
        found = self._find(request)
        if isinstance(found, EmuResponse):
            return found
        ctype = request.headers.get("content-type", "")
        if not ctype.startswith("text/plain"):
            return self.error(400, "invalid_request_error", "user data must be text/plain")
        self.user_data[(request.params["zone"], found["id"])][request.params["key"]] = request.body
        return EmuResponse(204)

    @route("POST", "/instance/v1/zones/{zone}/servers/{server_id}/action")
    def action(self, request: EmuRequest) -> EmuResponse:
        found = self._find(request)
        if isinstance(found, EmuResponse):
            return found
        key = (request.params["zone"], found["id"])
        action = request.json().get("action", "poweron")
        now = self.clock()
        if action == "poweron":
            if found["state"] != "stopped":
                return self.error(400, "invalid_request_error", "server should be stopped")
            self.booted_with.setdefault(key, self.user_data[key].get("cloud-init"))
            found.update(state="starting", _since=now)
        elif action == "terminate":
            if found["state"] not in ("running", "starting"):
                return self.error(400, "invalid_request_error", "server should be running")
            found.update(state="stopping", _since=now, _terminating=True)
        elif action == "poweroff":
            if found["state"] not in ("running", "starting"):
                return self.error(400, "invalid_request_error", "server should be running")
            found.update(state="stopping", _since=now)
        else:
            return self.error(400, "invalid_request_error", f"action {action} not emulated")
        task = {
            "id": str(uuid.uuid4()),
            "description": f"server_{action}",
            "status": "pending",
            "href_from": f"/servers/{found['id']}/action",
            "progress": 0,
        }
        return json_response(200, {"task": task})

    @route("GET", "/instance/v1/zones/{zone}/security_groups")
    def list_security_groups(self, request: EmuRequest) -> EmuResponse:
        zone = request.params["zone"]
        name = request.arg("name")
        project = request.arg("project")
        items = [
            g
            for (z, _), g in self.security_groups.items()
            if z == zone
            and (not name or name in g["name"])
            and (not project or g["project"] == project)
        ]
        return json_response(200, {"security_groups": items}, {"X-Total-Count": str(len(items))})

    @route("POST", "/instance/v1/zones/{zone}/security_groups")
    def create_security_group(self, request: EmuRequest) -> EmuResponse:
        zone = request.params["zone"]
        body = request.json()
        now = self._iso(self.clock())
        group = {
            "id": str(uuid.uuid4()),
            "name": body["name"],
            "project": body.get("project", ""),
            "organization": body.get("project", ""),
            "tags": list(body.get("tags") or []),
            "inbound_default_policy": body.get("inbound_default_policy", "accept"),
            "outbound_default_policy": body.get("outbound_default_policy", "accept"),
            "stateful": bool(body.get("stateful", False)),
            "enable_default_security": bool(body.get("enable_default_security", True)),
            "project_default": False,
            "creation_date": now,
            "modification_date": now,
            "servers": [],
            "state": "available",
            "zone": zone,
        }
        self.security_groups[(zone, group["id"])] = group
        self.security_group_rules[(zone, group["id"])] = []
        return json_response(201, {"security_group": group})

    @route("POST", "/instance/v1/zones/{zone}/security_groups/{security_group_id}/rules")
    def add_rule(self, request: EmuRequest) -> EmuResponse:
        key = (request.params["zone"], request.params["security_group_id"])
        if key not in self.security_groups:
            return self.error(404, "not_found", "security group not found")
        rule = {"id": str(uuid.uuid4()), "editable": True, "position": 1, **request.json()}
        self.security_group_rules[key].append(rule)
        return json_response(201, {"rule": rule})

    @route("DELETE", "/instance/v1/zones/{zone}/security_groups/{security_group_id}")
    def delete_security_group(self, request: EmuRequest) -> EmuResponse:
        key = (request.params["zone"], request.params["security_group_id"])
        if self.security_groups.pop(key, None) is None:
            return self.error(404, "not_found", "security group not found")
        self.security_group_rules.pop(key, None)
        return EmuResponse(204)

    def inbound_open_ports(self, zone: str, group_id: str) -> set[tuple[str, int, str]]:
        """(protocol, port, ip range) accepted inbound by a group whose default is drop."""
        return {
            (r["protocol"], r["dest_port_from"], r["ip_range"])
            for r in self.security_group_rules.get((zone, group_id), [])
            if r["direction"] == "inbound" and r["action"] == "accept"
        }

    @route("GET", "/instance/v1/zones/{zone}/products/servers")
    def products(self, request: EmuRequest) -> EmuResponse:
        servers = {
            name: {
                "hourly_price": hourly,
                "monthly_price": monthly,
                "alt_names": [],
                "ncpus": ncpus,
                "ram": ram * GIB,
                "arch": arch,
                "gpu": 0,
                "baremetal": False,
                "volumes_constraint": {"min_size": 0, "max_size": disk * 10**9},
                "per_volume_constraint": {"l_ssd": {"min_size": 0, "max_size": disk * 10**9}},
            }
            for name, (ncpus, ram, disk, hourly, monthly, arch) in PRODUCTS.items()
        }
        return json_response(200, {"servers": servers}, {"X-Total-Count": str(len(servers))})

    @route("GET", "/instance/v1/zones/{zone}/products/servers/availability")
    def availability(self, request: EmuRequest) -> EmuResponse:
        servers = {
            name: {"availability": "shortage" if name in self.out_of_stock else "available"}
            for name in PRODUCTS
        }
        return json_response(200, {"servers": servers})


class MetadataServer:
    """Scaleway's instance metadata stand-in: ``/conf?format=json`` for privileged ports only.

    Attributes:
        server_id, zone: what it reports.
        refused: how many requests came from an unprivileged source port.
    """

    def __init__(self, server_id: str, zone: str) -> None:
        self.server_id = server_id
        self.zone = zone
        self.refused = 0

    @contextlib.contextmanager
    def serve(self) -> Iterator[str]:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_GET(self) -> None:
                if self.client_address[1] >= 1024:
                    outer.refused += 1
                    self.send_response(403)
                    self.end_headers()
                    return
                if not self.path.startswith("/conf"):
                    self.send_response(404)
                    self.end_headers()
                    return
                body = json.dumps(
                    {"id": outer.server_id, "zone": outer.zone, "name": "bivy", "tags": []}
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}"
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8083)
    parser.add_argument("--secret-key", default=SECRET_KEY)
    args = parser.parse_args()
    emulator = ScalewayEmulator(secret_key=args.secret_key, strict=False)
    with emulator.serve(args.port) as url:
        print(f"Scaleway emulator on {url} (BIVY_SCALEWAY_API_URL={url})", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)


if __name__ == "__main__":
    main()
