"""Which agent credentials are set: the environment first, then the keychain; ``bivy agents``."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from app import cli
from app.agents import AGENTS, credential_states
from app.errors import SecretStoreError
from app.settings.secrets import SecretStore
from tests.support.memory_keyring import MemoryKeyring


def test_environment_wins_then_keychain_then_nothing(
    isolated_environment: MemoryKeyring,
) -> None:
    store = SecretStore(isolated_environment)
    store.set("anthropic/oauth-token", "sk-ant-oat-secret")
    states = credential_states(AGENTS["claude"], store, {"ANTHROPIC_API_KEY": "sk-ant-x"})
    assert [(s.credential.env, s.source, s.is_set) for s in states] == [
        ("ANTHROPIC_API_KEY", "env", True),
        ("CLAUDE_CODE_OAUTH_TOKEN", "keychain", True),
    ]
    states = credential_states(AGENTS["gemini"], store, {"GEMINI_API_KEY": "  "})
    assert [(s.source, s.is_set) for s in states] == [("", False)]


def test_an_unreadable_keychain_is_unknown_not_unset() -> None:
    class Broken(SecretStore):
        def has(self, key: str) -> bool:
            raise SecretStoreError("locked")

    (state,) = credential_states(AGENTS["codex"], Broken(), {})
    assert (state.source, state.is_set) == ("unknown", False)


def _run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_bivy_agents_json_says_where_each_credential_is_and_never_its_value(
    isolated_environment: MemoryKeyring, monkeypatch: pytest.MonkeyPatch
) -> None:
    SecretStore(isolated_environment).set("gemini/api-key", "AIza-very-secret")
    monkeypatch.setenv("GH_TOKEN", "github_pat_also_secret")
    code, out, _ = _run("agents", "--json")
    assert code == 0
    assert "very-secret" not in out and "also_secret" not in out
    rows: dict[str, Any] = {r["name"]: r for r in json.loads(out)}
    assert list(rows) == ["claude", "codex", "gemini", "opencode", "copilot"]
    assert rows["claude"]["default"] is True
    assert rows["gemini"]["credentials"] == [
        {"env": "GEMINI_API_KEY", "label": "Gemini API key", "set": True, "source": "keychain"}
    ]
    assert rows["copilot"]["credential_set"] is True
    assert rows["copilot"]["credentials"][0]["source"] == "env"
    assert rows["codex"]["credential_set"] is False
    assert all(r["reports_activity"] for r in rows.values())


def test_bivy_agents_table(isolated_environment: MemoryKeyring) -> None:
    SecretStore(isolated_environment).set("openai/api-key", "sk-proj-secret")
    code, out, _ = _run("agents")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["AGENT", "NAME", "ACTIVITY", "CREDENTIALS"]
    by_name = {line.split()[0]: line for line in lines[1:]}
    assert "OPENAI_API_KEY (keychain)" in by_name["codex"]
    assert "OPENAI_API_KEY (keychain)" in by_name["opencode"]
    assert "not set (GEMINI_API_KEY" in by_name["gemini"]
    assert "(default)" in by_name["claude"]
    assert "sk-proj-secret" not in out
