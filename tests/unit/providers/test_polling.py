"""poll_until and Backoff: results, timeouts by the injected clock, early errors, cancellation."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from app.errors import ActionFailed, Timeout
from app.providers._polling import Backoff, poll_until
from tests.emulators.base import ManualClock
from tests.unit.providers.conftest import FakeSleep


def test_backoff_grows_and_caps() -> None:
    delays = list(itertools.islice(Backoff(initial=1, factor=2, maximum=5).delays(), 5))
    assert delays == [1, 2, 4, 5, 5]


def test_backoff_rejects_shrinking() -> None:
    with pytest.raises(ValueError):
        Backoff(factor=0.5)


async def test_returns_the_first_done_value() -> None:
    clock = ManualClock(0)
    sleep = FakeSleep(clock)
    values = iter(["running", "running", "success", "never"])

    async def fetch() -> str:
        return next(values)

    seen: list[str] = []
    result = await poll_until(
        fetch,
        lambda v: v == "success",
        timeout=60,
        backoff=Backoff(initial=1, factor=2, maximum=10),
        sleep=sleep,
        clock=clock,
        on_value=seen.append,
    )
    assert result == "success"
    assert seen == ["running", "running", "success"]
    assert sleep.delays == [1, 2]


async def test_times_out_by_the_injected_clock() -> None:
    clock = ManualClock(0)
    sleep = FakeSleep(clock)
    calls = 0

    async def fetch() -> str:
        nonlocal calls
        calls += 1
        return "running"

    with pytest.raises(Timeout, match="after 10 s"):
        await poll_until(
            fetch, lambda v: False, timeout=10, backoff=Backoff(initial=3, factor=1),
            sleep=sleep, clock=clock, what="the action",
        )  # fmt: skip
    assert sleep.delays == [3, 3, 3, 1]  # the last wait is cut to the deadline
    assert calls == 5
    assert clock() == 10


async def test_done_may_stop_early_with_an_error() -> None:
    async def fetch() -> str:
        return "error"

    def done(value: str) -> bool:
        raise ActionFailed("the action failed")

    clock = ManualClock(0)
    with pytest.raises(ActionFailed):
        await poll_until(fetch, done, timeout=10, sleep=FakeSleep(clock), clock=clock)


async def test_cancel_stops_polling() -> None:
    fetches = 0
    sleeping = asyncio.Event()
    forever = asyncio.Event()

    async def fetch() -> str:
        nonlocal fetches
        fetches += 1
        return "running"

    async def sleep(seconds: float) -> None:
        sleeping.set()
        await forever.wait()

    task = asyncio.create_task(poll_until(fetch, lambda v: False, timeout=100, sleep=sleep))
    await sleeping.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert fetches == 1
    assert task.cancelled()
