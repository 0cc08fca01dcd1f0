"""``--agent NAME`` through the renderer: Claude Code's user data is what it was; another agent
gets its package, config dir, credentials' variables, hook adapter and hook files, and the
rendered pieces work (real node, sh -n, the rendered agent-config on real files)."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from app import cli
from app.agents import AGENTS
from app.cloudinit import BackupInputs, UserDataInputs, render_cloud_config, render_user_data
from app.domain import AgentReport, AgentState, WorkspaceSpec
from app.providers.registry import PROVIDERS
from tests.unit.cloudinit.vmtree import file_content, inputs_for, materialize, write_files

REPO = "https://github.com/o/r.git"
LIB = "/usr/local/lib/bivy"


def spec(agent: str | None = None, **kw: object) -> WorkspaceSpec:
    values: dict[str, object] = {"name": "w", "repo_url": REPO, **kw}
    if agent is not None:
        values["agent"] = agent
    return WorkspaceSpec.model_validate(values)


def test_claude_is_the_default_and_renders_no_agent_files() -> None:
    default = render_cloud_config(inputs_for(spec()))
    assert default == render_cloud_config(inputs_for(spec("claude")))
    paths = [f["path"] for f in write_files(default)]
    assert not [p for p in paths if "/agents/" in p or p.endswith("/agent-config")]
    assert "CLAUDE_CONFIG_DIR=/bivy/claude" in file_content(default, "/etc/bivy/agent.env")
    up = file_content(default, f"{LIB}/devcontainer-up")
    assert 'CLAUDE_DIR="$BIVY_STATE_DIR/claude"' in up and "target=/bivy/claude" in up
    assert "claude-config" in up and "agent-config" not in up
    install = file_content(default, f"{LIB}/agent-install")
    assert 'package="@anthropic-ai/claude-code"' in install and "command -v claude " in install


def test_a_workspace_spec_refuses_an_odd_agent_name() -> None:
    with pytest.raises(ValueError, match="agent"):
        spec("Codex; rm -rf /")


@pytest.mark.parametrize("name", [n for n in AGENTS if n != "claude"])
def test_another_agent_gets_its_package_dir_env_and_hooks(name: str, tmp_path: Path) -> None:
    agent = AGENTS[name]
    inputs = inputs_for(spec(name), agent_env={agent.credentials[0].env: "k-0123456789"})
    config = render_cloud_config(inputs)
    env_file = file_content(config, "/etc/bivy/agent.env")
    assert "CLAUDE_CONFIG_DIR" not in env_file
    for key, value in agent.config_env.items():
        assert f"{key}={value}\n" in env_file
    install = file_content(config, f"{LIB}/agent-install")
    assert f'package="{agent.npm_package}"' in install
    assert f"command -v {agent.binary} " in install and "claude" not in install
    up = file_content(config, f"{LIB}/devcontainer-up")
    assert f'CLAUDE_DIR="$BIVY_STATE_DIR/{name}"' in up
    assert f"target={agent.config_dir}" in up
    assert f"{LIB}/claude-config" not in up.replace("$BIVY_LIB_DIR", LIB)
    assert f"agents/{name}/configs.json" in up
    exports = " ".join(f"{k}={v}" for k, v in agent.config_env.items())
    assert f'echo "export {exports}" >/etc/profile.d/bivy.sh' in up
    assert ("codex login --with-api-key" in up) == (name == "codex")
    shellcheck = shutil.which("shellcheck") or str(Path(".venv/bin/shellcheck").resolve())
    for script, shell in ((up, "bash"), (install, "sh")):
        check = subprocess.run([shell, "-n"], input=script, text=True, capture_output=True)
        assert check.returncode == 0, check.stderr
        path = tmp_path / f"script.{shell}"
        path.write_text(script)
        check = subprocess.run(
            [shellcheck, "--severity=style", str(path)], text=True, capture_output=True
        )
        assert check.returncode == 0, check.stdout
    manifest = json.loads(file_content(config, f"{LIB}/agents/{name}/configs.json"))
    assert [m["target"] for m in manifest] == [h.target for h in agent.hook_configs]
    for entry in manifest:
        text = file_content(config, f"{LIB}/agents/{name}/{entry['source']}")
        assert "{{" not in text
        # hook settings name the adapter; OpenCode's plugin is the adapter itself
        assert f"/bivy/hook/agents/{name}/" in text or '"/bivy/state"' in text
    # every provider still takes it
    for kind, cls in PROVIDERS.items():
        render_user_data(UserDataInputs.placeholder(spec(name, provider=kind), cls))


def test_the_rendered_codex_pieces_work_on_the_vm_layout(tmp_path: Path) -> None:
    config = render_cloud_config(inputs_for(spec("codex")))
    env = materialize(config, tmp_path)
    lib = Path(env["BIVY_LIB_DIR"])
    # the adapter, as rendered into the hook dir the container mounts, writes agent.json
    state = tmp_path / "state" / "agent"
    payload = {"session_id": "s", "cwd": "/workspaces/r", "hook_event_name": "UserPromptSubmit",
               "turn_id": "t", "prompt": "go", "model": "m", "transcript_path": None}  # fmt: skip
    run = subprocess.run(
        ["node", str(lib / "hook/agents/codex/hook.js"), "UserPromptSubmit"],
        input=json.dumps(payload), text=True, capture_output=True, check=False,
        env={**env, "BIVY_AGENT_STATE_DIR": str(state)},
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    report = AgentReport.model_validate_json((state / "agent.json").read_text())
    assert report.state is AgentState.WORKING
    # without BIVY_AGENT_STATE_DIR the rendered default is the container's state dir
    assert '"/bivy/state"' in (lib / "hook/agents/agent-state.js").read_text()
    # agent-config puts the notify line in the (host side of the) config dir and the managed
    # hooks into the container through docker
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "docker.log"
    (bin_dir / "docker").write_text(f'#!/bin/sh\necho "$@" >>{log}\ncat >>{log}\n')
    (bin_dir / "docker").chmod(0o755)
    host = tmp_path / "state" / "codex"
    host.mkdir()
    run = subprocess.run(
        [sys.executable, str(lib / "agent-config"), str(lib / "agents/codex/configs.json"),
         str(host), "/bivy/codex", "cid"],
        text=True, capture_output=True, check=False,
        env={**env, "PATH": f"{bin_dir}:{os.environ['PATH']}"},
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    notify = tomllib.loads((host / "config.toml").read_text())["notify"]
    assert notify == ["node", "/bivy/hook/agents/codex/hook.js", "notify"]
    requirements = tomllib.loads(log.read_text().split("\n", 1)[1])
    assert requirements["hooks"]["PermissionRequest"][0]["hooks"][0]["command"] == (
        "node /bivy/hook/agents/codex/hook.js PermissionRequest"
    )


def test_backups_keep_the_agents_config_dir() -> None:
    backup = BackupInputs(
        repository="s3:https://s3.example.com/b/w", password="p" * 20,
        keys={"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "s"},
    )  # fmt: skip
    codex = file_content(
        render_cloud_config(inputs_for(spec("codex"), backup=backup)), "/etc/bivy/backup.env"
    )
    claude = file_content(
        render_cloud_config(inputs_for(spec(), backup=backup)), "/etc/bivy/backup.env"
    )
    assert "BIVY_AGENT_DIR=/var/lib/bivy/codex\n" in codex
    assert "BIVY_AGENT_DIR" not in claude


def _run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    return cli.main(list(argv), out=out, err=err), out.getvalue(), err.getvalue()


def test_render_user_data_takes_agent() -> None:
    args = ("render-user-data", "--repo", REPO, "--name", "w", "--placeholder-secrets")
    code, out, err = _run(*args, "--agent", "gemini")
    assert code == 0, err
    data = yaml.safe_load(out)
    paths = [f["path"] for f in data["write_files"]]
    assert f"{LIB}/agents/gemini/configs.json" in paths
    assert "GEMINI_API_KEY=PLACEHOLDER" in file_content(out, "/etc/bivy/agent.env")
    code, default, _ = _run(*args)
    assert code == 0 and default == _run(*args, "--agent", "claude")[1]
    code, _, err = _run(*args, "--agent", "cursor")
    assert code != 0 and "no agent called 'cursor'" in err and "bivy agents" in err


def test_create_passes_the_agent_into_the_spec() -> None:
    from app.cli.workspaces import _spec_from_args
    from app.settings import Settings

    parser = cli.build_parser()
    args = parser.parse_args(["create", "w", "--repo", REPO, "--agent", "Copilot"])
    assert _spec_from_args(args, Settings()).agent == "copilot"
    args = parser.parse_args(["create", "w", "--repo", REPO])
    assert _spec_from_args(args, Settings()).agent == "claude"


async def test_the_vm_gets_the_agents_own_credentials(isolated_environment: object) -> None:
    from app.services.vm_inputs import VmSecrets, agent_env
    from app.settings import SecretStore, Settings

    store = SecretStore()
    store.set("anthropic/api-key", "sk-ant-from-keychain")
    source = VmSecrets(Settings(), store, environ={"OPENAI_API_KEY": "sk-proj-from-env"})
    assert await agent_env(source, spec("opencode")) == {
        "ANTHROPIC_API_KEY": "sk-ant-from-keychain",
        "OPENAI_API_KEY": "sk-proj-from-env",
    }
    assert await agent_env(source, spec("codex")) == {"OPENAI_API_KEY": "sk-proj-from-env"}
    assert await agent_env(source, spec("gemini")) == {}
    # Claude keeps its own rule (the workspace's chosen credential kind)
    assert await agent_env(source, spec()) == {"ANTHROPIC_API_KEY": "sk-ant-from-keychain"}


def test_codex_logs_in_from_its_variable_only_when_it_is_set(tmp_path: Path) -> None:
    """The rendered login command, run by sh with and without the key (codex is a stand-in that
    records its arguments and stdin)."""
    import shlex

    config = render_cloud_config(inputs_for(spec("codex")))
    up = file_content(config, f"{LIB}/devcontainer-up")
    line = next(x for x in up.splitlines() if "codex login" in x)
    command = shlex.split(line.split(" sh -c ", 1)[1].split(" >>", 1)[0])[0]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "codex.log"
    (bin_dir / "codex").write_text(f'#!/bin/sh\necho "$@" >>{log}\ncat >>{log}\n')
    (bin_dir / "codex").chmod(0o755)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}"}
    subprocess.run(["sh", "-c", command], env=env, check=True)
    assert not log.exists()
    subprocess.run(["sh", "-c", command], env={**env, "OPENAI_API_KEY": "sk-x"}, check=True)
    assert log.read_text() == "login --with-api-key\nsk-x\n"


@pytest.mark.parametrize("node", ["18.20.4", "20.1.0"])
def test_gemini_install_checks_the_containers_node(node: str, tmp_path: Path) -> None:
    """The rendered agent-install, run by sh with a stand-in node and npm on PATH."""
    install = file_content(render_cloud_config(inputs_for(spec("gemini"))), f"{LIB}/agent-install")
    assert "needs node" not in file_content(
        render_cloud_config(inputs_for(spec("codex"))), f"{LIB}/agent-install"
    )
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tools = {"tmux": "", "npm": f'echo "npm $*" >>{tmp_path}/npm.log', "gemini": "echo 0.61.0"}
    tools["node"] = f'case "$1" in -p) echo {node.split(".")[0]};; *) echo v{node};; esac'
    for tool, body in tools.items():
        (bin_dir / tool).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / tool).chmod(0o755)
    # "command -v gemini" must fail before the install: gemini appears only after npm ran
    (bin_dir / "gemini").rename(tmp_path / "gemini")
    (bin_dir / "npm").write_text(
        f'#!/bin/sh\necho "npm $*" >>{tmp_path}/npm.log\nmv {tmp_path}/gemini {bin_dir}/gemini\n'
    )
    run = subprocess.run(
        ["sh", "-c", install], env={"PATH": f"{bin_dir}:/usr/bin:/bin"},
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if node == "20.1.0":
        assert run.returncode == 0, run.stdout + run.stderr
        assert "install -g" in (tmp_path / "npm.log").read_text()
    else:
        assert run.returncode == 1
        assert "Gemini CLI needs node 20 or later" in run.stdout
        assert not (tmp_path / "npm.log").exists()
