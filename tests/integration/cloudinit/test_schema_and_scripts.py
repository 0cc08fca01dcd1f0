"""Rendered user data against cloud-init's schema (CLI and JSON); shellcheck on every script."""

from __future__ import annotations

import json
import secrets as secrets_module
import shutil
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.cloudinit import BackupInputs, render_user_data
from app.domain import WorkspaceSpec
from tests.unit.cloudinit.vmtree import inputs_for, materialize, write_files

SPECS = [
    WorkspaceSpec(name="plain", repo_url="https://github.com/owner/repo.git"),
    WorkspaceSpec(name="branchy", repo_url="git@github.com:o/r.git", branch="feat/$(id)`x`'\""),
    WorkspaceSpec(
        name="long-lived",
        repo_url="ssh://git@git.example.org:2222/team/project",
        idle_minutes=120,
        max_hours=48,
    ),
]
SCHEMA = Path("/usr/lib/python3/dist-packages/cloudinit/config/schemas/schema-cloud-config-v1.json")
#: Top-level keys we use; cloud-init's CLI does not flag unknown ones, so we do.
EXPECTED_KEYS = {
    "users", "disable_root", "ssh_pwauth", "ssh_deletekeys", "ssh_keys", "package_update",
    "package_upgrade", "write_files", "runcmd",
}  # fmt: skip


def _variants() -> list[tuple[str, str]]:
    out = []
    for spec in SPECS:
        out.append((spec.name, render_user_data(inputs_for(spec)).cloud_config))
    backup = BackupInputs("s3:https://s3.example/b/x", {"AWS_ACCESS_KEY_ID": "k"}, "p", 15, True)
    out.append(
        (
            "with-backup",
            render_user_data(inputs_for(SPECS[0], git_token="t", backup=backup)).cloud_config,
        )
    )
    # As sent in the toolkit layouts (app/cloudinit/render.py): the toolkit in the user data,
    # and stage 1 only (the app sends the toolkit); scripts gzip+base64'd for a plain provider.
    for layout, limit in (("inline", 48000), ("split", 30000)):
        packed = render_user_data(
            inputs_for(SPECS[0], backup=backup, user_data_limit=limit, gzip_base64_ok=False)
        )
        assert packed.layout == layout and "gz+b64" in packed.sent_config
        out.append((f"{layout}-toolkit", packed.sent_config))
    return out


VARIANTS = _variants()


@pytest.mark.skipif(shutil.which("cloud-init") is None, reason="needs Debian's cloud-init")
@pytest.mark.parametrize(("name", "cloud_config"), VARIANTS, ids=[v[0] for v in VARIANTS])
def test_cloud_init_schema_cli_accepts_it(name: str, cloud_config: str, tmp_path: Path) -> None:
    path = tmp_path / f"{name}.yaml"
    path.write_text(cloud_config)
    result = subprocess.run(
        ["cloud-init", "schema", "-c", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Valid cloud-config" in result.stdout


def test_the_cli_check_can_fail(tmp_path: Path) -> None:
    if shutil.which("cloud-init") is None:
        pytest.skip("needs Debian's cloud-init")
    path = tmp_path / "bad.yaml"
    path.write_text(VARIANTS[0][1].replace("ssh_pwauth: false", "ssh_pwauth: [no]"))
    result = subprocess.run(
        ["cloud-init", "schema", "-c", str(path)], capture_output=True, check=False
    )
    assert result.returncode != 0


@pytest.mark.skipif(not SCHEMA.is_file(), reason="needs cloud-init's schema JSON")
@pytest.mark.parametrize(("name", "cloud_config"), VARIANTS, ids=[v[0] for v in VARIANTS])
def test_schema_json_and_known_keys(name: str, cloud_config: str) -> None:
    data = yaml.safe_load(cloud_config)
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft4Validator(schema).validate(data)
    assert set(data) == EXPECTED_KEYS
    known = {k for d in schema["$defs"].values() for k in d.get("properties", {})}
    assert set(data) <= known, set(data) - known
    for entry in data["write_files"]:
        assert set(entry) - {"encoding"} == {"path", "owner", "permissions", "content"}


SHELLCHECK = shutil.which("shellcheck") or str(Path(".venv/bin/shellcheck").resolve())


@pytest.mark.parametrize(("name", "cloud_config"), VARIANTS, ids=[v[0] for v in VARIANTS])
def test_every_embedded_shell_script_passes_shellcheck(
    name: str, cloud_config: str, tmp_path: Path
) -> None:
    checked = []
    for entry in write_files(cloud_config):
        content: str = entry["content"]
        first = content.split("\n", 1)[0]
        shells = ("#!/bin/bash", "#!/bin/sh", "#!/usr/bin/env bash", "# shellcheck shell=bash")
        if first in shells:
            path = tmp_path / Path(entry["path"]).name
            path.write_text(content)
            result = subprocess.run(
                [SHELLCHECK, "--severity=style", str(path)],
                capture_output=True,
                text=True,
                check=False,
            )
            assert result.returncode == 0, f"{entry['path']}:\n{result.stdout}"
            checked.append(entry["path"])
    if name.endswith("-toolkit"):  # the toolkit's scripts are the other variants' files
        return
    assert {
        "/usr/local/lib/bivy/bootstrap",
        "/usr/local/lib/bivy/idle-monitor",
        "/usr/local/lib/bivy/lib.sh",
        "/usr/local/lib/bivy/hook/agent-hook",
        "/usr/local/lib/bivy/git-askpass",
        "/usr/local/lib/bivy/ttyd-run",
        "/usr/local/lib/bivy/ttyd-session",
        "/usr/local/lib/bivy/self-delete",
        "/usr/local/lib/bivy/metadata-guard",
    } <= set(checked)


def test_python_and_json_files_are_valid(tmp_path: Path) -> None:
    for entry in write_files(VARIANTS[0][1]):
        if entry["content"].startswith("#!/usr/bin/python3"):
            compile(entry["content"], entry["path"], "exec")
        if entry["path"].endswith(".json"):
            json.loads(entry["content"])
    hooks = json.loads(
        next(
            e["content"]
            for e in write_files(VARIANTS[0][1])
            if e["path"].endswith("claude-hooks.json")
        )
    )
    assert {"UserPromptSubmit", "PreToolUse", "PostToolUse", "PermissionRequest",
            "Notification", "Stop", "SubagentStop"} <= set(hooks["hooks"])  # fmt: skip


HOSTILE_BRANCHES = [
    "line\u2028sep\x85nel",
    "$(touch${IFS}PWNED)",
    "`touch${IFS}PWNED`",
    "x';touch${IFS}PWNED;'",
    'a"$(touch${IFS}PWNED)"',
]


@pytest.mark.parametrize("branch", HOSTILE_BRANCHES)
def test_sourcing_the_env_file_runs_nothing(branch: str, tmp_path: Path) -> None:
    spec = WorkspaceSpec(name="w", repo_url="https://github.com/o/r.git", branch=branch)
    env = materialize(render_user_data(inputs_for(spec)).cloud_config, tmp_path / "vm")
    work = tmp_path / "cwd"
    work.mkdir()
    script = '. "$BIVY_LIB_DIR/lib.sh"; bivy_load_env; printf "%s" "$BIVY_BRANCH"'
    for shell in ("bash", "sh"):
        result = subprocess.run(
            [shell, "-c", script], env=env, cwd=work, capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout == branch
    assert list(work.iterdir()) == []  # no PWNED file: nothing executed


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    secret=st.text(
        alphabet=st.sampled_from(list("aZ9'\"$()`;|&<>*?[]{}~#!\\ \t\n")), min_size=1, max_size=24
    )
)
def test_hostile_secrets_are_sourced_literally(secret: str, tmp_path: Path) -> None:
    backup = BackupInputs("s3:https://s3.example/b", {"AWS_SECRET_ACCESS_KEY": secret}, secret)
    inputs = inputs_for(SPECS[0], self_delete_env={"HCLOUD_TOKEN": secret}, backup=backup)
    root = tmp_path / secrets_module.token_hex(4)
    env = materialize(render_user_data(inputs).cloud_config, root)
    work = root / "cwd"
    work.mkdir()
    script = (
        '. "$BIVY_ETC_DIR/provider.env"; . "$BIVY_ETC_DIR/backup.env"; '
        + 'printf "%s|%s|%s" "$HCLOUD_TOKEN" "$RESTIC_PASSWORD" "$AWS_SECRET_ACCESS_KEY"'
    )
    result = subprocess.run(
        ["sh", "-c", script], env=env, cwd=work, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{secret}|{secret}|{secret}"
    assert list(work.iterdir()) == []
