"""The agents' credential variables are scrubbed from every test's environment here."""

from __future__ import annotations

import pytest

from app.agents import AGENTS


@pytest.fixture(autouse=True)
def no_agent_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for agent in AGENTS.values():
        for name in agent.credential_envs:
            monkeypatch.delenv(name, raising=False)
