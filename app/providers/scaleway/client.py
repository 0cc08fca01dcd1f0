"""Scaleway Instance API v1 REST calls (zone in the path) over the shared ``ApiClient``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from app.errors import AuthError, BivyError, Conflict, InvalidInput, NotFound, QuotaExceeded
from app.providers._http import ApiClient, ErrorInfo, map_error, request_id_of
from app.providers.scaleway import models as m

KIND = "scaleway"
DEFAULT_API_URL = "https://api.scaleway.com"
PER_PAGE = 100
MAX_PAGES = 50


def parse_error(response: httpx.Response) -> BivyError:
    """Map a Scaleway error (``{"type", "message", …}``) to a ``BivyError``."""
    try:
        raw = response.json()
    except ValueError:
        raw = {}
    body = m.ErrorBody.model_validate(raw if isinstance(raw, dict) else {})
    status = response.status_code
    kind = body.type
    message = body.message.rstrip(".")
    kw: dict[str, Any] = {
        "provider": KIND,
        "code": kind,
        "request_id": request_id_of(response),
        "status": status,
    }
    if kind == "denied_authentication" or status == 401:
        return AuthError("Scaleway rejected the secret key (invalid or revoked)", **kw)
    if kind == "permissions_denied":
        return AuthError(
            f"Scaleway refused the request: the key lacks permission ({message})",
            hint="Give the IAM application InstancesFullAccess on the project",
            **kw,
        )
    if kind == "quotas_exceeded" or "quota" in message.lower():
        return QuotaExceeded(f"Scaleway refused: {message or 'quota exceeded'}", **kw)
    if kind == "transient_state":
        return Conflict(f"Scaleway refused: the server is busy ({message})", **kw)
    if kind == "precondition_failed":
        return Conflict(f"Scaleway refused: {message or 'a precondition failed'}", **kw)
    if kind in ("not_found", "unknown_resource"):
        return NotFound(f"Scaleway: not found ({message})", **kw)
    if kind == "invalid_arguments" and body.details:
        parts = [
            f"{d.get('argument_name', '?')}: {d.get('help_message') or d.get('reason', 'invalid')}"
            for d in body.details
        ]
        return InvalidInput(f"Scaleway rejected the input ({', '.join(parts)})", **kw)
    info = ErrorInfo(code=kind, message=body.message, fields=dict(body.fields or {}))
    return map_error(provider=KIND, status=status, info=info, request_id=kw["request_id"])


class ScalewayClient:
    """The Instance API endpoints Bivy uses, for any zone.

    Attributes:
        api: the shared HTTP client.
    """

    def __init__(self, api: ApiClient) -> None:
        self.api = api

    @staticmethod
    def _base(zone: str) -> str:
        return f"instance/v1/zones/{zone}"

    async def servers(self, zone: str, tags: str, project: str) -> list[m.Server]:
        found: list[m.Server] = []
        for page in range(1, MAX_PAGES + 1):
            params = {"tags": tags, "project": project, "page": page, "per_page": PER_PAGE}
            response = await self.api.request("GET", f"{self._base(zone)}/servers", params=params)
            chunk = m.ServerList.model_validate(response.json()).servers
            found.extend(chunk)
            total = int(response.headers.get("X-Total-Count") or len(found))
            if not chunk or len(found) >= total:
                break
        return found

    async def server(self, zone: str, server_id: str) -> m.Server:
        body = await self.api.get_json(f"{self._base(zone)}/servers/{server_id}")
        return m.ServerEnvelope.model_validate(body).server

    async def create_server(self, zone: str, body: Mapping[str, Any]) -> m.Server:
        answer = await self.api.send_json("POST", f"{self._base(zone)}/servers", dict(body))
        return m.ServerEnvelope.model_validate(answer).server

    async def set_user_data(self, zone: str, server_id: str, key: str, value: bytes) -> None:
        # Setting a key is a replace, so repeating it is harmless.
        await self.api.request(
            "PATCH",
            f"{self._base(zone)}/servers/{server_id}/user_data/{key}",
            content=value,
            headers={"Content-Type": "text/plain"},
            idempotent=True,
        )

    async def action(self, zone: str, server_id: str, action: str) -> m.Task:
        answer = await self.api.send_json(
            "POST", f"{self._base(zone)}/servers/{server_id}/action", {"action": action}
        )
        return m.ActionResult.model_validate(answer or {}).task

    async def delete_server(self, zone: str, server_id: str) -> None:
        await self.api.request("DELETE", f"{self._base(zone)}/servers/{server_id}")

    async def delete_volume(self, zone: str, volume_id: str) -> None:
        await self.api.request("DELETE", f"{self._base(zone)}/volumes/{volume_id}")

    async def security_groups(self, zone: str, name: str, project: str) -> list[m.SecurityGroup]:
        body = await self.api.get_json(
            f"{self._base(zone)}/security_groups",
            {"name": name, "project": project, "per_page": PER_PAGE},
        )
        return m.SecurityGroupList.model_validate(body).security_groups

    async def create_security_group(self, zone: str, body: Mapping[str, Any]) -> m.SecurityGroup:
        answer = await self.api.send_json("POST", f"{self._base(zone)}/security_groups", dict(body))
        return m.SecurityGroupEnvelope.model_validate(answer).security_group

    async def add_security_group_rule(
        self, zone: str, group_id: str, body: Mapping[str, Any]
    ) -> None:
        await self.api.send_json(
            "POST", f"{self._base(zone)}/security_groups/{group_id}/rules", dict(body)
        )

    async def delete_security_group(self, zone: str, group_id: str) -> None:
        await self.api.request("DELETE", f"{self._base(zone)}/security_groups/{group_id}")

    async def server_types(self, zone: str) -> dict[str, m.ServerType]:
        types: dict[str, m.ServerType] = {}
        for page in range(1, MAX_PAGES + 1):
            response = await self.api.request(
                "GET",
                f"{self._base(zone)}/products/servers",
                params={"page": page, "per_page": PER_PAGE},
            )
            chunk = m.ServerTypes.model_validate(response.json()).servers
            types.update(chunk)
            total = int(response.headers.get("X-Total-Count") or len(types))
            if not chunk or len(types) >= total:
                break
        return types

    async def availability(self, zone: str) -> dict[str, str]:
        body = await self.api.get_json(
            f"{self._base(zone)}/products/servers/availability", {"per_page": PER_PAGE}
        )
        return {
            k: v.availability for k, v in m.AvailabilityList.model_validate(body).servers.items()
        }

    # -- images (prebuild snapshots) -----------------------------------------------------------

    async def create_snapshot(self, zone: str, body: Mapping[str, Any]) -> m.Snapshot:
        # Not repeated after a 5xx or timeout: a second snapshot would be billed too.
        answer = await self.api.send_json("POST", f"{self._base(zone)}/snapshots", dict(body))
        return m.SnapshotEnvelope.model_validate(answer).snapshot

    async def snapshot(self, zone: str, snapshot_id: str) -> m.Snapshot:
        body = await self.api.get_json(f"{self._base(zone)}/snapshots/{snapshot_id}")
        return m.SnapshotEnvelope.model_validate(body).snapshot

    async def delete_snapshot(self, zone: str, snapshot_id: str) -> None:
        await self.api.request("DELETE", f"{self._base(zone)}/snapshots/{snapshot_id}")

    async def create_image(self, zone: str, body: Mapping[str, Any]) -> m.Image:
        answer = await self.api.send_json("POST", f"{self._base(zone)}/images", dict(body))
        return m.ImageEnvelope.model_validate(answer).image

    async def image(self, zone: str, image_id: str) -> m.Image:
        body = await self.api.get_json(f"{self._base(zone)}/images/{image_id}")
        return m.ImageEnvelope.model_validate(body).image

    async def images(self, zone: str, tags: str, project: str) -> list[m.Image]:
        found: list[m.Image] = []
        for page in range(1, MAX_PAGES + 1):
            params = {
                "tags": tags,
                "project": project,
                "public": "false",
                "page": page,
                "per_page": PER_PAGE,
            }
            response = await self.api.request("GET", f"{self._base(zone)}/images", params=params)
            chunk = m.ImageList.model_validate(response.json()).images
            found.extend(chunk)
            total = int(response.headers.get("X-Total-Count") or len(found))
            if not chunk or len(found) >= total:
                break
        return found

    async def delete_image(self, zone: str, image_id: str) -> None:
        await self.api.request("DELETE", f"{self._base(zone)}/images/{image_id}")
