"""When to poll providers: back off when hidden or idle, stay within a share of the rate limit."""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, cast

from app.domain import utcnow
from app.errors import BivyError

__all__ = [
    "AccountRate",
    "RateLimitLike",
    "RefreshLoop",
    "RefreshPolicy",
    "RefreshScheduler",
    "Schedule",
    "next_interval",
    "rate_state_of",
]

log = logging.getLogger(__name__)

#: The longest a rate-limit reset time is trusted for: the providers' windows are an hour.
_MAX_RESET_WAIT = 3600.0


class RateLimitLike(Protocol):
    """The last rate-limit headers seen (``app.providers._http.RateLimitState`` fits)."""

    @property
    def limit(self) -> int | None: ...
    @property
    def remaining(self) -> int | None: ...
    @property
    def reset_at(self) -> datetime | None: ...


def rate_state_of(obj: object) -> RateLimitLike | None:
    """Find the ``ApiClient.rate_limit`` state of a provider (or client), if it exposes one.

    Providers keep their ``ApiClient`` under different attribute paths (``client.api``,
    ``api``…); this looks in the usual ones rather than widening the Provider interface.
    """
    for path in ("rate_limit", "api", "client", "client.api", "_client", "_client.api", "_api"):
        target: object = obj
        for part in path.split("."):
            target = getattr(target, part, None)
            if target is None:
                break
        if target is None:
            continue
        state = target if path == "rate_limit" else getattr(target, "rate_limit", None)
        if state is not None and all(hasattr(state, a) for a in ("limit", "remaining", "reset_at")):
            return cast(RateLimitLike, state)
    return None


@dataclass(frozen=True)
class AccountRate:
    """One account's rate limit as far as the scheduler knows it.

    Attributes:
        documented_per_hour: the provider's published hourly limit
            (``Capabilities.rate_limit_per_hour``; 0 when unpublished).
        state: the last rate-limit headers seen, or None.
        calls_per_refresh: requests one refresh makes against this account (one list call).
    """

    documented_per_hour: int = 0
    state: RateLimitLike | None = None
    calls_per_refresh: int = 1

    @classmethod
    def of(cls, provider: object, calls_per_refresh: int = 1) -> AccountRate:
        """From a provider instance: its declared limit and its client's last headers."""
        capabilities = getattr(provider, "capabilities", None)
        documented = int(getattr(capabilities, "rate_limit_per_hour", 0) or 0)
        return cls(documented, rate_state_of(provider), calls_per_refresh)


@dataclass(frozen=True)
class RefreshPolicy:
    """How often to list servers.

    Attributes:
        base_seconds: the interval while the window is visible and used (settings.refresh_seconds).
        busy_seconds: the interval while something is being created or deleted.
        idle_after_seconds: no user input for this long makes the user idle.
        idle_factor, hidden_factor: how much longer the interval is when idle / hidden
            (both multiply).
        max_seconds: the back-off ceiling (the rate-limit floor may still exceed it).
        share: the largest fraction of each account's hourly limit the list calls may use.
        pollers: processes or windows polling the same accounts (each gets share / pollers).
        fallback_per_hour: the limit assumed when neither the provider nor its headers say.
        jitter: ± this fraction is added at random, so windows do not poll in lockstep.
    """

    base_seconds: float = 15.0
    busy_seconds: float = 5.0
    idle_after_seconds: float = 300.0
    idle_factor: float = 4.0
    hidden_factor: float = 8.0
    max_seconds: float = 600.0
    share: float = 0.10
    pollers: int = 1
    fallback_per_hour: int = 1000
    jitter: float = 0.1

    def __post_init__(self) -> None:
        if not 0 < self.share <= 1:
            raise ValueError("share must be in (0, 1]")
        if self.pollers < 1 or self.fallback_per_hour < 1:
            raise ValueError("pollers and fallback_per_hour must be at least 1")
        if not 0 <= self.jitter < 1:
            raise ValueError("jitter must be in [0, 1)")
        if min(self.base_seconds, self.busy_seconds, self.max_seconds) <= 0:
            raise ValueError("intervals must be positive")

    def limit_per_hour(self, rate: AccountRate) -> int:
        """The hourly limit that applies: the headers' value, else the documented, else a guess."""
        if rate.state is not None and rate.state.limit:
            return rate.state.limit
        return rate.documented_per_hour or self.fallback_per_hour

    def share_floor(self, rate: AccountRate) -> float:
        """The shortest interval that keeps this account's list calls within the share."""
        allowed_per_hour = self.share * self.limit_per_hour(rate) / self.pollers
        return 3600.0 * max(1, rate.calls_per_refresh) / allowed_per_hour

    def floor(self, rates: Iterable[AccountRate], now: datetime) -> float:
        """The shortest interval allowed for every account, given their last headers.

        Besides the share of the hourly limit, when the headers show the budget running low
        (other windows, the VMs' self-delete calls, the user's creates), the remaining
        requests until the reset are shared out the same way; none left means wait for it.
        """
        floor = 0.0
        for rate in rates:
            floor = max(floor, self.share_floor(rate))
            state = rate.state
            if state is None or state.remaining is None or state.reset_at is None:
                continue
            until_reset = min(_MAX_RESET_WAIT, (state.reset_at - now).total_seconds())
            if until_reset <= 0:
                continue  # the window has reset since: the remaining count is stale
            usable = max(0, state.remaining) * self.share / self.pollers
            calls = max(1, rate.calls_per_refresh)
            floor = max(floor, until_reset if usable < calls else until_reset * calls / usable)
        return floor


def next_interval(
    policy: RefreshPolicy,
    *,
    visible: bool,
    idle_seconds: float,
    busy: bool = False,
    rates: Iterable[AccountRate] = (),
    now: datetime | None = None,
    jitter: Callable[[], float] = random.random,
) -> float:
    """Seconds until the next list refresh.

    Visible and used → ``base_seconds`` (``busy_seconds`` while creating/deleting); idle and
    hidden each back off by their factor, up to ``max_seconds``; ±jitter; then never below
    the rate-limit floor (``policy.floor``), whatever the inputs. ``jitter()`` returns a
    number in [0, 1) (``random.random`` unless a test injects one).
    """
    now = now or utcnow()
    interval = min(policy.base_seconds, policy.busy_seconds) if busy else policy.base_seconds
    if idle_seconds >= policy.idle_after_seconds:
        interval *= policy.idle_factor
    if not visible:
        interval *= policy.hidden_factor
    spread = min(max(jitter(), 0.0), 1.0)
    interval *= 1.0 + policy.jitter * (2.0 * spread - 1.0)
    interval = min(interval, policy.max_seconds)
    floor = policy.floor(rates, now)
    return max(interval, floor)


class Schedule(Protocol):
    """What ``RefreshLoop`` asks its schedule (``RefreshScheduler`` implements it)."""

    def next_delay(self) -> float: ...
    def min_gap(self) -> float: ...


class RefreshScheduler:
    """The inputs of ``next_interval`` as they change, for one window's ``RefreshLoop``.

    Attributes:
        policy: the ``RefreshPolicy``.
        visible: the window is shown (set False when minimised or hidden to the tray).
        busy: something is being created or deleted (poll faster, within the floor).
        rates: returns each account's ``AccountRate`` now (e.g. ``AccountRate.of(provider)``).
    """

    def __init__(
        self,
        policy: RefreshPolicy | None = None,
        *,
        rates: Callable[[], Iterable[AccountRate]] = tuple,
        clock: Callable[[], datetime] = utcnow,
        monotonic: Callable[[], float] = time.monotonic,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.policy = policy or RefreshPolicy()
        self.visible = True
        self.busy = False
        self.rates = rates
        self._clock = clock
        self._monotonic = monotonic
        self._jitter = jitter
        self._last_input = monotonic()

    def user_active(self) -> None:
        """The user did something (key, mouse): not idle."""
        self._last_input = self._monotonic()

    @property
    def idle_seconds(self) -> float:
        return max(0.0, self._monotonic() - self._last_input)

    def next_delay(self) -> float:
        return next_interval(
            self.policy,
            visible=self.visible,
            idle_seconds=self.idle_seconds,
            busy=self.busy,
            rates=list(self.rates()),
            now=self._clock(),
            jitter=self._jitter,
        )

    def min_gap(self) -> float:
        """The shortest gap between two refreshes, even when the user asks for one."""
        return self.policy.floor(list(self.rates()), self._clock())


class RefreshLoop:
    """Runs ``refresh()`` on a schedule in one task; can be poked, paused and stopped.

    ``poke()`` asks for a refresh now (no sooner than ``schedule.min_gap()`` after the last
    one started; it works while paused, because the user asked). ``reschedule()`` recomputes
    the wait after an input changed (window shown again). A poke during a refresh runs one more
    afterwards. Errors from ``refresh()`` go to ``on_error`` and the loop goes on; ``stop()``
    cancels the task (and a refresh in progress) and waits for it, so no task outlives it.

    Attributes:
        runs: refreshes finished (successfully or not).
        last_error: the exception of the last failed refresh, None after a success.
    """

    def __init__(
        self,
        refresh: Callable[[], Awaitable[object]],
        schedule: Schedule,
        *,
        on_error: Callable[[Exception], None] | None = None,
        name: str = "bivy-refresh",
    ) -> None:
        self._refresh = refresh
        self._schedule = schedule
        self._on_error = on_error
        self._name = name
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._poked = False
        self._paused = False
        self._delay: float | None = None
        self._immediately = True
        self.runs = 0
        self.last_error: Exception | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def paused(self) -> bool:
        return self._paused

    def start(self, *, immediately: bool = True) -> None:
        """Start the loop (idempotent); the first refresh runs at once unless told otherwise."""
        if self.running:
            return
        self._immediately = immediately
        self._task = asyncio.get_running_loop().create_task(self._main(), name=self._name)

    def poke(self) -> None:
        """Refresh as soon as the rate-limit floor allows."""
        self._poked = True
        self._wake.set()

    def reschedule(self) -> None:
        """Recompute the wait (the window's visibility or the rate state changed)."""
        self._delay = None
        self._wake.set()

    def pause(self) -> None:
        """No scheduled refreshes until ``resume()`` (pokes still run)."""
        self._paused = True
        self._wake.set()

    def resume(self) -> None:
        self._paused = False
        self.reschedule()

    async def stop(self) -> None:
        """Cancel the loop and any refresh in progress, and wait until it has ended."""
        task, self._task = self._task, None
        if task is None or task.done():
            return
        task.cancel()
        if task is asyncio.current_task():
            return  # stopped from inside refresh(): the cancel ends it at its next await
        # asyncio.wait does not raise the task's CancelledError, only our own.
        await asyncio.wait([task])

    async def _main(self) -> None:
        loop = asyncio.get_running_loop()
        last_start = -math.inf
        last_end = -math.inf if self._immediately else loop.time()
        while True:
            while True:
                now = loop.time()
                due: float | None
                if self._poked:
                    due = max(now, last_start + self._schedule.min_gap())
                elif self._paused:
                    due = None
                else:
                    if self._delay is None:
                        self._delay = self._schedule.next_delay()
                    due = last_end + self._delay
                if due is not None and now >= due:
                    break
                self._wake.clear()
                try:
                    async with asyncio.timeout(None if due is None else due - now):
                        await self._wake.wait()
                except TimeoutError:
                    pass
            # Yield once per cycle: a refresh that never suspends must not starve the loop.
            await asyncio.sleep(0)
            self._poked = False
            last_start = loop.time()
            try:
                await self._refresh()
            except Exception as exc:  # the loop must outlive one failed refresh
                self.last_error = exc
                if self._on_error is not None:
                    self._on_error(exc)
                elif isinstance(exc, BivyError):
                    log.info("refresh failed: %s", exc.message)
                else:
                    log.exception("refresh failed")
            else:
                self.last_error = None
            last_end = loop.time()
            self.runs += 1
            self._delay = None
