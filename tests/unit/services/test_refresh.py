"""Refresh policy (rate-limit share, back-off) and RefreshLoop (poke, pause, clean stop)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.errors import ProviderUnavailable
from app.providers.digitalocean.provider import DigitalOceanProvider
from app.providers.hetzner.provider import HetznerProvider
from app.services.refresh import (
    AccountRate,
    RefreshLoop,
    RefreshPolicy,
    RefreshScheduler,
    next_interval,
    rate_state_of,
)

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
HETZNER = AccountRate(documented_per_hour=3600)


@dataclass
class State:
    limit: int | None = None
    remaining: int | None = None
    reset_at: datetime | None = None


def neutral() -> float:
    return 0.5  # the middle of the jitter range: no jitter


# --- the policy --------------------------------------------------------------------------


def test_hetzner_share_is_one_list_call_per_ten_seconds() -> None:
    policy = RefreshPolicy(share=0.10)
    assert policy.share_floor(HETZNER) == pytest.approx(10.0)
    assert policy.floor([HETZNER], NOW) == pytest.approx(10.0)
    # Two pollers (two windows or the CLI watching too) split the share.
    assert RefreshPolicy(share=0.10, pollers=2).share_floor(HETZNER) == pytest.approx(20.0)
    # The headers' limit wins over the documented one; an unpublished limit uses the fallback.
    assert policy.share_floor(AccountRate(3600, State(limit=7200))) == pytest.approx(5.0)
    assert policy.share_floor(AccountRate(0)) == pytest.approx(36.0)


def test_visible_busy_idle_and_hidden() -> None:
    policy = RefreshPolicy(base_seconds=15, busy_seconds=5, idle_factor=4, hidden_factor=8)

    def at(**kw: object) -> float:
        args: dict[str, object] = {"visible": True, "idle_seconds": 0.0, "rates": [HETZNER]}
        args.update(kw)
        return next_interval(policy, now=NOW, jitter=neutral, **args)  # type: ignore[arg-type]

    assert at() == 15
    assert at(busy=True) == pytest.approx(10.0)  # 5 s wanted, the 10 s floor wins
    assert at(idle_seconds=301) == 60
    assert at(visible=False) == 120
    assert at(visible=False, idle_seconds=301) == 480
    assert at(visible=False, idle_seconds=10**6, rates=[]) == 480
    long_hidden = RefreshPolicy(base_seconds=300, hidden_factor=8, max_seconds=600)
    assert next_interval(long_hidden, visible=False, idle_seconds=0, jitter=neutral) == 600


def test_jitter_spreads_within_its_fraction() -> None:
    policy = RefreshPolicy(base_seconds=100, jitter=0.1)
    low = next_interval(policy, visible=True, idle_seconds=0, jitter=lambda: 0.0)
    high = next_interval(policy, visible=True, idle_seconds=0, jitter=lambda: 0.999999)
    assert low == pytest.approx(90)
    assert high == pytest.approx(110, abs=1e-3)


def test_low_remaining_budget_stretches_the_interval_until_reset() -> None:
    policy = RefreshPolicy(share=0.10)
    # 100 requests left for the next 1000 s: we may use 10 of them, one per 100 s.
    low = AccountRate(
        3600, State(limit=3600, remaining=100, reset_at=NOW + timedelta(seconds=1000))
    )
    assert next_interval(
        policy, visible=True, idle_seconds=0, rates=[low], now=NOW, jitter=neutral
    ) == (pytest.approx(100.0))
    # Nothing left: wait for the reset, whatever the ceiling.
    empty = AccountRate(3600, State(limit=3600, remaining=0, reset_at=NOW + timedelta(seconds=900)))
    assert policy.floor([empty], NOW) == pytest.approx(900.0)
    # A reset in the past means the count is stale: only the share applies.
    stale = AccountRate(3600, State(limit=3600, remaining=0, reset_at=NOW - timedelta(seconds=1)))
    assert policy.floor([stale], NOW) == pytest.approx(10.0)
    # A full budget does not slow anything down.
    full = AccountRate(3600, State(limit=3600, remaining=3600, reset_at=NOW + timedelta(seconds=1)))
    assert policy.floor([full], NOW) == pytest.approx(10.0)
    # The strictest account decides.
    assert policy.floor([HETZNER, empty], NOW) == pytest.approx(900.0)


def test_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="share"):
        RefreshPolicy(share=0)
    with pytest.raises(ValueError, match="pollers"):
        RefreshPolicy(pollers=0)
    with pytest.raises(ValueError, match="jitter"):
        RefreshPolicy(jitter=1.0)
    with pytest.raises(ValueError, match="positive"):
        RefreshPolicy(base_seconds=0)


limits = st.one_of(st.none(), st.integers(min_value=0, max_value=100_000))
states = st.one_of(
    st.none(),
    st.builds(
        State,
        limit=limits,
        remaining=st.one_of(st.none(), st.integers(min_value=-5, max_value=100_000)),
        reset_at=st.one_of(
            st.none(),
            st.floats(min_value=-10_000, max_value=10**7).map(lambda s: NOW + timedelta(seconds=s)),
        ),
    ),
)
rates_strategy = st.lists(
    st.builds(
        AccountRate,
        documented_per_hour=st.integers(min_value=0, max_value=100_000),
        state=states,
        calls_per_refresh=st.integers(min_value=1, max_value=5),
    ),
    max_size=4,
)
policies = st.builds(
    RefreshPolicy,
    base_seconds=st.floats(min_value=0.01, max_value=7200),
    busy_seconds=st.floats(min_value=0.01, max_value=7200),
    idle_after_seconds=st.floats(min_value=0, max_value=7200),
    idle_factor=st.floats(min_value=0.01, max_value=100),
    hidden_factor=st.floats(min_value=0.01, max_value=100),
    max_seconds=st.floats(min_value=0.01, max_value=7200),
    share=st.floats(min_value=0.001, max_value=1.0),
    pollers=st.integers(min_value=1, max_value=10),
    fallback_per_hour=st.integers(min_value=1, max_value=100_000),
    jitter=st.floats(min_value=0, max_value=0.99),
)


@settings(max_examples=400, deadline=None)
@given(
    policy=policies,
    visible=st.booleans(),
    idle=st.floats(min_value=0, max_value=10**7),
    busy=st.booleans(),
    rates=rates_strategy,
    spread=st.floats(min_value=-1, max_value=2),
)
def test_interval_never_exceeds_the_share_of_any_limit(
    policy: RefreshPolicy,
    visible: bool,
    idle: float,
    busy: bool,
    rates: list[AccountRate],
    spread: float,
) -> None:
    interval = next_interval(
        policy,
        visible=visible,
        idle_seconds=idle,
        busy=busy,
        rates=rates,
        now=NOW,
        jitter=lambda: spread,
    )
    for rate in rates:
        limit = (rate.state.limit if rate.state and rate.state.limit else None) or (
            rate.documented_per_hour or policy.fallback_per_hour
        )
        calls_per_hour = 3600 / interval * rate.calls_per_refresh * policy.pollers
        assert calls_per_hour <= policy.share * limit * (1 + 1e-9)
    floor = policy.floor(rates, NOW)
    assert 0 < interval <= max(policy.max_seconds, floor)
    assert floor <= max((policy.share_floor(r) for r in rates), default=0) + 3600


# --- reading the rate-limit state from the providers ----------------------------------------


def _headers_transport(remaining: int) -> httpx.MockTransport:
    reset = int(NOW.timestamp()) + 600

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            json={},
            headers={
                "RateLimit-Limit": "3600",
                "RateLimit-Remaining": str(remaining),
                "RateLimit-Reset": str(reset),
            },
        )

    return httpx.MockTransport(handler)


@pytest.mark.parametrize("provider_cls", [HetznerProvider, DigitalOceanProvider])
async def test_account_rate_reads_the_providers_api_client(provider_cls: type) -> None:
    provider = provider_cls({"token": "t" * 64}, transport=_headers_transport(42))
    try:
        rate = AccountRate.of(provider)
        assert rate.documented_per_hour == provider_cls.capabilities.rate_limit_per_hour > 0
        assert rate.state is not None and rate.state.remaining is None
        await provider.client.api.get_json("anything")
        assert rate.state.limit == 3600 and rate.state.remaining == 42
        assert rate.state.reset_at == NOW + timedelta(seconds=600)
    finally:
        await provider.aclose()


def test_rate_state_of_objects_without_one() -> None:
    assert rate_state_of(object()) is None
    assert rate_state_of(State()) is None
    holder = type("Holder", (), {"rate_limit": State(limit=1)})()
    assert rate_state_of(holder) is holder.rate_limit


def test_scheduler_tracks_visibility_and_idleness() -> None:
    ticks = [0.0]
    scheduler = RefreshScheduler(
        RefreshPolicy(base_seconds=15, idle_after_seconds=300),
        rates=lambda: [HETZNER],
        clock=lambda: NOW,
        monotonic=lambda: ticks[0],
        jitter=neutral,
    )
    assert scheduler.next_delay() == 15
    ticks[0] = 301
    assert scheduler.idle_seconds == 301
    assert scheduler.next_delay() == 60
    scheduler.user_active()
    scheduler.visible = False
    assert scheduler.next_delay() == 120
    assert scheduler.min_gap() == pytest.approx(10.0)


# --- the loop ----------------------------------------------------------------------------


class FixedSchedule:
    """A schedule that counts how often the loop consulted it (its decision points)."""

    def __init__(self, delay: float, gap: float = 0.0) -> None:
        self.delay = delay
        self.gap = gap
        self.asked = 0
        self.consulted = 0
        self._changed = asyncio.Event()

    def next_delay(self) -> float:
        self.asked += 1
        self._consult()
        return self.delay

    def min_gap(self) -> float:
        self._consult()
        return self.gap

    def _consult(self) -> None:
        self.consulted += 1
        self._changed.set()

    async def wait_consulted(self, n: int) -> None:
        """Until the loop has consulted the schedule ``n`` times in all."""
        async with asyncio.timeout(30):
            while self.consulted < n:
                self._changed.clear()
                await self._changed.wait()


async def settle() -> None:
    """Let every ready task run on to its next suspension point, a few rounds over.

    After the loop consulted its schedule it either waits (its wake event, a timer) or goes on
    to refresh within two turns of the event loop; so a count checked after this is final for
    that decision. Turns of the event loop, not wall-clock time: a busy machine cannot fool it.
    """
    for _ in range(10):
        await asyncio.sleep(0)


class Recorder:
    """A refresh coroutine that counts runs and lets the test wait for the n-th."""

    def __init__(self) -> None:
        self.runs = 0
        self.changed = asyncio.Event()
        self.fail_with: Exception | None = None
        self.block: asyncio.Event | None = None

    async def __call__(self) -> None:
        self.runs += 1
        self.changed.set()
        if self.block is not None:
            await self.block.wait()
        if self.fail_with is not None:
            raise self.fail_with

    async def wait_runs(self, n: int) -> None:
        async with asyncio.timeout(30):
            while self.runs < n:
                self.changed.clear()
                await self.changed.wait()


def other_tasks() -> set[asyncio.Task[object]]:
    return asyncio.all_tasks() - {asyncio.current_task()}  # type: ignore[operator]


async def test_loop_runs_at_once_then_on_schedule_and_stops_cleanly() -> None:
    refresh = Recorder()
    loop = RefreshLoop(refresh, FixedSchedule(0.01))
    loop.start()
    loop.start()  # idempotent
    await refresh.wait_runs(3)
    assert loop.running
    await loop.stop()
    assert not loop.running
    assert other_tasks() == set()
    runs = refresh.runs
    await settle()  # nothing may run after stop (its task is gone: nothing left to run it)
    assert refresh.runs == runs
    await loop.stop()  # stopping twice is fine


async def test_poke_refreshes_now_and_pause_holds_the_schedule() -> None:
    refresh = Recorder()
    schedule = FixedSchedule(3600)
    loop = RefreshLoop(refresh, schedule)
    loop.start(immediately=False)
    await schedule.wait_consulted(1)  # the loop decided: the first refresh is an hour away
    await settle()
    assert refresh.runs == 0
    loop.poke()
    await refresh.wait_runs(1)
    loop.pause()
    assert loop.paused
    loop.poke()  # the user asked: runs even while paused
    await refresh.wait_runs(2)
    await loop.stop()
    assert other_tasks() == set()


async def test_resume_and_reschedule_recompute_the_wait() -> None:
    refresh = Recorder()
    schedule = FixedSchedule(3600)
    loop = RefreshLoop(refresh, schedule)
    loop.start()
    await refresh.wait_runs(1)
    await schedule.wait_consulted(2)  # the delay before the first run, then the one after it
    loop.pause()
    schedule.delay = 0.0
    loop.reschedule()  # even asked to recompute its wait, a paused loop does not run
    await settle()  # the pause woke the loop; it looked again and went back to waiting
    assert refresh.runs == 1  # paused: the new, shorter delay is not used yet
    assert schedule.asked == 2
    loop.resume()
    await refresh.wait_runs(3)
    schedule.delay = 3600
    loop.reschedule()
    await loop.stop()
    assert other_tasks() == set()


async def test_poke_respects_the_minimum_gap() -> None:
    refresh = Recorder()
    schedule = FixedSchedule(3600, gap=3600)
    loop = RefreshLoop(refresh, schedule)
    loop.start()
    await refresh.wait_runs(1)
    await schedule.wait_consulted(2)  # the delay before the first run, then the one after it
    loop.poke()
    await schedule.wait_consulted(3)  # the poke asked for the minimum gap…
    await settle()
    assert refresh.runs == 1  # …and an hour has not passed since the last start
    await loop.stop()
    assert other_tasks() == set()


async def test_a_poke_during_a_refresh_runs_one_more_after_it() -> None:
    refresh = Recorder()
    refresh.block = asyncio.Event()
    schedule = FixedSchedule(3600)
    loop = RefreshLoop(refresh, schedule)
    loop.start()
    await refresh.wait_runs(1)
    loop.poke()
    loop.poke()
    refresh.block.set()
    await refresh.wait_runs(2)
    # Delay before run 1, the pokes' gap before run 2, then the hour-long delay after it.
    await schedule.wait_consulted(3)
    await settle()
    assert refresh.runs == 2  # two pokes during one refresh coalesce
    assert schedule.consulted == 3
    await loop.stop()


async def test_errors_are_reported_and_the_loop_goes_on() -> None:
    refresh = Recorder()
    refresh.fail_with = ProviderUnavailable("Hetzner had a server error (HTTP 503)")
    seen: list[Exception] = []
    loop = RefreshLoop(refresh, FixedSchedule(0.0), on_error=seen.append)
    loop.start()
    await refresh.wait_runs(2)
    refresh.fail_with = None
    await refresh.wait_runs(4)
    await loop.stop()
    assert seen and all(isinstance(e, ProviderUnavailable) for e in seen)
    assert loop.last_error is None
    assert loop.runs >= 3


async def test_stop_cancels_a_refresh_in_progress() -> None:
    refresh = Recorder()
    refresh.block = asyncio.Event()  # never set: the refresh hangs
    cancelled = asyncio.Event()

    async def hanging() -> None:
        try:
            await refresh()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    loop = RefreshLoop(hanging, FixedSchedule(3600))
    loop.start()
    await refresh.wait_runs(1)
    await loop.stop()
    assert cancelled.is_set()
    assert other_tasks() == set()


async def test_stop_from_inside_the_refresh() -> None:
    holder: list[RefreshLoop] = []
    done = asyncio.Event()

    async def refresh() -> None:
        done.set()
        await holder[0].stop()

    loop = RefreshLoop(refresh, FixedSchedule(0.0))
    holder.append(loop)
    loop.start()
    await done.wait()
    for _ in range(5):
        await asyncio.sleep(0)
    assert not loop.running
    assert other_tasks() == set()
