"""Cloud-init user data for workspace VMs: the renderer (:mod:`app.cloudinit.render`), the shared
paths and template environment (``templates``), the agent's files (``agent_files``) and the
toolkit archive (``toolkit``)."""

from app.cloudinit.agent_files import (
    render_session_agent,
)
from app.cloudinit.render import (
    BackupInputs,
    RenderedUserData,
    UserDataInputs,
    new_ttyd_password,
    render_cloud_config,
    render_user_data,
)
from app.cloudinit.templates import (
    CLAUDE_PACKAGE,
    CONTAINER_AGENT_ENV,
    CONTAINER_CLAUDE_DIR,
    CONTAINER_HOOK_DIR,
    CONTAINER_STATE_DIR,
    DEVCONTAINER_CLI,
    ETC_DIR,
    EXPIRY_WARNING_SECONDS,
    GIT_USERNAME,
    METADATA_IPV4,
    METADATA_IPV6,
    NODE_MAJOR,
    PRUNE_NAMES,
    STATE_DIR,
    TTYD_PORT,
    template_dir,
    yaml_quote,
)
from app.cloudinit.toolkit import (
    LIB_DIR,
    STAGE1,
    TOOLKIT_NAME,
    pack_toolkit,
)

__all__ = [
    "CLAUDE_PACKAGE",
    "CONTAINER_AGENT_ENV",
    "CONTAINER_CLAUDE_DIR",
    "CONTAINER_HOOK_DIR",
    "CONTAINER_STATE_DIR",
    "DEVCONTAINER_CLI",
    "ETC_DIR",
    "EXPIRY_WARNING_SECONDS",
    "GIT_USERNAME",
    "LIB_DIR",
    "METADATA_IPV4",
    "METADATA_IPV6",
    "NODE_MAJOR",
    "PRUNE_NAMES",
    "STAGE1",
    "STATE_DIR",
    "TOOLKIT_NAME",
    "TTYD_PORT",
    "BackupInputs",
    "RenderedUserData",
    "UserDataInputs",
    "new_ttyd_password",
    "pack_toolkit",
    "render_cloud_config",
    "render_session_agent",
    "render_user_data",
    "template_dir",
    "yaml_quote",
]
