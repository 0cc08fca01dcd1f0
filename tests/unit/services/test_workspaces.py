"""WorkspaceService against the Hetzner emulator (in-process transport, manual clock)."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import logging
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from app.domain import ServerStatus, WorkspaceSpec, utcnow
from app.errors import ActionFailed, AuthError, Conflict, InvalidInput, NotFound, Timeout
from app.providers._polling import Backoff
from app.services.registry import Registry, WorkspaceRecord
from app.services.workspaces import CreateProgress, WorkspaceService
from app.settings import Account, SecretKeys, SecretStore, Settings, settings_path
from tests.emulators.hetzner import HetznerEmulator, ManualClock
from tests.support.memory_keyring import MemoryKeyring
from tests.support.waits import WAIT_S

TOKEN = "WorkspaceTestToken0123456789abcdefghijklmnopqrstuvwxyz"
REPO = "https://github.com/example/project"


async def no_sleep(_: float) -> None:
    await asyncio.sleep(0)


class FakeClock:
    """A monotonic clock that only moves when the service sleeps."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += max(seconds, 1.0)
        await asyncio.sleep(0)


def make_emulator(**kw: Any) -> HetznerEmulator:
    values: dict[str, Any] = {
        "token": TOKEN,
        "clock": ManualClock(),
        "tick_per_request": 1.0,
        "create_seconds": 0.0,
        "start_seconds": 3.0,
        "delete_seconds": 2.0,
    }
    values.update(kw)
    return HetznerEmulator(**values)


class YieldingTransport(httpx.AsyncBaseTransport):
    """The emulator's transport, suspending once per request as real network I/O does, so a
    cancel lands at the request it was aimed at."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0)
        return await self.inner.handle_async_request(request)


def make_service(emulator: HetznerEmulator, **kw: Any) -> WorkspaceService:
    values: dict[str, Any] = {
        "transport_factory": lambda account: YieldingTransport(emulator.transport()),
        "environ": {"BIVY_HETZNER_TOKEN": TOKEN},
        "poll_backoff": Backoff(initial=1.0, factor=1.0, maximum=1.0),
        "sleep": no_sleep,
        "cleanup_interval": 0.0,
    }
    values.update(kw)
    return WorkspaceService(Settings(), SecretStore(), **values)


def live_servers(emulator: HetznerEmulator) -> list[dict[str, Any]]:
    """Servers the emulator still holds after every pending deletion finished."""
    emulator.clock.advance(emulator.delete_seconds + 1)  # type: ignore[attr-defined]
    return [
        {"id": sid, "status": emulator.server_status(sid)}
        for sid in list(emulator.project.servers)
        if emulator.server_status(sid) is not None
    ]


def decode_user_data(user_data: str) -> str:
    """The plain YAML of what was sent (Hetzner takes base64(gzip(...)) when it is large)."""
    if user_data.startswith("#cloud-config"):
        return user_data
    return gzip.decompress(base64.b64decode(user_data)).decode()


def spec(name: str = "demo", **kw: Any) -> WorkspaceSpec:
    return WorkspaceSpec(name=name, repo_url=REPO, **kw)


@pytest.fixture
def emulator() -> HetznerEmulator:
    return make_emulator()


async def test_create_reports_progress_and_records_public_data_only(
    emulator: HetznerEmulator,
    isolated_environment: MemoryKeyring,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    service = make_service(emulator)
    seen: list[CreateProgress] = []
    try:
        workspace = await service.create(spec(idle_minutes=45, max_hours=3), seen.append)
    finally:
        await service.aclose()
    assert workspace.server is not None
    assert workspace.server.status == ServerStatus.RUNNING
    assert (workspace.name, workspace.account, workspace.repo_url) == ("demo", "hetzner", REPO)

    steps = [p.step for p in seen]
    assert steps[:5] == ["validate", "keys", "user-data", "create", "record"]
    assert steps[-1] == "done" and "wait" in steps
    fractions = [p.fraction for p in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0

    # The server carries Bivy's labels and the VM's pinned host key came with the user data.
    record = Registry().get("demo")
    assert record is not None
    assert record.server_id == workspace.server.id
    assert record.host_public_key.startswith("ssh-ed25519 ")
    assert (record.idle_minutes, record.max_hours, record.repo_url) == (45, 3, REPO)
    post = emulator.calls("POST", r"/v1/servers")[0].body
    assert post["labels"] == {
        "managed-by": "bivy",
        "bivy-workspace": "demo",
        "bivy-idle-minutes": "45",
        "bivy-max-hours": "3",
    }
    cloud_config = decode_user_data(post["user_data"])
    assert cloud_config.startswith("#cloud-config")
    document = yaml.safe_load(cloud_config)
    assert record.host_public_key in json.dumps(document)  # the pinned host key went along
    assert "ssh-ed25519 " in json.dumps(document["users"])  # and the install's key for dev

    # Secrets: the ttyd password and SSH key only in the keychain.
    password = isolated_environment.store[("bivy", SecretKeys.workspace("demo", "ttyd-password"))]
    private_key = isolated_environment.store[("bivy", SecretKeys.SSH_PRIVATE_KEY)]
    assert len(password) >= 24
    registry_text = Registry().path.read_text()
    for secret in (password, private_key, TOKEN):
        assert secret not in registry_text
        assert secret not in caplog.text
        assert not settings_path().exists() or secret not in settings_path().read_text()
    assert "PRIVATE KEY" not in registry_text


async def test_name_clash_is_refused_before_anything_is_created(
    emulator: HetznerEmulator,
) -> None:
    service = make_service(emulator)
    await service.create(spec())
    with pytest.raises(Conflict, match="already exists") as info:
        await service.create(spec())
    assert "bivy rm demo" in info.value.one_line()
    assert len(emulator.calls("POST", r"/v1/servers")) == 1
    assert len(live_servers(emulator)) == 1
    await service.aclose()


async def test_provider_side_name_clash_deletes_nothing(emulator: HetznerEmulator) -> None:
    # A server named like ours but not Bivy's: the provider refuses, and Bivy must not touch it.
    foreign = emulator.add_server("bivy-demo")
    service = make_service(emulator)
    with pytest.raises(Conflict, match="already taken"):
        await service.create(spec())
    assert emulator.server_status(foreign) == "running"
    assert not emulator.calls("DELETE", r"/v1/servers/\d+")
    assert Registry().get("demo") is None
    await service.aclose()


async def test_failed_create_action_leaves_no_server(
    emulator: HetznerEmulator, isolated_environment: MemoryKeyring
) -> None:
    emulator.fail_next_action("create_server", "placement_error", "no capacity")
    service = make_service(emulator)
    with pytest.raises(ActionFailed, match="no capacity"):
        await service.create(spec())
    assert live_servers(emulator) == []
    assert Registry().all() == []
    assert ("bivy", "workspace/demo/ttyd-password") not in isolated_environment.store
    await service.aclose()


async def test_never_running_times_out_and_cleans_up() -> None:
    emulator = make_emulator(start_seconds=10_000.0)
    clock = FakeClock()
    service = make_service(emulator, sleep=clock.sleep, clock=clock, running_timeout=30.0)
    with pytest.raises(Timeout, match="to start"):
        await service.create(spec())
    assert live_servers(emulator) == []
    assert Registry().all() == []
    await service.aclose()


# -- Cancel at every step ---------------------------------------------------------------------


async def _cancel_when(
    service: WorkspaceService, trigger: Callable[[asyncio.Task[Any], CreateProgress], None]
) -> None:
    task: asyncio.Task[Any] | None = None

    def on_progress(progress: CreateProgress) -> None:
        assert task is not None
        trigger(task, progress)

    task = asyncio.ensure_future(service.create(spec(), on_progress))
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()


@pytest.mark.parametrize("step", ["validate", "keys", "user-data", "create", "record", "wait"])
async def test_cancel_at_each_step_leaves_nothing(
    step: str, emulator: HetznerEmulator, isolated_environment: MemoryKeyring
) -> None:
    service = make_service(emulator)

    def trigger(task: asyncio.Task[Any], progress: CreateProgress) -> None:
        if progress.step == step:
            task.cancel()

    await _cancel_when(service, trigger)
    posted = bool(emulator.calls("POST", r"/v1/servers"))
    # Cancelled before the create request went out, or after: then the server was deleted.
    assert posted == (step in ("record", "wait"))
    assert bool(emulator.calls("DELETE", r"/v1/servers/\d+")) == posted
    assert live_servers(emulator) == []
    assert Registry().all() == []
    assert ("bivy", "workspace/demo/ttyd-password") not in isolated_environment.store
    await service.aclose()


async def test_cancel_while_the_create_request_is_in_flight(
    isolated_environment: MemoryKeyring,
) -> None:
    # The provider applies the POST, but its answer is slow: the server exists, its id unknown.
    emulator = make_emulator()
    emulator.inject_latency("POST", r"/v1/servers", 30.0, times=1)
    service = make_service(emulator)
    task = asyncio.ensure_future(service.create(spec()))
    while not emulator.calls("POST", r"/v1/servers"):
        await asyncio.sleep(0.01)
    assert len(emulator.project.servers) == 1  # created at the provider
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert emulator.calls("DELETE", r"/v1/servers/\d+")  # found by its label and deleted
    assert live_servers(emulator) == []
    assert Registry().all() == []
    await service.aclose()


async def test_cancel_while_waiting_for_the_create_action() -> None:
    emulator = make_emulator(create_seconds=50.0)
    service = make_service(emulator)
    task = asyncio.ensure_future(service.create(spec()))
    while not emulator.calls("GET", r"/v1/actions/\d+") and not task.done():
        await asyncio.sleep(0.01)  # the provider polls its action with a real (long) sleep
        if emulator.calls("POST", r"/v1/servers"):
            break
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert live_servers(emulator) == []
    await service.aclose()


async def test_second_cancel_during_cleanup_still_cleans_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    emulator = make_emulator()
    # The cleanup's DELETE is slow to answer: the second cancel lands while it waits for it.
    emulator.inject_latency("DELETE", r"/v1/servers/\d+", 1.0, times=1)
    service = make_service(emulator)
    cancels = 0
    helpers: list[asyncio.Task[None]] = []

    async def cancel_again_once_deleting(task: asyncio.Task[Any]) -> None:
        async with asyncio.timeout(WAIT_S):
            while not emulator.calls("DELETE", r"/v1/servers/\d+"):
                await asyncio.sleep(0)
        task.cancel()

    def trigger(task: asyncio.Task[Any], progress: CreateProgress) -> None:
        nonlocal cancels
        if progress.step == "wait" and cancels == 0:
            cancels += 1
            task.cancel()
            helpers.append(asyncio.ensure_future(cancel_again_once_deleting(task)))

    await _cancel_when(service, trigger)
    await helpers[0]
    assert "cancelled during cleanup; cleanup continues" in caplog.text  # the path under test
    # The cleanup goes on in its own task after the second cancel: wait for its DELETE.
    async with asyncio.timeout(WAIT_S):
        while not (emulator.calls("DELETE", r"/v1/servers/\d+") and not Registry().all()):
            await asyncio.sleep(0.02)
    assert live_servers(emulator) == []
    await service.aclose()


# -- list -------------------------------------------------------------------------------------


async def test_list_merges_registry_and_labels(emulator: HetznerEmulator) -> None:
    service = make_service(emulator)
    await service.create(spec("alpha"))
    # A Bivy server created elsewhere (no local record): limits come from its labels.
    emulator.add_server(
        "bivy-beta",
        labels={"managed-by": "bivy", "bivy-workspace": "beta", "bivy-idle-minutes": "15",
                "bivy-max-hours": "2"},
    )  # fmt: skip
    emulator.add_server("unrelated", labels={"team": "x"})
    listing = await service.list_workspaces()
    assert listing.errors == {}
    assert [w.name for w in listing.workspaces] == ["alpha", "beta"]
    alpha, beta = listing.workspaces
    assert alpha.repo_url == REPO and alpha.server is not None
    assert (beta.repo_url, beta.idle_minutes, beta.max_hours) == ("", 15, 2)
    # One label-filtered list call per account.
    lists = emulator.calls("GET", r"/v1/servers")
    assert lists[-1].query.get("label_selector") == ["managed-by=bivy"]
    await service.aclose()


async def test_one_failing_account_does_not_hide_the_others(
    isolated_environment: MemoryKeyring,
) -> None:
    good, bad = make_emulator(), make_emulator(token="SomeOtherToken0123456789")
    good.add_server("bivy-a", labels={"managed-by": "bivy", "bivy-workspace": "a"})
    settings = Settings(
        accounts=[Account(id="work", provider="hetzner"), Account(id="home", provider="hetzner")]
    )
    store = SecretStore()
    store.set(SecretKeys.account("work", "token"), TOKEN)
    store.set(SecretKeys.account("home", "token"), TOKEN)
    service = WorkspaceService(
        settings,
        store,
        transport_factory=lambda account: (good if account.id == "work" else bad).transport(),
        environ={},
    )
    listing = await service.list_workspaces()
    assert [(w.name, w.account) for w in listing.workspaces] == [("a", "work")]
    assert list(listing.errors) == ["home"]
    assert isinstance(listing.errors["home"], AuthError)
    await service.aclose()


async def test_list_prunes_old_records_of_vanished_servers(
    emulator: HetznerEmulator, isolated_environment: MemoryKeyring
) -> None:
    registry = Registry()
    old = utcnow() - timedelta(hours=2)
    for name, created in (("gone", old), ("young", utcnow())):
        registry.put(WorkspaceRecord(name=name, account="hetzner", provider="hetzner",
                                     server_id="999", created_at=created))  # fmt: skip
        SecretStore().set(SecretKeys.workspace(name, "ttyd-password"), "pw-" + name)
    service = make_service(emulator)
    await service.list_workspaces()
    assert [r.name for r in registry.all()] == ["young"]  # may still be being created
    assert ("bivy", "workspace/gone/ttyd-password") not in isolated_environment.store
    await service.aclose()


# -- delete, sizes, regions -------------------------------------------------------------------


async def test_delete_removes_server_record_and_password(
    emulator: HetznerEmulator, isolated_environment: MemoryKeyring
) -> None:
    service = make_service(emulator)
    await service.create(spec())
    await service.delete("demo", wait=True)
    assert [s for s in emulator.project.servers if emulator.server_status(s)] == []
    assert Registry().all() == []
    assert ("bivy", "workspace/demo/ttyd-password") not in isolated_environment.store
    assert (await service.list_workspaces()).workspaces == []
    with pytest.raises(NotFound, match="no workspace named 'demo'") as info:
        await service.delete("demo")
    assert "bivy ls" in info.value.one_line()
    await service.aclose()


async def test_delete_finds_an_unrecorded_server_by_label(emulator: HetznerEmulator) -> None:
    sid = emulator.add_server("bivy-x", labels={"managed-by": "bivy", "bivy-workspace": "x"})
    service = make_service(emulator)
    await service.delete("x")
    assert emulator.server_status(sid) == "deleting"
    await service.aclose()


async def test_sizes_and_regions_come_from_the_api(emulator: HetznerEmulator) -> None:
    service = make_service(emulator)
    sizes = await service.sizes("hetzner", "fsn1")
    cx23 = next(s for s in sizes if s.name == "cx23")
    price = cx23.price_in("fsn1")
    assert price is not None and price.currency == "EUR" and price.hourly > 0
    emulator.set_price("cx23", "fsn1", "0.0100", "6.0000")
    again = next(s for s in await service.sizes("hetzner", "fsn1") if s.name == "cx23")
    assert again.price_in("fsn1") != price  # never cached
    regions = await service.regions("hetzner")
    assert "fsn1" in {r.id for r in regions}
    await service.aclose()


def test_workspace_list_is_json_friendly() -> None:
    # The UI protocol: ``workspaces`` and ``errors`` attributes.
    from app.services.workspaces import WorkspaceList

    listing = WorkspaceList()
    assert listing.workspaces == [] and listing.errors == {}
    assert json.dumps([w.model_dump(mode="json") for w in listing.workspaces]) == "[]"


@pytest.mark.parametrize(
    ("credential", "environ", "keychain", "expected"),
    [
        ("api_key", {}, {"anthropic/api-key": "sk-ant-keychain-0123456789"},
         ("ANTHROPIC_API_KEY", "sk-ant-keychain-0123456789")),
        ("api_key", {"ANTHROPIC_API_KEY": "sk-ant-env-0123456789"},
         {"anthropic/api-key": "sk-ant-keychain-0123456789"},
         ("ANTHROPIC_API_KEY", "sk-ant-env-0123456789")),
        ("oauth_token", {}, {"anthropic/oauth-token": "sk-ant-oat01-0123456789"},
         ("CLAUDE_CODE_OAUTH_TOKEN", "sk-ant-oat01-0123456789")),
        ("none", {}, {"anthropic/api-key": "sk-ant-keychain-0123456789"}, None),
        ("api_key", {}, {}, None),
    ],
)  # fmt: skip
async def test_agent_credential_reaches_the_vm_only(
    emulator: HetznerEmulator,
    credential: str,
    environ: dict[str, str],
    keychain: dict[str, str],
    expected: tuple[str, str] | None,
) -> None:
    store = SecretStore()
    for key, value in keychain.items():
        store.set(key, value)
    service = make_service(emulator, environ={"BIVY_HETZNER_TOKEN": TOKEN, **environ})
    await service.create(spec(agent_credential=credential))
    await service.aclose()
    sent = decode_user_data(emulator.calls("POST", r"/v1/servers")[0].body["user_data"])
    secrets_seen = [v for v in [*keychain.values(), *environ.values()] if v in sent]
    if expected is None:
        assert secrets_seen == []
    else:
        assert secrets_seen == [expected[1]]
        assert expected[0] in sent
    assert all(v not in Registry().path.read_text() for v in keychain.values())


async def test_concurrent_callers_share_one_provider(emulator: HetznerEmulator) -> None:
    service = make_service(emulator)
    account = service.account()
    providers = await asyncio.gather(*(service.provider(account) for _ in range(5)))
    assert len({id(p) for p in providers}) == 1
    listings = await asyncio.gather(service.list_workspaces(), service.list_workspaces())
    assert all(listing.errors == {} for listing in listings)
    await service.aclose()


async def test_delete_refuses_when_the_records_account_is_gone(emulator: HetznerEmulator) -> None:
    service = make_service(emulator)
    await service.create(spec())
    Registry().update("demo", account="old-account")
    with pytest.raises(InvalidInput, match="not configured any more") as info:
        await service.delete("demo")
    assert "bivy login hetzner --account old-account" in info.value.one_line()
    assert Registry().get("demo") is not None  # not forgotten
    assert not emulator.calls("DELETE", r"/v1/servers/\d+")
    await service.aclose()


async def test_an_error_after_the_create_request_still_deletes_the_server() -> None:
    # The POST succeeded, then polling its action failed with an answered 4xx: the server exists
    # though its id never reached the service; it is found by label and deleted.
    emulator = make_emulator(create_seconds=50.0)
    emulator.inject_error("GET", r"/v1/actions/\d+", 404, "not_found", times=None)
    service = make_service(emulator)
    with pytest.raises(NotFound):
        await service.create(spec())
    assert emulator.calls("DELETE", r"/v1/servers/\d+")
    assert live_servers(emulator) == []
    assert Registry().all() == []
    await service.aclose()


async def test_ssh_entry_follows_the_workspace(emulator: HetznerEmulator) -> None:
    """``ssh bivy-<name>`` appears once the VM runs (pinned key included) and leaves with it."""
    ssh_dir = Path.home() / ".ssh"
    service = make_service(emulator)
    try:
        await service.create(spec())
        record = Registry().get("demo")
        assert record is not None and record.ipv4
        config = (ssh_dir / "bivy" / "config").read_text()
        assert "Host bivy-demo" in config and f"HostName {record.ipv4}" in config
        known = (ssh_dir / "bivy" / "known_hosts").read_text()
        assert record.host_public_key.split()[1] in known
        assert "Include" in (ssh_dir / "config").read_text()

        await service.delete("demo", wait=True)
        assert (
            not (ssh_dir / "bivy" / "config").exists()
            or "bivy-demo" not in (ssh_dir / "bivy" / "config").read_text()
        )
    finally:
        await service.aclose()
