"""Renders the workspace VM's cloud-init user data from the jinja2 templates in cloudinit/.

Quoting rules: every value lands in YAML through the ``tojson`` filter (a JSON string is a YAML
double-quoted scalar; ours escapes what YAML treats specially), and values the VM's scripts
need reach them only through root-only files of ``shlex.quote``d assignments that the scripts
source. No value is ever spliced into script code.

Prebuild mode (issue 14): ``UserDataInputs.mode="prebuild"`` renders a builder VM's user data:
``BIVY_MODE=prebuild`` in workspace.env, no agent credentials (``agent_env`` is dropped), no
web-terminal password, no backups, and ``/usr/local/lib/bivy/prebuild-seal``, which the app runs
once the bootstrap reports ``prebuilt`` (notes/CONTRACTS2.md).

Backup hook points (issue 6): with ``UserDataInputs.backup`` set, ``/etc/bivy/backup.env`` holds
``RESTIC_REPOSITORY``, ``RESTIC_PASSWORD``, the storage keys, ``BIVY_BACKUP_INTERVAL_MINUTES``
and ``BIVY_BACKUP_INCLUDE_UNCOMMITTED``; every ``cloudinit/backup/<name>.sh`` template is
installed as ``/usr/local/lib/bivy/<name>`` (``restore``, ``pre-delete``, ``backup``) and
``bivy-backup.timer`` runs ``backup`` every interval.

Layouts (``RenderedUserData.layout``), the first that fits the provider's limit wins:
``files`` — every file its own write_files entry (the whole YAML gzip+base64'd where the
datasource decodes that); ``inline`` — everything under ``LIB_DIR`` as one deterministic tar.xz
(the *toolkit*) in ``/var/lib/bivy/toolkit.tar.xz``, which runcmd installs with
``toolkit-install`` (sha256-checked) before any unit loads; ``split`` — stage 1 only
(``STAGE1``: what keeps the user's money safe and lets the VM report; the units), and the app
sends the rest as the toolkit over SSH once sshd answers (``RenderedUserData.toolkit``, to
``~dev/bivy-incoming/toolkit.tar.xz``, its ``.sha256`` last): the bootstrap waits for it and
installs only the archive whose sha256 the root-only workspace.env names
(``BIVY_TOOLKIT_SHA256``). Without whole-gzip, the toolkit layouts gzip+base64 each remaining
script and unit.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, cast

from app import __version__
from app.agents import Agent, get_agent
from app.cloudinit.agent_files import agent_context, agent_files
from app.cloudinit.templates import (
    CLAUDE_PACKAGE,
    CONTAINER_AGENT_ENV,
    CONTAINER_CLAUDE_DIR,
    CONTAINER_HOOK_DIR,
    CONTAINER_STATE_DIR,
    DEVCONTAINER_CLI,
    ENV_KEY_RE,
    ETC_DIR,
    EXPIRY_WARNING_SECONDS,
    GIT_USERNAME,
    METADATA_IPV4,
    METADATA_IPV6,
    NODE_MAJOR,
    PLACEHOLDER,
    PRUNE_NAMES,
    STATE_DIR,
    TTYD_PASSWORD_RE,
    TTYD_PORT,
    environment,
    strip_comments,
    template_dir,
)
from app.cloudinit.toolkit import (
    LAYOUTS,
    LIB_DIR,
    TOOLKIT_NAME,
    Layout,
    fit,
    gzip_entries,
    pack_toolkit,
    toolkit_files,
)
from app.domain import WorkspaceSpec
from app.domain.validation import (
    is_local_repo,
    repo_dir_name,
    validate_branch,
    validate_repo_source,
)
from app.errors import InvalidInput

if TYPE_CHECKING:
    from app.providers.base import Provider


@dataclass(frozen=True)
class BackupInputs:
    """What the VM needs to back up and restore the agent's history with restic (issue 6).

    Attributes:
        repository: the restic repository, e.g. ``s3:https://endpoint/bucket/bivy/<name>``.
        keys: storage credentials as environment (``AWS_ACCESS_KEY_ID``…).
        password: the workspace's restic password.
        interval_minutes: minutes between periodic backups.
        include_uncommitted: also back up the workspace's uncommitted and untracked files.
    """

    repository: str
    keys: Mapping[str, str] = field(default_factory=dict, repr=False)
    password: str = field(default="", repr=False)
    interval_minutes: int = 30
    include_uncommitted: bool = False


@dataclass(frozen=True)
class UserDataInputs:
    """Everything rendered into one VM's user data. Secret fields are hidden from ``repr``.

    Attributes:
        spec: the workspace the user asked for (name, repo, branch, idle/lifetime limits).
        provider: the provider kind ("hetzner").
        user_data_limit: bytes the provider accepts.
        gzip_base64_ok: the provider's datasource decodes base64(gzip(...)).
        ssh_authorized_key: the app's public key for user ``dev``.
        host_key_private / host_key_public: the VM's pre-generated ed25519 host key.
        ttyd_password: the web terminal's basic-auth password (URL-safe characters).
        self_delete_script: the provider's self-delete shell script.
        self_delete_env: the secret environment that script needs.
        agent_env: the agent's credentials (ANTHROPIC_API_KEY or CLAUDE_CODE_OAUTH_TOKEN).
        git_token: a one-time token for cloning a private repository.
        backup: restic settings, or None without backups.
        mode: "workspace", or "prebuild" for a prebuild's builder VM (no agent credentials, no
            terminal, no backups; ends in phase ``prebuilt``, sealed by ``prebuild-seal``).
    """

    spec: WorkspaceSpec
    provider: str
    ssh_authorized_key: str
    host_key_private: str = field(repr=False)
    host_key_public: str
    ttyd_password: str = field(repr=False)
    self_delete_script: str
    self_delete_env: Mapping[str, str] = field(default_factory=dict, repr=False)
    agent_env: Mapping[str, str] = field(default_factory=dict, repr=False)
    git_token: str | None = field(default=None, repr=False)
    backup: BackupInputs | None = None
    user_data_limit: int = 32768
    gzip_base64_ok: bool = True
    mode: Literal["workspace", "prebuild"] = "workspace"

    @classmethod
    def placeholder(cls, spec: WorkspaceSpec, provider_cls: type[Provider]) -> UserDataInputs:
        """Inputs with every secret replaced by an obvious placeholder: safe to print."""
        caps = provider_cls.capabilities
        options = {o.key: o.default or PLACEHOLDER for o in provider_cls.options}
        # Every provider takes its options first (CONTRACTS.md); never used for a request here.
        make = cast("Callable[[Mapping[str, str]], Provider]", provider_cls)
        provider = make(options)
        script = provider.self_delete_script()
        env_keys = list(provider.self_delete_env())
        return cls(
            spec=spec,
            provider=provider_cls.kind,
            user_data_limit=caps.user_data_limit,
            gzip_base64_ok=caps.user_data_gzip_base64,
            ssh_authorized_key=f"ssh-ed25519 {PLACEHOLDER} bivy",
            host_key_private=(
                "-----BEGIN OPENSSH PRIVATE KEY-----\n"
                f"{PLACEHOLDER}\n-----END OPENSSH PRIVATE KEY-----\n"
            ),
            host_key_public=f"ssh-ed25519 {PLACEHOLDER} bivy-host",
            ttyd_password=PLACEHOLDER + "-" * 8,
            self_delete_script=script,
            self_delete_env=dict.fromkeys(env_keys, PLACEHOLDER),
            agent_env={get_agent(spec.agent).credentials[0].env: PLACEHOLDER},
        )


@dataclass(frozen=True)
class RenderedUserData:
    """The rendered user data.

    Attributes:
        user_data: what to send to the provider (the YAML, or base64(gzip(YAML)) when needed).
        cloud_config: the plain ``#cloud-config`` YAML.
        compressed: whether ``user_data`` is base64(gzip(...)).
        size: bytes of ``user_data``.
        layout: ``files``, ``inline`` or ``split`` (module docstring).
        toolkit: the archive the app must send over SSH (``split``), else None.
        toolkit_sha256: the toolkit's hex sha256 (``inline``/``split``), else "".
        sent_config: the plain YAML of ``user_data`` (``cloud_config`` is always the ``files``
            layout: every file as the VM ends up with it, for reading and tests).
    """

    user_data: str = field(repr=False)
    cloud_config: str = field(repr=False)
    compressed: bool
    size: int
    layout: Layout = "files"
    toolkit: bytes | None = field(default=None, repr=False)
    toolkit_sha256: str = ""
    sent_config: str = field(default="", repr=False)


def _env_file(values: Mapping[str, str], what: str) -> str:
    """Shell assignments, one per line, each value ``shlex.quote``d (sourced by bash and sh)."""
    lines = []
    for key, value in values.items():
        if not ENV_KEY_RE.match(key):
            raise InvalidInput(f"{key!r} is not a valid environment variable name ({what})")
        if "\0" in value:
            raise InvalidInput(f"The value of {key} contains a NUL character ({what})")
        lines.append(f"{key}={shlex.quote(value)}")
    return "\n".join(lines) + "\n"


def _docker_env_file(values: Mapping[str, str]) -> str:
    """``docker --env-file`` format: KEY=VALUE taken literally, so a value must be one line."""
    lines = []
    for key, value in values.items():
        if not ENV_KEY_RE.match(key):
            raise InvalidInput(f"{key!r} is not a valid environment variable name (agent)")
        if any(ch in value for ch in "\r\n\0"):
            raise InvalidInput(
                f"The agent credential {key} contains a line break",
                hint="Paste the key or token again, without surrounding text.",
            )
        lines.append(f"{key}={value}")
    return "\n".join(lines) + "\n"


def _validate(inputs: UserDataInputs) -> None:
    spec = inputs.spec
    validate_repo_source(spec.repo_url)
    if spec.branch:
        validate_branch(spec.branch)
    if inputs.mode not in ("workspace", "prebuild"):
        raise InvalidInput(f"Unknown user data mode {inputs.mode!r}")
    if inputs.mode == "workspace" and not TTYD_PASSWORD_RE.match(inputs.ttyd_password):
        raise InvalidInput("The web terminal password must be 16-128 URL-safe characters")
    for what, value in (
        ("SSH public key", inputs.ssh_authorized_key),
        ("host public key", inputs.host_key_public),
    ):
        if not value.startswith("ssh-") or any(ch in value for ch in "\r\n\0"):
            raise InvalidInput(f"The {what} is not a one-line OpenSSH public key")
    if "PRIVATE KEY-----" not in inputs.host_key_private:
        raise InvalidInput("The host private key is not an OpenSSH private key")


def render_cloud_config(inputs: UserDataInputs) -> str:
    """The plain ``#cloud-config`` YAML for ``inputs`` in the ``files`` layout."""
    return _render(inputs, "files")[0]


def _render(inputs: UserDataInputs, layout: Layout) -> tuple[str, bytes | None]:
    """The plain YAML in ``layout`` and the toolkit (None in the ``files`` layout)."""
    _validate(inputs)
    prebuild = inputs.mode == "prebuild"
    # A builder VM's disk becomes an image: nothing of a user's secrets may be on it.
    backup = None if prebuild else inputs.backup
    directory = template_dir()
    env = environment(directory)
    spec = inputs.spec
    repo_dir = f"/workspaces/{repo_dir_name(spec.repo_url)}"
    hook = f"{CONTAINER_HOOK_DIR}/agent-hook"
    agent = get_agent(spec.agent)
    context: dict[str, object] = {
        "state_dir": STATE_DIR,
        "lib_dir": LIB_DIR,
        "etc_dir": ETC_DIR,
        "ttyd_port": TTYD_PORT,
        "node_major": NODE_MAJOR,
        "devcontainer_cli": DEVCONTAINER_CLI,
        "claude_package": CLAUDE_PACKAGE,
        "container_agent_env": CONTAINER_AGENT_ENV,
        "container_claude_dir": CONTAINER_CLAUDE_DIR,
        "container_state_dir": CONTAINER_STATE_DIR,
        "container_hook_dir": CONTAINER_HOOK_DIR,
        "git_username": GIT_USERNAME,
        "metadata_ipv4": METADATA_IPV4,
        "metadata_ipv6": METADATA_IPV6,
        "expiry_warning_seconds": EXPIRY_WARNING_SECONDS,
        "prune_names": PRUNE_NAMES,
        "max_hours": spec.max_hours,
        "hook": hook,
        "backup": backup is not None,
        "backup_interval_minutes": backup.interval_minutes if backup else 0,
        "prebuild": prebuild,
        "toolkit_sha256": "",  # set in the inline layout: runcmd installs the toolkit first
        "toolkit_path": f"{STATE_DIR}/{TOOLKIT_NAME}",
        "toolkit_name": TOOLKIT_NAME,
        **agent_context(agent),
    }

    def render(name: str) -> str:
        return env.get_template(name).render(context)

    workspace_env = {
        "BIVY_NAME": spec.name,
        "BIVY_PROVIDER": inputs.provider,
        "BIVY_REPO_URL": spec.repo_url,
        # A path on the user's computer: the app uploads a git bundle over SSH (never cloned
        # from BIVY_REPO_URL, which is then for display only).
        "BIVY_REPO_SOURCE": "bundle" if is_local_repo(spec.repo_url) else "url",
        "BIVY_BRANCH": spec.branch or "",
        "BIVY_REPO_DIR": repo_dir,
        "BIVY_IDLE_MINUTES": str(spec.idle_minutes),
        "BIVY_MAX_HOURS": str(spec.max_hours),
        "BIVY_MODE": inputs.mode,
        "BIVY_VERSION": __version__,
    }
    if not prebuild:
        workspace_env["BIVY_TTYD_PASSWORD"] = inputs.ttyd_password
    agent_env = {**agent.config_env, **({} if prebuild else inputs.agent_env)}
    initial_status = json.dumps({"phase": "booting", "detail": "booting", "progress": 0.01})
    files: list[dict[str, str]] = [  # path, permissions, content (+ encoding when packed)
        {"path": f"{ETC_DIR}/workspace.env", "permissions": "0600",
         "content": _env_file(workspace_env, "workspace")},
        {"path": f"{ETC_DIR}/provider.env", "permissions": "0600",
         "content": _env_file(dict(inputs.self_delete_env), "provider")},
        {"path": f"{ETC_DIR}/agent.env", "permissions": "0600",
         "content": _docker_env_file(agent_env)},
        {"path": f"{STATE_DIR}/status.json", "permissions": "0644",
         "content": initial_status + "\n"},
        {"path": "/etc/ssh/sshd_config.d/10-bivy.conf", "permissions": "0644",
         "content": render("sshd.conf")},
    ]  # fmt: skip
    if inputs.git_token:
        if any(ch in inputs.git_token for ch in "\r\n\0"):
            raise InvalidInput("The git token contains a line break")
        files.append(
            {"path": f"{ETC_DIR}/git-token", "permissions": "0600", "content": inputs.git_token}
        )
    scripts = {
        "lib.sh": ("lib.sh", "0644"),
        "metadata-guard.sh": ("metadata-guard", "0755"),
        "bootstrap.sh": ("bootstrap", "0755"),
        "bootstrap-stopped.sh": ("bootstrap-stopped", "0755"),
        "devcontainer-up.sh": ("devcontainer-up", "0755"),
        "devcontainer-check.py": ("devcontainer-check", "0755"),
        "agent-install.sh": ("agent-install", "0644"),
        "status.py": ("status", "0755"),
        "devcontainer-hash.py": ("devcontainer-hash", "0755"),
        "idle-monitor.sh": ("idle-monitor", "0755"),
        "git-askpass.sh": ("git-askpass", "0755"),
        "claude-config.py": ("claude-config", "0755"),
        "container-env.py": ("container-env", "0755"),
        "ttyd-run.sh": ("ttyd-run", "0755"),
        "ttyd-session.sh": ("ttyd-session", "0755"),
        "agent-hook.sh": ("hook/agent-hook", "0755"),
        "agent-hook.js": ("hook/agent-hook.js", "0644"),
        # Sessions (issue 15, H5): the VM command, its JSON helper, the in-container launcher.
        "session.sh": ("session", "0755"),
        "session-data.py": ("session-data", "0755"),
        "session-agent.sh": ("hook/session-agent", "0755"),
    }
    if prebuild:
        scripts["prebuild-seal.sh"] = ("prebuild-seal", "0700")
    for template, (target, mode) in scripts.items():
        files.append(
            {"path": f"{LIB_DIR}/{target}", "permissions": mode,
             "content": strip_comments(render(f"scripts/{template}"))}
        )  # fmt: skip
    files.append(
        {"path": f"{LIB_DIR}/self-delete", "permissions": "0700",
         "content": inputs.self_delete_script}
    )  # fmt: skip
    files.append(
        {"path": f"{LIB_DIR}/metadata-guard.nft", "permissions": "0644",
         "content": render("metadata-guard.nft")}
    )  # fmt: skip
    files.append(
        {"path": f"{LIB_DIR}/claude-hooks.json", "permissions": "0644",
         "content": render("claude-hooks.json")}
    )  # fmt: skip
    if agent.name != "claude":
        files.extend(agent_files(agent, env, context))
    files.append(
        {"path": f"{LIB_DIR}/devcontainer.json", "permissions": "0644",
         "content": render("devcontainer.json")}
    )  # fmt: skip
    units = ["bivy-metadata-guard.service", "bivy-bootstrap.service", "bivy-idle.service",
             "bivy-idle.timer", "bivy-lifetime.service", "bivy-lifetime.timer",
             "bivy-ttyd.service"]  # fmt: skip
    if backup is not None:
        units += ["bivy-backup.service", "bivy-backup.timer"]
        files.append(
            {"path": f"{ETC_DIR}/backup.env", "permissions": "0600",
             "content": _env_file(_backup_env(backup, agent), "backup")}
        )  # fmt: skip
        for script in sorted((directory / "backup").glob("*.sh")):
            files.append(
                {"path": f"{LIB_DIR}/{script.stem}", "permissions": "0755",
                 "content": strip_comments(render(f"backup/{script.name}"))}
            )  # fmt: skip
    for unit in units:
        files.append(
            {"path": f"/etc/systemd/system/{unit}", "permissions": "0644",
             "content": render(f"systemd/{unit}")}
        )  # fmt: skip
    toolkit = None
    if layout != "files":
        files.append(
            {"path": f"{LIB_DIR}/toolkit-install", "permissions": "0755",
             "content": strip_comments(render("scripts/toolkit-install.py"))}
        )  # fmt: skip
        packed = toolkit_files(files, layout)
        files = [f for f in files if all(f is not p for p in packed)]
        toolkit = pack_toolkit(packed)
        toolkit_sha256 = hashlib.sha256(toolkit).hexdigest()
        if layout == "split":
            workspace_env["BIVY_TOOLKIT_SHA256"] = toolkit_sha256
            assert files[0]["path"] == f"{ETC_DIR}/workspace.env"
            files[0]["content"] = _env_file(workspace_env, "workspace")
        if not inputs.gzip_base64_ok:
            gzip_entries(files)
        if layout == "inline":
            files.append(
                {"path": f"{STATE_DIR}/{TOOLKIT_NAME}", "permissions": "0600", "encoding": "b64",
                 "content": base64.b64encode(toolkit).decode()}
            )  # fmt: skip
            context["toolkit_sha256"] = toolkit_sha256
    cloud_config = env.get_template("cloud-config.yaml.j2").render(
        context,
        files=files,
        ssh_authorized_key=inputs.ssh_authorized_key,
        host_key_private=inputs.host_key_private,
        host_key_public=inputs.host_key_public,
    )
    return cloud_config, toolkit


def _backup_env(backup: BackupInputs, agent: Agent) -> dict[str, str]:
    env = {
        "RESTIC_REPOSITORY": backup.repository,
        "RESTIC_PASSWORD": backup.password,
        **backup.keys,
        "BIVY_BACKUP_INTERVAL_MINUTES": str(backup.interval_minutes),
        "BIVY_BACKUP_INCLUDE_UNCOMMITTED": "1" if backup.include_uncommitted else "0",
    }
    if agent.name != "claude":  # the backups keep the agent's config dir (Claude's by default)
        env["BIVY_AGENT_DIR"] = f"{STATE_DIR}/{agent.name}"
    return env


def render_user_data(inputs: UserDataInputs) -> RenderedUserData:
    """Render in the first layout that fits the provider's limit: ``files``, then ``inline``,
    then ``split`` (the module docstring); each plain, else base64(gzip) where the provider's
    datasource decodes that.

    Raises ``InvalidInput`` when not even stage 1 fits.
    """
    expanded = ""
    size = 0
    for layout in LAYOUTS:
        config, toolkit = _render(inputs, layout)
        expanded = expanded or config
        fitted = fit(config, inputs.user_data_limit, inputs.gzip_base64_ok)
        if fitted is None:
            size = len(config.encode())
            continue
        data, compressed = fitted
        return RenderedUserData(
            data,
            expanded,
            compressed=compressed,
            size=len(data.encode()),
            layout=layout,
            toolkit=toolkit if layout == "split" else None,
            toolkit_sha256=hashlib.sha256(toolkit).hexdigest() if toolkit else "",
            sent_config=config,
        )
    raise InvalidInput(
        f"The user data is {size} bytes even without Bivy's tools; "
        f"{inputs.provider} accepts {inputs.user_data_limit}",
        hint="Shorten the backup settings or the agent credentials.",
    )


def new_ttyd_password() -> str:
    """A fresh web-terminal password (URL-safe, 32 characters)."""
    return secrets.token_urlsafe(24)
