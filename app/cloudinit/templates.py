"""What every renderer of VM files shares: the VM's paths and names, where the templates are,
the jinja2 environment (YAML-quoting ``tojson``) and the comment stripping that keeps the user
data small."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import jinja2

from app.cloudinit.toolkit import LIB_DIR
from app.errors import InvalidInput

__all__ = ["LIB_DIR"]

STATE_DIR = "/var/lib/bivy"
ETC_DIR = "/etc/bivy"
TTYD_PORT = 7681
#: Claude Code, installed from npm inside the devcontainer (the devcontainer feature would need
#: ghcr.io, which some networks cannot reach; npm works wherever its registry does).
CLAUDE_PACKAGE = "@anthropic-ai/claude-code"
DEVCONTAINER_CLI = "@devcontainers/cli@0.89.0"
NODE_MAJOR = 22
EXPIRY_WARNING_SECONDS = 15 * 60
CONTAINER_CLAUDE_DIR = "/bivy/claude"
CONTAINER_STATE_DIR = "/bivy/state"
CONTAINER_HOOK_DIR = "/bivy/hook"
#: The agent's credentials inside the container (sh assignments, readable by its user only).
CONTAINER_AGENT_ENV = "/etc/bivy-agent.env"
GIT_USERNAME = "x-access-token"
#: The metadata services' addresses (Hetzner, DigitalOcean, OVH; Scaleway v4 and v6): they serve
#: the user data, so only root on the host may reach them (metadata-guard.nft).
METADATA_IPV4 = ("169.254.169.254", "169.254.42.42")
METADATA_IPV6 = ("fd00:42::42",)
#: Directory names the idle check does not descend into: changes there are not a person's work.
PRUNE_NAMES = (
    ".git",
    "node_modules",
    ".venv",
    "venv",
    "__pycache__",
    ".mypy_cache",
    ".pytest_cache",
    ".ruff_cache",
    ".tox",
    ".cache",
    ".next",
    ".nuxt",
    ".turbo",
    ".gradle",
    "target",
    "dist",
    "build",
    "coverage",
)
ENV_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
TTYD_PASSWORD_RE = re.compile(r"^[A-Za-z0-9_-]{16,128}$")
PLACEHOLDER = "PLACEHOLDER"


def template_dir() -> Path:
    """cloudinit/ beside the ``app`` package (source tree, or a bundle that keeps that layout),
    else in the PyInstaller bundle's data (``sys._MEIPASS``)."""
    candidates = [Path(__file__).resolve().parents[2] / "cloudinit"]
    bundle = getattr(sys, "_MEIPASS", None)
    if bundle:
        candidates.append(Path(bundle) / "cloudinit")
    for candidate in candidates:
        if (candidate / "cloud-config.yaml.j2").is_file():
            return candidate
    raise InvalidInput(
        "The cloud-init templates are missing from this installation",
        hint=f"Looked in {', '.join(str(c) for c in candidates)}; reinstall Bivy.",
    )


def yaml_quote(value: object) -> str:
    """``value`` as a YAML double-quoted scalar (valid JSON too) that no character can escape.

    Python's JSON escapes quotes, backslashes and C0 controls; on top of that every character
    YAML would treat as a line break or refuses unescaped (C1 controls, U+2028/9, surrogates,
    BOM) is written as an escape, so the value parses back exactly and stays on one line.
    """
    if not isinstance(value, str):
        return json.dumps(value)
    out = []
    for ch in json.dumps(value, ensure_ascii=False):
        code = ord(ch)
        if 0x7F <= code <= 0x9F or code in (0x2028, 0x2029, 0xFEFF) or 0xD800 <= code <= 0xDFFF:
            if 0xD800 <= code <= 0xDFFF:
                raise InvalidInput("A value contains an unpaired surrogate character")
            out.append(f"\\u{code:04x}")
        elif code > 0xFFFF:
            out.append(f"\\U{code:08x}")
        else:
            out.append(ch)
    return "".join(out)


def environment(directory: Path) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(directory)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # noqa: S701 - YAML and shell, not HTML: quoting is explicit
        # Shell uses "{#" (${#array[@]}), so jinja comments get delimiters no script contains.
        comment_start_string="<%#",
        comment_end_string="#%>",
    )
    env.filters["tojson"] = yaml_quote
    return env


def strip_comments(script: str) -> str:
    """A shell or Python script without its comment-only lines (they stay in the source tree):
    the user data must fit the providers' 32 KiB. Keeps the shebang and shellcheck directives;
    the scripts' heredocs hold Python, whose ``#`` lines are comments too."""
    lines = script.splitlines(keepends=True)
    kept = lines[:1]
    for line in lines[1:]:
        text = line.lstrip()
        if text.startswith("#") and not text.startswith("# shellcheck"):
            continue
        kept.append(line)
    return "".join(kept)
