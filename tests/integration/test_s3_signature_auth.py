"""The S3 client against an S3 server that checks signatures (moto with its auth switched on):
the right keys work end to end, a wrong secret key or an unknown key id is refused and named."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import boto3
import httpx
import pytest

from app.errors import BackupError
from app.services.backup import check_storage
from app.services.s3 import S3Client, S3Credentials
from app.settings import BackupSettings

BUCKET = "bivy-auth"


@dataclass
class AuthS3:
    endpoint: str
    keys: S3Credentials


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def auth_s3() -> Iterator[AuthS3]:
    """moto's server with an IAM user allowed on one bucket; then every request must be signed
    with that user's keys (``/moto-api/reset-auth`` 0 = ``INITIAL_NO_AUTH_ACTION_COUNT=0``)."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(endpoint + "/", timeout=1)
                break
            except httpx.TransportError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto's server did not start") from None
                time.sleep(0.1)
        admin = {
            "endpoint_url": endpoint,
            "region_name": "us-east-1",
            "aws_access_key_id": "AKIAADMINSETUP000000",
            "aws_secret_access_key": "setup-only",
        }
        iam = boto3.client("iam", **admin)
        iam.create_user(UserName="bivy")
        policy = {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
        }
        iam.put_user_policy(UserName="bivy", PolicyName="bucket", PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName="bivy")["AccessKey"]
        boto3.client("s3", **admin).create_bucket(Bucket=BUCKET)
        switched = httpx.post(f"{endpoint}/moto-api/reset-auth", content=b"0", timeout=5)
        assert switched.status_code == 200, switched.text
        yield AuthS3(endpoint, S3Credentials(key["AccessKeyId"], key["SecretAccessKey"]))
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _settings(s3: AuthS3) -> BackupSettings:
    return BackupSettings(
        enabled=True, endpoint=s3.endpoint, bucket=BUCKET, region="us-east-1", prefix="bivy"
    )


async def test_the_right_keys_list_write_and_delete(auth_s3: AuthS3) -> None:
    result = await check_storage(_settings(auth_s3), auth_s3.keys)
    assert "list, write and delete" in result.message
    async with S3Client(auth_s3.endpoint, BUCKET, "us-east-1", auth_s3.keys) as client:
        await client.put("bivy/demo/config", b"restic config")
        (obj,) = await client.list("bivy/demo/")
        assert (obj.key, obj.size) == ("bivy/demo/config", 13)
        await client.delete("bivy/demo/config")
        assert await client.list("bivy/demo/") == []


async def test_a_wrong_secret_key_is_refused(auth_s3: AuthS3) -> None:
    wrong = S3Credentials(auth_s3.keys.access_key, auth_s3.keys.secret_key[:-1] + "X")
    with pytest.raises(BackupError) as refused:
        await check_storage(_settings(auth_s3), wrong)
    assert refused.value.code == "SignatureDoesNotMatch"
    assert refused.value.status == 403
    assert "secret access key does not match" in refused.value.hint
    assert wrong.secret_key not in refused.value.one_line()


async def test_an_unknown_access_key_is_refused(auth_s3: AuthS3) -> None:
    unknown = S3Credentials("AKIANOTAKNOWNKEY0000", auth_s3.keys.secret_key)
    with pytest.raises(BackupError) as refused:
        await check_storage(_settings(auth_s3), unknown)
    assert refused.value.code == "InvalidAccessKeyId"
    assert "not known to this service" in refused.value.hint


async def test_an_unsigned_request_is_refused(auth_s3: AuthS3) -> None:
    """The server really checks: a plain request without a signature is turned away (moto
    answers 500 for a missing Authorization header, 403 for a bad one)."""
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{auth_s3.endpoint}/{BUCKET}?list-type=2")
    assert response.status_code in (403, 500)
    assert "ListBucketResult" not in response.text
