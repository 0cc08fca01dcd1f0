"""Generic provider-API emulator core: routes, spec validation, fault injection, adapters.

A provider emulator subclasses ``Emulator``, sets ``provider``, ``base_path`` and ``spec_file``,
implements ``error_body`` (the provider's error JSON) and registers handlers with ``@route``::

    class MyEmulator(Emulator):
        provider = "myprovider"
        base_path = "/v2"                                   # what the real base URL's path is
        spec_file = "digitalocean-droplets.bundled.yaml"    # under tests/specs, or None

        def error_body(self, status, code, message, details=None):
            return {"id": code, "message": message}

        @route("GET", "/v2/droplets")          # paths as in the spec (base path included
        def list_droplets(self, req): ...      # only when the spec's paths include it)
            return json_response(200, {...})

Every request goes through ``handle``:
1. it is logged in ``requests`` (method, path, query, parsed JSON body, status);
2. latency and faults injected for it apply (``inject_latency``, ``inject_fault``,
   ``inject_error``; each matches a method and a regular expression on the path, once, N times
   or always);
3. it is validated against the spec (unknown body properties and bad ``format`` values
   included); a rejected request is recorded in ``violations`` and, with ``strict=True`` (the
   default), raises ``SpecViolation`` out of the transport so the test fails where the request
   was made; the served HTTP variant (and ``strict=False``) answers 400 ``spec_violation`` with
   "spec violation" in the message, so it can never look like success;
4. ``authenticate`` runs, then the route's handler; unknown routes answer 404;
5. the handler's JSON answer is checked against the spec's response schema too: a mismatch is
   an emulator bug, recorded in ``violations`` and (strict) raised.

Violations are always recorded, whatever the app does with the exception or the 400: the test
suite's autouse fixture (tests/conftest.py) fails every test after which any emulator created
during it holds a violation (``created_since`` / ``take_created``). A test that provokes one on
purpose takes it with ``take_violations()``.

Validation needs the test-only packages (``referencing``, ``openapi-schema-validator``). Without
them an emulator runs unvalidated (the README's try-it path after the app-only install), unless
validation is required: under pytest, or with ``BIVY_EMULATOR_VALIDATION=required``, a missing
package is an error, never a silent "off".

Adapters: ``transport()`` gives an ``httpx.MockTransport`` (async; latency is a real
``asyncio.sleep``), ``serve()`` runs a threaded HTTP server on 127.0.0.1:<free port> and yields
the base URL (``http://127.0.0.1:PORT`` + ``base_path``).

Control API (to drive a served emulator from another process, e.g. ``curl``)::

    POST /_emulator/errors   {"method": "GET", "path": "/v1/servers", "status": 429,
                              "code": "rate_limit_exceeded", "times": 1}
    POST /_emulator/latency  {"method": "*", "path": "/v1/.*", "seconds": 2, "times": null}
    POST /_emulator/faults   {"method": "POST", "path": "/v1/servers", "fault": "timeout",
                              "apply": true}
    POST /_emulator/clock    {"advance": 30}        (only with a ManualClock)
    POST /_emulator/clear    {}                     (drop every injection)
    GET  /_emulator/requests, GET /_emulator/violations

Time: emulators read ``self.clock()`` (seconds since the epoch). Pass a ``ManualClock`` to move
time by hand (``clock.advance(5)``) and/or ``tick_per_request`` to advance it on every request,
which makes state machines move by step count.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlsplit

import httpx

from tests.emulators.openapi import OpenAPISpec, SpecViolation, validation_available

__all__ = [
    "CONTROL_PREFIX",
    "EmuRequest",
    "EmuResponse",
    "Emulator",
    "ManualClock",
    "RecordedRequest",
    "SpecViolation",
    "json_response",
    "route",
    "specs_dir",
    "take_created",
    "validation_required",
]

Handler = Callable[[Any, "EmuRequest"], "EmuResponse"]

#: Path prefix of the control API (not part of any provider API, never validated or logged).
CONTROL_PREFIX = "/_emulator"


#: Every emulator created since the last ``take_created()`` (the autouse fixture checks them),
#: and every one still alive (a longer-lived fixture's, checked after each test too).
_CREATED: list[Emulator] = []
_LIVE: weakref.WeakSet[Emulator] = weakref.WeakSet()
_CREATED_LOCK = threading.Lock()


def take_created() -> list[Emulator]:
    """The emulators created since the previous call (forgotten here), then any other still
    alive: together, every emulator a test may have talked to."""
    with _CREATED_LOCK:
        created = list(_CREATED)
        _CREATED.clear()
        created += [e for e in list(_LIVE) if e not in created]
    return created


def validation_required() -> bool:
    """True under pytest or with ``BIVY_EMULATOR_VALIDATION=required`` (a test's child process)."""
    return "pytest" in sys.modules or os.environ.get("BIVY_EMULATOR_VALIDATION") == "required"


def specs_dir() -> Path:
    """The official API specs, kept in the repository (tests/specs, see its README)."""
    return Path(__file__).resolve().parents[1] / "specs"


class ManualClock:
    """A clock that only moves when told to; starts at the real time so timestamps look real."""

    def __init__(self, start: float | None = None) -> None:
        self.now = time.time() if start is None else start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


@dataclass
class EmuRequest:
    """One request as the emulator sees it.

    Attributes:
        method: upper-case method.
        path: the full URL path ("/v1/servers/42").
        query: parameter name → values, in order.
        headers: lower-case names.
        body: raw bytes.
        params: path parameters of the matched route.
    """

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes = b""
    params: dict[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    def arg(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[0] if values else default


@dataclass
class EmuResponse:
    """What a handler answers: a JSON-able body (or bytes/str), status and headers."""

    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)

    def encode(self) -> tuple[bytes, str]:
        if self.body is None:
            return b"", ""
        if isinstance(self.body, bytes):
            return self.body, "application/octet-stream"
        if isinstance(self.body, str):
            return self.body.encode(), "text/plain; charset=utf-8"
        return json.dumps(self.body).encode(), "application/json"


def json_response(
    status: int, body: Any = None, headers: dict[str, str] | None = None
) -> EmuResponse:
    return EmuResponse(status, body, dict(headers or {}))


@dataclass
class RecordedRequest:
    """A request in the emulator's log, with the status it got."""

    method: str
    path: str
    query: dict[str, list[str]]
    body: Any
    status: int = 0
    fault: str = ""


@dataclass
class _Injection:
    method: str
    pattern: re.Pattern[str]
    times: int | None
    status: int = 0
    code: str = ""
    message: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    latency: float = 0.0
    fault: str = ""
    apply: bool = False

    def matches(self, method: str, path: str) -> bool:
        if self.times is not None and self.times <= 0:
            return False
        return (self.method in ("*", method)) and bool(self.pattern.fullmatch(path))

    def use(self) -> None:
        if self.times is not None:
            self.times -= 1


def route(method: str, template: str) -> Callable[[Handler], Handler]:
    """Register a method as the handler of ``method`` on ``template`` ("/servers/{id}")."""

    def mark(func: Handler) -> Handler:
        routes = getattr(func, "_emu_routes", [])
        routes.append((method.upper(), template))
        func._emu_routes = routes  # type: ignore[attr-defined]
        return func

    return mark


def _compile(template: str) -> re.Pattern[str]:
    parts = re.split(r"(\{[^{}]+\})", template)
    regex = "".join(f"(?P<{p[1:-1]}>[^/]+)" if p.startswith("{") else re.escape(p) for p in parts)
    return re.compile(regex)


class Emulator:
    """Base of the provider emulators (see the module docstring).

    Attributes:
        provider: the provider kind ("hetzner").
        base_path: path prefix of the real API's base URL ("/v1").
        spec_file: file name under tests/specs, or None (no OpenAPI document: e.g. OVH checks
            a hand-written schema when ``validating``).
        spec: the loaded spec (shared per process), or None.
        validating: whether requests are checked at all (see ``validate`` below).
        requests: every request received, in order.
        violations: spec violations seen (each a message).
        clock: seconds since the epoch; a ``ManualClock`` in most tests.
        strict: raise ``SpecViolation`` out of the transport on a rejected request (or a
            response of the emulator's own that breaks the spec).
        validate_responses: also check the emulator's own JSON answers against the spec's
            response schemas (a mismatch is an emulator bug, recorded in ``violations``).

    ``validate``: True requires the validation packages, False turns validation off (a load
    test), None (default) validates when they are importable, and requires them under pytest.
    """

    provider: ClassVar[str] = ""
    base_path: ClassVar[str] = ""
    spec_file: ClassVar[str | None] = None
    #: True when the spec's paths already include base_path (DigitalOcean "/v2/…").
    spec_paths_include_base: ClassVar[bool] = False
    #: Path prefixes that are not part of the API (e.g. an emulated metadata service).
    unvalidated_prefixes: ClassVar[tuple[str, ...]] = ()
    #: True when the spec documents no error answers at all (Scaleway's 2022 copy): then only
    #: 2xx answers are checked against it.
    errors_undocumented: ClassVar[bool] = False

    def __init__(
        self,
        *,
        clock: Callable[[], float] | None = None,
        tick_per_request: float = 0.0,
        strict: bool = True,
        validate: bool | None = None,
        validate_responses: bool = True,
    ) -> None:
        self.clock: Callable[[], float] = clock or time.time
        self.tick_per_request = tick_per_request
        self.strict = strict
        self.validate_responses = validate_responses
        self.spec: OpenAPISpec | None = None
        if validate is None:
            validate = validation_required() or validation_available() is None
        if validate:
            problem = validation_available()
            if problem is not None:
                raise ImportError(f"{type(self).__name__}: cannot validate requests: {problem}")
        self.validating = bool(validate)
        if validate and self.spec_file:
            self.spec = OpenAPISpec.load(specs_dir() / self.spec_file)
        self.requests: list[RecordedRequest] = []
        self.violations: list[str] = []
        with _CREATED_LOCK:
            _CREATED.append(self)
            _LIVE.add(self)
        self.lock = threading.RLock()
        self._injections: list[_Injection] = []
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = []
        for klass in reversed(type(self).__mro__):
            for attr in vars(klass).values():
                for method, template in getattr(attr, "_emu_routes", []):
                    self._routes.append((method, _compile(template), attr))
        # literal routes before parametrised ones of the same shape
        self._routes.sort(key=lambda r: r[1].pattern.count("(?P<"))

    # -- to be provided by subclasses --------------------------------------------------------

    def error_body(
        self, status: int, code: str, message: str, details: dict[str, Any] | None = None
    ) -> Any:
        """The provider's JSON error body."""
        return {"error": {"code": code, "message": message, "details": details or {}}}

    def authenticate(self, request: EmuRequest) -> EmuResponse | None:
        """Return an error response when the request is not authorised, else None."""
        return None

    def extra_headers(self, request: EmuRequest, response: EmuResponse) -> dict[str, str]:
        """Headers added to every response (rate-limit headers, request ids)."""
        return {}

    def error(
        self,
        status: int,
        code: str,
        message: str,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> EmuResponse:
        return EmuResponse(status, self.error_body(status, code, message, details), headers or {})

    # -- injection ---------------------------------------------------------------------------

    def inject_error(
        self,
        method: str,
        path_pattern: str,
        status: int,
        code: str = "",
        message: str = "",
        *,
        times: int | None = 1,
        headers: dict[str, str] | None = None,
        body: Any = None,
        apply: bool = False,
    ) -> None:
        """Answer ``status`` with the provider's error (``code``/``message``) instead of handling.

        ``path_pattern`` is a regular expression matched against the whole URL path (base path
        included, e.g. r"/v1/servers"); ``method`` may be "*". ``times=None`` means always.
        With ``apply=True`` the request is handled first and only its answer is replaced (a
        gateway timeout after the provider acted).
        """
        with self.lock:
            self._injections.append(
                _Injection(
                    method=method.upper(),
                    pattern=re.compile(path_pattern),
                    times=times,
                    status=status,
                    code=code,
                    message=message or code or f"injected HTTP {status}",
                    headers=dict(headers or {}),
                    body=body,
                    apply=apply,
                )
            )

    def inject_latency(
        self, method: str, path_pattern: str, seconds: float, *, times: int | None = None
    ) -> None:
        """Delay matching requests by ``seconds`` (real time: asyncio.sleep or time.sleep)."""
        with self.lock:
            self._injections.append(
                _Injection(method.upper(), re.compile(path_pattern), times, latency=seconds)
            )

    def inject_fault(
        self,
        method: str,
        path_pattern: str,
        fault: str = "timeout",
        *,
        times: int | None = 1,
        apply: bool = False,
    ) -> None:
        """Fail matching requests at the transport: ``fault`` is "timeout" or "connect".

        With ``apply=True`` the request is handled first and only the answer is lost (a timeout
        after the provider acted). Over ``serve()`` a fault closes the connection unanswered.
        """
        if fault not in ("timeout", "connect"):
            raise ValueError("fault is 'timeout' or 'connect'")
        with self.lock:
            self._injections.append(
                _Injection(
                    method.upper(), re.compile(path_pattern), times, fault=fault, apply=apply
                )
            )

    def clear_injections(self) -> None:
        with self.lock:
            self._injections.clear()

    def assert_no_violations(self) -> None:
        """Fail when any request the emulator saw was rejected by the spec."""
        with self.lock:
            if self.violations:
                raise AssertionError("spec violations:\n" + "\n".join(self.violations))

    def take_violations(self) -> list[str]:
        """The violations recorded so far, forgotten (for a test that provokes them)."""
        with self.lock:
            taken = list(self.violations)
            self.violations.clear()
        return taken

    def reject(self, record: RecordedRequest, exc: SpecViolation) -> EmuResponse:
        """Record a rejected request; raise it (strict) or answer 400 ``spec_violation``."""
        self.violations.append(str(exc))
        record.status = 400
        if self.strict:
            raise exc
        return self.spec_violation_response(exc)

    def spec_violation_response(self, exc: SpecViolation) -> EmuResponse:
        """The 400 answer to a request the spec rejects (says "spec violation", never success)."""
        return self.error(400, "spec_violation", f"spec violation (emulator): {exc}")

    def calls(self, method: str, path_pattern: str) -> list[RecordedRequest]:
        """Recorded requests matching ``method`` ("*" for any) and the path regex."""
        pattern = re.compile(path_pattern)
        return [
            r
            for r in self.requests
            if method.upper() in ("*", r.method) and pattern.fullmatch(r.path)
        ]

    # -- core --------------------------------------------------------------------------------

    def _spec_path(self, path: str) -> str | None:
        if self.spec_paths_include_base:
            return path
        if self.base_path and not (path == self.base_path or path.startswith(self.base_path + "/")):
            return None
        return path[len(self.base_path) :] or "/"

    def _control(self, request: EmuRequest) -> EmuResponse:
        """The control API under ``/_emulator/`` (for a served emulator in another process)."""
        action = request.path[len(CONTROL_PREFIX) :].strip("/")
        try:
            body = request.json() or {}
        except ValueError:
            return EmuResponse(400, {"error": "body is not JSON"})
        try:
            if request.method == "GET" and action == "requests":
                return EmuResponse(200, {"requests": [vars(r) for r in self.requests]})
            if request.method == "GET" and action == "violations":
                return EmuResponse(200, {"violations": list(self.violations)})
            if request.method == "POST" and action == "errors":
                self.inject_error(
                    body.get("method", "*"), body["path"], int(body["status"]),
                    body.get("code", ""), body.get("message", ""), times=body.get("times", 1),
                )  # fmt: skip
            elif request.method == "POST" and action == "latency":
                self.inject_latency(
                    body.get("method", "*"), body["path"], float(body["seconds"]),
                    times=body.get("times"),
                )  # fmt: skip
            elif request.method == "POST" and action == "faults":
                self.inject_fault(
                    body.get("method", "*"), body["path"], body.get("fault", "timeout"),
                    times=body.get("times", 1), apply=bool(body.get("apply", False)),
                )  # fmt: skip
            elif request.method == "POST" and action == "clock":
                if not hasattr(self.clock, "advance"):
                    return EmuResponse(409, {"error": "the clock is real time (--manual-clock)"})
                self.clock.advance(float(body["advance"]))
            elif request.method == "POST" and action == "clear":
                self.clear_injections()
            else:
                return EmuResponse(404, {"error": f"no control action {request.method} {action}"})
        except (KeyError, TypeError, ValueError) as exc:
            return EmuResponse(400, {"error": f"bad control request: {exc!r}"})
        return EmuResponse(200, {"ok": True})

    def handle(self, request: EmuRequest) -> tuple[EmuResponse | None, float, str]:
        """Process one request: (response or None for a fault, latency seconds, fault name)."""
        with self.lock:
            if request.path.startswith(CONTROL_PREFIX + "/"):
                return self._control(request), 0.0, ""
            if self.tick_per_request and hasattr(self.clock, "advance"):
                self.clock.advance(self.tick_per_request)
            body: Any
            try:
                body = request.json()
            except ValueError:
                body = request.body.decode(errors="replace")
            record = RecordedRequest(request.method, request.path, request.query, body)
            self.requests.append(record)

            latency = 0.0
            fault: _Injection | None = None
            injected: _Injection | None = None
            for inj in self._injections:
                if not inj.matches(request.method, request.path):
                    continue
                if inj.latency:
                    latency += inj.latency
                    inj.use()
                elif inj.fault and fault is None and injected is None:
                    fault = inj
                    inj.use()
                elif inj.status and injected is None and fault is None:
                    injected = inj
                    inj.use()

            operation = None
            unvalidated = request.path.startswith(self.unvalidated_prefixes or ("\0",))
            if self.spec is not None and not unvalidated:
                spec_path = self._spec_path(request.path)
                try:
                    if spec_path is None:
                        raise SpecViolation(request.method, request.path, ["outside the base path"])
                    operation = self.spec.validate_request(
                        request.method,
                        spec_path,
                        query=request.query,
                        body=request.body,
                        content_type=request.headers.get("content-type"),
                    )
                except SpecViolation as exc:
                    return self._finish(request, self.reject(record, exc)), latency, ""

            if fault is not None and not fault.apply:
                record.fault = fault.fault
                return None, latency, fault.fault
            if injected is not None and injected.apply:
                self.authenticate(request) or self._dispatch(request)
            if injected is not None:
                if injected.body is not None:
                    response = EmuResponse(injected.status, injected.body, dict(injected.headers))
                else:
                    response = self.error(
                        injected.status, injected.code, injected.message, None, injected.headers
                    )
            else:
                response = self.authenticate(request) or self._dispatch(request)
                checked = not (self.errors_undocumented and response.status >= 400)
                if operation is not None and self.validate_responses and checked:
                    assert self.spec is not None
                    problems = self.spec.response_errors(operation, response.status, response.body)
                    if problems:
                        record.status = response.status
                        exc = SpecViolation(
                            request.method,
                            f"{request.path} (the emulator's {response.status} answer)",
                            problems,
                        )
                        self.violations.append(str(exc))
                        if self.strict:
                            raise exc
            record.status = response.status
            if fault is not None:
                record.fault = fault.fault
                return None, latency, fault.fault
            return self._finish(request, response), latency, ""

    def _finish(self, request: EmuRequest, response: EmuResponse) -> EmuResponse:
        for key, value in self.extra_headers(request, response).items():
            response.headers.setdefault(key, value)
        return response

    def _dispatch(self, request: EmuRequest) -> EmuResponse:
        matched_path = False
        for method, pattern, handler in self._routes:
            m = pattern.fullmatch(request.path)
            if not m:
                continue
            matched_path = True
            if method != request.method:
                continue
            request.params = m.groupdict()
            return handler(self, request)
        if matched_path:
            return self.error(405, "method_not_allowed", "method not allowed")
        return self.error(404, "not_found", f"no route for {request.path}")

    # -- adapters ----------------------------------------------------------------------------

    def transport(self) -> httpx.MockTransport:
        """An ``httpx`` transport for ``AsyncClient`` that answers from this emulator."""

        async def handler(request: httpx.Request) -> httpx.Response:
            emu_request = EmuRequest(
                method=request.method,
                path=request.url.path,
                query=_query(request.url.query.decode()),
                headers={k.lower(): v for k, v in request.headers.items()},
                body=await request.aread(),
            )
            response, latency, fault = self.handle(emu_request)
            if latency:
                await asyncio.sleep(latency)
            if fault == "timeout":
                raise httpx.ReadTimeout("emulated timeout", request=request)
            if fault == "connect":
                raise httpx.ConnectError("emulated connection failure", request=request)
            assert response is not None
            content, ctype = response.encode()
            headers = dict(response.headers)
            if ctype:
                headers.setdefault("Content-Type", ctype)
            return httpx.Response(response.status, headers=headers, content=content)

        return httpx.MockTransport(handler)

    @contextlib.contextmanager
    def serve(self, port: int = 0) -> Iterator[str]:
        """Run on 127.0.0.1 (a free port unless given) in a thread; yield the base URL."""
        server = ThreadingHTTPServer(("127.0.0.1", port), _make_handler(self))
        server.daemon_threads = True
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},  # shutdown() waits up to one poll interval
            name=f"{self.provider}-emulator",
        )
        thread.daemon = True
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}{self.base_path}"
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)


def _query(raw: str) -> dict[str, list[str]]:
    query: dict[str, list[str]] = {}
    for key, value in parse_qsl(raw, keep_blank_values=True):
        query.setdefault(key, []).append(value)
    return query


def _make_handler(emulator: Emulator) -> type[BaseHTTPRequestHandler]:
    class _Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet: tests assert on output
            return

        def _serve(self) -> None:
            url = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            request = EmuRequest(
                method=self.command,
                path=url.path,
                query=_query(url.query),
                headers={k.lower(): v for k, v in self.headers.items()},
                body=body,
            )
            try:
                response, latency, fault = emulator.handle(request)
            except SpecViolation as exc:  # served mode: answer instead of crashing the thread
                response, latency, fault = emulator.spec_violation_response(exc), 0.0, ""
            except Exception as exc:  # an emulator bug must show up as a 500, not a hang
                response = emulator.error(500, "server_error", f"emulator error: {exc!r}")
                latency, fault = 0.0, ""
            if latency:
                time.sleep(latency)
            if fault or response is None:
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.shutdown(2)
                return
            content, ctype = response.encode()
            self.send_response(response.status)
            for key, value in response.headers.items():
                self.send_header(key, value)
            if ctype and "content-type" not in {k.lower() for k in response.headers}:
                self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            self.wfile.write(content)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _serve

    return _Handler
