"""DigitalOcean API v2 REST calls over the shared ``ApiClient``; returns wire models."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from app.errors import BivyError, Conflict, NotFound, ProviderUnavailable, QuotaExceeded
from app.providers._http import ApiClient, ErrorInfo, map_error, request_id_of
from app.providers.digitalocean import models as m

KIND = "digitalocean"
DEFAULT_API_URL = "https://api.digitalocean.com"
#: The largest page the droplets/sizes/regions lists accept.
PER_PAGE = 200
#: Guard against a server that keeps announcing another page.
MAX_PAGES = 50


def parse_error(response: httpx.Response) -> BivyError:
    """Map a DigitalOcean error (``{"id", "message", "request_id"}``) to a ``BivyError``."""
    try:
        raw = response.json()
    except ValueError:
        raw = {}
    body = m.ErrorBody.model_validate(raw if isinstance(raw, dict) else {})
    request_id = body.request_id or request_id_of(response)
    status = response.status_code
    text = body.message.lower()
    kw: dict[str, Any] = {
        "provider": KIND,
        "code": body.id,
        "request_id": request_id,
        "status": status,
    }
    message = body.message.rstrip(".")
    if status == 422 and "limit" in text and ("droplet" in text or "exceed" in text):
        return QuotaExceeded(f"DigitalOcean refused: {message}", **kw)
    if status == 422 and "pending event" in text:
        return Conflict(
            f"DigitalOcean refused: {message} (another action on the droplet still runs)",
            hint="Wait for the droplet's current action to finish, then try again",
            **kw,
        )
    if status == 422 and ("not available" in text or "unavailable" in text):
        return ProviderUnavailable(
            f"DigitalOcean cannot provide this right now: {message}",
            hint="That size is not available in that region; pick another size or region",
            **kw,
        )
    info = ErrorInfo(code=body.id, message=body.message)
    return map_error(provider=KIND, status=status, info=info, request_id=request_id)


class DigitalOceanClient:
    """The few DigitalOcean endpoints Bivy uses.

    Attributes:
        api: the shared HTTP client (its ``rate_limit`` mirrors the ``ratelimit-*`` headers).
    """

    def __init__(self, api: ApiClient) -> None:
        self.api = api

    async def _pages(self, path: str, key: str, params: Mapping[str, Any]) -> list[Any]:
        items: list[Any] = []
        page = 1
        while page <= MAX_PAGES:
            body = await self.api.get_json(path, {**params, "page": page, "per_page": PER_PAGE})
            chunk = body.get(key) or []
            items.extend(chunk)
            links = body.get("links") or {}
            pages = links.get("pages") or {}
            if not pages.get("next") or not chunk:
                break
            page += 1
        return items

    async def account(self) -> m.Account:
        body = await self.api.get_json("v2/account")
        return m.Account.model_validate(body["account"])

    async def regions(self) -> list[m.Region]:
        return [m.Region.model_validate(r) for r in await self._pages("v2/regions", "regions", {})]

    async def sizes(self) -> list[m.Size]:
        return [m.Size.model_validate(s) for s in await self._pages("v2/sizes", "sizes", {})]

    async def droplets(self, tag: str) -> list[m.Droplet]:
        raw = await self._pages("v2/droplets", "droplets", {"tag_name": tag})
        return [m.Droplet.model_validate(d) for d in raw]

    async def droplet(self, droplet_id: int) -> m.Droplet:
        body = await self.api.get_json(f"v2/droplets/{droplet_id}")
        return m.Droplet.model_validate(body["droplet"])

    async def create_droplet(self, body: Mapping[str, Any]) -> m.DropletCreated:
        # A POST: ApiClient retries it only on 429 (refused before anything was done).
        answer = await self.api.send_json("POST", "v2/droplets", dict(body))
        return m.DropletCreated.model_validate(answer)

    async def delete_droplet(self, droplet_id: int) -> None:
        await self.api.request("DELETE", f"v2/droplets/{droplet_id}")

    async def ssh_key(self, fingerprint: str) -> m.SshKey | None:
        try:
            body = await self.api.get_json(f"v2/account/keys/{fingerprint}")
        except NotFound:
            return None
        return m.SshKey.model_validate(body["ssh_key"])

    async def create_ssh_key(self, name: str, public_key: str) -> m.SshKey:
        body = await self.api.send_json(
            "POST", "v2/account/keys", {"name": name, "public_key": public_key}
        )
        return m.SshKey.model_validate(body["ssh_key"])

    # -- images (prebuild snapshots) -----------------------------------------------------------

    async def droplet_action(self, droplet_id: int, body: Mapping[str, Any]) -> m.Action:
        # Not repeated after a 5xx or timeout: a second snapshot would be billed too.
        answer = await self.api.send_json("POST", f"v2/droplets/{droplet_id}/actions", dict(body))
        return m.ActionEnvelope.model_validate(answer).action

    async def action(self, action_id: int) -> m.Action:
        body = await self.api.get_json(f"v2/actions/{action_id}")
        return m.ActionEnvelope.model_validate(body).action

    async def droplet_snapshots(self, droplet_id: int) -> list[m.Snapshot]:
        raw = await self._pages(f"v2/droplets/{droplet_id}/snapshots", "snapshots", {})
        return [m.Snapshot.model_validate(s) for s in raw]

    async def images(self, tag: str) -> list[m.Image]:
        raw = await self._pages("v2/images", "images", {"private": "true", "tag_name": tag})
        return [m.Image.model_validate(i) for i in raw]

    async def image(self, image_id: int) -> m.Image:
        body = await self.api.get_json(f"v2/images/{image_id}")
        return m.Image.model_validate(body["image"])

    async def delete_image(self, image_id: int) -> None:
        await self.api.request("DELETE", f"v2/images/{image_id}")

    async def create_tag(self, name: str) -> None:
        await self.api.send_json("POST", "v2/tags", {"name": name}, idempotent=True)

    async def tag_resource(self, tag: str, resource_id: str, resource_type: str) -> None:
        body = {"resources": [{"resource_id": resource_id, "resource_type": resource_type}]}
        await self.api.send_json("POST", f"v2/tags/{tag}/resources", body, idempotent=True)
