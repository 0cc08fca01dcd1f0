"""Fixtures for the provider tests: a manual clock, a fake sleep that advances it, the emulator."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from app.providers.hetzner import HetznerProvider
from tests.emulators.base import ManualClock
from tests.emulators.hetzner import HetznerEmulator

TOKEN = "hz0123456789abcdefTOKEN"


class FakeSleep:
    """An injectable sleep that records its delays and moves the manual clock instead."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        self.clock.advance(seconds)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def fake_sleep(clock: ManualClock) -> FakeSleep:
    return FakeSleep(clock)


@pytest.fixture
def emulator(clock: ManualClock) -> Iterator[HetznerEmulator]:
    emu = HetznerEmulator(token=TOKEN, readonly_tokens={"readonly-token-1"}, clock=clock)
    yield emu
    emu.assert_no_violations()


@pytest.fixture
async def provider(
    emulator: HetznerEmulator, fake_sleep: FakeSleep, clock: ManualClock
) -> AsyncIterator[HetznerProvider]:
    p = HetznerProvider(
        {"token": TOKEN}, transport=emulator.transport(), sleep=fake_sleep, clock=clock
    )
    yield p
    await p.aclose()
