"""Hetzner Cloud REST calls over the shared ``ApiClient``; returns wire models."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import httpx

from app.errors import BivyError
from app.providers._http import (
    ApiClient,
    RateLimitState,
    default_rate_limit_delay,
    extract_error_info,
    map_error,
    request_id_of,
)
from app.providers.hetzner import models as m

KIND = "hetzner"
DEFAULT_API_URL = "https://api.hetzner.cloud/v1"
#: The API's largest page.
PER_PAGE = 50
#: Servers validated between two yields to the event loop (see ``servers``).
PARSE_CHUNK = 20
#: Guard against a server that keeps announcing another page.
MAX_PAGES = 100


def parse_error(response: httpx.Response) -> BivyError:
    """Map a Hetzner error body (``{"error": {"code", "message", "details"}}``) to a BivyError."""
    return map_error(
        provider=KIND,
        status=response.status_code,
        info=extract_error_info(response),
        request_id=request_id_of(response),
    )


def rate_limit_delay(response: httpx.Response, state: RateLimitState, now: float) -> float | None:
    """Seconds to wait after a 429.

    ``RateLimit-Reset`` is when the *whole* hourly budget is back, but the budget refills
    gradually (one request per 3600/limit seconds), so one more request is possible long before:
    wait for that, never more than until the reset.
    """
    until_reset = default_rate_limit_delay(response, state, now)
    if state.limit:
        refill = 3600.0 / state.limit
        return refill if until_reset is None else min(until_reset, max(refill, 0.0))
    return until_reset


class HetznerClient:
    """The Hetzner endpoints Bivy uses.

    Attributes:
        api: the shared HTTP client (``api.rate_limit`` mirrors the ``RateLimit-*`` headers).
    """

    def __init__(self, api: ApiClient) -> None:
        self.api = api

    async def _pages(
        self, path: str, key: str, params: Mapping[str, Any] | None = None
    ) -> list[Any]:
        items: list[Any] = []
        page = 1
        for _ in range(MAX_PAGES):
            body = await self.api.get_json(
                path, {**(params or {}), "page": page, "per_page": PER_PAGE}
            )
            items.extend(body.get(key) or [])
            meta = m.Meta.model_validate(body.get("meta") or {})
            next_page = meta.pagination.next_page if meta.pagination else None
            if not next_page or next_page <= page:
                break
            page = next_page
        return items

    async def locations(self) -> list[m.Location]:
        return [m.Location.model_validate(x) for x in await self._pages("locations", "locations")]

    async def server_types(self, name: str | None = None) -> list[m.ServerType]:
        params = {"name": name} if name else {}
        raw = await self._pages("server_types", "server_types", params)
        return [m.ServerType.model_validate(x) for x in raw]

    async def pricing(self) -> m.Pricing:
        body = await self.api.get_json("pricing")
        return m.Pricing.model_validate(body["pricing"])

    async def currency(self) -> str:
        """The account's currency alone: no validation of the whole price list (a hot path)."""
        body = await self.api.get_json("pricing")
        return m.Pricing.model_validate({"currency": body["pricing"]["currency"]}).currency

    async def images(
        self,
        *,
        type: str | None = None,
        name: str | None = None,
        architecture: str | None = None,
        label_selector: str | None = None,
    ) -> list[m.Image]:
        pairs = (
            ("type", type),
            ("name", name),
            ("architecture", architecture),
            ("label_selector", label_selector),
        )
        params = {k: v for k, v in pairs if v}
        return [m.Image.model_validate(x) for x in await self._pages("images", "images", params)]

    async def image(self, image_id: int) -> m.Image:
        body = await self.api.get_json(f"images/{image_id}")
        return m.Image.model_validate(body["image"])

    async def delete_image(self, image_id: int) -> None:
        await self.api.request("DELETE", f"images/{image_id}")

    async def power_off(self, server_id: int) -> m.Action:
        # Repeating a power-off is harmless, so a lost answer may be retried.
        body = await self.api.send_json(
            "POST", f"servers/{server_id}/actions/poweroff", idempotent=True
        )
        return m.Action.model_validate(body["action"])

    async def create_image(
        self, server_id: int, description: str, labels: dict[str, str]
    ) -> m.CreateImageResponse:
        # Never repeated after a 5xx/timeout: a second snapshot would be billed too.
        body = {"type": "snapshot", "description": description, "labels": labels}
        answer = await self.api.send_json("POST", f"servers/{server_id}/actions/create_image", body)
        return m.CreateImageResponse.model_validate(answer)

    async def ssh_keys(
        self, *, fingerprint: str | None = None, name: str | None = None
    ) -> list[m.SSHKey]:
        params = {k: v for k, v in (("fingerprint", fingerprint), ("name", name)) if v}
        return [
            m.SSHKey.model_validate(x) for x in await self._pages("ssh_keys", "ssh_keys", params)
        ]

    async def create_ssh_key(self, name: str, public_key: str, labels: dict[str, str]) -> m.SSHKey:
        body = await self.api.send_json(
            "POST", "ssh_keys", {"name": name, "public_key": public_key, "labels": labels}
        )
        return m.SSHKey.model_validate(body["ssh_key"])

    async def delete_ssh_key(self, key_id: int) -> None:
        await self.api.send_json("DELETE", f"ssh_keys/{key_id}")

    async def firewalls(self, *, name: str | None = None) -> list[m.Firewall]:
        params = {"name": name} if name else {}
        raw = await self._pages("firewalls", "firewalls", params)
        return [m.Firewall.model_validate(x) for x in raw]

    async def create_firewall(self, body: dict[str, Any]) -> m.Firewall:
        answer = await self.api.send_json("POST", "firewalls", body)
        return m.Firewall.model_validate(answer["firewall"])

    async def servers(self, *, label_selector: str | None = None) -> list[m.Server]:
        params = {"label_selector": label_selector} if label_selector else {}
        servers: list[m.Server] = []
        for i, raw in enumerate(await self._pages("servers", "servers", params)):
            if i and i % PARSE_CHUNK == 0:
                # Hundreds of servers take a while to validate: let the app's event loop (the
                # desktop window) run between chunks instead of freezing for the whole list.
                await asyncio.sleep(0)
            servers.append(m.Server.model_validate(raw))
        return servers

    async def server(self, server_id: int) -> m.Server:
        body = await self.api.get_json(f"servers/{server_id}")
        return m.Server.model_validate(body["server"])

    async def create_server(self, body: dict[str, Any]) -> m.CreateServerResponse:
        # A POST: ApiClient never repeats it after a 5xx or timeout (a second server could
        # result); only a 429, which Hetzner answers before doing anything, is retried.
        answer = await self.api.send_json("POST", "servers", body)
        return m.CreateServerResponse.model_validate(answer)

    async def delete_server(self, server_id: int) -> m.Action:
        body = await self.api.send_json("DELETE", f"servers/{server_id}")
        return m.Action.model_validate(body["action"])

    async def action(self, action_id: int) -> m.Action:
        body = await self.api.get_json(f"actions/{action_id}")
        return m.Action.model_validate(body["action"])
