"""Coding agents as plug-ins: Claude Code, Codex CLI, Gemini CLI, OpenCode, Copilot CLI.

One module per agent (``claude``, ``codex``, ``gemini``, ``opencode``, ``copilot``) fills in an
``Agent`` (``base``); ``registry`` lists them; ``credentials`` says which of their credentials are
set. Qt-free. The facts each plug-in relies on, with sources, are in docs/agents.md; the hook
adapters that write agent.json are under cloudinit/agents/.
"""

from __future__ import annotations

from app.agents.base import ACTIVITY_STATES, Agent, Credential, HookConfig
from app.agents.credentials import CredentialState, acredential_states, credential_states
from app.agents.registry import AGENTS, DEFAULT_AGENT, UnknownAgent, get_agent

__all__ = [
    "ACTIVITY_STATES",
    "AGENTS",
    "DEFAULT_AGENT",
    "Agent",
    "Credential",
    "CredentialState",
    "HookConfig",
    "UnknownAgent",
    "acredential_states",
    "credential_states",
    "get_agent",
]
