"""Shared async HTTP client for provider REST APIs: auth, timeouts, bounded retries, typed errors.

This is the only module in Bivy that catches ``httpx`` exceptions. Their tree (httpx 0.28)::

    Exception
    ├── httpx.HTTPError                 base of request and status failures
    │   ├── httpx.RequestError          the request could not be completed
    │   │   ├── httpx.TransportError    raised by the transport
    │   │   │   ├── httpx.TimeoutException
    │   │   │   │   ├── httpx.ConnectTimeout   no connection in time (request not sent)
    │   │   │   │   ├── httpx.ReadTimeout      sent, no response in time (may have been applied)
    │   │   │   │   ├── httpx.WriteTimeout     sending stalled (may have been applied)
    │   │   │   │   └── httpx.PoolTimeout      no free connection in the pool (not sent)
    │   │   │   ├── httpx.NetworkError
    │   │   │   │   ├── httpx.ConnectError     refused, DNS failure, TLS failure (not sent)
    │   │   │   │   ├── httpx.ReadError
    │   │   │   │   ├── httpx.WriteError
    │   │   │   │   └── httpx.CloseError
    │   │   │   ├── httpx.ProtocolError
    │   │   │   │   ├── httpx.LocalProtocolError
    │   │   │   │   └── httpx.RemoteProtocolError
    │   │   │   ├── httpx.ProxyError
    │   │   │   └── httpx.UnsupportedProtocol
    │   │   ├── httpx.DecodingError     the body could not be decoded
    │   │   └── httpx.TooManyRedirects
    │   └── httpx.HTTPStatusError       only from raise_for_status(), which we never call
    ├── httpx.InvalidURL
    ├── httpx.CookieConflict
    └── httpx.StreamError               misuse of streamed bodies (a bug, never caught)
        ├── httpx.StreamConsumed, httpx.StreamClosed
        └── httpx.ResponseNotRead, httpx.RequestNotRead

How they map to ``app.errors``: ``TimeoutException`` → ``Timeout``; any other ``RequestError`` and
``InvalidURL`` → ``ProviderUnavailable``; an HTTP error status → whatever the provider's
``parse_error`` hook returns (``map_error`` below knows the common codes).

Retries: 429 is retried for every method (the provider refused before doing anything), after the
delay the rate-limit headers give, a bounded number of times and never longer than
``max_rate_limit_wait`` per wait. 5xx, timeouts and network errors are retried only for idempotent
requests (GET, HEAD, PUT, DELETE, OPTIONS, or a request the caller marks ``idempotent=True``):
a POST that creates a server is never retried, because a retry could create a second one.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from app.errors import (
    AuthError,
    BivyError,
    Conflict,
    InvalidInput,
    NotFound,
    ProviderUnavailable,
    QuotaExceeded,
    RateLimited,
    Timeout,
)

__all__ = [
    "IDEMPOTENT_METHODS",
    "REQUEST_ID_HEADERS",
    "ApiClient",
    "ErrorInfo",
    "RateLimitState",
    "default_parse_error",
    "extract_error_info",
    "map_error",
    "scrub",
]

log = logging.getLogger(__name__)

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})

#: Headers providers put their request/correlation id in (Hetzner, DigitalOcean/Scaleway, OVH).
REQUEST_ID_HEADERS = ("X-Correlation-Id", "X-Request-Id", "X-OVH-QUERYID")

Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]
ErrorParser = Callable[[httpx.Response], BivyError]
RateLimitDelay = Callable[[httpx.Response, "RateLimitState", float], float | None]

_MASK = "***"


def scrub(text: str, secrets: Iterable[str]) -> str:
    """Return ``text`` with every secret (of 4+ characters) replaced by ``***``."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, _MASK)
    return text


@dataclass
class RateLimitState:
    """The provider's rate-limit headers as last seen; the refresh scheduler reads this.

    Attributes:
        limit: requests allowed per window (Hetzner: per hour), or None if never reported.
        remaining: requests left in the window, or None.
        reset_at: when the budget is full again (UTC), or None.
        updated_at: when these values were read (UTC), or None.
    """

    limit: int | None = None
    remaining: int | None = None
    reset_at: datetime | None = None
    updated_at: datetime | None = None

    def update(self, headers: httpx.Headers, now: float) -> None:
        """Read ``RateLimit-*`` (any case; DigitalOcean sends lower case) from ``headers``."""
        limit = _int_header(headers, "RateLimit-Limit")
        remaining = _int_header(headers, "RateLimit-Remaining")
        reset = _int_header(headers, "RateLimit-Reset")
        if limit is None and remaining is None and reset is None:
            return
        if limit is not None:
            self.limit = limit
        if remaining is not None:
            self.remaining = remaining
        if reset is not None:
            self.reset_at = datetime.fromtimestamp(_absolute_epoch(reset, now), UTC)
        self.updated_at = datetime.fromtimestamp(now, UTC)


@dataclass(frozen=True)
class ErrorInfo:
    """A provider error body reduced to what Bivy needs.

    Attributes:
        code: the provider's machine code ("uniqueness_error"), or "".
        message: the provider's message, or "".
        fields: field name → messages, for input errors.
    """

    code: str = ""
    message: str = ""
    fields: dict[str, list[str]] = field(default_factory=dict)


def _int_header(headers: httpx.Headers, name: str) -> int | None:
    value = headers.get(name)
    if value is None:
        return None
    try:
        return int(float(value.strip()))
    except ValueError:
        return None


def _absolute_epoch(value: float, now: float) -> float:
    # RateLimit-Reset is a UNIX timestamp at Hetzner and DigitalOcean; the IETF draft uses
    # seconds from now. A value below ~2001-09-09 cannot be a timestamp, so it is a delta.
    return value if value >= 1_000_000_000 else now + value


def request_id_of(response: httpx.Response) -> str:
    """The provider's request id from the response headers, or ""."""
    for name in REQUEST_ID_HEADERS:
        value = response.headers.get(name)
        if value:
            return str(value)
    return ""


def extract_error_info(response: httpx.Response) -> ErrorInfo:
    """Read code, message and field messages from the usual provider error bodies.

    Understands Hetzner ``{"error": {"code", "message", "details": {"fields": [...]}}}``,
    DigitalOcean ``{"id", "message"}``, Scaleway ``{"type", "message", "fields"?}`` and OVH
    ``{"message", "errorCode"}``. A body that is not JSON gives an empty ``ErrorInfo``.
    """
    try:
        body = response.json()
    except ValueError:
        return ErrorInfo()
    if not isinstance(body, dict):
        return ErrorInfo()
    inner = body.get("error")
    if isinstance(inner, dict):
        body = inner
    code = str(
        body.get("code") or body.get("id") or body.get("errorCode") or body.get("type") or ""
    )
    message = str(body.get("message") or "")
    fields: dict[str, list[str]] = {}
    details = body.get("details")
    raw_fields = details.get("fields") if isinstance(details, dict) else body.get("fields")
    if isinstance(raw_fields, list):
        for item in raw_fields:
            if isinstance(item, dict) and isinstance(item.get("name"), str):
                msgs = item.get("messages") or []
                fields[item["name"]] = [str(m) for m in msgs] if isinstance(msgs, list) else []
    elif isinstance(raw_fields, dict):
        for name, msgs in raw_fields.items():
            fields[str(name)] = [str(m) for m in msgs] if isinstance(msgs, list) else [str(msgs)]
    return ErrorInfo(code=str(code), message=str(message), fields=fields)


def map_error(
    *,
    provider: str,
    status: int,
    info: ErrorInfo,
    request_id: str,
    retry_after: float | None = None,
) -> BivyError:
    """Turn an HTTP error status and the provider's error info into the right ``BivyError``.

    The codes named here are Hetzner's; other providers pass their own code and fall back to
    the status-based mapping.
    """
    code = info.code
    name = provider.capitalize() if provider else "The provider"
    detail = info.message.rstrip(".") if info.message else ""
    kw: dict[str, Any] = {"provider": provider, "code": code, "request_id": request_id}
    kw["status"] = status

    def said(default: str) -> str:
        return f"{default}: {detail}" if detail else default

    if status == 401 and code == "token_readonly":
        return AuthError(
            f"{name} refused the change: the API token is read-only",
            hint="Create a Read & Write token for Bivy's project and store it with `bivy login`",
            **kw,
        )
    if status == 401:
        return AuthError(f"{name} rejected the API token (invalid or revoked)", **kw)
    if code == "resource_limit_exceeded" or code in {"quota_exceeded", "quotas_exceeded"}:
        return QuotaExceeded(said(f"{name} refused: the account's resource limit is reached"), **kw)
    if status == 403 and code == "maintenance":
        return ProviderUnavailable(said(f"{name} is under maintenance"), **kw)
    if status == 403:
        return AuthError(
            said(f"{name} refused the request: the token lacks permission"),
            hint="A read-only token cannot create or delete servers; use a Read & Write token",
            **kw,
        )
    if status == 404:
        return NotFound(said(f"{name}: not found"), **kw)
    if status == 409 and code == "uniqueness_error":
        taken = ", ".join(info.fields) or "name"
        return Conflict(
            f"{name} refused: that {taken} is already taken in this project",
            hint="Choose another name, or delete the existing one first",
            **kw,
        )
    if status in (409, 423):
        return Conflict(said(f"{name} refused: the resource is busy or changed"), **kw)
    if status == 412 or code in {"resource_unavailable", "out_of_stock"}:
        return ProviderUnavailable(
            said(f"{name} cannot provide this right now"),
            hint="That type is not available in that location; pick another type or location",
            **kw,
        )
    if status in (400, 422):
        if info.fields:
            parts = [f"{k}: {'; '.join(v) if v else 'invalid'}" for k, v in info.fields.items()]
            message = f"{name} rejected the input ({', '.join(parts)})"
        else:
            message = said(f"{name} rejected the input")
        return InvalidInput(message, **kw)
    if status == 429:
        return RateLimited(said(f"{name} rate limit reached"), retry_after=retry_after, **kw)
    if status >= 500:
        return ProviderUnavailable(said(f"{name} had a server error (HTTP {status})"), **kw)
    return BivyError(said(f"{name} answered HTTP {status}"), **kw)


def default_parse_error(provider: str) -> ErrorParser:
    """An error parser using ``extract_error_info`` and ``map_error``."""

    def parse(response: httpx.Response) -> BivyError:
        return map_error(
            provider=provider,
            status=response.status_code,
            info=extract_error_info(response),
            request_id=request_id_of(response),
        )

    return parse


def default_rate_limit_delay(
    response: httpx.Response, state: RateLimitState, now: float
) -> float | None:
    """Seconds to wait after a 429: ``Retry-After`` when sent, else until ``RateLimit-Reset``."""
    retry_after = response.headers.get("Retry-After")
    if retry_after:
        try:
            return max(0.0, float(retry_after))
        except ValueError:
            when = email.utils.parsedate_to_datetime(retry_after)
            if when is not None:
                return max(0.0, when.timestamp() - now)
    reset = _int_header(response.headers, "RateLimit-Reset")
    if reset is not None:
        return max(0.0, _absolute_epoch(reset, now) - now)
    return None


class ApiClient:
    """One provider account's HTTP client with retries and typed errors.

    Attributes:
        provider: the provider kind, put on every error.
        rate_limit: the last rate-limit headers seen (``limit``, ``remaining``, ``reset_at``).
        max_retries: extra attempts after a 5xx/timeout/network error (idempotent requests only).
        max_rate_limit_retries: extra attempts after a 429.
        max_rate_limit_wait: the longest single wait for a 429 (seconds); a longer one raises.
        min_rate_limit_wait: the shortest wait after a 429 (seconds).
    """

    def __init__(
        self,
        *,
        provider: str,
        base_url: str,
        headers: Mapping[str, str] | None = None,
        secrets: Sequence[str] = (),
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 30.0,
        parse_error: ErrorParser | None = None,
        rate_limit_delay: RateLimitDelay | None = None,
        sleep: Sleep = asyncio.sleep,
        clock: Clock = time.time,
        max_retries: int = 3,
        max_rate_limit_retries: int = 5,
        max_rate_limit_wait: float = 60.0,
        min_rate_limit_wait: float = 0.5,
        backoff_initial: float = 0.5,
        backoff_max: float = 8.0,
    ) -> None:
        self.provider = provider
        self.rate_limit = RateLimitState()
        self.max_retries = max_retries
        self.max_rate_limit_retries = max_rate_limit_retries
        self.max_rate_limit_wait = max_rate_limit_wait
        self.min_rate_limit_wait = min_rate_limit_wait
        self._secrets = tuple(s for s in secrets if s)
        self._parse_error = parse_error or default_parse_error(provider)
        self._rate_limit_delay = rate_limit_delay or default_rate_limit_delay
        self._sleep = sleep
        self._clock = clock
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/") + "/",
            headers=dict(headers or {}),
            transport=transport,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            follow_redirects=False,
        )

    def __repr__(self) -> str:  # never show headers: they hold the token
        return f"ApiClient(provider={self.provider!r}, base_url={str(self._client.base_url)!r})"

    @property
    def base_url(self) -> str:
        return str(self._client.base_url)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> ApiClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _scrub(self, text: str) -> str:
        return scrub(text, self._secrets)

    def _wrap(self, error: BivyError) -> BivyError:
        error.message = self._scrub(error.message)
        error.args = (error.message,)
        if error.hint:
            error.hint = self._scrub(error.hint)
        return error

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        idempotent: bool | None = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """Send one request (with retries) and return the successful response.

        ``path`` is relative to the base URL (a leading "/" is allowed). Raises a ``BivyError``
        for any error status or transport failure, after the retries allowed for it.
        """
        method = method.upper()
        safe = method in IDEMPOTENT_METHODS if idempotent is None else idempotent
        url = path.lstrip("/")
        failures = 0
        limited = 0
        while True:
            try:
                # ``content``/``headers``: raw bodies such as Scaleway's text/plain user data.
                response = await self._client.request(
                    method, url, params=params, json=json, content=content, headers=headers
                )
            except httpx.TimeoutException as exc:
                failures += 1
                if safe and failures <= self.max_retries:
                    await self._backoff(failures, method, path, type(exc).__name__)
                    continue
                raise self._transport_error(exc, method, path, safe, failures) from None
            except (httpx.RequestError, httpx.InvalidURL) as exc:
                failures += 1
                if safe and failures <= self.max_retries and not isinstance(exc, httpx.InvalidURL):
                    await self._backoff(failures, method, path, type(exc).__name__)
                    continue
                raise self._transport_error(exc, method, path, safe, failures) from None

            now = self._clock()
            self.rate_limit.update(response.headers, now)
            status = response.status_code
            log.debug(
                "%s %s %s → %s (request id %s)",
                self.provider,
                method,
                path,
                status,
                request_id_of(response) or "-",
            )
            if status < 400:
                return response
            if status == 429:
                limited += 1
                delay = self._rate_limit_delay(response, self.rate_limit, now)
                # never hammer: a reset "now" (whole seconds, clocks apart) still waits a little
                wait = 1.0 if delay is None else max(delay, self.min_rate_limit_wait)
                if limited <= self.max_rate_limit_retries and wait <= self.max_rate_limit_wait:
                    log.info(
                        "%s rate limit reached; retrying %s %s in %.1f s",
                        self.provider,
                        method,
                        path,
                        wait,
                    )
                    await self._sleep(wait)
                    continue
                error = self._parse_error(response)
                if isinstance(error, RateLimited):
                    error.retry_after = wait
                raise self._wrap(error)
            if status >= 500 and safe and failures < self.max_retries:
                failures += 1
                await self._backoff(failures, method, path, f"HTTP {status}")
                continue
            error = self._parse_error(response)
            if status >= 500 and not safe:
                error.message += (
                    "; the request may or may not have been applied, so Bivy did not repeat it"
                )
            raise self._wrap(error)

    async def _backoff(self, attempt: int, method: str, path: str, why: str) -> None:
        delay = min(self._backoff_max, self._backoff_initial * (2 ** (attempt - 1)))
        log.info(
            "%s %s %s failed (%s); retry %d in %.1f s",
            self.provider,
            method,
            path,
            why,
            attempt,
            delay,
        )
        await self._sleep(delay)

    def _transport_error(
        self, exc: Exception, method: str, path: str, safe: bool, attempts: int
    ) -> BivyError:
        name = self.provider.capitalize()
        tries = f" after {attempts} attempts" if attempts > 1 else ""
        maybe = (
            ""
            if safe
            else "; the request may or may not have been applied, so Bivy did not repeat it"
        )
        what = f"{method} {path}"
        if isinstance(exc, httpx.TimeoutException):
            error: BivyError = Timeout(
                f"{name} did not answer {what} in time{tries}{maybe}",
                provider=self.provider,
                code="timeout",
            )
        else:
            error = ProviderUnavailable(
                f"Could not reach {name} for {what}{tries} ({type(exc).__name__}){maybe}",
                hint="Check the network connection and the provider's status page",
                provider=self.provider,
                code="network_error",
            )
        return self._wrap(error)

    async def get_json(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        """GET ``path`` and return the decoded JSON body."""
        return self._decode(await self.request("GET", path, params=params))

    async def send_json(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        params: Mapping[str, Any] | None = None,
        idempotent: bool | None = None,
    ) -> Any:
        """Send ``body`` as JSON and return the decoded JSON answer (None when empty)."""
        response = await self.request(method, path, params=params, json=body, idempotent=idempotent)
        return self._decode(response)

    def _decode(self, response: httpx.Response) -> Any:
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise ProviderUnavailable(
                f"{self.provider.capitalize()} sent a response that is not JSON",
                provider=self.provider,
                request_id=request_id_of(response),
                status=response.status_code,
            ) from None
