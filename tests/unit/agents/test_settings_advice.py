"""The Settings dialog's least-privilege advice is read from the agent plug-ins."""

from __future__ import annotations

from html import escape

from app.agents import AGENTS
from app.ui import formatting
from app.ui.settings_dialog import SettingsDialog


def test_advice_names_every_agent_its_variables_and_its_advice() -> None:
    html = SettingsDialog._agent_advice_html()
    # Commands in the advice show as code, never with their Markdown backticks.
    assert "<code>claude setup-token</code>" in html
    assert "`" not in html
    for agent in AGENTS.values():
        assert formatting.code_html(agent.credential_advice) in html
        if agent.name != "claude":
            assert f"<b>{escape(agent.display_name)}</b>" in html
            assert " or ".join(agent.credential_envs) in html
    assert "Copilot Requests" in html.replace("&quot;", '"')
