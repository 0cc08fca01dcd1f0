"""DigitalOcean API v2 emulator (droplets, sizes, regions, account, SSH keys), spec-validated.

Every request is checked against ``tests/specs/digitalocean-droplets.bundled.yaml``. Droplets
go ``new`` → ``active`` (with a public IPv4) ``boot_seconds`` after creation by the emulator's
clock; ``droplet_limit`` refuses creates with DigitalOcean's 422; a size missing from a region
is refused like the real API; every answer carries ``ratelimit-*`` headers. Droplet actions
(power off, snapshot), snapshot images and tags: see ``tests.emulators.digitalocean_images``.

``MetadataEmulator`` serves the droplet's ``/metadata/v1/id`` for self-delete tests.

Manual run: ``python -m tests.emulators.digitalocean --port 8082 --token T``.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import itertools
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from tests.emulators.base import Emulator, EmuRequest, EmuResponse, json_response, route
from tests.emulators.digitalocean_images import DigitalOceanImagesMixin

REGIONS = [
    ("fra1", "Frankfurt 1"),
    ("ams3", "Amsterdam 3"),
    ("nyc3", "New York 3"),
    ("lon1", "London 1"),
]

# (slug, vcpus, memory MB, disk GB, transfer TB, monthly USD, hourly USD, description, regions)
SIZES: list[tuple[str, int, int, int, float, float, float, str, list[str]]] = [
    ("s-1vcpu-1gb", 1, 1024, 25, 1.0, 6.0, 0.00893, "Basic", ["fra1", "ams3", "nyc3", "lon1"]),
    ("s-2vcpu-4gb", 2, 4096, 80, 4.0, 24.0, 0.03571, "Basic", ["fra1", "ams3", "nyc3", "lon1"]),
    ("s-4vcpu-8gb", 4, 8192, 160, 5.0, 48.0, 0.07143, "Basic", ["fra1", "ams3", "nyc3", "lon1"]),
    ("c-2", 2, 4096, 25, 4.0, 42.0, 0.0625, "CPU-Optimized", ["fra1", "nyc3"]),
    ("g-2vcpu-8gb", 2, 8192, 25, 4.0, 63.0, 0.09375, "General Purpose", ["nyc3"]),
]


def md5_fingerprint(public_key: str) -> str:
    digest = hashlib.md5(base64.b64decode(public_key.split()[1])).hexdigest()
    return ":".join(digest[i : i + 2] for i in range(0, 32, 2))


class DigitalOceanEmulator(DigitalOceanImagesMixin, Emulator):
    """In-memory DigitalOcean.

    Attributes:
        token: the bearer token with full access; ``scoped`` holds custom-scope tokens.
        droplets: id → droplet JSON (as the API returns it).
        ssh_keys: id → key JSON.
        droplet_limit: creates beyond this many droplets are refused (422).
        boot_seconds: seconds from create to ``active``.
        rate_limit: the hourly budget reported in ``ratelimit-limit``.
    """

    provider = "digitalocean"
    base_path = ""
    spec_file = "digitalocean-droplets.bundled.yaml"

    def __init__(
        self,
        *,
        token: str = "dop_v1_" + "e" * 64,
        droplet_limit: int = 10,
        boot_seconds: float = 3.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.token = token
        self.droplet_limit = droplet_limit
        self.boot_seconds = boot_seconds
        self.rate_limit = 5000
        #: extra tokens limited to custom scopes ("droplet:read", …); ``token`` has full access
        self.scoped: dict[str, set[str]] = {}
        self.droplets: dict[int, dict[str, Any]] = {}
        #: (size, region) pairs refused as "not available in this region".
        self.unavailable: set[tuple[str, str]] = set()
        self.ssh_keys: dict[int, dict[str, Any]] = {}
        self.user_data: dict[int, str] = {}
        self._ids = itertools.count(3164444)
        self._key_ids = itertools.count(512189)
        self._action_ids = itertools.count(7515)
        self._used = 0
        self._init_images()

    # -- base hooks --------------------------------------------------------------------------

    def error_body(
        self, status: int, code: str, message: str, details: dict[str, Any] | None = None
    ) -> Any:
        return {"id": code, "message": message, "request_id": str(uuid.uuid4())}

    def authenticate(self, request: EmuRequest) -> EmuResponse | None:
        auth = request.headers.get("authorization", "")
        token = auth.removeprefix("Bearer ")
        if not auth.startswith("Bearer ") or (token != self.token and token not in self.scoped):
            return self.error(401, "unauthorized", "Unable to authenticate you.")
        scopes = self.scoped.get(token)
        if scopes is not None:
            missing = self.required_scopes(request) - scopes
            if missing:
                return self.error(
                    403,
                    "forbidden",
                    "You are not authorized to perform this operation "
                    f"(missing scope {', '.join(sorted(missing))})",
                )
        return None

    def required_scopes(self, request: EmuRequest) -> set[str]:
        """The custom scopes a request needs: the operation's ``security`` in the spec, plus
        those its description adds for optional fields (tags, ssh_keys, image, tag_name)."""
        assert self.spec is not None
        op = self.spec.operation(request.method, request.path)
        needed = {
            scope
            for requirement in self.spec.pointer(op.pointer).get("security") or []
            for scope in requirement.get("bearer_auth", [])
        }
        if request.method == "POST" and op.template == "/v2/droplets":
            body = request.json() or {}
            if body.get("tags"):
                needed.add("tag:create")
            if body.get("ssh_keys"):
                needed.add("ssh_key:read")
            if body.get("image"):
                needed.add("image:read")
        # the actions operation's table: a snapshot also needs image:create
        actions = op.template == "/v2/droplets/{droplet_id}/actions"
        if actions and (request.json() or {}).get("type") == "snapshot":
            needed.add("image:create")
        tagged = op.template in ("/v2/droplets", "/v2/images")
        if request.method == "GET" and tagged and request.arg("tag_name"):
            needed.add("tag:read")
        return needed

    def extra_headers(self, request: EmuRequest, response: EmuResponse) -> dict[str, str]:
        self._used += 1
        return {
            "ratelimit-limit": str(self.rate_limit),
            "ratelimit-remaining": str(max(0, self.rate_limit - self._used)),
            "ratelimit-reset": str(int(self.clock()) + 60),
            "x-request-id": str(uuid.uuid4()),
        }

    # -- helpers -----------------------------------------------------------------------------

    def _iso(self, when: float) -> str:
        return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def _size_json(self, slug: str) -> dict[str, Any] | None:
        for s, vcpus, mem, disk, transfer, monthly, hourly, desc, regions in SIZES:
            if s == slug:
                return {
                    "slug": s,
                    "memory": mem,
                    "vcpus": vcpus,
                    "disk": disk,
                    "transfer": transfer,
                    "price_monthly": monthly,
                    "price_hourly": hourly,
                    "regions": list(regions),
                    "available": True,
                    "description": desc,
                    "disk_info": [{"type": "local", "size": {"amount": disk, "unit": "gib"}}],
                }
        return None

    def _advance(self, droplet: dict[str, Any]) -> dict[str, Any]:
        created = droplet["_created"]
        if droplet["status"] == "new" and self.clock() - created >= self.boot_seconds:
            droplet["status"] = "active"
            n = droplet["id"] % 250 + 2
            droplet["networks"] = {
                "v4": [
                    {
                        "ip_address": f"127.0.114.{n}",  # loopback, see the Hetzner emulator
                        "netmask": "255.255.255.0",
                        "gateway": "203.0.113.1",
                        "type": "public",
                    }
                ],
                "v6": [],
            }
        return {k: v for k, v in droplet.items() if not k.startswith("_")}

    def _page(self, request: EmuRequest, key: str, items: list[Any]) -> EmuResponse:
        page = int(request.arg("page", "1") or 1)
        per_page = int(request.arg("per_page", "20") or 20)
        start = (page - 1) * per_page
        chunk = items[start : start + per_page]
        pages: dict[str, str] = {}
        if start + per_page < len(items):
            pages["next"] = f"https://api.digitalocean.com/v2/{key}?page={page + 1}"
            last = (len(items) + per_page - 1) // per_page
            pages["last"] = f"https://api.digitalocean.com/v2/{key}?page={last}"
        return json_response(
            200, {key: chunk, "links": {"pages": pages}, "meta": {"total": len(items)}}
        )

    def _find(self, request: EmuRequest) -> dict[str, Any] | EmuResponse:
        droplet = self.droplets.get(int(request.params["droplet_id"]))
        if droplet is None:
            return self.error(
                404, "not_found", "The resource you were accessing could not be found."
            )
        return droplet

    # -- routes ------------------------------------------------------------------------------

    @route("GET", "/v2/account")
    def account(self, request: EmuRequest) -> EmuResponse:
        return json_response(
            200,
            {
                "account": {
                    "droplet_limit": self.droplet_limit,
                    "floating_ip_limit": 3,
                    "email": "sammy@example.com",
                    "name": "Sammy",
                    "uuid": "b6fr89dbf6d9156cace5f3c78dc9851d957381ef",
                    "email_verified": True,
                    "status": "active",
                    "status_message": "",
                }
            },
        )

    def _region_json(self, slug: str, name: str) -> dict[str, Any]:
        return {
            "slug": slug,
            "name": name,
            "available": True,
            "features": ["backups", "ipv6", "metadata"],
            "sizes": [s[0] for s in SIZES if slug in s[8]],
        }

    @route("GET", "/v2/regions")
    def regions(self, request: EmuRequest) -> EmuResponse:
        items = [self._region_json(slug, name) for slug, name in REGIONS]
        return self._page(request, "regions", items)

    @route("GET", "/v2/sizes")
    def sizes(self, request: EmuRequest) -> EmuResponse:
        return self._page(request, "sizes", [self._size_json(s[0]) for s in SIZES])

    @route("GET", "/v2/account/keys/{key}")
    def get_key(self, request: EmuRequest) -> EmuResponse:
        ident = request.params["key"]
        for key in self.ssh_keys.values():
            if ident in (str(key["id"]), key["fingerprint"]):
                return json_response(200, {"ssh_key": key})
        return self.error(404, "not_found", "The resource you were accessing could not be found.")

    @route("POST", "/v2/account/keys")
    def create_key(self, request: EmuRequest) -> EmuResponse:
        body = request.json()
        fingerprint = md5_fingerprint(body["public_key"])
        if any(k["fingerprint"] == fingerprint for k in self.ssh_keys.values()):
            return self.error(
                422, "unprocessable_entity", "SSH Key is already in use on your account"
            )
        key = {
            "id": next(self._key_ids),
            "fingerprint": fingerprint,
            "public_key": body["public_key"],
            "name": body["name"],
        }
        self.ssh_keys[key["id"]] = key
        return json_response(201, {"ssh_key": key})

    @route("GET", "/v2/droplets")
    def list_droplets(self, request: EmuRequest) -> EmuResponse:
        tag = request.arg("tag_name")
        name = request.arg("name")
        if tag and name:
            return self.error(422, "unprocessable_entity", "tag_name cannot be combined with name")
        items = [
            self._advance(d)
            for d in self.droplets.values()
            if (not tag or tag in d["tags"]) and (not name or d["name"].lower() == name.lower())
        ]
        return self._page(request, "droplets", items)

    @route("POST", "/v2/droplets")
    def create_droplet(self, request: EmuRequest) -> EmuResponse:
        body = request.json()
        if "names" in body:
            return self.error(
                422, "unprocessable_entity", "The emulator creates one droplet at a time."
            )
        size = self._size_json(body["size"])
        if size is None:
            return self.error(
                422, "unprocessable_entity", "You specified an invalid size for Droplet creation."
            )
        region = body.get("region") or size["regions"][0]
        if region not in size["regions"] or (size["slug"], region) in self.unavailable:
            return self.error(422, "unprocessable_entity", "Size is not available in this region.")
        if len(self.droplets) >= self.droplet_limit:
            return self.error(
                422,
                "unprocessable_entity",
                "creating this/these droplet(s) will exceed your droplet limit",
            )
        user_data = body.get("user_data") or ""
        if len(user_data.encode()) > 64 * 1024:
            return self.error(422, "unprocessable_entity", "user_data is too long (64 KiB max)")
        for ref in body.get("ssh_keys") or []:
            if not any(ref in (k["id"], k["fingerprint"]) for k in self.ssh_keys.values()):
                return self.error(422, "unprocessable_entity", f"SSH key {ref} not found")
        snapshot = self.image_for_droplet(body["image"], size["disk"], region)
        if isinstance(snapshot, EmuResponse):
            return snapshot
        droplet_id = next(self._ids)
        now = self.clock()
        droplet = {
            "id": droplet_id,
            "name": body["name"],
            "memory": size["memory"],
            "vcpus": size["vcpus"],
            "disk": size["disk"],
            "locked": False,
            "status": "new",
            "created_at": self._iso(now),
            "features": [],
            "backup_ids": [],
            "next_backup_window": None,
            "snapshot_ids": [],
            "image": snapshot
            or {
                "id": 63663980,
                "name": "24.04 (LTS) x64",
                "distribution": "Ubuntu",
                "slug": body["image"] if isinstance(body["image"], str) else None,
                "public": True,
                "regions": [r for r, _ in REGIONS],
                "created_at": "2024-04-25T10:00:00Z",
                "type": "base",
                "min_disk_size": 15,
                "size_gigabytes": 2.36,
                "description": "",
                "tags": [],
                "status": "available",
                "error_message": "",
            },
            "volume_ids": [],
            "size": size,
            "size_slug": size["slug"],
            "networks": {"v4": [], "v6": []},
            "region": self._region_json(region, dict(REGIONS).get(region, region)),
            "tags": list(body.get("tags") or []),
            "vpc_uuid": str(uuid.uuid4()),
            "_created": now,
        }
        self.droplets[droplet_id] = droplet
        self.user_data[droplet_id] = user_data
        action = next(self._action_ids)
        return json_response(
            202,
            {
                "droplet": self._advance(droplet),
                "links": {
                    "actions": [
                        {
                            "id": action,
                            "rel": "create",
                            "href": f"https://api.digitalocean.com/v2/actions/{action}",
                        }
                    ]
                },
            },
        )

    @route("GET", "/v2/droplets/{droplet_id}")
    def get_droplet(self, request: EmuRequest) -> EmuResponse:
        found = self._find(request)
        if isinstance(found, EmuResponse):
            return found
        return json_response(200, {"droplet": self._advance(found)})

    @route("DELETE", "/v2/droplets/{droplet_id}")
    def delete_droplet(self, request: EmuRequest) -> EmuResponse:
        found = self._find(request)
        if isinstance(found, EmuResponse):
            return found
        del self.droplets[found["id"]]
        return EmuResponse(204)


class MetadataEmulator(Emulator):
    """The droplet-local metadata service: ``/metadata/v1/id`` (plain text)."""

    provider = "digitalocean-metadata"
    base_path = "/metadata/v1"

    def __init__(self, droplet_id: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.droplet_id = droplet_id

    @route("GET", "/metadata/v1/id")
    def instance_id(self, request: EmuRequest) -> EmuResponse:
        return EmuResponse(200, str(self.droplet_id))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8082)
    parser.add_argument("--token", default="dop_v1_" + "e" * 64)
    args = parser.parse_args()
    emulator = DigitalOceanEmulator(token=args.token, strict=False)
    with emulator.serve(args.port) as url:
        print(f"DigitalOcean emulator on {url} (BIVY_DIGITALOCEAN_API_URL={url})", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
