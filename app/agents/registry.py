"""The agents Bivy ships, in display order, and lookup by name."""

from __future__ import annotations

from app.agents import claude, codex, copilot, gemini, opencode
from app.agents.base import Agent
from app.errors import BivyError

__all__ = ["AGENTS", "DEFAULT_AGENT", "UnknownAgent", "get_agent"]

#: The agent a workspace's first session runs unless ``--agent`` says otherwise.
DEFAULT_AGENT = "claude"

AGENTS: dict[str, Agent] = {
    a.name: a for a in (claude.AGENT, codex.AGENT, gemini.AGENT, opencode.AGENT, copilot.AGENT)
}


class UnknownAgent(BivyError):
    default_hint = "Run `bivy agents` to see the agents Bivy can run"


def get_agent(name: str) -> Agent:
    """The agent called ``name`` (case-insensitive); ``UnknownAgent`` if there is none."""
    agent = AGENTS.get(name.strip().lower())
    if agent is None:
        raise UnknownAgent(f"there is no agent called {name!r}")
    return agent
