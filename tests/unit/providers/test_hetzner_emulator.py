"""The Hetzner emulator itself: lifecycle, pagination, selectors, limits, injection, served mode."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.emulators.base import ManualClock
from tests.emulators.hetzner import HetznerEmulator, LabelSelector
from tests.unit.providers.conftest import TOKEN

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
async def api(emulator: HetznerEmulator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=emulator.transport(),
        base_url="https://api.hetzner.cloud/v1/",
        headers={"Authorization": f"Bearer {TOKEN}"},
    ) as client:
        yield client


CREATE = {"name": "ws1", "server_type": "cx23", "image": "ubuntu-24.04", "location": "fsn1"}


async def test_server_lifecycle_follows_the_clock(
    api: httpx.AsyncClient, emulator: HetznerEmulator, clock: ManualClock
) -> None:
    created = (await api.post("servers", json=CREATE)).json()
    sid = created["server"]["id"]
    assert created["server"]["status"] == "initializing"
    assert created["action"]["command"] == "create_server"
    assert created["next_actions"][0]["command"] == "start_server"
    clock.advance(emulator.create_seconds)
    assert (await api.get(f"servers/{sid}")).json()["server"]["status"] == "starting"
    action = (await api.get(f"actions/{created['action']['id']}")).json()["action"]
    assert action["status"] == "success" and action["progress"] == 100
    clock.advance(emulator.start_seconds)
    assert (await api.get(f"servers/{sid}")).json()["server"]["status"] == "running"
    deleted = await api.delete(f"servers/{sid}")
    assert deleted.json()["action"]["command"] == "delete_server"
    assert (await api.get(f"servers/{sid}")).json()["server"]["status"] == "deleting"
    clock.advance(emulator.delete_seconds)
    gone = await api.get(f"servers/{sid}")
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "not_found"


async def test_step_count_mode() -> None:
    clock = ManualClock()
    emu = HetznerEmulator(token=None, clock=clock, tick_per_request=5, create_seconds=10,
                          start_seconds=10)  # fmt: skip
    async with httpx.AsyncClient(transport=emu.transport(), base_url="http://e/v1/",
                                 headers={"Authorization": "Bearer any"}) as api:  # fmt: skip
        sid = (await api.post("servers", json=CREATE)).json()["server"]["id"]
        statuses = [(await api.get(f"servers/{sid}")).json()["server"]["status"] for _ in range(4)]
    assert statuses == ["initializing", "starting", "starting", "running"]
    emu.assert_no_violations()


async def test_pagination(api: httpx.AsyncClient, emulator: HetznerEmulator) -> None:
    for i in range(7):
        emulator.add_server(f"s{i}", {"managed-by": "bivy"})
    page1 = await api.get("servers", params={"per_page": 3})
    meta = page1.json()["meta"]["pagination"]
    assert [s["name"] for s in page1.json()["servers"]] == ["s0", "s1", "s2"]
    assert (meta["next_page"], meta["last_page"], meta["total_entries"]) == (2, 3, 7)
    assert 'rel="next"' in page1.headers["Link"]
    page3 = (await api.get("servers", params={"per_page": 3, "page": 3})).json()
    assert [s["name"] for s in page3["servers"]] == ["s6"]
    assert page3["meta"]["pagination"]["next_page"] is None


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("managed-by=bivy", ["a", "b"]),
        ("managed-by==bivy,bivy-workspace=b", ["b"]),
        ("managed-by!=bivy", ["c"]),
        ("env", ["a", "c"]),
        ("!env", ["b"]),
        ("env in (prod,dev)", ["a", "c"]),
        ("env notin (prod)", ["b", "c"]),
    ],
)
async def test_label_selector(
    api: httpx.AsyncClient, emulator: HetznerEmulator, selector: str, expected: list[str]
) -> None:
    emulator.add_server("a", {"managed-by": "bivy", "bivy-workspace": "a", "env": "prod"})
    emulator.add_server("b", {"managed-by": "bivy", "bivy-workspace": "b"})
    emulator.add_server("c", {"env": "dev"})
    answer = await api.get("servers", params={"label_selector": selector})
    assert [s["name"] for s in answer.json()["servers"]] == expected


def test_label_selector_syntax_errors() -> None:
    with pytest.raises(ValueError):
        LabelSelector("a=(b")


async def test_uniqueness_unavailability_and_quota(
    api: httpx.AsyncClient, emulator: HetznerEmulator
) -> None:
    assert (await api.post("servers", json=CREATE)).status_code == 201
    clash = await api.post("servers", json=CREATE)
    assert clash.status_code == 409 and clash.json()["error"]["code"] == "uniqueness_error"
    where = await api.post("servers", json={**CREATE, "name": "ws2", "location": "ash"})
    assert where.status_code == 412
    assert where.json()["error"]["code"] == "resource_unavailable"
    emulator.server_limit = 1
    quota = await api.post("servers", json={**CREATE, "name": "ws3"})
    assert quota.status_code == 403
    assert quota.json()["error"]["code"] == "resource_limit_exceeded"


async def test_invalid_input(api: httpx.AsyncClient) -> None:
    answer = await api.post(
        "servers", json={**CREATE, "name": "bad_name!", "user_data": "x" * 40000}
    )
    error = answer.json()["error"]
    assert answer.status_code == 422 and error["code"] == "invalid_input"
    names = {f["name"]: f["messages"] for f in error["details"]["fields"]}
    assert names["user_data"] == ["Length must be between 0 and 32768."]
    assert "name" in names


async def test_auth_and_readonly(emulator: HetznerEmulator) -> None:
    async def call(token: str, method: str, path: str) -> httpx.Response:
        async with httpx.AsyncClient(
            transport=emulator.transport(), base_url="http://e/v1/",
            headers={"Authorization": f"Bearer {token}"},
        ) as c:  # fmt: skip
            return await c.request(method, path, json=CREATE if method == "POST" else None)

    assert (await call("wrong", "GET", "servers")).status_code == 401
    assert (await call("readonly-token-1", "GET", "servers")).status_code == 200
    refused = await call("readonly-token-1", "POST", "servers")
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "token_readonly"


async def test_rate_limit_headers_and_bucket(clock: ManualClock) -> None:
    emu = HetznerEmulator(token=None, rate_limit=3, clock=clock)
    async with httpx.AsyncClient(transport=emu.transport(), base_url="http://e/v1/",
                                 headers={"Authorization": "Bearer x"}) as api:  # fmt: skip
        answers = [await api.get("locations") for _ in range(4)]
        assert [a.status_code for a in answers] == [200, 200, 200, 429]
        assert [a.headers["RateLimit-Remaining"] for a in answers] == ["2", "1", "0", "0"]
        assert answers[3].json()["error"]["code"] == "rate_limit_exceeded"
        assert int(answers[3].headers["RateLimit-Reset"]) > clock()
        assert answers[0].headers["X-Correlation-Id"] != answers[1].headers["X-Correlation-Id"]
        clock.advance(1200)  # one request back every 3600/3 s
        assert (await api.get("locations")).status_code == 200
    emu.assert_no_violations()


async def test_error_injection_once_and_n_times(
    api: httpx.AsyncClient, emulator: HetznerEmulator
) -> None:
    emulator.inject_error("GET", r"/v1/servers", 503, "unavailable", times=2)
    emulator.inject_error("POST", r"/v1/servers", 409, "uniqueness_error")
    statuses = [(await api.get("servers")).status_code for _ in range(3)]
    assert statuses == [503, 503, 200]
    assert (await api.post("servers", json=CREATE)).status_code == 409
    assert (await api.post("servers", json=CREATE)).status_code == 201
    assert len(emulator.calls("POST", r"/v1/servers")) == 2


async def test_fault_injection(api: httpx.AsyncClient, emulator: HetznerEmulator) -> None:
    emulator.inject_fault("POST", r"/v1/servers", "timeout", apply=True)
    with pytest.raises(httpx.ReadTimeout):
        await api.post("servers", json=CREATE)
    # the request was applied although its answer was lost
    listed = (await api.get("servers", params={"name": "ws1"})).json()["servers"]
    assert len(listed) == 1
    emulator.inject_fault("GET", r"/v1/.*", "connect")
    with pytest.raises(httpx.ConnectError):
        await api.get("locations")


async def test_latency_injection(api: httpx.AsyncClient, emulator: HetznerEmulator) -> None:
    emulator.inject_latency("GET", r"/v1/locations", 0.05, times=1)
    start = time.perf_counter()
    await api.get("locations")
    assert time.perf_counter() - start >= 0.05


async def test_action_failure(
    api: httpx.AsyncClient, emulator: HetznerEmulator, clock: ManualClock
) -> None:
    emulator.fail_next_action("create_server", "action_failed", "no capacity")
    created = (await api.post("servers", json=CREATE)).json()
    clock.advance(emulator.create_seconds)
    action = (await api.get(f"actions/{created['action']['id']}")).json()["action"]
    assert action["status"] == "error"
    assert action["error"] == {"code": "action_failed", "message": "no capacity"}


async def test_metadata_service(api: httpx.AsyncClient, emulator: HetznerEmulator) -> None:
    sid = emulator.add_server("meta", {})
    root = "https://api.hetzner.cloud/_metadata"
    answer = await api.get(f"{root}/{sid}/hetzner/v1/metadata/instance-id")
    assert (answer.status_code, answer.text) == (200, str(sid))
    summary = await api.get(f"{root}/{sid}/hetzner/v1/metadata")
    assert f"instance-id: {sid}" in summary.text
    assert (await api.get(f"{root}/999999/hetzner/v1/metadata/instance-id")).status_code == 404
    assert HetznerEmulator.metadata_url("http://127.0.0.1:9/v1", 5) == (
        "http://127.0.0.1:9/_metadata/5/hetzner/v1/metadata"
    )


async def test_served_over_http(emulator: HetznerEmulator) -> None:
    with emulator.serve() as url:
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v1")
        async with httpx.AsyncClient(
            base_url=url + "/", headers={"Authorization": f"Bearer {TOKEN}"}
        ) as c:
            created = await c.post("servers", json=CREATE)
            listed = await c.get("servers", params={"label_selector": "missing"})
    assert created.status_code == 201
    assert listed.json()["servers"] == []
    assert listed.headers["RateLimit-Limit"] == "3600"


def test_runs_as_a_module() -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.emulators.hetzner",
            "--port",
            "0",
            "--token",
            "tok",
            "--manual-clock",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("Hetzner emulator listening on http://127.0.0.1:")
        url = line.rsplit(" ", 1)[1].strip()
        answer = httpx.get(f"{url}/locations", headers={"Authorization": "Bearer tok"})
        assert answer.status_code == 200
        assert [loc["name"] for loc in answer.json()["locations"]][:2] == ["fsn1", "nbg1"]
        # the control API drives it from this process
        root = url.removesuffix("/v1")
        auth = {"Authorization": "Bearer tok"}
        rule = {"method": "GET", "path": "/v1/servers", "status": 429,
                "code": "rate_limit_exceeded", "times": 1}  # fmt: skip
        assert httpx.post(f"{root}/_emulator/errors", json=rule).json() == {"ok": True}
        assert httpx.get(f"{url}/servers", headers=auth).status_code == 429
        assert httpx.get(f"{url}/servers", headers=auth).status_code == 200
        created = httpx.post(f"{url}/servers", headers=auth, json=CREATE).json()["server"]
        assert httpx.post(f"{root}/_emulator/clock", json={"advance": 60}).status_code == 200
        server = httpx.get(f"{url}/servers/{created['id']}", headers=auth).json()["server"]
        assert server["status"] == "running"
        logged = httpx.get(f"{root}/_emulator/requests").json()["requests"]
        assert [r["status"] for r in logged][-4:] == [429, 200, 201, 200]
        assert httpx.get(f"{root}/_emulator/violations").json() == {"violations": []}
        bad = httpx.post(f"{root}/_emulator/errors", json={"status": 500})
        assert bad.status_code == 400
    finally:
        proc.terminate()
        _out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
