"""SessionService's command lines and stdin (the transport is a recorder here; the same calls
against a real sshd and the real VM script are in tests/integration/test_cli_sessions.py, and a
real `session new` in tests/integration/cloudinit/test_sessions_real.py)."""

from __future__ import annotations

import asyncio
import json
import shlex
from dataclasses import dataclass, field
from typing import Any

import pytest

from app.agents import get_agent
from app.errors import ActionFailed, InvalidInput
from app.services.registry import Registry, WorkspaceRecord
from app.services.sessions import SessionService, suggest_name
from app.services.tunnels import CommandResult
from app.settings import SecretStore

MAIN = {"name": "main", "agent": "claude", "branch": "main", "worktree": "/workspaces/r"}


@dataclass
class Recorder:
    """A tunnel that records each command and its stdin and answers from ``answers``."""

    sessions: list[dict[str, Any]] = field(default_factory=lambda: [dict(MAIN)])
    calls: list[tuple[list[str], str]] = field(default_factory=list)
    fail: CommandResult | None = None

    async def run(self, command: str, *, input: str | None = None, limit: float = 30.0) -> Any:
        words = shlex.split(command)
        self.calls.append((words, input or ""))
        if "ls" in words:
            return CommandResult(0, json.dumps(self.sessions), "")
        if self.fail is not None:
            return self.fail
        if "new" in words:
            name = words[words.index("new") + 1]
            self.sessions.append({"name": name, "agent": words[words.index("--agent") + 1]})
        return CommandResult(0, "", "")


class Tunnels:
    def __init__(self, tunnel: Recorder) -> None:
        self.tunnel = tunnel

    async def open(self, target: object) -> Recorder:
        return self.tunnel

    async def close_all(self) -> None:
        return None


def _service(recorder: Recorder, environ: dict[str, str] | None = None) -> SessionService:
    Registry().put(
        WorkspaceRecord(
            name="demo", account="local", provider="local", ipv4="127.0.0.1",
            host_public_key="ssh-ed25519 AAAA host",
        )
    )  # fmt: skip
    return SessionService(
        None,
        SecretStore(),
        Tunnels(recorder),
        environ=environ or {},  # type: ignore[arg-type]
    )


def test_new_sends_the_agents_description_and_only_another_agents_credentials() -> None:
    SecretStore().set("openai/api-key", "sk-from-keychain")
    SecretStore().set("anthropic/api-key", "sk-ant-from-keychain")
    recorder = Recorder()
    service = _service(recorder, {"OPENAI_API_KEY": "sk-from-env"})
    report = asyncio.run(service.new("demo", None, agent="codex", prompt="it's $HOME"))
    assert report.name == "codex" and report.agent == "codex"
    words, stdin = recorder.calls[1]
    assert words == ["sudo", "-n", "/usr/local/lib/bivy/session", "new", "codex", "--agent",
                     "codex"]  # fmt: skip
    payload = json.loads(stdin)
    assert payload["prompt"] == "it's $HOME"
    assert payload["agent"]["credentials"] == {"OPENAI_API_KEY": "sk-from-env"}  # env wins
    assert payload["agent"]["command"] == ["codex", "{prompt}"]
    assert any(f["path"].endswith("/agents/codex/setup") for f in payload["agent"]["files"])
    assert all("sk-" not in " ".join(w) for w, _ in recorder.calls)  # never on a command line

    # The workspace's own agent: its credential is on the VM already; nothing is sent.
    asyncio.run(service.new("demo", "s2", agent="claude", branch="fix/x", base="HEAD~1"))
    words, stdin = recorder.calls[-2]
    assert words[3:] == ["new", "s2", "--agent", "claude", "--branch", "fix/x", "--base", "HEAD~1"]
    assert "credentials" not in json.loads(stdin)["agent"]
    assert "sk-" not in stdin


def test_names_and_refusals() -> None:
    assert suggest_name("codex", ["main"]) == "codex"
    assert suggest_name("codex", ["main", "codex", "codex-2"]) == "codex-3"
    recorder = Recorder()
    service = _service(recorder)
    for bad in ("main", "Bad", "-x", "a" * 31, "a b"):
        with pytest.raises(InvalidInput):
            asyncio.run(service.new("demo", bad, agent="claude"))
    with pytest.raises(InvalidInput):
        asyncio.run(service.new("demo", "s1", agent="claude", branch="bad..branch"))
    with pytest.raises(InvalidInput):
        asyncio.run(service.new("demo", "s1", agent="claude", base="--upload-pack=x"))
    with pytest.raises(InvalidInput):
        asyncio.run(service.rm("demo", "main"))
    assert recorder.calls == []  # refused before anything reached the VM
    recorder.sessions = []
    with pytest.raises(ActionFailed, match="not ready for sessions"):
        asyncio.run(service.new("demo", "s1", agent="claude"))
    recorder.sessions = [dict(MAIN), {"name": "s1", "agent": "codex"}]
    with pytest.raises(InvalidInput, match="has a session called s1 already"):
        asyncio.run(service.new("demo", "s1", agent="codex"))
    # one a backup brought back is started again (the VM sets its agent up)
    recorder.sessions[1]["event"] = "SessionRestored"
    asyncio.run(service.new("demo", "s1", agent="codex"))
    assert recorder.calls[-2][0][3:] == ["new", "s1", "--agent", "codex"]
    recorder.sessions = [dict(MAIN)]
    recorder.fail = CommandResult(1, "", "session: there is no session called s9\n")
    with pytest.raises(ActionFailed, match="there is no session called s9"):
        asyncio.run(service.rm("demo", "s9", force=True))
    assert recorder.calls[-1][0][3:] == ["rm", "s9", "--force"]


def test_start_commands_of_every_agent() -> None:
    assert get_agent("claude").start_command("go") == ("claude", "go")
    assert get_agent("claude").start_command(None) == ("claude",)
    assert get_agent("gemini").start_command("go") == ("gemini", "-i", "go")
    assert get_agent("copilot").start_command("go") == ("copilot", "-i", "go")
    assert get_agent("opencode").start_command("go") == ("opencode", "--prompt", "go")
    assert get_agent("codex").start_command("-x") == ("codex", " -x")  # never an option
