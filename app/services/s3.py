"""``S3Client``: the few S3 calls Bivy makes itself (list, put, delete), over httpx.

Requests are path-style and signed with AWS Signature V4 by ``httpx-auth``'s ``AWS4Auth``;
answers are read with the standard library's ElementTree. ``app.services.backup`` uses it to
check the storage settings, read what a workspace's restic repository holds, and delete it.
"""

# Why httpx-auth and not aiobotocore (measured, issue 13): httpx-auth is one 370 KB package on the
# httpx stack Bivy already uses (~0.03 s to import); aiobotocore brings botocore (31 MB), aiohttp
# and six more packages, a second HTTP stack, ~0.7 s of import plus ~0.2 s per client, and pins
# botocore to a narrow range (installing it downgraded the botocore that moto/boto3 need). The
# cost: httpx-auth pins httpx's minor version (0.23.x wants httpx 0.28.*).

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from xml.etree import ElementTree

import httpx
from httpx_auth import AWS4Auth

from app.errors import BackupError, InvalidInput

__all__ = ["S3Client", "S3Credentials", "S3Object"]


@dataclass(frozen=True)
class S3Credentials:
    """An access key pair; never printed (``repr`` hides both halves)."""

    access_key: str = field(repr=False)
    secret_key: str = field(repr=False)


@dataclass(frozen=True)
class S3Object:
    """One listed object: key, size in bytes, last modified (UTC)."""

    key: str
    size: int
    last_modified: datetime | None


def _local(tag: str) -> str:
    """An element's name without its namespace (S3 answers in its 2006-03-01 namespace)."""
    return tag.rsplit("}", 1)[-1]


def _parse_xml(text: str) -> ElementTree.Element | None:
    """The answer's root element, or None when it is empty or not XML.

    The standard library's expat (2.4.1 and later; Python 3.11 bundles 2.5) refuses entity
    expansion bombs, and ElementTree never loads external entities or DTDs.
    """
    if not text.strip():
        return None
    try:
        return ElementTree.fromstring(text)  # noqa: S314 (see the docstring)
    except ElementTree.ParseError:
        return None


def _child_text(element: ElementTree.Element | None, name: str) -> str:
    if element is None:
        return ""
    for child in element:
        if _local(child.tag) == name:
            return child.text or ""
    return ""


def _parse_time(value: str) -> datetime | None:
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


class S3Client:
    """The few S3 calls Bivy needs (list, put, delete), path-style, signed by ``AWS4Auth``.

    Attributes:
        endpoint: the service URL; bucket: the bucket; region: the signing region.
    """

    def __init__(
        self,
        endpoint: str,
        bucket: str,
        region: str,
        credentials: S3Credentials,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 20.0,
    ) -> None:
        self.endpoint = endpoint.strip().rstrip("/")
        self.bucket = bucket
        # R2 signs with "auto"; most others accept us-east-1 when they have no regions.
        self.region = region or "us-east-1"
        if not credentials.access_key or not credentials.secret_key:
            raise InvalidInput("enter both the access key id and the secret access key")
        auth = AWS4Auth(credentials.access_key, credentials.secret_key, self.region, "s3")
        self._client = httpx.AsyncClient(transport=transport, timeout=timeout, auth=auth)

    def __repr__(self) -> str:
        return f"S3Client(endpoint={self.endpoint!r}, bucket={self.bucket!r})"

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> S3Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _url(self, key: str = "") -> httpx.URL:
        # httpx percent-encodes the path once; AWS4Auth signs that same path.
        path = "/" + self.bucket + ("/" + key if key else "")
        return httpx.URL(self.endpoint).copy_with(path=path)

    async def request(
        self,
        method: str,
        key: str = "",
        query: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
    ) -> httpx.Response:
        """One signed request; network failures become ``BackupError``."""
        try:
            return await self._client.request(
                method, self._url(key), params=list(query), content=body
            )
        except httpx.TimeoutException:
            raise BackupError(
                f"the storage endpoint {self.endpoint} did not answer in time",
                hint="Check the endpoint URL and your network",
            ) from None
        except httpx.TransportError as exc:
            raise BackupError(
                f"cannot reach the storage endpoint {self.endpoint}: {type(exc).__name__}",
                hint="Check the endpoint URL (scheme, host, port) and your network",
            ) from None

    def error(self, response: httpx.Response, doing: str) -> BackupError:
        """The ``BackupError`` for an S3 error answer, with a hint that fits its code."""
        root = _parse_xml(response.text)
        code = _child_text(root, "Code")
        message = _child_text(root, "Message")
        status = response.status_code
        hint = {
            "NoSuchBucket": f"Create the bucket {self.bucket!r} first, or fix its name",
            "InvalidAccessKeyId": "The access key id is not known to this service",
            "SignatureDoesNotMatch": "The secret access key does not match the access key id",
            "AccessDenied": "The key lacks permission for this bucket (list, read, write, delete)",
            "AuthorizationHeaderMalformed": "The region does not match the bucket's region",
            "PermanentRedirect": "The bucket is in another region: fix the region or endpoint",
        }.get(code, "")
        if not hint and status in (401, 403):
            hint = "Check the access key, the secret key and the key's permissions"
        if not hint and status in (301, 307):
            hint = "The bucket is in another region: fix the region or endpoint"
        detail = f"{code}: {message}" if code else f"HTTP {status}"
        return BackupError(
            f"{doing} failed on {self.endpoint}/{self.bucket}: {detail}".rstrip(": "),
            hint=hint,
            code=code,
            status=status,
            request_id=response.headers.get("x-amz-request-id", ""),
        )

    async def list(self, prefix: str, *, limit: int | None = None) -> list[S3Object]:
        """Objects under ``prefix`` (all pages, or at most ``limit``)."""
        found: list[S3Object] = []
        token = ""
        while True:
            query = [("list-type", "2"), ("prefix", prefix)]
            if limit is not None:
                query.append(("max-keys", str(min(limit, 1000))))
            if token:
                query.append(("continuation-token", token))
            response = await self.request("GET", query=query)
            if response.status_code != 200:
                raise self.error(response, "listing the bucket")
            root = _parse_xml(response.text)
            if root is None or _local(root.tag) != "ListBucketResult":
                raise BackupError(
                    f"listing the bucket on {self.endpoint}/{self.bucket} gave an answer that is "
                    "not an S3 listing",
                    hint="Check the endpoint URL: it should be the S3 API of your storage",
                )
            for item in root:
                if _local(item.tag) != "Contents":
                    continue
                size = _child_text(item, "Size")
                found.append(
                    S3Object(
                        _child_text(item, "Key"),
                        int(size) if size.isdigit() else 0,
                        _parse_time(_child_text(item, "LastModified")),
                    )
                )
            token = _child_text(root, "NextContinuationToken")
            truncated = _child_text(root, "IsTruncated") == "true"
            if not truncated or not token or (limit is not None and len(found) >= limit):
                return found if limit is None else found[:limit]

    async def put(self, key: str, body: bytes) -> None:
        response = await self.request("PUT", key, body=body)
        if response.status_code not in (200, 201):
            raise self.error(response, "writing a test object")

    async def delete(self, key: str) -> None:
        response = await self.request("DELETE", key)
        if response.status_code not in (200, 204, 404):
            raise self.error(response, "deleting an object")
