"""Hetzner Cloud API emulator: every endpoint Bivy uses, real JSON shapes, checked against the spec.

In tests::

    emu = HetznerEmulator(token="t0k", clock=ManualClock())
    provider = HetznerProvider({"token": "t0k"}, transport=emu.transport())
    emu.inject_error("POST", r"/v1/servers", 409, "uniqueness_error")   # once
    emu.clock.advance(30)                                                 # servers move on

By hand, or for the CLI integration test (a separate process)::

    python -m tests.emulators.hetzner --port 8765 [--token T] [--readonly-token R]
                                      [--manual-clock] [--rate-limit N] [--validate auto|on|off]
    BIVY_HETZNER_API_URL=http://127.0.0.1:8765/v1 BIVY_HETZNER_TOKEN=T bivy ls
    curl -X POST -d '{"method": "GET", "path": "/v1/servers", "status": 429,
                      "code": "rate_limit_exceeded"}' http://127.0.0.1:8765/_emulator/errors

(the control API under ``/_emulator/`` is described in ``tests.emulators.base``). On exit it
prints any spec violations to stderr and exits 1 if there were some. It needs only the app's
packages; requests are checked against the spec when the test extras are installed (always in
tests: see ``tests.emulators.base``).

Behaviour:
- Servers move ``initializing`` → ``starting`` → ``running`` (``create_seconds`` then
  ``start_seconds`` of emulator time) and, once deleted, ``deleting`` for ``delete_seconds``
  before they are gone (404). Time is ``clock()``: a ``ManualClock`` in tests (optionally advanced
  on every request with ``tick_per_request``), the real time when served.
- Actions (``create_server``, ``start_server``, ``delete_server``, ``create_firewall``…) run for
  the same durations and end in ``success``; ``fail_next_action(command, code, message)`` makes
  the next one of that command end in ``error``.
- Lists paginate (``page``, ``per_page`` ≤ 50, ``meta.pagination`` and a ``Link`` header) and
  filter by ``name``, ``label_selector`` (the full selector language), ``fingerprint``, ``type``,
  ``architecture`` and ``status`` where the API does.
- Names are unique per project for servers, SSH keys (and fingerprints) and firewalls (409
  ``uniqueness_error``); a server type unavailable in a location gives 412
  ``resource_unavailable``; more than ``server_limit`` servers gives 403
  ``resource_limit_exceeded``; an invalid name, label or too-long ``user_data`` gives 422
  ``invalid_input`` with field messages.
- Auth: ``Authorization: Bearer <token>`` must equal ``token`` (any non-empty bearer when
  ``token`` is None); a token in ``readonly_tokens`` may only GET (401 ``token_readonly``).
- Every answer carries ``RateLimit-Limit/Remaining/Reset`` (a bucket of ``rate_limit`` requests
  refilling one per 3600/limit seconds, 429 ``rate_limit_exceeded`` when empty) and
  ``X-Correlation-Id``.
- Any error (``inject_error``), latency (``inject_latency``) and transport fault
  (``inject_fault``) from ``tests.emulators.base`` can be injected per method and path.
- Power-off and snapshot images (``create_image``, ``/images``): see
  ``tests.emulators.hetzner_images``.

Metadata service (for the VM's self-delete script): ``GET /_metadata/<server id>/hetzner/v1/
metadata/instance-id`` (also ``hostname``, ``public-ipv4``, ``region``, ``availability-zone``,
and the YAML summary at ``…/metadata``). So a test sets
``BIVY_METADATA_URL=<root>/_metadata/<id>/hetzner/v1/metadata`` where ``<root>`` is the served
URL without ``/v1`` (``emu.metadata_url(base_url, server_id)`` builds it). These paths are not
part of the API spec and are not validated against it.
"""

from __future__ import annotations

import argparse
import itertools
import math
import signal
import sys
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from tests.emulators.base import (
    Emulator,
    EmuRequest,
    EmuResponse,
    ManualClock,
    json_response,
    route,
)
from tests.emulators.hetzner_data import (
    _LABEL_KEY_RE,
    _LABEL_VALUE_RE,
    IMAGES,
    LOCATIONS,
    SERVER_TYPES,
    VAT_RATE,
    LabelSelector,
    _money,
    _server_type,
    fingerprint,
    iso,
)
from tests.emulators.hetzner_images import HetznerImagesMixin
from tests.emulators.hetzner_project import HetznerProjectMixin
from tests.emulators.hetzner_servers import HetznerServersMixin

__all__ = [
    "IMAGES",
    "LOCATIONS",
    "SERVER_TYPES",
    "VAT_RATE",
    "HetznerEmulator",
    "LabelSelector",
    "ManualClock",
    "fingerprint",
    "iso",
    "main",
]


# -- state -------------------------------------------------------------------------------------


@dataclass
class _Action:
    id: int
    command: str
    started: float
    duration: float
    resources: list[dict[str, Any]]
    error: tuple[str, str] | None = None

    def json(self, now: float) -> dict[str, Any]:
        done = now >= self.started + self.duration
        if done:
            status = "error" if self.error else "success"
            progress = 100
        else:
            status = "running"
            progress = int(100 * (now - self.started) / self.duration) if self.duration else 0
        return {
            "id": self.id,
            "command": self.command,
            "status": status,
            "progress": progress,
            "started": iso(self.started),
            "finished": iso(self.started + self.duration) if done else None,
            "resources": self.resources,
            "error": {"code": self.error[0], "message": self.error[1]}
            if done and self.error
            else None,
        }


@dataclass
class _Server:
    id: int
    name: str
    created: float
    server_type: dict[str, Any]
    location: dict[str, Any]
    image: dict[str, Any]
    labels: dict[str, str]
    user_data: str | None
    ssh_keys: list[int]
    firewalls: list[int]
    ipv4: str
    ipv6: str
    deleted_at: float | None = None
    failed: bool = False
    #: when a power-off completes (None: powered on)
    off_at: float | None = None


@dataclass
class _Project:
    servers: dict[int, _Server] = field(default_factory=dict)
    ssh_keys: dict[int, dict[str, Any]] = field(default_factory=dict)
    firewalls: dict[int, dict[str, Any]] = field(default_factory=dict)
    actions: dict[int, _Action] = field(default_factory=dict)


class HetznerEmulator(HetznerImagesMixin, HetznerServersMixin, HetznerProjectMixin, Emulator):
    """The Hetzner Cloud API in-process (see the module docstring).

    Attributes:
        token: the accepted bearer token (None: any).
        readonly_tokens: tokens that may only read.
        create_seconds, start_seconds, delete_seconds: lifecycle durations (emulator time).
        server_limit: servers allowed before ``resource_limit_exceeded``.
        rate_limit: requests per hour (the bucket size).
        project: the emulated state (servers, ssh_keys, firewalls, actions).
    """

    provider = "hetzner"
    base_path = "/v1"
    spec_file = "hetzner-cloud.spec.json"
    unvalidated_prefixes = ("/_metadata/",)

    def __init__(
        self,
        *,
        token: str | None = "emulator-token",
        readonly_tokens: Iterable[str] = (),
        create_seconds: float = 10.0,
        start_seconds: float = 10.0,
        delete_seconds: float = 5.0,
        server_limit: int = 10,
        rate_limit: int = 3600,
        clock: Callable[[], float] | None = None,
        tick_per_request: float = 0.0,
        strict: bool = True,
        validate: bool | None = None,
    ) -> None:
        super().__init__(
            clock=clock, tick_per_request=tick_per_request, strict=strict, validate=validate
        )
        self.token = token
        self.readonly_tokens = set(readonly_tokens)
        self.create_seconds = create_seconds
        self.start_seconds = start_seconds
        self.delete_seconds = delete_seconds
        self.server_limit = server_limit
        self.rate_limit = rate_limit
        self.project = _Project()
        self.server_types = [_server_type(row) for row in SERVER_TYPES]
        self.images = [dict(i) for i in IMAGES]
        self._ids = itertools.count(1000)
        self._action_ids = itertools.count(500000)
        self._correlation = itertools.count(1)
        self._tokens = float(rate_limit)
        self._tokens_at = self.clock()
        self._failures: dict[str, list[tuple[str, str]]] = {}
        self._init_images()

    # -- test helpers ------------------------------------------------------------------------

    def fail_next_action(
        self, command: str, code: str = "action_failed", message: str = ""
    ) -> None:
        """Make the next action of ``command`` ("create_server", …) end in error."""
        with self.lock:
            self._failures.setdefault(command, []).append((code, message or f"{command} failed"))

    def set_availability(self, server_type: str, location: str, available: bool) -> None:
        """Make ``server_type`` orderable (or not) in ``location``."""
        with self.lock:
            for st in self.server_types:
                if st["name"] == server_type:
                    for loc in st["locations"]:
                        if loc["name"] == location:
                            loc["available"] = available

    def set_price(self, server_type: str, location: str, hourly_net: str, monthly_net: str) -> None:
        """Change a price (the app must show it without a restart: prices are never cached)."""
        with self.lock:
            for st in self.server_types:
                if st["name"] == server_type:
                    for price in st["prices"]:
                        if price["location"] == location:
                            price["price_hourly"] = _money(hourly_net)
                            price["price_monthly"] = _money(monthly_net)

    def add_server(self, name: str, labels: dict[str, str] | None = None, **kw: Any) -> int:
        """Create a server directly (not through the API); returns its id."""
        with self.lock:
            return self._new_server(
                name=name,
                server_type=kw.get("server_type", "cx23"),
                location=kw.get("location", "fsn1"),
                image=kw.get("image", "ubuntu-24.04"),
                labels=labels or {},
                user_data=kw.get("user_data"),
                ssh_keys=[],
                firewalls=[],
                created=kw.get("created"),
            )[0].id

    def server_status(self, server_id: int) -> str | None:
        """The server's status now, or None when it is gone."""
        with self.lock:
            server = self._live(server_id)
            return None if server is None else self._status(server)

    @staticmethod
    def metadata_url(base_url: str, server_id: int) -> str:
        """The metadata base URL a VM with ``server_id`` would see, on a served emulator."""
        root = base_url[: -len(HetznerEmulator.base_path)]
        return f"{root}/_metadata/{server_id}/hetzner/v1/metadata"

    # -- Emulator hooks ----------------------------------------------------------------------

    def error_body(
        self, status: int, code: str, message: str, details: dict[str, Any] | None = None
    ) -> Any:
        return {"error": {"code": code, "message": message, "details": details}}

    def _refill(self, now: float) -> None:
        rate = self.rate_limit / 3600.0
        self._tokens = min(float(self.rate_limit), self._tokens + (now - self._tokens_at) * rate)
        self._tokens_at = now

    def _reset_at(self, now: float) -> int:
        missing = self.rate_limit - math.floor(self._tokens)
        return math.ceil(now + missing * 3600.0 / self.rate_limit)

    def authenticate(self, request: EmuRequest) -> EmuResponse | None:
        if request.path.startswith("/_metadata/"):
            return None
        now = self.clock()
        self._refill(now)
        if self._tokens < 1:
            return self.error(429, "rate_limit_exceeded", "limit of requests per hour reached")
        self._tokens -= 1
        auth = request.headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return self.error(401, "unauthorized", "unable to authenticate")
        token = token.strip()
        if token in self.readonly_tokens:
            if request.method != "GET":
                return self.error(
                    401, "token_readonly", "The token is only allowed to perform GET requests."
                )
            return None
        if self.token is not None and token != self.token:
            return self.error(401, "unauthorized", "unable to authenticate")
        return None

    def extra_headers(self, request: EmuRequest, response: EmuResponse) -> dict[str, str]:
        if request.path.startswith("/_metadata/"):
            return {}
        now = self.clock()
        self._refill(now)
        remaining = max(0, math.floor(self._tokens))
        reset = self._reset_at(now)
        if response.status == 429:
            remaining = 0
            reset = max(reset, math.ceil(now + 3600.0 / self.rate_limit))
        return {
            "RateLimit-Limit": str(self.rate_limit),
            "RateLimit-Remaining": str(remaining),
            "RateLimit-Reset": str(reset),
            "X-Correlation-Id": f"emu-{next(self._correlation):08x}",
        }

    # -- helpers -----------------------------------------------------------------------------

    def _action(self, command: str, resources: list[dict[str, Any]], duration: float) -> _Action:
        failures = self._failures.get(command)
        error = failures.pop(0) if failures else None
        action = _Action(next(self._action_ids), command, self.clock(), duration, resources, error)
        self.project.actions[action.id] = action
        return action

    def _paginate(self, request: EmuRequest, key: str, items: list[dict[str, Any]]) -> EmuResponse:
        try:
            page = max(1, int(request.arg("page", "1") or 1))
            per_page = min(50, max(1, int(request.arg("per_page", "25") or 25)))
        except ValueError:
            return self.error(422, "invalid_input", "invalid page or per_page")
        total = len(items)
        last = max(1, math.ceil(total / per_page))
        chunk = items[(page - 1) * per_page : page * per_page]
        meta = {
            "pagination": {
                "page": page,
                "per_page": per_page,
                "previous_page": page - 1 if page > 1 else None,
                "next_page": page + 1 if page < last else None,
                "last_page": last,
                "total_entries": total,
            }
        }
        links = []
        base = f"https://api.hetzner.cloud/v1{request.path[len(self.base_path) :]}"
        if page < last:
            links.append(f'<{base}?page={page + 1}&per_page={per_page}>; rel="next"')
        if page > 1:
            links.append(f'<{base}?page={page - 1}&per_page={per_page}>; rel="prev"')
        links.append(f'<{base}?page={last}&per_page={per_page}>; rel="last"')
        return json_response(200, {key: chunk, "meta": meta}, {"Link": ", ".join(links)})

    def _selector(self, request: EmuRequest) -> LabelSelector | None:
        text = request.arg("label_selector")
        return LabelSelector(text) if text else None

    def _invalid(self, fields: dict[str, list[str]]) -> EmuResponse:
        first = next(iter(fields))
        return self.error(
            422,
            "invalid_input",
            f"invalid input in field '{first}'",
            {"fields": [{"name": k, "messages": v} for k, v in fields.items()]},
        )

    def _unique(self, name: str, what: str = "name") -> EmuResponse:
        return self.error(
            409,
            "uniqueness_error",
            f"{what} is already used",
            {"fields": [{"name": what}]},
        )

    def _label_errors(self, labels: Any) -> list[str]:
        if labels is None:
            return []
        errors = []
        for k, v in labels.items():
            if not _LABEL_KEY_RE.match(k) or k.startswith("hetzner.cloud/"):
                errors.append(f"invalid label key {k!r}")
            if not _LABEL_VALUE_RE.match(v):
                errors.append(f"invalid label value {v!r}")
        return errors

    def _find(self, items: Iterable[dict[str, Any]], ref: Any) -> dict[str, Any] | None:
        for item in items:
            if str(item["id"]) == str(ref) or item.get("name") == ref:
                return item
        return None

    def _live(self, server_id: int) -> _Server | None:
        server = self.project.servers.get(server_id)
        if server is None:
            return None
        if (
            server.deleted_at is not None
            and self.clock() >= server.deleted_at + self.delete_seconds
        ):
            del self.project.servers[server_id]
            return None
        return server

    def _status(self, server: _Server) -> str:
        if server.deleted_at is not None:
            return "deleting"
        age = self.clock() - server.created
        if server.failed:
            return "off"
        if server.off_at is not None:
            return "off" if self.clock() >= server.off_at else "stopping"
        if age < self.create_seconds:
            return "initializing"
        if age < self.create_seconds + self.start_seconds:
            return "starting"
        return "running"

    def _server_json(self, s: _Server) -> dict[str, Any]:
        dc = {
            "id": s.location["id"],
            "name": f"{s.location['name']}-dc14",
            "description": f"{s.location['city']} DC 14",
            "location": s.location,
            "server_types": {
                "supported": [t["id"] for t in self.server_types],
                "available": [t["id"] for t in self.server_types if not t["deprecated"]],
                "available_for_migration": [t["id"] for t in self.server_types],
            },
        }
        return {
            "id": s.id,
            "name": s.name,
            "status": self._status(s),
            "created": iso(s.created),
            "public_net": {
                "ipv4": {"id": s.id + 7000, "ip": s.ipv4, "blocked": False,
                         "dns_ptr": f"static.{s.ipv4}.clients.your-server.de"},
                "ipv6": {"id": s.id + 8000, "ip": s.ipv6, "blocked": False, "dns_ptr": []},
                "floating_ips": [],
                "firewalls": [{"id": f, "status": "applied"} for f in s.firewalls],
            },
            "private_net": [],
            "server_type": s.server_type,
            "location": s.location,
            "datacenter": dc,
            "image": s.image,
            "iso": None,
            "rescue_enabled": False,
            "locked": s.deleted_at is not None,
            "backup_window": None,
            "outgoing_traffic": 0,
            "ingoing_traffic": 0,
            "included_traffic": 21990232555520,
            "protection": {"delete": False, "rebuild": False},
            "labels": dict(s.labels),
            "volumes": [],
            "load_balancers": [],
            "primary_disk_size": s.server_type["disk"],
            "placement_group": None,
        }  # fmt: skip

    def _new_server(
        self,
        *,
        name: str,
        server_type: str,
        location: str,
        image: str,
        labels: dict[str, str],
        user_data: str | None,
        ssh_keys: list[int],
        firewalls: list[int],
        created: float | None = None,
    ) -> tuple[_Server, _Action, _Action]:
        st = self._find(self.server_types, server_type)
        loc = self._find(LOCATIONS, location)
        img = next(
            (
                i
                for i in self.images
                if (str(i["id"]) == str(image) or i["name"] == image)
                and st is not None
                and i["architecture"] == st["architecture"]
            ),
            None,
        )
        assert st is not None and loc is not None and img is not None
        img = self._image_view(img)
        sid = next(self._ids)
        server = _Server(
            id=sid,
            name=name,
            created=self.clock() if created is None else created,
            server_type=st,
            location=loc,
            image=img,
            labels=dict(labels),
            user_data=user_data,
            ssh_keys=ssh_keys,
            firewalls=firewalls,
            # Loopback: the app run by hand against the emulator never connects off the machine.
            ipv4=f"127.0.113.{sid % 250 + 1}",
            ipv6=f"2001:db8:{sid:x}::/64",
        )
        self.project.servers[sid] = server
        res = [{"id": sid, "type": "server"}]
        create = self._action("create_server", res, self.create_seconds)
        if create.error:
            server.failed = True
        start = self._action("start_server", res, self.create_seconds + self.start_seconds)
        return server, create, start

    # -- routes: catalogue ---------------------------------------------------------------------

    @route("GET", "/v1/locations")
    def list_locations(self, req: EmuRequest) -> EmuResponse:
        items = [loc for loc in LOCATIONS if req.arg("name") in (None, loc["name"])]
        return self._paginate(req, "locations", items)

    @route("GET", "/v1/server_types")
    def list_server_types(self, req: EmuRequest) -> EmuResponse:
        items = [t for t in self.server_types if req.arg("name") in (None, t["name"])]
        return self._paginate(req, "server_types", items)

    @route("GET", "/v1/pricing")
    def pricing(self, req: EmuRequest) -> EmuResponse:
        return json_response(
            200,
            {
                "pricing": {
                    "currency": "EUR",
                    "vat_rate": f"{VAT_RATE:.2f}",
                    "primary_ips": [
                        {"type": "ipv4", "prices": [
                            {"location": loc["name"], "price_hourly": _money("0.0008"),
                             "price_monthly": _money("0.50")} for loc in LOCATIONS]},
                    ],
                    "floating_ips": [
                        {"type": "ipv4", "prices": [
                            {"location": loc["name"], "price_monthly": _money("3.00")}
                            for loc in LOCATIONS]},
                    ],
                    "image": {"price_per_gb_month": _money("0.0110")},
                    "volume": {"price_per_gb_month": _money("0.0440")},
                    "server_backup": {"percentage": "20.00"},
                    "server_types": [
                        {"id": t["id"], "name": t["name"], "prices": t["prices"]}
                        for t in self.server_types
                    ],
                    "load_balancer_types": [],
                    "floating_ip": {"price_monthly": _money("3.00")},
                }
            },
        )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Run the emulator on 127.0.0.1 until interrupted (SIGINT/SIGTERM)."""
    parser = argparse.ArgumentParser(prog="python -m tests.emulators.hetzner", description=__doc__)
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: a free one)")
    parser.add_argument("--token", default="emulator-token", help="the accepted token ('' = any)")
    parser.add_argument("--readonly-token", action="append", default=[], help="a read-only token")
    parser.add_argument("--create-seconds", type=float, default=2.0)
    parser.add_argument("--start-seconds", type=float, default=2.0)
    parser.add_argument("--delete-seconds", type=float, default=1.0)
    parser.add_argument("--server-limit", type=int, default=10)
    parser.add_argument("--rate-limit", type=int, default=3600, help="requests per hour")
    parser.add_argument(
        "--manual-clock",
        action="store_true",
        help="time moves only through POST /_emulator/clock (and --tick-per-request)",
    )
    parser.add_argument("--tick-per-request", type=float, default=0.0)
    parser.add_argument(
        "--validate",
        choices=("auto", "on", "off"),
        default="auto",
        help="check requests against the spec (auto: when the test packages are installed)",
    )
    args = parser.parse_args(argv)
    emulator = HetznerEmulator(
        token=args.token or None,
        readonly_tokens=args.readonly_token,
        create_seconds=args.create_seconds,
        start_seconds=args.start_seconds,
        delete_seconds=args.delete_seconds,
        server_limit=args.server_limit,
        rate_limit=args.rate_limit,
        clock=ManualClock() if args.manual_clock else None,
        tick_per_request=args.tick_per_request,
        strict=False,
        validate={"auto": None, "on": True, "off": False}[args.validate],
    )
    if emulator.spec is None:
        note = "spec validation is off (the test extras turn it on: pip install -e '.[test]')"
    else:
        note = f"every request is checked against {emulator.spec_file} (tests/specs)"
    print(f"Hetzner emulator: {note}", file=sys.stderr, flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with emulator.serve(args.port) as url:
        print(f"Hetzner emulator listening on {url}", flush=True)
        stop.wait()
    if emulator.violations:
        print("spec violations:\n" + "\n".join(emulator.violations), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
