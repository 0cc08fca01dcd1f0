"""ApiClient: retries and their bounds, 429 handling, error mapping, secrets kept out of errors."""

from __future__ import annotations

import logging
from collections.abc import Callable

import httpx
import pytest

from app.errors import (
    AuthError,
    BivyError,
    Conflict,
    InvalidInput,
    NotFound,
    ProviderUnavailable,
    QuotaExceeded,
    RateLimited,
    Timeout,
)
from app.providers._http import (
    ApiClient,
    ErrorInfo,
    extract_error_info,
    map_error,
    scrub,
)

SECRET = "s3cr3t-token-value-123"
Handler = Callable[[httpx.Request], httpx.Response]


class Recorder:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def make_client(handler: Handler, sleep: Recorder, **kw: object) -> ApiClient:
    return ApiClient(
        provider="hetzner",
        base_url="https://api.example.test/v1",
        headers={"Authorization": f"Bearer {SECRET}"},
        secrets=(SECRET,),
        transport=httpx.MockTransport(handler),
        sleep=sleep,
        clock=lambda: 1_800_000_000.0,
        **kw,  # type: ignore[arg-type]
    )


def counting(responses: list[httpx.Response | Exception]) -> tuple[Handler, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        item = responses[min(len(seen), len(responses)) - 1]
        if isinstance(item, Exception):
            raise item
        return item

    return handler, seen


def hz_error(status: int, code: str, message: str = "", **kw: object) -> httpx.Response:
    return httpx.Response(
        status,
        json={"error": {"code": code, "message": message or code, "details": kw or None}},
        headers={"X-Correlation-Id": "corr-42"},
    )


async def test_get_retried_on_5xx_then_succeeds() -> None:
    sleep = Recorder()
    handler, seen = counting(
        [httpx.Response(503), httpx.Response(502), httpx.Response(200, json={})]
    )
    async with make_client(handler, sleep) as client:
        assert await client.get_json("servers") == {}
    assert len(seen) == 3
    assert sleep.delays == [0.5, 1.0]


async def test_get_5xx_retries_are_bounded() -> None:
    sleep = Recorder()
    handler, seen = counting([hz_error(500, "server_error")])
    async with make_client(handler, sleep, max_retries=2) as client:
        with pytest.raises(ProviderUnavailable) as info:
            await client.get_json("servers")
    assert len(seen) == 3  # the first try and two retries
    assert info.value.request_id == "corr-42"
    assert info.value.status == 500


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_post_never_retried_on_5xx(status: int) -> None:
    sleep = Recorder()
    handler, seen = counting([hz_error(status, "unavailable"), httpx.Response(201, json={})])
    async with make_client(handler, sleep) as client:
        with pytest.raises(ProviderUnavailable) as info:
            await client.send_json("POST", "servers", {"name": "x"})
    assert len(seen) == 1
    assert sleep.delays == []
    assert "did not repeat it" in str(info.value)


@pytest.mark.parametrize(
    "exc", [httpx.ReadTimeout("slow"), httpx.WriteTimeout("slow"), httpx.ConnectTimeout("slow")]
)
async def test_post_never_retried_on_timeout(exc: Exception) -> None:
    sleep = Recorder()
    handler, seen = counting([exc, httpx.Response(201, json={})])
    async with make_client(handler, sleep) as client:
        with pytest.raises(Timeout) as info:
            await client.send_json("POST", "servers", {"name": "x"})
    assert len(seen) == 1
    assert "may or may not have been applied" in info.value.message


async def test_post_marked_idempotent_is_retried() -> None:
    sleep = Recorder()
    handler, seen = counting([httpx.Response(503), httpx.Response(200, json={"ok": True})])
    async with make_client(handler, sleep) as client:
        assert await client.send_json("POST", "x", {}, idempotent=True) == {"ok": True}
    assert len(seen) == 2


async def test_get_timeouts_retried_then_timeout_error() -> None:
    sleep = Recorder()
    handler, seen = counting([httpx.ReadTimeout("slow")])
    async with make_client(handler, sleep, max_retries=3) as client:
        with pytest.raises(Timeout) as info:
            await client.get_json("servers")
    assert len(seen) == 4
    assert sleep.delays == [0.5, 1.0, 2.0]
    assert info.value.provider == "hetzner"


async def test_network_error_is_provider_unavailable() -> None:
    sleep = Recorder()
    handler, seen = counting([httpx.ConnectError("refused")])
    async with make_client(handler, sleep, max_retries=1) as client:
        with pytest.raises(ProviderUnavailable) as info:
            await client.get_json("servers")
    assert len(seen) == 2
    assert "ConnectError" in info.value.message


async def test_429_waits_for_ratelimit_reset_then_succeeds() -> None:
    sleep = Recorder()
    now = 1_800_000_000
    limited = httpx.Response(
        429,
        json={"error": {"code": "rate_limit_exceeded", "message": "limit reached"}},
        headers={"RateLimit-Limit": "3600", "RateLimit-Remaining": "0",
                 "RateLimit-Reset": str(now + 7)},
    )  # fmt: skip
    ok = httpx.Response(200, json={"servers": []}, headers={"RateLimit-Remaining": "1"})
    handler, seen = counting([limited, ok])
    async with make_client(handler, sleep) as client:
        assert await client.get_json("servers") == {"servers": []}
        assert client.rate_limit.limit == 3600
        assert client.rate_limit.remaining == 1
    assert sleep.delays == [7.0]
    assert len(seen) == 2


async def test_429_retried_even_for_post() -> None:
    sleep = Recorder()
    limited = httpx.Response(429, headers={"Retry-After": "2"})
    handler, seen = counting([limited, httpx.Response(201, json={"server": {}})])
    async with make_client(handler, sleep) as client:
        assert await client.send_json("POST", "servers", {}) == {"server": {}}
    assert sleep.delays == [2.0]
    assert len(seen) == 2


async def test_429_retries_are_bounded() -> None:
    sleep = Recorder()
    limited = hz_error(429, "rate_limit_exceeded")
    limited.headers["Retry-After"] = "1"
    handler, seen = counting([limited])
    async with make_client(handler, sleep, max_rate_limit_retries=3) as client:
        with pytest.raises(RateLimited) as info:
            await client.get_json("servers")
    assert len(seen) == 4
    assert sleep.delays == [1.0, 1.0, 1.0]
    assert info.value.retry_after == 1.0
    assert info.value.code == "rate_limit_exceeded"


async def test_429_with_a_reset_too_far_raises_without_waiting() -> None:
    sleep = Recorder()
    limited = hz_error(429, "rate_limit_exceeded")
    limited.headers["RateLimit-Reset"] = str(1_800_000_000 + 3000)
    handler, seen = counting([limited])
    async with make_client(handler, sleep, max_rate_limit_wait=60) as client:
        with pytest.raises(RateLimited) as info:
            await client.get_json("servers")
    assert sleep.delays == []
    assert len(seen) == 1
    assert info.value.retry_after == 3000


async def test_rate_limit_state_tracks_headers() -> None:
    sleep = Recorder()
    headers = {"RateLimit-Limit": "3600", "RateLimit-Remaining": "3521",
               "RateLimit-Reset": "1800000079"}  # fmt: skip
    handler, _ = counting([httpx.Response(200, json={}, headers=headers)])
    async with make_client(handler, sleep) as client:
        assert client.rate_limit.limit is None
        await client.get_json("pricing")
        state = client.rate_limit
    assert (state.limit, state.remaining) == (3600, 3521)
    assert state.reset_at is not None and int(state.reset_at.timestamp()) == 1_800_000_079


async def test_secret_never_in_error_text_repr_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    sleep = Recorder()
    echo = hz_error(401, "unauthorized", f"token {SECRET} is invalid")
    handler, seen = counting([echo])
    client = make_client(handler, sleep)
    with pytest.raises(AuthError) as info:
        await client.get_json("servers")
    await client.aclose()
    assert seen[0].headers["Authorization"] == f"Bearer {SECRET}"  # it was sent…
    text = f"{info.value} {info.value.message} {info.value.hint} {info.value!r} {client!r}"
    assert SECRET not in text  # …but shows up nowhere else
    assert SECRET not in caplog.text


def test_scrub_masks_every_secret() -> None:
    assert scrub("a abcd b xyz1 c", ["abcd", "xyz1", ""]) == "a *** b *** c"


@pytest.mark.parametrize(
    ("status", "code", "kind", "needle"),
    [
        (401, "unauthorized", AuthError, "rejected the API token"),
        (401, "token_readonly", AuthError, "read-only"),
        (403, "forbidden", AuthError, "lacks permission"),
        (403, "resource_limit_exceeded", QuotaExceeded, "resource limit"),
        (403, "maintenance", ProviderUnavailable, "maintenance"),
        (404, "not_found", NotFound, "not found"),
        (409, "uniqueness_error", Conflict, "already taken"),
        (409, "conflict", Conflict, "busy"),
        (423, "locked", Conflict, "busy"),
        (412, "resource_unavailable", ProviderUnavailable, "cannot provide"),
        (422, "invalid_input", InvalidInput, "rejected the input"),
        (429, "rate_limit_exceeded", RateLimited, "rate limit"),
        (500, "server_error", ProviderUnavailable, "server error"),
        (503, "unavailable", ProviderUnavailable, "server error"),
        (418, "teapot", BivyError, "HTTP 418"),
    ],
)
def test_map_error(status: int, code: str, kind: type[BivyError], needle: str) -> None:
    error = map_error(
        provider="hetzner",
        status=status,
        info=ErrorInfo(code=code, message="provider says no"),
        request_id="req-1",
    )
    assert type(error) is kind
    assert needle in error.message
    assert (error.provider, error.code, error.request_id, error.status) == (
        "hetzner",
        code,
        "req-1",
        status,
    )
    assert "(request id req-1)" in error.one_line()


def test_hints_for_the_cases_users_can_fix() -> None:
    def hint(status: int, code: str) -> str:
        info = ErrorInfo(code=code)
        return map_error(provider="hetzner", status=status, info=info, request_id="").hint

    assert "Read & Write" in hint(401, "token_readonly")
    assert "read-only" in hint(403, "forbidden")
    assert "pick another" in hint(412, "resource_unavailable")
    assert "another name" in hint(409, "uniqueness_error")


def test_invalid_input_lists_field_messages() -> None:
    fields = [{"name": "user_data", "messages": ["Length must be between 0 and 32768."]}]
    response = hz_error(422, "invalid_input", "invalid input in field 'user_data'", fields=fields)
    info = extract_error_info(response)
    assert info.fields == {"user_data": ["Length must be between 0 and 32768."]}
    error = map_error(provider="hetzner", status=422, info=info, request_id="")
    assert isinstance(error, InvalidInput)
    assert "user_data: Length must be between 0 and 32768" in error.message


def test_uniqueness_names_the_field() -> None:
    response = hz_error(409, "uniqueness_error", "name is already used", fields=[{"name": "name"}])
    error = map_error(
        provider="hetzner", status=409, info=extract_error_info(response), request_id=""
    )
    assert error.message == "Hetzner refused: that name is already taken in this project"


@pytest.mark.parametrize(
    ("body", "code", "message"),
    [
        ({"id": "unauthorized", "message": "Unable to authenticate you"}, "unauthorized",
         "Unable to authenticate you"),  # DigitalOcean
        ({"type": "denied_authentication", "message": "invalid key"}, "denied_authentication",
         "invalid key"),  # Scaleway
        ({"message": "Invalid signature", "errorCode": "INVALID_SIGNATURE"}, "INVALID_SIGNATURE",
         "Invalid signature"),  # OVH
        (["not", "an", "object"], "", ""),
    ],
)  # fmt: skip
def test_extract_error_info_other_providers(body: object, code: str, message: str) -> None:
    info = extract_error_info(httpx.Response(400, json=body))
    assert (info.code, info.message) == (code, message)


def test_extract_error_info_non_json() -> None:
    assert extract_error_info(httpx.Response(502, text="<html>Bad gateway</html>")) == ErrorInfo()


async def test_non_json_success_body_is_a_clear_error() -> None:
    handler, _ = counting([httpx.Response(200, text="<html>")])
    async with make_client(handler, Recorder()) as client:
        with pytest.raises(ProviderUnavailable, match="not JSON"):
            await client.get_json("servers")


async def test_empty_body_decodes_to_none() -> None:
    handler, _ = counting([httpx.Response(204)])
    async with make_client(handler, Recorder()) as client:
        assert await client.send_json("DELETE", "servers/1") is None


async def test_429_never_retried_without_a_pause() -> None:
    sleep = Recorder()
    limited = hz_error(429, "rate_limit_exceeded")
    limited.headers["RateLimit-Reset"] = "1800000000"  # "now" by the client's clock
    handler, _ = counting([limited, httpx.Response(200, json={})])
    async with make_client(handler, sleep) as client:
        await client.get_json("servers")
    assert sleep.delays == [0.5]
