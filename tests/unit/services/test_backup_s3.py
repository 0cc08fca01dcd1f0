"""The S3 client over httpx-auth's AWS4Auth: botocore computes the same signatures; answers are
read with ElementTree (namespaced or not); what is not an S3 answer is said so."""

from __future__ import annotations

from datetime import UTC, datetime
from unittest import mock

import httpx
import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from app.errors import BackupError, InvalidInput
from app.services.s3 import S3Client, S3Credentials

KEYS = S3Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
NOW = datetime(2026, 11, 27, 3, 4, 5, tzinfo=UTC)
NS = 'xmlns="http://s3.amazonaws.com/doc/2006-03-01/"'


def botocore_signature(request: httpx.Request, region: str) -> str:
    """What botocore (AWS's own SDK core) signs for the same request at ``NOW``."""
    theirs = AWSRequest(method=request.method, url=str(request.url), data=request.content)
    theirs.headers["x-amz-content-sha256"] = request.headers["x-amz-content-sha256"]
    signer = S3SigV4Auth(Credentials(KEYS.access_key, KEYS.secret_key), "s3", region)
    with mock.patch("botocore.auth.get_current_datetime", return_value=NOW.replace(tzinfo=None)):
        signer.add_auth(theirs)
    return str(theirs.headers["Authorization"])


@pytest.mark.parametrize(
    ("endpoint", "method", "key", "query", "body"),
    [
        ("https://s3.eu-central-1.amazonaws.com", "GET", "", [("list-type", "2"),
         ("prefix", "bivy/")], b""),
        ("https://fsn1.your-objectstorage.com", "PUT", "bivy/.bivy-check-1a2b", [], b"probe\n"),
        ("http://127.0.0.1:9000", "DELETE", "bivy/a b/c~d", [], b""),
        ("https://x.r2.cloudflarestorage.com", "GET", "", [("continuation-token", "a+b="),
         ("max-keys", "1"), ("list-type", "2")], b""),
    ],
)  # fmt: skip
async def test_requests_carry_the_signature_botocore_computes(
    endpoint: str, method: str, key: str, query: list[tuple[str, str]], body: bytes
) -> None:
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200)

    with mock.patch("httpx_auth._aws.datetime") as fake:
        fake.datetime.now.return_value = NOW
        fake.timezone.utc = UTC
        async with S3Client(
            endpoint, "my-bivy", "eu-central-1", KEYS, transport=httpx.MockTransport(handler)
        ) as client:
            await client.request(method, key, query, body)
    (request,) = sent
    assert request.headers["x-amz-date"] == "20261127T030405Z"
    assert request.headers["Authorization"] == botocore_signature(request, "eu-central-1")
    assert KEYS.secret_key not in str(request.headers)


async def test_a_wrong_secret_signs_differently() -> None:
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200)

    for secret in (KEYS.secret_key, KEYS.secret_key + "x"):
        keys = S3Credentials(KEYS.access_key, secret)
        transport = httpx.MockTransport(handler)
        async with S3Client("https://h.example", "b", "", keys, transport=transport) as client:
            await client.request("GET")
    first, second = (r.headers["Authorization"].rsplit("Signature=", 1)[1] for r in sent)
    assert first != second


async def test_namespaced_answers_and_errors_are_read() -> None:
    listing = (
        f"<?xml version='1.0' encoding='UTF-8'?><ListBucketResult {NS}><Name>b</Name>"
        "<Contents><Key>p/a&amp;b</Key><Size>3</Size>"
        "<LastModified>2026-11-27T10:00:00.000Z</LastModified></Contents>"
        "<IsTruncated>false</IsTruncated></ListBucketResult>"
    )
    error = f"<Error {NS}><Code>NoSuchBucket</Code><Message>gone</Message></Error>"
    answers = iter([httpx.Response(200, text=listing), httpx.Response(404, text=error)])
    async with S3Client(
        "https://h.example", "b", "", KEYS, transport=httpx.MockTransport(lambda r: next(answers))
    ) as client:
        (obj,) = await client.list("p/")
        assert (obj.key, obj.size) == ("p/a&b", 3)
        assert obj.last_modified == datetime(2026, 11, 27, 10, tzinfo=UTC)
        with pytest.raises(BackupError) as raised:
            await client.list("p/")
    assert raised.value.code == "NoSuchBucket"
    assert "Create the bucket" in raised.value.hint


@pytest.mark.parametrize(
    "text",
    [
        "<html><body>Welcome to nginx</body></html>",
        "not xml at all",
        # An entity bomb: expat refuses it; the listing is simply not an S3 answer.
        '<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaaaaaaaa">'
        '<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">'
        '<!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;"><!ENTITY e "&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;">'
        '<!ENTITY f "&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;"><!ENTITY g "&f;&f;&f;&f;&f;&f;&f;&f;&f;&f;">'
        '<!ENTITY h "&g;&g;&g;&g;&g;&g;&g;&g;&g;&g;">]><ListBucketResult><Name>&h;</Name>'
        "</ListBucketResult>",
    ],
)
async def test_an_answer_that_is_not_a_listing_is_said_so(text: str) -> None:
    transport = httpx.MockTransport(lambda r: httpx.Response(200, text=text))
    async with S3Client("https://h.example", "b", "", KEYS, transport=transport) as client:
        with pytest.raises(BackupError, match="not an S3 listing"):
            await client.list("p/")


def test_missing_keys_are_refused_before_any_client_exists() -> None:
    with pytest.raises(InvalidInput, match="both the access key id and the secret"):
        S3Client("https://h.example", "b", "", S3Credentials("AKID", ""))
