"""The renderer: #cloud-config output, values intact, size limits, secrets out of repr."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import shlex
import shutil
import sys
import tarfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import app.cloudinit.templates as cloudinit
from app.cloudinit import BackupInputs, UserDataInputs, render_user_data, yaml_quote
from app.domain import WORKSPACE_NAME_PATTERN, WorkspaceSpec
from app.errors import InvalidInput
from app.providers.hetzner.provider import HetznerProvider
from tests.unit.cloudinit.vmtree import file_content, inputs_for, write_files

SPEC = WorkspaceSpec(name="demo", repo_url="https://github.com/owner/repo.git", branch="main")


def parse_env(text: str) -> dict[str, str]:
    values = {}
    for line in text.split("\n"):  # the shell's line ends only; str.splitlines knows more
        if not line:
            continue
        key, _, value = line.partition("=")
        (parsed,) = shlex.split(value) or [""]
        values[key] = parsed
    return values


def test_output_is_cloud_config_and_round_trips() -> None:
    rendered = render_user_data(inputs_for(SPEC))
    assert rendered.cloud_config.startswith("#cloud-config\n")
    assert "## template: jinja" not in rendered.cloud_config
    data = yaml.safe_load(rendered.cloud_config)
    assert data["users"][0]["name"] == "dev"
    assert data["ssh_pwauth"] is False and data["disable_root"] is True
    assert data["package_upgrade"] is False
    assert data["ssh_keys"]["ed25519_public"].startswith("ssh-ed25519 ")
    env = parse_env(file_content(rendered.cloud_config, "/etc/bivy/workspace.env"))
    assert env["BIVY_REPO_URL"] == SPEC.repo_url
    assert env["BIVY_BRANCH"] == "main"
    assert env["BIVY_REPO_DIR"] == "/workspaces/repo"
    agent = file_content(rendered.cloud_config, "/etc/bivy/agent.env")
    assert "ANTHROPIC_API_KEY=sk-ant-test-0123456789abcdefghij\n" in agent
    assert "CLAUDE_CONFIG_DIR=/bivy/claude\n" in agent
    modes = {f["path"]: f["permissions"] for f in write_files(rendered.cloud_config)}
    for secret in ("/etc/bivy/workspace.env", "/etc/bivy/agent.env", "/etc/bivy/provider.env"):
        assert modes[secret] == "0600"


def test_fits_the_limit_compressed_when_needed() -> None:
    rendered = render_user_data(inputs_for(SPEC, user_data_limit=32768))
    assert rendered.size <= 32768
    assert rendered.size == len(rendered.user_data.encode())
    if rendered.compressed:
        plain = gzip.decompress(base64.b64decode(rendered.user_data)).decode()
        assert plain == rendered.sent_config
    big = render_user_data(inputs_for(SPEC, user_data_limit=10**6))
    assert not big.compressed and big.user_data == big.cloud_config == big.sent_config
    assert big.layout == "files" and big.toolkit is None and not big.toolkit_sha256


def test_without_whole_gzip_the_toolkit_goes_inline_as_one_archive() -> None:
    plain = render_user_data(inputs_for(SPEC, user_data_limit=10**6))
    limit = plain.size - 1000
    packed = render_user_data(inputs_for(SPEC, user_data_limit=limit, gzip_base64_ok=False))
    assert packed.layout == "inline" and packed.toolkit is None  # nothing for the app to send
    assert not packed.compressed and packed.size <= limit
    assert packed.user_data == packed.sent_config and packed.cloud_config == plain.cloud_config
    assert packed.user_data.startswith("#cloud-config\n")
    data = yaml.safe_load(packed.user_data)
    raw = {f["path"]: f for f in data["write_files"]}
    archive = base64.b64decode(raw["/var/lib/bivy/toolkit.tar.xz"]["content"])
    assert raw["/var/lib/bivy/toolkit.tar.xz"]["encoding"] == "b64"
    assert hashlib.sha256(archive).hexdigest() == packed.toolkit_sha256
    assert raw["/usr/local/lib/bivy/toolkit-install"]["encoding"] == "gz+b64"
    assert raw["/etc/systemd/system/bivy-idle.timer"]["encoding"] == "gz+b64"
    assert raw["/etc/bivy/workspace.env"].get("encoding") is None  # user values stay plain
    assert "BIVY_TOOLKIT_SHA256" not in raw["/etc/bivy/workspace.env"]["content"]
    assert not [p for p in raw if p.startswith("/usr/local/lib/bivy/") and "toolkit" not in p]
    # runcmd installs the checked archive before any unit is loaded or started.
    commands = [" ".join(map(str, c)) for c in data["runcmd"]]
    install = commands.index(
        "python3 /usr/local/lib/bivy/toolkit-install "
        f"{packed.toolkit_sha256} /var/lib/bivy/toolkit.tar.xz /usr/local/lib/bivy"
    )
    assert install < commands.index("systemctl daemon-reload")
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:xz") as tar:
        names = {m.name for m in tar.getmembers() if m.isfile()}
        assert {m.uid for m in tar.getmembers()} == {0} == {m.mtime for m in tar.getmembers()}
    whole = {f["path"] for f in write_files(plain.cloud_config)}
    assert {f"/usr/local/lib/bivy/{n}" for n in names} == {
        p for p in whole if p.startswith("/usr/local/lib/bivy/")
    }


def test_split_when_even_the_archive_does_not_fit() -> None:
    inputs = inputs_for(SPEC, user_data_limit=30000, gzip_base64_ok=False)
    rendered = render_user_data(inputs)
    assert rendered.layout == "split" and rendered.toolkit is not None
    assert rendered.size <= 30000 and "toolkit.tar.xz" not in rendered.user_data
    assert render_user_data(inputs).toolkit == rendered.toolkit  # deterministic
    env = parse_env(file_content(rendered.sent_config, "/etc/bivy/workspace.env"))
    assert env["BIVY_TOOLKIT_SHA256"] == hashlib.sha256(rendered.toolkit).hexdigest()
    assert "toolkit-install" not in " ".join(map(str, yaml.safe_load(rendered.user_data)["runcmd"]))


def test_too_large_is_a_clear_error() -> None:
    with pytest.raises(InvalidInput, match="even without Bivy's tools; hetzner accepts 4000"):
        render_user_data(inputs_for(SPEC, user_data_limit=4000, gzip_base64_ok=False))
    with pytest.raises(InvalidInput, match="even without Bivy's tools"):
        render_user_data(inputs_for(SPEC, user_data_limit=2000))


def test_secrets_stay_out_of_repr() -> None:
    backup = BackupInputs(
        "s3:https://s3.example/b", {"AWS_SECRET_ACCESS_KEY": "s3cr3t"}, "pw-r3stic"
    )
    inputs = inputs_for(SPEC, git_token="ghp_secret", backup=backup)
    text = repr(inputs) + repr(render_user_data(inputs))
    for secret in ("ghp_secret", "s3cr3t", "pw-r3stic", "sk-ant-test", "t0k", "OPENSSH PRIVATE"):
        assert secret not in text


def test_git_token_and_backup_land_in_root_only_files() -> None:
    backup = BackupInputs(
        "s3:https://s3.example/bucket/demo",
        {"AWS_ACCESS_KEY_ID": "AKIA", "AWS_SECRET_ACCESS_KEY": "se'cr\"et $x"},
        "pw",
        interval_minutes=20,
        include_uncommitted=True,
    )
    rendered = render_user_data(inputs_for(SPEC, git_token="ghp_abc", backup=backup))
    files = {f["path"]: f for f in write_files(rendered.cloud_config)}
    assert files["/etc/bivy/git-token"]["content"] == "ghp_abc"
    assert files["/etc/bivy/git-token"]["permissions"] == "0600"
    env = parse_env(files["/etc/bivy/backup.env"]["content"])
    assert env["AWS_SECRET_ACCESS_KEY"] == "se'cr\"et $x"
    assert env["BIVY_BACKUP_INCLUDE_UNCOMMITTED"] == "1"
    assert "OnUnitActiveSec=20min" in files["/etc/systemd/system/bivy-backup.timer"]["content"]
    assert "bivy-backup.timer" in str(yaml.safe_load(rendered.cloud_config)["runcmd"])
    assert "ghp_abc" not in file_content(rendered.cloud_config, "/usr/local/lib/bivy/bootstrap")


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(InvalidInput, match="line break"):
        render_user_data(inputs_for(SPEC, agent_env={"ANTHROPIC_API_KEY": "a\nB=c"}))
    with pytest.raises(InvalidInput, match="environment variable name"):
        render_user_data(inputs_for(SPEC, agent_env={"A B": "x"}))
    with pytest.raises(InvalidInput, match="password"):
        render_user_data(inputs_for(SPEC, ttyd_password="short"))
    with pytest.raises(InvalidInput, match="public key"):
        render_user_data(inputs_for(SPEC, ssh_authorized_key="ssh-ed25519 A\nruncmd: [x]"))


def test_placeholder_inputs_print_no_secret() -> None:
    inputs = UserDataInputs.placeholder(SPEC, HetznerProvider)
    rendered = render_user_data(inputs)
    assert "PLACEHOLDER" in rendered.cloud_config
    assert "HCLOUD_TOKEN=PLACEHOLDER" in rendered.cloud_config.replace("\\n", "\n")
    assert rendered.size <= HetznerProvider.capabilities.user_data_limit


def test_templates_found_in_a_pyinstaller_bundle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = cloudinit.template_dir()
    assert (source / "cloud-config.yaml.j2").is_file()
    bundle = tmp_path / "bundle"
    shutil.copytree(source, bundle / "cloudinit")
    # Frozen: the package's own file lives where no cloudinit/ sits beside it.
    frozen_file = tmp_path / "lib" / "app" / "cloudinit" / "x.pyc"
    monkeypatch.setattr(cloudinit, "__file__", str(frozen_file))
    monkeypatch.setattr(sys, "_MEIPASS", str(bundle), raising=False)
    assert cloudinit.template_dir() == bundle / "cloudinit"
    assert render_user_data(inputs_for(SPEC)).cloud_config.startswith("#cloud-config")
    monkeypatch.setattr(sys, "_MEIPASS", str(tmp_path / "empty"), raising=False)
    with pytest.raises(InvalidInput, match="templates are missing"):
        cloudinit.template_dir()


@settings(max_examples=300)
@given(st.text())
def test_yaml_quote_round_trips_any_text(value: str) -> None:
    try:
        quoted = yaml_quote(value)
    except InvalidInput:
        assert any(0xD800 <= ord(c) <= 0xDFFF for c in value)
        return
    assert "\n" not in quoted
    assert yaml.safe_load(f"key: {quoted}\nafter: 1\n") == {"key": value, "after": 1}


BASELINE = yaml.safe_load(render_user_data(inputs_for(SPEC, user_data_limit=10**6)).cloud_config)
HOSTILE = st.sampled_from(
    ["'", '"', "$(touch pwned)", "`touch pwned`", "\n", "\r", ": ", "- ", "#", "&a", "*a", "!!py",
     "{", "}", "[", "]", "|", ">", "%", "@", "\\", "\u2028", "\x85", "${IFS}", ";", "..", "--", " "]
)  # fmt: skip


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    repo_tail=st.lists(HOSTILE | st.text(max_size=3), max_size=4).map("".join),
    branch=st.lists(HOSTILE | st.text(max_size=3), min_size=1, max_size=4).map("".join),
    name=st.from_regex(WORKSPACE_NAME_PATTERN, fullmatch=True)
    | st.lists(HOSTILE | st.text(max_size=3), min_size=1, max_size=3).map("".join),
)
def test_hostile_values_are_rejected_or_carried_intact(
    repo_tail: str, branch: str, name: str
) -> None:
    url = f"https://github.com/owner/{repo_tail}"
    try:
        spec = WorkspaceSpec(name=name, repo_url=url, branch=branch)
    except ValueError:
        return  # rejected at input, with a reason (see test_validation)
    rendered = render_user_data(inputs_for(spec, user_data_limit=10**6))
    data = yaml.safe_load(rendered.cloud_config)
    # The structure is ours: same keys, same files, same commands; values parse back exactly.
    assert list(data) == list(BASELINE)
    assert [f["path"] for f in data["write_files"]] == [f["path"] for f in BASELINE["write_files"]]
    assert data["runcmd"] == BASELINE["runcmd"]
    env = parse_env(file_content(rendered.cloud_config, "/etc/bivy/workspace.env"))
    assert env["BIVY_REPO_URL"] == spec.repo_url
    assert env["BIVY_BRANCH"] == (spec.branch or "")
    assert env["BIVY_NAME"] == spec.name


@pytest.mark.parametrize(
    "branch",
    [
        "$(touch${IFS}pwned)",
        "`touch${IFS}pwned`",
        "a'b",
        'a"b',
        "#x",
        "&a",
        "!!python/object",
        "{a}",
        "|",
        ">",
    ],
)
def test_hostile_but_valid_branches_are_carried_intact(branch: str) -> None:
    spec = WorkspaceSpec(name="w", repo_url="git@github.com:o/r.git", branch=branch)
    rendered = render_user_data(inputs_for(spec))
    env = parse_env(file_content(rendered.cloud_config, "/etc/bivy/workspace.env"))
    assert env["BIVY_BRANCH"] == branch


@pytest.mark.parametrize(
    ("repo", "source"),
    [("https://github.com/o/r.git", "url"), ("/home/me/src/my-repo", "bundle")],
)
def test_the_repository_source_is_named_for_the_vm(repo: str, source: str) -> None:
    # A path on the user's computer arrives as a git bundle over SSH (CONTRACTS.md).
    rendered = render_user_data(inputs_for(WorkspaceSpec(name="w", repo_url=repo)))
    env = file_content(rendered.cloud_config, "/etc/bivy/workspace.env")
    values = dict(line.split("=", 1) for line in env.splitlines())
    assert values["BIVY_REPO_SOURCE"] == source
    assert shlex.split(values["BIVY_REPO_URL"]) == [repo]


def test_scripts_lose_comment_lines_but_keep_shebang_and_directives() -> None:
    rendered = render_user_data(inputs_for(WorkspaceSpec(name="w", repo_url="https://x.org/r")))
    bootstrap = file_content(rendered.cloud_config, "/usr/local/lib/bivy/bootstrap")
    lines = bootstrap.splitlines()
    assert lines[0] == "#!/bin/bash"
    assert "# shellcheck source=/dev/null" in lines
    assert not [
        line for line in lines[1:] if line.lstrip().startswith("# ") and "shellcheck" not in line
    ]
