"""The e2e's ttyd websocket client against a real local ttyd (fast; proves the client itself)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.e2e.ttyd_client import TtydClient, TtydError
from tests.support.sshd import start_ttyd


async def test_keystrokes_reach_the_shell_and_its_output_comes_back(tmp_path: Path) -> None:
    server = start_ttyd(tmp_path, password="client-test-pass")
    try:
        async with await TtydClient.connect(
            "127.0.0.1", server.port, "bivy", "client-test-pass"
        ) as term:
            await term.send_keys("echo $((6 * 7))-typed\r")
            await term.wait_for("42-typed", timeout=20)
    finally:
        server.stop()


async def test_a_wrong_password_is_refused(tmp_path: Path) -> None:
    server = start_ttyd(tmp_path, password="client-test-pass")
    try:
        with pytest.raises(TtydError):
            term = await TtydClient.connect("127.0.0.1", server.port, "bivy", "wrong")
            await term.wait_for("$", timeout=10)
    finally:
        server.stop()


async def test_an_open_terminal_keeps_answering_while_pumped(tmp_path: Path) -> None:
    server = start_ttyd(tmp_path, password="client-test-pass")
    try:
        async with await TtydClient.connect(
            "127.0.0.1", server.port, "bivy", "client-test-pass"
        ) as term:
            stop = asyncio.Event()
            pumping = asyncio.create_task(term.pump(stop))
            await term.send_keys("echo pumped''-$((2 + 3))\r")
            while "pumped-5" not in term.output:
                await asyncio.sleep(0.05)  # the pump collects the output
            stop.set()
            await asyncio.wait_for(pumping, 5)
    finally:
        server.stop()
