"""The renderer's prebuild mode (issue 14): a builder VM's user data carries no agent
credential, no terminal password and no backup settings; it says BIVY_MODE=prebuild and brings
the seal; both modes fit Hetzner's 32 KiB with everything a workspace can have."""

from __future__ import annotations

import base64
import gzip

import pytest
import yaml

from app import __version__
from app.cloudinit import BackupInputs, render_user_data
from app.domain import WorkspaceSpec
from app.errors import InvalidInput
from app.providers.hetzner.provider import HetznerProvider
from tests.unit.cloudinit.test_render import parse_env
from tests.unit.cloudinit.vmtree import file_content, inputs_for, write_files

SPEC = WorkspaceSpec(name="demo", repo_url="https://github.com/owner/repo.git", branch="main")
API_KEY = "sk-ant-test-0123456789abcdefghij"  # what inputs_for passes
TTYD_PASSWORD = "pw-0123456789abcdef"
BACKUP = BackupInputs(
    "s3:https://s3.eu-central-003.backblazeb2.com/bivy-backups/bivy/demo",
    {"AWS_ACCESS_KEY_ID": "0037" + "a" * 21, "AWS_SECRET_ACCESS_KEY": "K003" + "b" * 27},
    "c" * 43,
    30,
    True,
)
SEAL = "/usr/local/lib/bivy/prebuild-seal"


def _everything(rendered: str) -> str:
    """The user data with every file decoded (a secret must not hide in a packed file)."""
    return rendered + "\n".join(entry["content"] for entry in write_files(rendered))


def test_prebuild_user_data_holds_no_agent_credential_and_no_terminal_password() -> None:
    inputs = inputs_for(SPEC, mode="prebuild", backup=BACKUP, git_token="ghp_once")
    for rendered in (
        render_user_data(inputs).cloud_config,
        render_user_data(
            inputs_for(SPEC, mode="prebuild", user_data_limit=60000, gzip_base64_ok=False)
        ).cloud_config,
    ):
        text = _everything(rendered)
        assert API_KEY not in text and API_KEY[-20:] not in text
        assert TTYD_PASSWORD not in text
        assert "BIVY_TTYD_PASSWORD" not in file_content(rendered, "/etc/bivy/workspace.env")
        # No backups on a disk that becomes an image.
        assert "RESTIC" not in text and BACKUP.password not in text
        paths = {entry["path"] for entry in write_files(rendered)}
        assert not {"/etc/bivy/backup.env", "/etc/systemd/system/bivy-backup.timer"} & paths
        assert "bivy-backup.timer" not in str(yaml.safe_load(rendered)["runcmd"])
    config = render_user_data(inputs).cloud_config
    env = parse_env(file_content(config, "/etc/bivy/workspace.env"))
    assert env["BIVY_MODE"] == "prebuild"
    assert env["BIVY_VERSION"] == __version__
    # Only the agent's non-secret settings go to the agent's env file.
    assert file_content(config, "/etc/bivy/agent.env") == "CLAUDE_CONFIG_DIR=/bivy/claude\n"
    # The git token is used once for the clone and shredded (as for a workspace).
    assert file_content(config, "/etc/bivy/git-token") == "ghp_once"
    files = {entry["path"]: entry for entry in write_files(config)}
    assert files[SEAL]["permissions"] == "0700"
    assert files["/usr/local/lib/bivy/devcontainer-hash"]["permissions"] == "0755"
    bootstrap = files["/usr/local/lib/bivy/bootstrap"]["content"]
    assert "phase=prebuilt" in bootstrap and "write_prebuild_json" in bootstrap
    up = files["/usr/local/lib/bivy/devcontainer-up"]["content"]
    assert "--prebuild" in up and "agent_env_for_sh |" not in up
    assert "bivy-ttyd" not in up  # no terminal
    # The builder still deletes itself when the app forgets it.
    assert "bivy-idle.timer" in str(yaml.safe_load(config)["runcmd"])


def test_workspace_user_data_has_no_seal_and_keeps_its_secrets() -> None:
    config = render_user_data(inputs_for(SPEC)).cloud_config
    env = parse_env(file_content(config, "/etc/bivy/workspace.env"))
    assert env["BIVY_MODE"] == "workspace" and env["BIVY_TTYD_PASSWORD"] == TTYD_PASSWORD
    assert SEAL not in {entry["path"] for entry in write_files(config)}
    bootstrap = file_content(config, "/usr/local/lib/bivy/bootstrap")
    assert "phase=prebuilt" not in bootstrap and "update_repo" in bootstrap
    up = file_content(config, "/usr/local/lib/bivy/devcontainer-up")
    assert "--prebuild" not in up and "prebuild_stale" in up


def test_a_prebuild_needs_no_terminal_password_a_workspace_does() -> None:
    render_user_data(inputs_for(SPEC, mode="prebuild", ttyd_password=""))
    with pytest.raises(InvalidInput, match="password"):
        render_user_data(inputs_for(SPEC, ttyd_password=""))
    with pytest.raises(InvalidInput, match="mode"):
        render_user_data(inputs_for(SPEC, mode="snapshot"))


def test_both_modes_fit_hetzner_with_every_option() -> None:
    agent = "claude"
    spec = WorkspaceSpec(
        name="a-long-workspace-name-of-thirty",
        repo_url="https://github.com/some-organisation/some-rather-long-repository-name.git",
        branch="feature/some-long-branch-name",
        agent=agent,
    )
    limit = HetznerProvider.capabilities.user_data_limit
    assert limit == 32768
    for mode in ("workspace", "prebuild"):
        rendered = render_user_data(
            inputs_for(spec, mode=mode, backup=BACKUP, git_token="ghp_" + "x" * 36)
        )
        assert rendered.size <= limit, (mode, rendered.size)
        if rendered.compressed:
            assert gzip.decompress(base64.b64decode(rendered.user_data)).decode() == (
                rendered.sent_config
            )
