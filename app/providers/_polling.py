"""Cancellable polling with injectable backoff, sleep and clock (actions, server states)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from app.errors import Timeout

__all__ = ["Backoff", "poll_until"]

T = TypeVar("T")


@dataclass(frozen=True)
class Backoff:
    """Delays between polls: ``initial``, then times ``factor``, never above ``maximum``.

    Attributes:
        initial: the first delay in seconds.
        factor: growth per poll (1.0 for a fixed interval).
        maximum: the cap on one delay, in seconds.
    """

    initial: float = 1.0
    factor: float = 1.5
    maximum: float = 10.0

    def __post_init__(self) -> None:
        if self.initial < 0 or self.maximum < 0 or self.factor < 1.0:
            raise ValueError("Backoff needs initial >= 0, maximum >= 0 and factor >= 1")

    def delays(self) -> Iterator[float]:
        """The endless sequence of delays."""
        delay = self.initial
        while True:
            yield min(delay, self.maximum)
            delay = min(delay * self.factor, self.maximum)


async def poll_until(
    fetch: Callable[[], Awaitable[T]],
    done: Callable[[T], bool],
    *,
    timeout: float,  # noqa: ASYNC109 - a deadline by the injected clock, not asyncio.timeout
    backoff: Backoff | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    clock: Callable[[], float] = time.monotonic,
    what: str = "the provider",
    on_value: Callable[[T], None] | None = None,
    provider: str = "",
) -> T:
    """Call ``fetch`` until ``done(value)`` is true and return that value.

    ``done`` may raise (e.g. ``ActionFailed`` when an action ends in error) to stop early.
    Cancelling the awaiting task cancels the poll at its current fetch or sleep. Raises
    ``app.errors.Timeout`` once ``timeout`` seconds (by ``clock``) pass without success; the
    last fetch happens no later than the deadline.
    """
    deadline = clock() + timeout
    delays = (backoff or Backoff()).delays()
    while True:
        value = await fetch()
        if on_value is not None:
            on_value(value)
        if done(value):
            return value
        remaining = deadline - clock()
        if remaining <= 0:
            raise Timeout(
                f"Gave up waiting for {what} after {timeout:g} s", provider=provider, code="timeout"
            )
        await sleep(min(next(delays), remaining))
