"""OVHcloud API 1.0 REST calls with signed requests (AK/AS/CK and the server's clock)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote

import httpx

from app.errors import AuthError, BivyError, Conflict, NotFound, ProviderUnavailable, QuotaExceeded
from app.providers._http import ApiClient, ErrorInfo, map_error, request_id_of
from app.providers.ovh import models as m

KIND = "ovh"
ENDPOINTS = {
    "eu": "https://eu.api.ovh.com/1.0",
    "ca": "https://ca.api.ovh.com/1.0",
    "us": "https://api.us.ovhcloud.com/1.0",
}
SUBSIDIARIES = {"eu": "FR", "ca": "CA", "us": "US"}
#: Catalogue prices are integers in hundred-millionths of the currency unit.
CATALOG_PRICE_SCALE = 100_000_000
_AUTH_ERRORS = {"INVALID_KEY", "INVALID_CREDENTIAL", "NOT_CREDENTIAL", "INVALID_SIGNATURE"}


def signature(secret: str, consumer: str, method: str, url: str, body: bytes, ts: int) -> str:
    """``$1$`` + sha1(AS+CK+METHOD+URL+BODY+TIMESTAMP joined by "+"), as OVH verifies it."""
    raw = "+".join([secret, consumer, method.upper(), url, body.decode("utf-8"), str(ts)])
    return "$1$" + hashlib.sha1(raw.encode("utf-8"), usedforsecurity=False).hexdigest()


def parse_error(response: httpx.Response) -> BivyError:
    """Map an OVH error (``{"message", "errorCode", "class"}``) to a ``BivyError``."""
    try:
        raw = response.json()
    except ValueError:
        raw = {}
    body = m.ErrorBody.model_validate(raw if isinstance(raw, dict) else {})
    status = response.status_code
    code = body.errorCode or body.class_
    message = body.message.rstrip(".")
    text = message.lower()
    kw: dict[str, Any] = {
        "provider": KIND,
        "code": code,
        "request_id": request_id_of(response),
        "status": status,
    }
    if body.errorCode == "NOT_GRANTED_CALL":
        return AuthError(
            f"OVHcloud refused the call: the consumer key's access rules do not allow it "
            f"({message})",
            hint="Create a consumer key with the access rules shown in Settings → Accounts",
            **kw,
        )
    if body.errorCode in _AUTH_ERRORS or status == 401:
        return AuthError(f"OVHcloud rejected the credentials ({message or code})", **kw)
    if status == 460:
        return ProviderUnavailable(
            f"OVHcloud: the project is suspended or expired ({message})",
            hint="Check the project's billing in the OVHcloud control panel",
            **kw,
        )
    if status in (400, 403) and "quota" in text:
        return QuotaExceeded(f"OVHcloud refused: {message}", **kw)
    if status == 400 and any(w in text for w in ("not available", "unavailable", "no more")):
        return ProviderUnavailable(
            f"OVHcloud cannot provide this right now: {message}",
            hint="That flavor is not available in that region; pick another flavor or region",
            **kw,
        )
    if status == 409:
        return Conflict(f"OVHcloud refused: {message}", **kw)
    if status == 404:
        return NotFound(f"OVHcloud: not found ({message})", **kw)
    info = ErrorInfo(code=code, message=body.message)
    return map_error(provider=KIND, status=status, info=info, request_id=kw["request_id"])


class SigningTransport(httpx.AsyncBaseTransport):
    """Adds OVH's signature headers to every request as it is sent (retries re-sign).

    The timestamp is the server's: ``GET /auth/time`` (unsigned) once, then the local clock plus
    the measured delta, so a skewed desktop clock does not break signing.
    """

    def __init__(
        self,
        inner: httpx.AsyncBaseTransport,
        *,
        base_url: str,
        application_key: str,
        application_secret: str,
        consumer_key: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._inner = inner
        self._base_url = base_url.rstrip("/")
        self._ak = application_key
        self._as = application_secret
        self._ck = consumer_key
        self._clock = clock
        self.delta: int | None = None

    def __repr__(self) -> str:
        return f"SigningTransport(base_url={self._base_url!r})"

    async def _server_time_delta(self) -> int:
        if self.delta is None:
            request = httpx.Request("GET", f"{self._base_url}/auth/time")
            response = await self._inner.handle_async_request(request)
            await response.aread()
            try:
                server = int(response.json()) if response.status_code == 200 else None
            except (ValueError, TypeError):
                server = None
            self.delta = 0 if server is None else server - int(self._clock())
        return self.delta

    async def _sign(self, request: httpx.Request) -> None:
        ts = int(self._clock()) + await self._server_time_delta()
        request.headers["X-Ovh-Application"] = self._ak
        request.headers["X-Ovh-Consumer"] = self._ck
        request.headers["X-Ovh-Timestamp"] = str(ts)
        request.headers["X-Ovh-Signature"] = signature(
            self._as, self._ck, request.method, str(request.url), request.content, ts
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/auth/time"):
            return await self._inner.handle_async_request(request)
        await self._sign(request)
        response = await self._inner.handle_async_request(request)
        if response.status_code in (400, 401, 403):
            await response.aread()
            if b"timestamp" in response.content.lower():
                # The local clock jumped (suspend, NTP) since the delta was measured. The API
                # refused before acting, so measuring again and re-signing once is safe.
                await response.aclose()
                self.delta = None
                await self._sign(request)
                response = await self._inner.handle_async_request(request)
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


class OvhClient:
    """The Public Cloud endpoints of one project that Bivy uses.

    Attributes:
        api: the shared HTTP client (its transport signs).
        project: the project id (``serviceName``).
    """

    def __init__(self, api: ApiClient, project: str) -> None:
        self.api = api
        self.project = project

    @property
    def _base(self) -> str:
        return f"cloud/project/{quote(self.project, safe='')}"

    async def project_info(self) -> m.Project:
        return m.Project.model_validate(await self.api.get_json(self._base))

    async def regions(self) -> list[str]:
        return [str(r) for r in await self.api.get_json(f"{self._base}/region")]

    async def flavors(self, region: str) -> list[m.Flavor]:
        body = await self.api.get_json(f"{self._base}/flavor", {"region": region})
        return [m.Flavor.model_validate(f) for f in body]

    async def images(self, region: str) -> list[m.Image]:
        body = await self.api.get_json(f"{self._base}/image", {"region": region, "osType": "linux"})
        return [m.Image.model_validate(i) for i in body]

    async def ssh_keys(self) -> list[m.SshKey]:
        return [m.SshKey.model_validate(k) for k in await self.api.get_json(f"{self._base}/sshkey")]

    async def create_ssh_key(self, name: str, public_key: str) -> m.SshKey:
        body = await self.api.send_json(
            "POST", f"{self._base}/sshkey", {"name": name, "publicKey": public_key}
        )
        return m.SshKey.model_validate(body)

    async def instances(self) -> list[m.Instance]:
        return [
            m.Instance.model_validate(i) for i in await self.api.get_json(f"{self._base}/instance")
        ]

    async def instance(self, instance_id: str) -> m.Instance:
        path = f"{self._base}/instance/{quote(instance_id, safe='')}"
        return m.Instance.model_validate(await self.api.get_json(path))

    async def create_instance(self, region: str, body: Mapping[str, Any]) -> m.Operation:
        path = f"{self._base}/region/{quote(region, safe='')}/instance"
        return m.Operation.model_validate(await self.api.send_json("POST", path, dict(body)))

    async def operation(self, operation_id: str) -> m.Operation:
        path = f"{self._base}/operation/{quote(operation_id, safe='')}"
        return m.Operation.model_validate(await self.api.get_json(path))

    async def delete_instance(self, instance_id: str) -> None:
        await self.api.request("DELETE", f"{self._base}/instance/{quote(instance_id, safe='')}")

    async def catalog(self, subsidiary: str) -> m.Catalog:
        body = await self.api.get_json("order/catalog/public/cloud", {"ovhSubsidiary": subsidiary})
        return m.Catalog.model_validate(body)

    # -- images (prebuild snapshots) -----------------------------------------------------------

    def _instance_path(self, instance_id: str) -> str:
        return f"{self._base}/instance/{quote(instance_id, safe='')}"

    async def stop_instance(self, instance_id: str) -> None:
        # Stopping a stopped instance changes nothing, so a lost answer may be retried.
        await self.api.request("POST", f"{self._instance_path(instance_id)}/stop", idempotent=True)

    async def snapshot_instance(self, instance_id: str, name: str) -> None:
        # Not repeated after a 5xx or timeout: a second snapshot would be billed too.
        await self.api.send_json(
            "POST", f"{self._instance_path(instance_id)}/snapshot", {"snapshotName": name}
        )

    async def snapshots(self, region: str | None = None) -> list[m.Snapshot]:
        params = {"region": region} if region else None
        body = await self.api.get_json(f"{self._base}/snapshot", params)
        return [m.Snapshot.model_validate(s) for s in body or []]

    async def snapshot(self, snapshot_id: str) -> m.Snapshot:
        path = f"{self._base}/snapshot/{quote(snapshot_id, safe='')}"
        return m.Snapshot.model_validate(await self.api.get_json(path))

    async def delete_snapshot(self, snapshot_id: str) -> None:
        await self.api.request("DELETE", f"{self._base}/snapshot/{quote(snapshot_id, safe='')}")
