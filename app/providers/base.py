"""The ``Provider`` interface every cloud (and local engine) implements, and what it declares."""

from __future__ import annotations

import abc
import asyncio
import builtins
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import httpx

from app.domain import AccountInfo, CreateServerRequest, ProviderImage, Region, Server, Size
from app.errors import UnsupportedOperation

#: ``progress(detail, fraction)`` for ``Provider.prepare``: one sentence, and 0..1 or None.
PrepareProgress = Callable[[str, float | None], None]


@dataclass(frozen=True)
class ProviderOption:
    """One field of a provider's account form (the settings dialog is generated from these).

    Attributes:
        key: the field's key ("token", "project_id").
        label: what the form shows.
        secret: stored in the keychain, never in settings, shown masked.
        required: the account cannot be used without it.
        default: the initial value for non-secret fields.
        pattern: a regular expression the value must match (checked as the user types).
        help: one sentence shown under the field (least-privilege guidance goes here).
        env: environment variables that may supply the value instead (first set wins).
    """

    key: str
    label: str
    secret: bool = False
    required: bool = True
    default: str = ""
    pattern: str = ""
    help: str = ""
    env: tuple[str, ...] = ()


@dataclass(frozen=True)
class BillingRule:
    """How the provider turns uptime into money.

    Attributes:
        granularity: "hour" bills every started hour, "second" bills by the second.
        billed_when_off: a powered-off server is still billed (Hetzner, DO: yes).
        monthly_cap: the hourly total never exceeds the monthly price within a month.
        minimum_seconds: the smallest billed duration.
    """

    granularity: Literal["hour", "second"] = "hour"
    billed_when_off: bool = True
    monthly_cap: bool = True
    minimum_seconds: int = 0


@dataclass(frozen=True)
class Capabilities:
    """What a provider can do; services and the UI adapt to these, never to the provider's name.

    Attributes:
        user_data_limit: bytes the provider accepts for user data.
        user_data_gzip_base64: the VM's cloud-init datasource decodes base64(gzip(...)).
        firewall: the API can restrict inbound traffic to TCP 22.
        labels: servers carry key/value labels (else tags ``key=value`` or ``key:value``).
        unique_names: the provider refuses a second server of the same name.
        rate_limit_per_hour: documented requests per hour (0 when unpublished).
        billing: how uptime is billed.
        metadata_url: the VM's metadata service, for self-delete.
        listing_is_current: a server missing from ``list()`` is gone for good (no eventual
            consistency, no create in flight that could still appear), so the app forgets its
            workspace at once instead of after a grace period (the local provider).
    """

    user_data_limit: int = 32768
    user_data_gzip_base64: bool = False
    firewall: bool = False
    labels: bool = True
    unique_names: bool = False
    rate_limit_per_hour: int = 0
    billing: BillingRule = field(default_factory=BillingRule)
    metadata_url: str = ""
    listing_is_current: bool = False
    #: The provider can snapshot a server into an image and create servers from it (prebuilds).
    snapshots: bool = False


class Provider(abc.ABC):
    """One cloud account, spoken to over its REST API (async).

    Implementations are constructed with the account's option values (secrets included) and
    an optional ``httpx`` transport, which tests use to reach an emulator. They raise only
    ``BivyError`` subclasses.
    """

    kind: ClassVar[str]
    display_name: ClassVar[str]
    capabilities: ClassVar[Capabilities]
    options: ClassVar[tuple[ProviderOption, ...]]
    #: A few sentences on creating the least-privileged token, for the settings dialog.
    token_guidance: ClassVar[str] = ""
    default_region: ClassVar[str] = ""
    default_size: ClassVar[str] = ""

    @abc.abstractmethod
    def __init__(
        self,
        options: Mapping[str, str],
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """Take the account's option values (secrets included), and a transport for tests."""

    @abc.abstractmethod
    async def validate(self) -> AccountInfo:
        """Check the credentials with one cheap call; raise ``AuthError`` when they are bad."""

    @abc.abstractmethod
    async def regions(self) -> list[Region]:
        """The regions servers can be created in."""

    @abc.abstractmethod
    async def sizes(self, region: str | None = None) -> list[Size]:
        """Server types with live prices; only those available in ``region`` when given."""

    @abc.abstractmethod
    async def list(self) -> list[Server]:
        """Every server Bivy manages in this account (label/tag filtered at the provider)."""

    @abc.abstractmethod
    async def get(self, server_id: str) -> Server:
        """One server; ``NotFound`` when it is gone."""

    async def prepare(self, request: CreateServerRequest, progress: PrepareProgress) -> None:  # noqa: B027
        """Get ready for ``create`` (e.g. download a base image), reporting progress; optional.

        Clouds need nothing; the local provider probes the accelerator (telling the user when
        it is slow) and fetches its base image on first use.
        """

    @abc.abstractmethod
    async def create(self, request: CreateServerRequest) -> Server:
        """Create the server and return as soon as the provider accepted it (not yet running).

        Never retried in a way that could create a second server.
        """

    @abc.abstractmethod
    async def delete(self, server_id: str) -> None:
        """Delete the server (and what was created with it); ``NotFound`` is not an error."""

    @abc.abstractmethod
    def self_delete_script(self) -> str:
        """POSIX shell the VM runs to delete itself; reads its credentials from the env file.

        The script may use ``$BIVY_METADATA_URL`` and ``$BIVY_API_URL`` (overridable for tests)
        and must exit non-zero when the deletion was not accepted.
        """

    def self_delete_env(self) -> dict[str, str]:
        """Secret environment the self-delete script needs (written to the VM's root-only env)."""
        return {}

    # Images (prebuilds, issue 14). Providers with ``capabilities.snapshots`` implement these;
    # the defaults say plainly that this provider cannot.

    async def power_off(self, server_id: str) -> None:
        """Stop the server (hard power-off is fine: the guest already flushed and sealed itself)
        and return once the provider accepted it; ``get`` then reports ``OFF``."""
        raise UnsupportedOperation(f"{self.display_name} cannot power servers off from Bivy")

    async def create_image(
        self, server_id: str, *, name: str, labels: Mapping[str, str]
    ) -> ProviderImage:
        """Snapshot the (powered-off) server's disk into an image carrying ``labels``; returns
        at once (status ``CREATING``) — poll ``get_image`` until ``AVAILABLE``."""
        raise UnsupportedOperation(f"{self.display_name} has no snapshots in Bivy")

    async def get_image(self, image_id: str) -> ProviderImage:
        """One image; ``NotFound`` when it is gone."""
        raise UnsupportedOperation(f"{self.display_name} has no snapshots in Bivy")

    async def list_images(self) -> builtins.list[ProviderImage]:
        """Every image Bivy made in this account (label/tag filtered), with size and cost."""
        return []

    async def delete_image(self, image_id: str) -> None:
        """Delete the image; ``NotFound`` is not an error."""
        raise UnsupportedOperation(f"{self.display_name} has no snapshots in Bivy")

    async def aclose(self) -> None:  # noqa: B027 - optional hook, default no-op
        """Close HTTP clients."""
