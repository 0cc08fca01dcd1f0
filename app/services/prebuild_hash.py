"""What identifies a prebuild: the repository key and the devcontainer config hash (issue 14).

Both are label values (Hetzner: ``[a-zA-Z0-9]`` at both ends, ``[-_.]`` inside, ≤ 63), so
they are short hex strings. The config hash is computed the same way here (on a local
checkout, to match a prebuild before any VM exists) and on the VM by
``cloudinit/scripts/devcontainer-hash.py`` (to tell whether a VM booted from a prebuild must
rebuild its devcontainer); notes/CONTRACTS2.md defines it and a test runs both on the same trees.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import stat
from pathlib import Path

from app import __version__

__all__ = [
    "LABEL_AGENT",
    "LABEL_CONFIG_HASH",
    "LABEL_PREBUILD",
    "LABEL_VERSION",
    "default_devcontainer_bytes",
    "devcontainer_config_hash",
    "devcontainer_config_hash_at",
    "devcontainer_files",
    "label_value",
    "repo_key",
    "version_label",
]

#: Labels of a prebuild image and of its builder VM (besides ``managed-by=bivy``).
LABEL_PREBUILD = "bivy-prebuild"
LABEL_CONFIG_HASH = "bivy-config-hash"
LABEL_VERSION = "bivy-version"
LABEL_AGENT = "bivy-agent"

HASH_CHARS = 16
DEFAULT_MARKER = b"bivy-default\0"
DEVCONTAINER_FILE = ".devcontainer.json"
DEVCONTAINER_DIR = ".devcontainer"

_LABEL_BAD = re.compile(r"[^a-zA-Z0-9_.-]+")


def repo_key(source: str, branch: str | None) -> str:
    """First 16 hex of sha256(source + "\\0" + branch): the same repository and branch (or
    the default branch: "") always give the same key. ``source`` is the URL as given or the
    absolute path of a local checkout (as ``WorkspaceSpec.repo_url`` holds it)."""
    data = source.encode() + b"\0" + (branch or "").encode()
    return hashlib.sha256(data).hexdigest()[:HASH_CHARS]


def label_value(value: str) -> str:
    """``value`` made a valid label value for every provider: characters outside
    ``[a-zA-Z0-9_.-]`` become ``-``, alphanumeric at both ends, at most 63 characters."""
    cleaned = _LABEL_BAD.sub("-", value)[:63].strip("-_.")
    return cleaned or "none"


def version_label(version: str = __version__) -> str:
    """The app version as a label value (``0.4.1`` → ``0-4-1``; ``+``/``.`` are not allowed
    everywhere)."""
    return label_value(version.replace(".", "-").replace("+", "-"))


def devcontainer_files(root: Path) -> list[str]:
    """The files the hash covers, as POSIX paths relative to ``root``, sorted by their bytes:
    ``.devcontainer.json`` when it is a regular file, and every regular file under
    ``.devcontainer/`` (symbolic links are neither followed nor counted)."""
    found: list[str] = []
    single = root / DEVCONTAINER_FILE
    if _is_regular(single):
        found.append(DEVCONTAINER_FILE)
    folder = root / DEVCONTAINER_DIR
    try:
        is_dir = stat.S_ISDIR(folder.lstat().st_mode)
    except OSError:
        is_dir = False
    if is_dir:
        for current, dirs, files in os.walk(folder, followlinks=False):
            dirs.sort()
            base = Path(current)
            for name in files:
                path = base / name
                if _is_regular(path):
                    found.append(path.relative_to(root).as_posix())
    return sorted(found, key=os.fsencode)


def _is_regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(path.lstat().st_mode)
    except OSError:
        return False


def devcontainer_config_hash(root: Path, *, agent: str = "claude") -> str:
    """The config hash of the checkout at ``root`` (16 hex characters).

    For each file (see ``devcontainer_files``): ``path + "\\0" + sha256(content) + "\\n"``
    into one sha256. A repository without a devcontainer gets Bivy's default one, whose
    rendered bytes go in as ``"bivy-default\\0" + sha256(bytes) + "\\n"``.
    """
    digest = hashlib.sha256()
    files = devcontainer_files(root)
    for relative in files:
        content = (root / relative).read_bytes()
        digest.update(
            os.fsencode(relative) + b"\0" + hashlib.sha256(content).hexdigest().encode() + b"\n"
        )
    if not files:
        default = hashlib.sha256(default_devcontainer_bytes(agent)).hexdigest().encode()
        digest.update(DEFAULT_MARKER + default + b"\n")
    return digest.hexdigest()[:HASH_CHARS]


def devcontainer_config_hash_at(root: Path, rev: str = "HEAD", *, agent: str = "claude") -> str:
    """The config hash of the commit ``rev`` of the checkout at ``root``: what a VM that clones
    that commit computes (regular files only: blobs of mode 100644/100755; links and
    submodules are not counted). ``OSError`` when git cannot tell."""
    listing = _git(root, "ls-tree", "-r", "-z", "--full-tree", rev, "--",
                   DEVCONTAINER_DIR, DEVCONTAINER_FILE)  # fmt: skip
    blobs: dict[bytes, str] = {}
    for entry in listing.split(b"\0"):
        if not entry:
            continue
        meta, _, path = entry.partition(b"\t")
        mode, kind, sha = meta.split(b" ")
        top_file = path == DEVCONTAINER_FILE.encode()
        if (
            kind == b"blob"
            and mode in (b"100644", b"100755")
            and (top_file or path.startswith(DEVCONTAINER_DIR.encode() + b"/"))
        ):
            blobs[path] = sha.decode()
    digest = hashlib.sha256()
    for path in sorted(blobs):
        content = _git(root, "cat-file", "blob", blobs[path])
        digest.update(path + b"\0" + hashlib.sha256(content).hexdigest().encode() + b"\n")
    if not blobs:
        default = hashlib.sha256(default_devcontainer_bytes(agent)).hexdigest().encode()
        digest.update(DEFAULT_MARKER + default + b"\n")
    return digest.hexdigest()[:HASH_CHARS]


def _git(root: Path, *args: str) -> bytes:
    import subprocess

    try:
        done = subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise OSError(f"git {args[0]} failed: {type(exc).__name__}") from None
    if done.returncode != 0:
        raise OSError(f"git {args[0]} failed: {done.stderr.decode(errors='replace')[:200]}")
    return done.stdout


@functools.lru_cache(maxsize=8)
def default_devcontainer_bytes(agent: str = "claude") -> bytes:
    """The default devcontainer.json exactly as the VM gets it (the file the user data writes
    to ``/usr/local/lib/bivy/devcontainer.json``), rendered with placeholder inputs."""
    import yaml

    from app.cloudinit import LIB_DIR, UserDataInputs, render_cloud_config
    from app.domain import WorkspaceSpec
    from app.providers.local import LocalProvider

    spec = WorkspaceSpec(name="hash", repo_url="https://example.invalid/r.git", agent=agent)
    document = yaml.safe_load(render_cloud_config(UserDataInputs.placeholder(spec, LocalProvider)))
    for entry in document.get("write_files", []):
        if entry.get("path") == f"{LIB_DIR}/devcontainer.json":
            content = entry.get("content", "")
            return content.encode() if isinstance(content, str) else bytes(content)
    raise RuntimeError("the rendered user data has no default devcontainer.json")
