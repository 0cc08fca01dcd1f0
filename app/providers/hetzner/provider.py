"""Hetzner Cloud provider: wire models mapped to the domain; create with key, firewall, labels."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import os
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import ClassVar

import httpx

from app.domain import (
    LABEL_MANAGED_BY,
    LABEL_MANAGED_BY_VALUE,
    LABEL_WORKSPACE,
    AccountInfo,
    CreateServerRequest,
    Price,
    Region,
    Server,
    ServerStatus,
    Size,
)
from app.errors import (
    ActionFailed,
    AuthError,
    BivyError,
    Conflict,
    InvalidInput,
    NotFound,
)
from app.providers._http import ApiClient, RateLimitState
from app.providers._polling import Backoff, poll_until
from app.providers.base import BillingRule, Capabilities, Provider, ProviderOption
from app.providers.hetzner import models as m
from app.providers.hetzner.client import (
    DEFAULT_API_URL,
    KIND,
    HetznerClient,
    parse_error,
    rate_limit_delay,
)
from app.providers.hetzner.images import HetznerImagesMixin, server_id_of

METADATA_URL = "http://169.254.169.254/hetzner/v1/metadata"
DEFAULT_IMAGE = "ubuntu-24.04"
#: Hetzner's app image with Docker preinstalled (listed under ``GET /images?type=app``).
DOCKER_APP_IMAGE = "docker-ce"
FIREWALL_NAME = "bivy-ssh-only"
#: The read-only probe: an SSH key upload that must fail validation (it is not a key).
PROBE_KEY_NAME = "bivy-permission-probe"
PROBE_PUBLIC_KEY = "bivy-permission-probe"

STATUS_MAP: dict[str, ServerStatus] = {
    "initializing": ServerStatus.INITIALIZING,
    "starting": ServerStatus.STARTING,
    "running": ServerStatus.RUNNING,
    "stopping": ServerStatus.STOPPING,
    "off": ServerStatus.OFF,
    "deleting": ServerStatus.DELETING,
    "migrating": ServerStatus.MIGRATING,
    "rebuilding": ServerStatus.REBUILDING,
    "unknown": ServerStatus.UNKNOWN,
}

_LABEL_NAME = r"[a-zA-Z0-9]([a-zA-Z0-9_.-]{0,61}[a-zA-Z0-9])?"
_LABEL_KEY = re.compile(rf"^([a-z0-9]([a-z0-9.-]{{0,251}}[a-z0-9])?/)?{_LABEL_NAME}$")
_LABEL_VALUE = re.compile(rf"^({_LABEL_NAME})?$")

SELF_DELETE_SCRIPT = r"""#!/bin/sh
# Bivy self-delete for Hetzner Cloud: the VM asks the API to delete the server it runs on.
# Needs HCLOUD_TOKEN (from the root-only env file, sourced when BIVY_ENV_FILE names one).
# BIVY_METADATA_URL and BIVY_API_URL may point elsewhere for tests.
# Exits 0 only when the API accepted the deletion.
set -u
if [ -n "${BIVY_ENV_FILE:-}" ] && [ -r "$BIVY_ENV_FILE" ]; then
    # shellcheck disable=SC1090
    . "$BIVY_ENV_FILE"
fi
metadata_url="${BIVY_METADATA_URL:-http://169.254.169.254/hetzner/v1/metadata}"
api_url="${BIVY_API_URL:-https://api.hetzner.cloud/v1}"
if [ -z "${HCLOUD_TOKEN:-}" ]; then
    echo "bivy-self-delete: HCLOUD_TOKEN is not set" >&2
    exit 2
fi
if ! id=$(curl -fsS --max-time 10 --retry 3 "$metadata_url/instance-id"); then
    echo "bivy-self-delete: cannot read the instance id from $metadata_url" >&2
    exit 3
fi
case "$id" in
    '' | *[!0-9]*)
        echo "bivy-self-delete: unexpected instance id" >&2
        exit 3
        ;;
esac
# The token goes to curl on stdin (-K -), never on its command line, so ps cannot show it.
if ! status=$(printf 'header = "Authorization: Bearer %s"\n' "$HCLOUD_TOKEN" |
    curl -sS -K - --max-time 30 -o /dev/null -w '%{http_code}' \
        -X DELETE "$api_url/servers/$id"); then
    echo "bivy-self-delete: the API could not be reached" >&2
    exit 4
fi
case "$status" in
    200 | 201 | 202 | 204)
        echo "bivy-self-delete: server $id is being deleted"
        exit 0
        ;;
    *)
        echo "bivy-self-delete: the API refused to delete server $id (HTTP $status)" >&2
        exit 5
        ;;
esac
"""


def ssh_fingerprint(public_key: str) -> str:
    """Hetzner's fingerprint of an OpenSSH public key: MD5 of the key blob as colon-hex."""
    parts = public_key.split()
    if len(parts) < 2:
        raise InvalidInput("The SSH public key is not in OpenSSH format", provider=KIND)
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput("The SSH public key is not in OpenSSH format", provider=KIND) from None
    digest = hashlib.md5(blob, usedforsecurity=False).hexdigest()
    return ":".join(digest[i : i + 2] for i in range(0, 32, 2))


def map_status(status: str) -> ServerStatus:
    """The domain status for Hetzner's ``status`` string; UNKNOWN for anything new."""
    return STATUS_MAP.get(status, ServerStatus.UNKNOWN)


class HetznerProvider(HetznerImagesMixin, Provider):
    """Hetzner Cloud, over its REST API (https://docs.hetzner.cloud).

    Prices are shown **gross** (VAT included, ``Price.includes_vat=True``) in the project owner's
    currency from ``GET /pricing``: that is what lands on the bill of the private users Bivy is
    for. Hetzner has no token introspection, so ``validate`` tells a read-only token from a
    read & write one with a write that cannot succeed: ``POST /ssh_keys`` with a public key that
    is not a key. A read & write token gets 422 ``invalid_input`` (nothing is created), a
    read-only one 401 ``token_readonly``. Should the API ever accept it, the key is deleted again.

    Attributes:
        client: the REST calls over the shared ``ApiClient``.
        rate_limit: the last rate-limit state seen (``limit``, ``remaining``, ``reset_at``).
    """

    kind: ClassVar[str] = KIND
    display_name: ClassVar[str] = "Hetzner Cloud"
    capabilities: ClassVar[Capabilities] = Capabilities(
        user_data_limit=32768,
        user_data_gzip_base64=True,
        firewall=True,
        labels=True,
        unique_names=True,
        rate_limit_per_hour=3600,
        billing=BillingRule(
            granularity="hour", billed_when_off=True, monthly_cap=True, minimum_seconds=0
        ),
        metadata_url=METADATA_URL,
        snapshots=True,
    )
    options: ClassVar[tuple[ProviderOption, ...]] = (
        ProviderOption(
            key="token",
            label="API token",
            secret=True,
            required=True,
            pattern=r"^[A-Za-z0-9_-]{8,128}$",
            help="A Read & Write API token of a Hetzner Cloud project used only by Bivy.",
            env=("BIVY_HETZNER_TOKEN", "HCLOUD_TOKEN"),
        ),
    )
    token_guidance: ClassVar[str] = (
        "Hetzner tokens belong to one project and are either Read or Read & Write; there are no "
        "finer scopes. Create a separate project just for Bivy (Console → New project), then "
        "Security → API tokens → Generate, with Read & Write (Bivy creates and deletes servers). "
        "The VM's self-delete uses the same token, so keep nothing else in that project. "
        "A Read token only lets Bivy list servers and prices."
    )
    default_region: ClassVar[str] = "nbg1"
    default_size: ClassVar[str] = "cx23"

    def __init__(
        self,
        options: Mapping[str, str],
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        action_backoff: Backoff | None = None,
        action_timeout: float = 600.0,
    ) -> None:
        self._token = (options.get("token") or "").strip()
        self._sleep = sleep
        self._clock = clock
        self._action_backoff = action_backoff or Backoff(initial=1.0, factor=1.5, maximum=5.0)
        self._action_timeout = action_timeout
        self.base_url = os.environ.get("BIVY_HETZNER_API_URL") or DEFAULT_API_URL
        self.client = HetznerClient(
            ApiClient(
                provider=KIND,
                base_url=self.base_url,
                headers={"Authorization": f"Bearer {self._token}"} if self._token else {},
                secrets=(self._token,),
                transport=transport,
                parse_error=parse_error,
                rate_limit_delay=rate_limit_delay,
                sleep=sleep,
            )
        )
        self._currency: str | None = None
        self._ssh_key_ids: dict[str, int] = {}
        self._firewall_id: int | None = None

    def __repr__(self) -> str:  # the token never shows up
        return f"HetznerProvider(base_url={self.base_url!r})"

    @property
    def rate_limit(self) -> RateLimitState:
        """The last ``RateLimit-*`` headers seen (for the refresh scheduler)."""
        return self.client.api.rate_limit

    def _need_token(self) -> None:
        if not self._token:
            raise AuthError("No Hetzner API token is configured", provider=KIND)

    async def aclose(self) -> None:
        await self.client.api.aclose()

    # -- account and catalogue -----------------------------------------------------------------

    async def validate(self) -> AccountInfo:
        """``GET /pricing`` (token valid? currency), then the side-effect-free write probe."""
        self._need_token()
        pricing = await self.client.pricing()
        self._currency = pricing.currency
        read_only = await self._probe_read_only()
        kind = "read-only token" if read_only else "read & write token"
        return AccountInfo(
            provider=KIND,
            description=(
                f"Hetzner Cloud project, {kind} (prices in {pricing.currency}, VAT included)"
            ),
            currency=pricing.currency,
            read_only=read_only,
        )

    async def _probe_read_only(self) -> bool:
        try:
            key = await self.client.create_ssh_key(PROBE_KEY_NAME, PROBE_PUBLIC_KEY, {})
        except (InvalidInput, Conflict):
            return False  # validated (or name-checked) as a write: the token may write
        except AuthError as exc:
            if exc.code in ("token_readonly", "forbidden"):
                return True
            raise
        # Never expected (the probe is not a key), but leave nothing behind if it happens.
        with contextlib.suppress(NotFound):
            await self.client.delete_ssh_key(key.id)
        return False

    async def regions(self) -> list[Region]:
        self._need_token()
        return [
            Region(id=loc.name, name=loc.description or loc.name, city=loc.city,
                   country=loc.country)
            for loc in await self.client.locations()
        ]  # fmt: skip

    async def sizes(self, region: str | None = None) -> list[Size]:
        """Server types with live gross prices per location (``/server_types`` + ``/pricing``)."""
        self._need_token()
        types, pricing = await asyncio.gather(self.client.server_types(), self.client.pricing())
        self._currency = pricing.currency
        priced = {t.name: t.prices for t in pricing.server_types}
        sizes = []
        for st in types:
            prices: dict[str, Price] = {}
            for p in priced.get(st.name) or st.prices:
                if not st.available_in(p.location):
                    continue
                prices[p.location] = Price(
                    currency=pricing.currency,
                    hourly=p.price_hourly.gross,
                    monthly=p.price_monthly.gross,
                    includes_vat=True,
                )
            if region is not None and region not in prices:
                continue
            sizes.append(
                Size(
                    name=st.name,
                    description=st.description,
                    cores=st.cores,
                    memory_gb=st.memory,
                    disk_gb=st.disk,
                    cpu_type=st.cpu_type,
                    architecture=st.architecture,
                    prices=prices,
                    deprecated=st.is_deprecated,
                )
            )
        sizes.sort(key=lambda s: (s.deprecated, min((p.hourly for p in s.prices.values()),
                                                       default=0), s.name))  # fmt: skip
        return sizes

    # -- servers -------------------------------------------------------------------------------

    def _to_domain(self, server: m.Server) -> Server:
        location = server.location_name
        price = None
        if self._currency:
            for p in server.server_type.prices:
                if p.location == location:
                    price = Price(
                        currency=self._currency,
                        hourly=p.price_hourly.gross,
                        monthly=p.price_monthly.gross,
                        includes_vat=True,
                    )
        ipv4 = server.public_net.ipv4.ip if server.public_net.ipv4 else None
        ipv6 = server.public_net.ipv6.ip if server.public_net.ipv6 else None
        return Server(
            provider=KIND,
            id=str(server.id),
            name=server.name,
            status=map_status(server.status),
            region=location,
            size=server.server_type.name,
            ipv4=ipv4,
            ipv6=ipv6,
            created_at=server.created,
            labels=dict(server.labels),
            price=price,
        )

    async def list(self) -> list[Server]:
        """Bivy's servers: one ``label_selector=managed-by=bivy`` call (plus pages beyond 50)."""
        self._need_token()
        selector = f"{LABEL_MANAGED_BY}={LABEL_MANAGED_BY_VALUE}"
        servers = await self.client.servers(label_selector=selector)
        if servers and self._currency is None:
            # Servers carry their type's prices but not the account's currency: one /pricing
            # call per provider instance says which, so every listing can show money.
            self._currency = await self.client.currency()
        return [self._to_domain(s) for s in servers]

    async def get(self, server_id: str) -> Server:
        self._need_token()
        return self._to_domain(await self.client.server(server_id_of(server_id)))

    async def delete(self, server_id: str) -> None:
        """Ask for deletion; a server already gone is fine. The shared key and firewall stay."""
        self._need_token()
        try:
            await self.client.delete_server(server_id_of(server_id))
        except NotFound:
            return

    async def create(self, request: CreateServerRequest) -> Server:
        """Create the server and wait (cancellably) for its ``create_server`` action.

        Steps: the app's SSH key (found by fingerprint, uploaded once), the SSH-only firewall
        (found by name, created once), the image (the docker-ce app image when Hetzner lists it
        for the type's architecture, else Ubuntu 24.04), then one ``POST /servers`` that is never
        retried after a 5xx or timeout (if its answer is lost the server may exist: the caller
        finds it by its labels and deletes it, as after a cancel). When the action fails the
        server is deleted and ``ActionFailed`` raised. Cancelling while waiting leaves the
        server to the caller, who finds it by its labels.
        """
        self._need_token()
        labels = {
            **request.labels,
            LABEL_MANAGED_BY: LABEL_MANAGED_BY_VALUE,
        }
        labels.setdefault(LABEL_WORKSPACE, request.name)
        self._check_labels(labels)
        user_data = request.user_data
        if len(user_data.encode()) > self.capabilities.user_data_limit:
            raise InvalidInput(
                f"The user data is {len(user_data.encode())} bytes; Hetzner accepts at most "
                f"{self.capabilities.user_data_limit}",
                provider=KIND,
            )
        key_id = await self._ensure_ssh_key(request.ssh_public_key, request.ssh_key_name)
        firewall_id = await self._ensure_firewall()
        image = request.image or await self._pick_image(request.size)
        body: dict[str, object] = {
            "name": request.name,
            "server_type": request.size,
            "image": image,
            "ssh_keys": [str(key_id)],
            "firewalls": [{"firewall": firewall_id}],
            "user_data": user_data,
            "labels": labels,
            "start_after_create": True,
            "public_net": {"enable_ipv4": True, "enable_ipv6": True},
        }
        if request.region:
            body["location"] = request.region
        created = await self.client.create_server(body)
        await self.wait_for_action(created.action)
        try:
            return self._to_domain(await self.client.server(created.server.id))
        except NotFound:
            return self._to_domain(created.server)

    async def wait_for_action(self, action: m.Action) -> m.Action:
        """Poll ``action`` until it succeeds; ``ActionFailed`` when it errs (server deleted)."""

        def done(current: m.Action) -> bool:
            if current.status == "error":
                err = current.error or m.ActionError()
                raise ActionFailed(
                    f"Hetzner could not complete {current.command}: "
                    f"{err.message or err.code or 'unknown error'}",
                    provider=KIND,
                    code=err.code,
                )
            return current.status == "success"

        if action.status != "running":
            try:
                done(action)
                return action
            except ActionFailed:
                await self._cleanup(action)
                raise

        async def fetch() -> m.Action:
            return await self.client.action(action.id)

        try:
            return await poll_until(
                fetch,
                done,
                timeout=self._action_timeout,
                backoff=self._action_backoff,
                sleep=self._sleep,
                clock=self._clock,
                what=f"Hetzner to finish {action.command}",
                provider=KIND,
            )
        except ActionFailed:
            await self._cleanup(action)
            raise

    async def _cleanup(self, action: m.Action) -> None:
        if action.command != "create_server":
            return
        for res in action.resources:
            if res.type == "server":
                # On failure the caller still finds the server by its labels and deletes it.
                with contextlib.suppress(BivyError):
                    await self.client.delete_server(res.id)

    def _check_labels(self, labels: Mapping[str, str]) -> None:
        for key, value in labels.items():
            if not _LABEL_KEY.match(key) or key.startswith("hetzner.cloud/"):
                raise InvalidInput(f"{key!r} cannot be a Hetzner label key", provider=KIND)
            if not _LABEL_VALUE.match(value):
                raise InvalidInput(
                    f"{value!r} cannot be a Hetzner label value (at most 63 letters, digits, "
                    "'-', '_' or '.', starting and ending with a letter or digit)",
                    provider=KIND,
                )

    async def _ensure_ssh_key(self, public_key: str, name: str) -> int:
        fp = ssh_fingerprint(public_key)
        if fp in self._ssh_key_ids:
            return self._ssh_key_ids[fp]
        found = await self.client.ssh_keys(fingerprint=fp)
        if not found:
            labels = {LABEL_MANAGED_BY: LABEL_MANAGED_BY_VALUE}
            try:
                key = await self.client.create_ssh_key(name, public_key.strip(), labels)
            except Conflict:
                # Another key already has this name (or a parallel create won the race):
                # look again by fingerprint, else upload under a name unique to this key.
                found = await self.client.ssh_keys(fingerprint=fp)
                if not found:
                    suffix = fp.replace(":", "")[:8]
                    key = await self.client.create_ssh_key(f"{name}-{suffix}", public_key, labels)
                    found = [key]
            else:
                found = [key]
        self._ssh_key_ids[fp] = found[0].id
        return found[0].id

    async def _ensure_firewall(self) -> int:
        if self._firewall_id is not None:
            return self._firewall_id
        found = await self.client.firewalls(name=FIREWALL_NAME)
        if found:
            self._firewall_id = found[0].id
            return found[0].id
        body = {
            "name": FIREWALL_NAME,
            "labels": {LABEL_MANAGED_BY: LABEL_MANAGED_BY_VALUE},
            "rules": [
                {
                    "description": "SSH only: Bivy reaches everything else through SSH tunnels",
                    "direction": "in",
                    "protocol": "tcp",
                    "port": "22",
                    "source_ips": ["0.0.0.0/0", "::/0"],
                }
            ],
        }
        try:
            firewall = await self.client.create_firewall(body)
        except Conflict:
            found = await self.client.firewalls(name=FIREWALL_NAME)
            if not found:
                raise
            firewall = found[0]
        self._firewall_id = firewall.id
        return firewall.id

    async def _pick_image(self, size: str) -> str:
        types = await self.client.server_types(name=size)
        if not types:
            raise InvalidInput(f"Hetzner has no server type {size!r}", provider=KIND)
        arch = types[0].architecture
        apps = await self.client.images(type="app", name=DOCKER_APP_IMAGE, architecture=arch)
        if any(i.status == "available" and i.deprecated is None for i in apps):
            return DOCKER_APP_IMAGE
        return DEFAULT_IMAGE

    # -- on the VM -----------------------------------------------------------------------------

    def self_delete_script(self) -> str:
        return SELF_DELETE_SCRIPT

    def self_delete_env(self) -> dict[str, str]:
        self._need_token()
        env = {"HCLOUD_TOKEN": self._token}
        if self.base_url != DEFAULT_API_URL:
            env["BIVY_API_URL"] = self.base_url
        return env
