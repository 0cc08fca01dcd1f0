"""The agents' real npm packages: each installs from the registry and its version command works,
and the real Gemini CLI runs Bivy's hook configuration and adapter.

One slow install (about a minute and 1.3 GB in a temporary prefix, see docs/agents.md): all five
packages in one ``npm install``, shared by the tests of this module.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from app.agents import AGENTS
from app.domain import AgentReport, AgentState
from app.paths import cloudinit_path

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def prefix(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A prefix with all five packages installed (one ``npm install``)."""
    # The venv's Node.js first (.ci/setup --test puts >= 20 there; Gemini CLI needs 20).
    venv_npm = Path(sys.executable).parent / "npm"
    npm = str(venv_npm) if venv_npm.exists() else shutil.which("npm")
    assert npm, "npm is needed (CI: apt-get install npm)"
    root = tmp_path_factory.mktemp("agents")
    env = {**os.environ, "npm_config_cache": str(root / "npm-cache")}
    started = time.monotonic()
    result = subprocess.run(
        [npm, "install", "--prefix", str(root), "--no-audit", "--no-fund", "--loglevel=error",
         *(a.npm_package for a in AGENTS.values())],
        env=env, capture_output=True, text=True, timeout=840, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    print(f"npm install of {len(AGENTS)} agents: {time.monotonic() - started:.0f} s")
    return root / "node_modules" / ".bin"


def _env(home: Path, bin_dir: Path, **extra: str) -> dict[str, str]:
    home.mkdir(parents=True, exist_ok=True)
    path = f"{bin_dir}:{Path(sys.executable).parent}:{os.environ['PATH']}"
    return {"HOME": str(home), "PATH": path, **extra}


def test_each_package_installs_and_reports_its_version(prefix: Path, tmp_path: Path) -> None:
    for agent in AGENTS.values():
        binary, *args = agent.version_command
        assert (prefix / binary).exists(), f"{agent.npm_package} has no {binary} command"
        # A home of its own: nothing the agent writes on first run lands in the test's HOME.
        run = subprocess.run(
            [str(prefix / binary), *args], env=_env(tmp_path / agent.name, prefix),
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert run.returncode == 0, f"{agent.name}: {run.stderr[-1000:]}"
        assert re.search(r"\d+\.\d+\.\d+", run.stdout), f"{agent.name}: {run.stdout!r}"


class _GeminiApi(BaseHTTPRequestHandler):
    """The Gemini API's generateContent endpoints, scripted: a tool call, then an answer."""

    calls: list[str] = []  # noqa: RUF012  (one test at a time uses it)

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)))
        if ":streamGenerateContent" in self.path:
            type(self).calls.append(self.path)
            asked = any(
                "functionResponse" in part
                for content in body.get("contents", [])
                for part in content.get("parts", [])
            )
            part: dict[str, Any] = (
                {"text": "The README says hello."}
                if asked
                else {"functionCall": {"name": "read_file", "args": {"file_path": "README.md"}}}
            )
            chunk = {
                "candidates": [
                    {"content": {"role": "model", "parts": [part]}, "finishReason": "STOP"}
                ],
                "usageMetadata": {"promptTokenCount": 3, "totalTokenCount": 7},
            }
            data = ("data: " + json.dumps(chunk) + "\r\n\r\n").encode()
            kind = "text/event-stream"
        else:  # the model router's classifier and other one-shot calls
            answer = {"candidates": [{"content": {"role": "model", "parts": [{"text": "{}"}]}}]}
            data, kind = json.dumps(answer).encode(), "application/json"
        self.send_response(200)
        self.send_header("content-type", kind)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def gemini_api() -> Iterator[str]:
    _GeminiApi.calls = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _GeminiApi)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_real_gemini_cli_reports_a_turn_with_a_tool_call(
    prefix: Path, tmp_path: Path, gemini_api: str
) -> None:
    agent = AGENTS["gemini"]
    state = tmp_path / "state"
    state.mkdir()
    trace = tmp_path / "trace.jsonl"
    # The hook command Bivy writes, wrapped to keep every report for the test.
    wrapper = tmp_path / "hook.sh"
    adapter = cloudinit_path("agents", "gemini", "hook.js")
    wrapper.write_text(f'node {adapter} "$1"\ncat {state}/agent.json >>{trace}\n')
    home = tmp_path / "gemini-home"
    (settings_path,) = [h for h in agent.hook_configs if h.target.endswith("settings.json")]
    settings = json.loads(settings_path.render(f"sh {wrapper}"))
    assert settings["security"] == {"folderTrust": {"enabled": False}}
    settings["security"]["auth"] = {"selectedType": "gemini-api-key"}
    (home / ".gemini").mkdir(parents=True)
    (home / ".gemini" / "settings.json").write_text(json.dumps(settings))
    work = tmp_path / "work"
    work.mkdir()
    (work / "README.md").write_text("hello\n")
    env = _env(
        tmp_path / "home",
        prefix,
        GEMINI_API_KEY="test-key-not-real",
        GOOGLE_GEMINI_BASE_URL=gemini_api,
        BIVY_AGENT_STATE_DIR=str(state),
        **agent.config_env | {"GEMINI_CLI_HOME": str(home)},
    )
    run = subprocess.run(
        [str(prefix / "gemini"), "-p", "what does the README say?"],
        cwd=work, env=env, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert "The README says hello." in run.stdout
    assert len(_GeminiApi.calls) == 2
    reports = [AgentReport.model_validate_json(line) for line in trace.read_text().splitlines()]
    events = [(r.event, r.state) for r in reports]
    working, idle = AgentState.WORKING, AgentState.IDLE
    assert events[0] == ("SessionStart", idle)
    assert ("BeforeAgent", working) in events
    assert ("BeforeTool", working) in events and ("AfterTool", working) in events
    assert events.index(("BeforeTool", working)) < events.index(("AfterTool", working))
    assert ("AfterAgent", idle) in events
    assert events[-1] == ("SessionEnd", idle)
    final = AgentReport.model_validate_json((state / "agent.json").read_text())
    assert final.state is idle


class _ResponsesApi(BaseHTTPRequestHandler):
    """OpenAI's Responses API, scripted: one streamed assistant message."""

    protocol_version = "HTTP/1.1"
    calls = 0

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        type(self).calls += 1
        message = {
            "type": "message",
            "role": "assistant",
            "id": "msg_1",
            "content": [{"type": "output_text", "text": "Hello from the stand-in."}],
        }
        usage = {"input_tokens": 1, "input_tokens_details": None, "output_tokens": 1,
                 "output_tokens_details": None, "total_tokens": 2}  # fmt: skip
        events = [
            ("response.created", {"type": "response.created", "response": {"id": "resp_1"}}),
            ("response.output_item.done", {"type": "response.output_item.done", "item": message}),
            (
                "response.completed",
                {"type": "response.completed", "response": {"id": "resp_1", "usage": usage}},
            ),
        ]
        data = "".join(f"event: {e}\ndata: {json.dumps(d)}\n\n" for e, d in events).encode()
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_real_codex_runs_the_hook_tables_and_notify(prefix: Path, tmp_path: Path) -> None:
    """Bivy's hook tables (the same schema inline in config.toml as in requirements.toml) and
    its notify line, with the real ``codex exec`` against a local Responses API stand-in.

    Hooks outside requirements.toml wait for the user's trust, so this test alone passes
    --dangerously-bypass-hook-trust; the VM installs them in /etc/codex/requirements.toml."""
    agent = AGENTS["codex"]
    _ResponsesApi.calls = 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ResponsesApi)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    state = tmp_path / "state"
    state.mkdir()
    trace = tmp_path / "trace.jsonl"
    adapter = cloudinit_path("agents", "codex", "hook.js")
    wrapper = tmp_path / "hook.sh"  # runs what Bivy's line runs, then keeps the report
    wrapper.write_text(f'node "$@"\ncat {state}/agent.json >>{trace}\n')
    requirements, notify = agent.hook_configs
    home = tmp_path / "codex-home"
    home.mkdir()
    provider = (
        'model = "stand-in"\nmodel_provider = "standin"\n\n[model_providers.standin]\n'
        f'name = "standin"\nbase_url = "http://127.0.0.1:{server.server_address[1]}/v1"\n'
        'wire_api = "responses"\n\n'
    )
    (home / "config.toml").write_text(
        notify.render("", hook_js=str(adapter)).replace('"node", ', f'"sh", "{wrapper}", ', 1)
        + provider
        + requirements.render(f"sh {wrapper} {adapter}")
    )
    work = tmp_path / "work"
    work.mkdir()
    env = _env(tmp_path / "home", prefix, BIVY_AGENT_STATE_DIR=str(state), CODEX_HOME=str(home))
    try:
        run = subprocess.run(
            [str(prefix / "codex"), "exec", "--skip-git-repo-check",
             "--dangerously-bypass-hook-trust", "say hi"],
            cwd=work, env=env, capture_output=True, text=True, timeout=180, check=False,
        )  # fmt: skip
    finally:
        server.shutdown()
        server.server_close()
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Hello from the stand-in." in run.stdout and _ResponsesApi.calls == 1
    reports = [AgentReport.model_validate_json(line) for line in trace.read_text().splitlines()]
    assert [(r.event, r.state) for r in reports] == [
        ("SessionStart", AgentState.IDLE),
        ("UserPromptSubmit", AgentState.WORKING),
        ("Stop", AgentState.IDLE),
        ("agent-turn-complete", AgentState.IDLE),
    ]
    assert reports[2].message == reports[3].message == "Hello from the stand-in."
