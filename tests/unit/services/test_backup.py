"""BackupService offline: SigV4 vs botocore, S3 answers via MockTransport, passwords, backup now."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from app.domain import WorkspaceSpec
from app.errors import BackupError, InvalidInput, NotFound
from app.services.backup import (
    BACKUP_COMMAND,
    PRESETS,
    BackupService,
    S3Client,
    S3Credentials,
    check_storage,
    preset_for,
    repository_url,
    validate_backup_settings,
)
from app.settings import BackupSettings, SecretKeys, SecretStore, Settings

KEYS = S3Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
NOW = datetime(2026, 11, 27, 3, 4, 5, tzinfo=UTC)


def config(**changes: Any) -> BackupSettings:
    values: dict[str, Any] = {
        "enabled": True,
        "endpoint": "https://fsn1.your-objectstorage.com",
        "bucket": "my-bivy",
        "region": "fsn1",
        "prefix": "bivy",
    }
    values.update(changes)
    return BackupSettings(**values)


# -- credentials (the signing itself: tests/unit/services/test_backup_s3.py) ---------------------


def test_credentials_never_in_repr() -> None:
    assert KEYS.secret_key not in repr(KEYS) and KEYS.access_key not in repr(KEYS)


# -- settings, presets, repository -------------------------------------------------------------


def test_presets_build_endpoints_and_recognise_them() -> None:
    by_id = {p.id: p for p in PRESETS}
    assert by_id["hetzner"].endpoint_for("nbg1") == "https://nbg1.your-objectstorage.com"
    assert by_id["scaleway"].endpoint_for("") == "https://s3.fr-par.scw.cloud"
    assert by_id["aws"].endpoint_for("eu-central-1") == "https://s3.eu-central-1.amazonaws.com"
    assert by_id["r2"].endpoint_for(account="abc123") == "https://abc123.r2.cloudflarestorage.com"
    with pytest.raises(InvalidInput):
        by_id["r2"].endpoint_for()
    assert preset_for("https://hel1.your-objectstorage.com").id == "hetzner"
    assert preset_for("https://abc123.r2.cloudflarestorage.com/").id == "r2"
    assert preset_for("http://minio.lan:9000").id == "custom"


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"endpoint": "fsn1.your-objectstorage.com"}, "http(s) URL"),
        ({"endpoint": "https://h.example/my-bivy"}, "own field"),
        ({"endpoint": "https://user:pw@h.example"}, "own field"),
        ({"bucket": "My_Bucket"}, "bucket name"),
        ({"bucket": "ab"}, "bucket name"),
        ({"prefix": "a b"}, "prefix"),
        ({"region": "EU Central"}, "region"),
    ],
)
def test_invalid_settings_say_why(changes: dict[str, str], fragment: str) -> None:
    with pytest.raises(InvalidInput) as raised:
        validate_backup_settings(config(**changes))
    assert fragment in raised.value.message


def test_repository_url_per_workspace() -> None:
    assert repository_url(config(), "demo") == (
        "s3:https://fsn1.your-objectstorage.com/my-bivy/bivy/demo"
    )
    assert repository_url(config(prefix="/team/x/", endpoint="http://m:9000/"), "w") == (
        "s3:http://m:9000/my-bivy/team/x/w"
    )
    assert repository_url(config(prefix=""), "w") == (
        "s3:https://fsn1.your-objectstorage.com/my-bivy/w"
    )


# -- S3 answers --------------------------------------------------------------------------------


def s3_error(status: int, code: str, message: str = "nope") -> httpx.Response:
    body = f"<?xml version='1.0'?><Error><Code>{code}</Code><Message>{message}</Message></Error>"
    return httpx.Response(status, text=body, headers={"x-amz-request-id": "REQ1"})


@dataclass
class FakeS3:
    """An S3 stand-in at the transport seam: objects in a dict, errors on demand."""

    objects: dict[str, bytes]
    fail: dict[str, httpx.Response] | None = None

    def __post_init__(self) -> None:
        self.requests: list[httpx.Request] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        assert request.headers["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKID")
        if self.fail and request.method in self.fail:
            return self.fail[request.method]
        path = request.url.path.split("/", 2)
        key = path[2] if len(path) > 2 else ""
        if request.method == "GET":
            prefix = request.url.params.get("prefix", "")
            limit = int(request.url.params.get("max-keys", "1000"))
            keys = sorted(k for k in self.objects if k.startswith(prefix))[:limit]
            contents = "".join(
                f"<Contents><Key>{k.replace('&', '&amp;')}</Key><Size>{len(self.objects[k])}"
                f"</Size><LastModified>2026-11-2{i % 7}T10:00:00.000Z</LastModified></Contents>"
                for i, k in enumerate(keys)
            )
            return httpx.Response(
                200, text=f"<ListBucketResult>{contents}<IsTruncated>false</IsTruncated>"
                "</ListBucketResult>"
            )  # fmt: skip
        if request.method == "PUT":
            self.objects[key] = request.content
            return httpx.Response(200)
        if request.method == "DELETE":
            self.objects.pop(key, None)
            return httpx.Response(204)
        return httpx.Response(405)

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handler)


async def test_check_lists_writes_and_deletes_a_probe() -> None:
    fake = FakeS3({"bivy/demo/config": b"x"})
    result = await check_storage(config(), KEYS, transport=fake.transport())
    assert [r.method for r in fake.requests] == ["GET", "PUT", "DELETE"]
    assert fake.requests[1].url.path.startswith("/my-bivy/bivy/.bivy-check-")
    assert fake.objects == {"bivy/demo/config": b"x"}
    assert result.objects_seen == 1 and "my-bivy/bivy" in result.message


@pytest.mark.parametrize(
    ("method", "response", "hint"),
    [
        ("GET", s3_error(404, "NoSuchBucket"), "Create the bucket"),
        ("GET", s3_error(403, "InvalidAccessKeyId"), "access key id is not known"),
        ("GET", s3_error(403, "SignatureDoesNotMatch"), "secret access key does not match"),
        ("GET", s3_error(400, "AuthorizationHeaderMalformed"), "region"),
        ("PUT", s3_error(403, "AccessDenied"), "lacks permission"),
        ("GET", httpx.Response(403, text=""), "Check the access key"),
    ],
)
async def test_check_names_what_failed(method: str, response: httpx.Response, hint: str) -> None:
    fake = FakeS3({}, fail={method: response})
    with pytest.raises(BackupError) as raised:
        await check_storage(config(), KEYS, transport=fake.transport())
    assert hint in raised.value.hint
    assert KEYS.secret_key not in str(raised.value)


async def test_check_refuses_missing_keys_before_any_request() -> None:
    fake = FakeS3({})
    with pytest.raises(InvalidInput):
        await check_storage(config(), S3Credentials("AKID", ""), transport=fake.transport())
    assert fake.requests == []


async def test_listing_follows_continuation_tokens() -> None:
    pages = iter(
        [
            "<ListBucketResult><Contents><Key>p/a</Key><Size>1</Size></Contents>"
            "<IsTruncated>true</IsTruncated><NextContinuationToken>t+1=</NextContinuationToken>"
            "</ListBucketResult>",
            "<ListBucketResult><Contents><Key>p/b&amp;c</Key><Size>2</Size></Contents>"
            "<IsTruncated>false</IsTruncated></ListBucketResult>",
        ]
    )
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, text=next(pages))

    async with S3Client(
        "https://h.example", "b", "", KEYS, transport=httpx.MockTransport(handler)
    ) as client:
        objects = await client.list("p/")
    assert [o.key for o in objects] == ["p/a", "p/b&c"]
    assert seen[1].url.params["continuation-token"] == "t+1="


# -- the service -------------------------------------------------------------------------------


async def service_with(fake: FakeS3 | None = None, **changes: Any) -> BackupService:
    store = SecretStore()
    service = BackupService(
        Settings(backup=config(**changes)),
        store,
        transport=fake.transport() if fake else None,
    )
    await service.save_credentials("AKIDEXAMPLE", "secret-example")
    return service


async def test_inputs_generate_one_password_per_workspace_and_keep_it() -> None:
    service = await service_with()
    spec = WorkspaceSpec(name="demo", repo_url="https://github.com/e/demo.git")
    first = await service.inputs_for(spec)
    assert first is not None
    assert first.repository == "s3:https://fsn1.your-objectstorage.com/my-bivy/bivy/demo"
    assert first.keys == {
        "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE",
        "AWS_SECRET_ACCESS_KEY": "secret-example",
        "AWS_DEFAULT_REGION": "fsn1",
    }
    assert len(first.password) >= 40
    assert first.interval_minutes == 15 and first.include_uncommitted
    again = await service.inputs_for(spec)
    assert again is not None and again.password == first.password
    other = await service.inputs_for(spec.model_copy(update={"name": "other"}))
    assert other is not None and other.password != first.password
    stored = service.secrets.get(SecretKeys.workspace("demo", "restic-password"))
    assert stored == first.password
    assert first.password not in repr(first)


async def test_no_inputs_when_backups_are_off() -> None:
    spec = WorkspaceSpec(name="demo", repo_url="https://github.com/e/demo.git")
    assert await (await service_with(enabled=False)).inputs_for(spec) is None
    assert (
        await (await service_with()).inputs_for(spec.model_copy(update={"backup": False})) is None
    )
    service = BackupService(Settings(backup=config()), SecretStore())
    service.secrets.delete(SecretKeys.BACKUP_SECRET_KEY)  # the keys are not in the keychain
    with pytest.raises(BackupError) as raised:
        await service.inputs_for(spec)
    assert "Settings → Backups" in raised.value.hint


@dataclass
class Result:
    exit_status: int
    stdout: str = ""
    stderr: str = ""


class FakeRunner:
    def __init__(self, result: Result) -> None:
        self.result = result
        self.commands: list[tuple[str, float]] = []

    async def run(self, command: str, *, input: str | None = None, limit: float = 30.0) -> Result:
        self.commands.append((command, limit))
        return self.result


async def test_back_up_now_runs_the_vm_script_with_sudo() -> None:
    service = await service_with()
    runner = FakeRunner(Result(0))
    await service.backup_now(runner)
    await service.backup_now(runner, force=True)
    # The path the cloud-config installs the script at, written out: a changed constant must
    # fail here (and in test_restic_s3, which runs this command line for real over SSH).
    assert runner.commands[0][0] == "sudo -n /usr/local/lib/bivy/backup run"
    assert runner.commands[1][0] == "sudo -n /usr/local/lib/bivy/backup run --force"
    assert runner.commands[0][1] >= 600


def test_the_vm_installs_the_backup_script_where_back_up_now_runs_it() -> None:
    from app.cloudinit import BackupInputs, render_user_data
    from tests.unit.cloudinit.vmtree import inputs_for, write_files

    backup = BackupInputs(
        repository="s3:https://s3.example.com/bucket/bivy/demo",
        keys={"AWS_ACCESS_KEY_ID": "AKID", "AWS_SECRET_ACCESS_KEY": "secret"},
        password="p" * 43,
        interval_minutes=15,
        include_uncommitted=True,
    )
    spec = WorkspaceSpec(name="demo", repo_url="https://github.com/example/demo.git")
    rendered = render_user_data(inputs_for(spec, backup=backup))
    files = {f["path"]: f for f in write_files(rendered.cloud_config)}
    script = files[BACKUP_COMMAND]
    assert script["permissions"] == "0755" and script["content"].startswith("#!/usr/bin/env bash")


@pytest.mark.parametrize(
    ("result", "fragment"),
    [
        (
            Result(1, stderr="2026-11-27T03:00:00Z bivy-backup: backup failed: Fatal: wrong "
                   "password or no key found\n"),
            "the backup on the VM failed: backup failed: Fatal: wrong password",
        ),
        (Result(75, stderr="another backup is still running\n"), "already running"),
        (Result(1, stderr="sudo: /usr/local/lib/bivy/backup: command not found\n"), "no backup"),
    ],
)  # fmt: skip
async def test_back_up_now_failures_are_clear(result: Result, fragment: str) -> None:
    service = await service_with()
    with pytest.raises(BackupError) as raised:
        await service.backup_now(FakeRunner(result))
    assert fragment in raised.value.message


async def test_repository_info_from_the_listing() -> None:
    fake = FakeS3(
        {
            "bivy/demo/config": b"c",
            "bivy/demo/keys/k1": b"kk",
            "bivy/demo/snapshots/s1": b"s",
            "bivy/demo/snapshots/s2": b"s",
            "bivy/demo-2/config": b"other workspace",
        }
    )
    service = await service_with(fake)
    info = await service.repository_info("demo")
    assert info.exists and info.snapshots == 2 and info.objects == 4 and info.size_bytes == 5
    assert info.last_backup_at is not None and info.last_backup_at.tzinfo is not None
    empty = await service.repository_info("nothing")
    assert not empty.exists and empty.last_backup_at is None


class Workspaces:
    def __init__(self, fake: FakeS3, missing: bool = False) -> None:
        self.fake = fake
        self.missing = missing
        self.objects_when_deleted: int | None = None

    async def delete(self, name: str, *, wait: bool = False) -> None:
        assert wait, "the VM must be gone before its backups are deleted"
        self.objects_when_deleted = len(self.fake.objects)
        if self.missing:
            raise NotFound("gone")


async def test_delete_workspace_and_backups_in_order() -> None:
    fake = FakeS3(
        {
            "bivy/demo/config": b"c",
            "bivy/demo/data/aa/1": b"d",
            "bivy/demo/snapshots/s1": b"s",
            "bivy/demo-2/config": b"other workspace",
        }
    )
    service = await service_with(fake)
    await service.password("demo", create=True)
    workspaces = Workspaces(fake)
    report = await service.delete_workspace_and_backups("demo", workspaces)
    assert workspaces.objects_when_deleted == 4  # the VM went first
    assert report.vm_deleted and report.objects_deleted == 3 and report.password_forgotten
    assert set(fake.objects) == {"bivy/demo-2/config"}
    deleted = [r.url.path for r in fake.requests if r.method == "DELETE"]
    assert deleted[0].endswith("/snapshots/s1") and deleted[-1].endswith("/demo/config")
    assert await service.password("demo") is None


async def test_delete_tolerates_a_vm_already_gone() -> None:
    fake = FakeS3({"bivy/demo/config": b"c"})
    service = await service_with(fake)
    report = await service.delete_workspace_and_backups("demo", Workspaces(fake, missing=True))
    assert not report.vm_deleted and report.objects_deleted == 1


# -- through WorkspaceService: what the VM gets, and what a VM delete keeps ----------------------


async def test_created_vm_gets_the_backup_and_deleting_it_keeps_the_password() -> None:
    import io
    import tarfile

    import yaml

    from tests.unit.cloudinit.vmtree import file_content
    from tests.unit.services.test_workspaces import decode_user_data, make_emulator, make_service

    emulator = make_emulator()
    workspaces = make_service(emulator)
    workspaces.settings.backup = config()
    await BackupService(workspaces.settings, workspaces.secrets).save_credentials(
        "AKIDEXAMPLE", "secret-example"
    )
    await workspaces.create(WorkspaceSpec(name="demo", repo_url="https://github.com/e/demo.git"))
    post = emulator.calls("POST", r"/v1/servers")[0].body
    cloud_config = decode_user_data(post["user_data"])
    env = file_content(cloud_config, "/etc/bivy/backup.env")
    password = workspaces.secrets.get(SecretKeys.workspace("demo", "restic-password"))
    assert password is not None
    assert "RESTIC_REPOSITORY=s3:https://fsn1.your-objectstorage.com/my-bivy/bivy/demo" in env
    assert f"RESTIC_PASSWORD={password}" in env
    paths = {f["path"] for f in yaml.safe_load(cloud_config)["write_files"]}
    # Hetzner's user data cannot hold Bivy's tools: the rest came in the toolkit sent over SSH.
    from tests.support.emulated_vm import RECEIVED

    toolkit = next(archive for name, archive in reversed(RECEIVED) if name == "demo")
    with tarfile.open(fileobj=io.BytesIO(toolkit), mode="r:xz") as tar:
        paths |= {f"/usr/local/lib/bivy/{name}" for name in tar.getnames()}
    assert {"/usr/local/lib/bivy/restore", "/usr/local/lib/bivy/pre-delete"} <= paths

    # Deleting the VM is not deleting its backups: the password that reads them stays.
    await workspaces.delete("demo", wait=True)
    assert workspaces.secrets.get(SecretKeys.workspace("demo", "restic-password")) == password
    await workspaces.aclose()
