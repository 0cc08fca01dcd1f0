"""``ssh bivy-<name>`` for terminals and VS Code: a Bivy-owned include file plus one marked line.

Layout (all Bivy's own files are 0600)::

    ~/.ssh/config                 the user's; Bivy adds ONE marked block at the top:
                                      # >>> bivy (managed by Bivy …) >>>
                                      Include "~/.ssh/bivy/config"
                                      # <<< bivy <<<
    ~/.ssh/bivy/config            generated: one ``Host bivy-<name>`` block per workspace
    ~/.ssh/bivy/known_hosts       generated: ``bivy-<name> ssh-ed25519 …`` (the pinned keys)
    ~/.ssh/bivy/hosts.json        the entries the two files are generated from
    <data dir>/ssh/id_ed25519     the install's private key, written from the keychain on demand

Why a key file at all: Bivy keeps secrets in the keychain, but OpenSSH (and VS Code Remote-SSH,
which runs it) can only read a key from a file or an agent. An agent is not always running (the
Windows service is off by default), keys added with a lifetime silently vanish under VS Code, and
any process of the user can use an agent just as it can read a 0600 file. So the least bad
option is a 0600 file in a 0700 directory of Bivy's data dir, written only when an entry is
added (or ``bivy ssh`` runs) and deleted with the last entry. The keychain stays the source.

The block sits at the top because an ``Include`` after a ``Host`` line would only apply to that
host. Every write is atomic (temp file, fsync, rename, fsync of the directory), idempotent (no
write when nothing changes), keeps the rest of the user's file byte for byte (CRLF included), and
follows a symlinked ~/.ssh/config to its target instead of replacing the link.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import stat
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import asyncssh

from app.domain import validate_workspace_name
from app.errors import BivyError, InvalidInput
from app.services.registry import WorkspaceRecord
from app.settings import SecretKeys, SecretStore, data_dir

BLOCK_BEGIN = "# >>> bivy (managed by Bivy; removed when its last workspace goes) >>>"
BLOCK_END = "# <<< bivy <<<"
_TMP_PREFIX = ".bivy-tmp-"
_HOST_RE = re.compile(r"^[A-Za-z0-9.:_-]{1,253}$")  # IPv4, IPv6 or a DNS name; nothing else


def host_alias(workspace: str) -> str:
    """The name users type: ``ssh bivy-<workspace>``."""
    return f"bivy-{workspace}"


@dataclass(frozen=True)
class SshHostEntry:
    """One workspace as OpenSSH should reach it.

    Attributes:
        name: the workspace name; host: its IP address; port: sshd's port.
        user: the login (``dev``); host_public_key: the pinned ``ssh-ed25519 AAAA…`` key.
    """

    name: str
    host: str
    host_public_key: str
    port: int = 22
    user: str = "dev"

    def validated(self) -> SshHostEntry:
        """This entry with a normalised key, or ``InvalidInput`` (nothing odd reaches the file)."""
        try:
            validate_workspace_name(self.name)
        except ValueError as exc:
            raise InvalidInput(f"bad workspace name {self.name!r}: {exc}") from None
        if not _HOST_RE.match(self.host):
            raise InvalidInput(f"bad host address {self.host!r} for workspace {self.name!r}")
        if not 0 < self.port < 65536:
            raise InvalidInput(f"bad SSH port {self.port} for workspace {self.name!r}")
        if not re.match(r"^[a-z_][a-z0-9_-]{0,31}$", self.user):
            raise InvalidInput(f"bad user name {self.user!r} for workspace {self.name!r}")
        try:
            key = asyncssh.import_public_key(self.host_public_key.strip())
        except (asyncssh.KeyImportError, ValueError):
            raise InvalidInput(
                f"the pinned host key of workspace {self.name!r} is not an SSH public key"
            ) from None
        # Re-exported without its comment: one token pair, no spaces or newlines to smuggle.
        normalised = " ".join(key.export_public_key("openssh").decode().split()[:2])
        return SshHostEntry(self.name, self.host, normalised, self.port, self.user)


def _fsync_dir(directory: Path) -> None:
    if os.name != "posix":
        return  # Windows cannot open a directory; its rename is durable enough
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes, *, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` atomically: a reader (or a crash) sees old or new, never half.

    A temp file beside it is written, fsync-ed, given ``mode`` and renamed over the target, then
    the directory is fsync-ed so the rename itself survives a power cut.
    """
    directory = path.parent
    fd, tmp_name = tempfile.mkstemp(prefix=_TMP_PREFIX + path.name + ".", dir=directory)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(directory)


def _remove_stale_temps(directory: Path, older_than: float = 60.0) -> None:
    """Delete temp files a crashed earlier write left behind (ours only, and not fresh ones)."""
    if not directory.is_dir():
        return
    cutoff = time.time() - older_than
    for leftover in directory.glob(_TMP_PREFIX + "*"):
        with contextlib.suppress(OSError):
            if leftover.stat().st_mtime < cutoff:
                leftover.unlink()


def _ssh_quote(value: str) -> str:
    # ssh_config takes double-quoted arguments; paths are written with forward slashes.
    if '"' in value or "\n" in value:
        raise InvalidInput(f"path {value!r} cannot be written to an SSH config")
    return f'"{value}"'


class SshConfigManager:
    """Adds and removes ``bivy-<name>`` hosts in the user's OpenSSH configuration.

    Attributes:
        ssh_dir: the user's ~/.ssh; user_config: ~/.ssh/config.
        bivy_dir: Bivy's folder inside it (include file, known_hosts, hosts.json).
        identity_path: where the private key file is written on demand.
    """

    def __init__(
        self,
        ssh_dir: Path | None = None,
        *,
        bivy_dir: Path | None = None,
        identity_path: Path | None = None,
    ) -> None:
        self.ssh_dir = ssh_dir if ssh_dir is not None else Path.home() / ".ssh"
        self.user_config = self.ssh_dir / "config"
        self.bivy_dir = bivy_dir if bivy_dir is not None else self.ssh_dir / "bivy"
        self.include_file = self.bivy_dir / "config"
        self.known_hosts = self.bivy_dir / "known_hosts"
        self.state_file = self.bivy_dir / "hosts.json"
        self.identity_path = (
            identity_path if identity_path is not None else data_dir() / "ssh" / "id_ed25519"
        )

    # -- entries ---------------------------------------------------------------------------

    def entries(self) -> dict[str, SshHostEntry]:
        """The hosts Bivy manages, by workspace name."""
        if not self.state_file.exists():
            return {}
        try:
            raw = json.loads(self.state_file.read_text(encoding="utf-8"))
            return {name: SshHostEntry(**value) for name, value in raw["hosts"].items()}
        except (OSError, ValueError, KeyError, TypeError):
            raise BivyError(
                f"Bivy's SSH host list {self.state_file} is damaged",
                hint="Delete that folder; Bivy rewrites it when a workspace is opened",
            ) from None

    def add(self, entry: SshHostEntry, private_key: str) -> bool:
        """Add or update ``entry`` and write the key file; returns whether anything changed.

        ``private_key`` is the install's OpenSSH private key, from the keychain.
        """
        entry = entry.validated()
        changed = self.write_identity(private_key)
        entries = self.entries()
        if entries.get(entry.name) != entry:
            entries[entry.name] = entry
            self._save(entries)
            changed = True
        changed |= self._regenerate(entries)
        changed |= self.ensure_include()
        return changed

    def remove(self, name: str) -> bool:
        """Remove a workspace's host; the last one also takes the key file and the Include."""
        entries = self.entries()
        changed = entries.pop(name, None) is not None
        if changed:
            self._save(entries)
        changed |= self._regenerate(entries)
        if not entries:
            changed |= self.remove_identity()
            changed |= self.remove_include()
        return changed

    def sync(self, wanted: list[SshHostEntry], private_key: str | None) -> bool:
        """Make the host list exactly ``wanted`` (e.g. after the workspace list refreshed)."""
        changed = False
        names = {e.name for e in wanted}
        for name in list(self.entries()):
            if name not in names:
                changed |= self.remove(name)
        if wanted:
            if private_key is None:
                raise BivyError("the install's SSH key is needed to write SSH entries")
            for entry in wanted:
                changed |= self.add(entry, private_key)
        return changed

    def _save(self, entries: dict[str, SshHostEntry]) -> None:
        self._ensure_bivy_dir()
        data = {"hosts": {name: asdict(e) for name, e in sorted(entries.items())}}
        atomic_write_bytes(self.state_file, (json.dumps(data, indent=2) + "\n").encode())

    def _ensure_bivy_dir(self) -> None:
        self.ssh_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.bivy_dir.mkdir(mode=0o700, exist_ok=True)

    def render_include(self, entries: dict[str, SshHostEntry]) -> str:
        """The text of ~/.ssh/bivy/config for ``entries``."""
        lines = [
            "# Generated by Bivy: edits are overwritten. One block per workspace.",
            "",
        ]
        identity = _ssh_quote(self.identity_path.as_posix())
        known = _ssh_quote(self.known_hosts.as_posix())
        for name, entry in sorted(entries.items()):
            lines += [
                f"Host {host_alias(name)}",
                f"    HostName {entry.host}",
                f"    Port {entry.port}",
                f"    User {entry.user}",
                f"    IdentityFile {identity}",
                "    IdentitiesOnly yes",
                f"    UserKnownHostsFile {known}",
                f"    HostKeyAlias {host_alias(name)}",
                "    StrictHostKeyChecking yes",
                "    UpdateHostKeys no",
                "    CheckHostIP no",
                "    ServerAliveInterval 15",
                "    ServerAliveCountMax 4",
                "",
            ]
        return "\n".join(lines)

    def render_known_hosts(self, entries: dict[str, SshHostEntry]) -> str:
        # Keyed by HostKeyAlias, so a reused IP address never matches another VM's key.
        return "".join(
            f"{host_alias(name)} {entry.host_public_key}\n"
            for name, entry in sorted(entries.items())
        )

    def _regenerate(self, entries: dict[str, SshHostEntry]) -> bool:
        changed = False
        if not entries:
            for path in (self.include_file, self.known_hosts, self.state_file):
                if path.exists():
                    path.unlink()
                    changed = True
            return changed
        self._ensure_bivy_dir()
        _remove_stale_temps(self.bivy_dir)
        for path, text in (
            (self.known_hosts, self.render_known_hosts(entries)),
            (self.include_file, self.render_include(entries)),
        ):
            data = text.encode()
            if not path.exists() or path.read_bytes() != data:
                atomic_write_bytes(path, data)
                changed = True
        return changed

    # -- the key file ----------------------------------------------------------------------

    def write_identity(self, private_key: str) -> bool:
        """Write the key file (0600, in a 0700 dir) unless it already holds this key."""
        try:
            asyncssh.import_private_key(private_key)
        except (asyncssh.KeyImportError, ValueError):
            raise BivyError("the install's SSH key cannot be read") from None
        data = private_key.encode()
        if not data.endswith(b"\n"):
            data += b"\n"  # OpenSSH refuses a key file without its final newline
        directory = self.identity_path.parent
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        if os.name == "posix":
            os.chmod(directory, 0o700)
        if self.identity_path.exists():
            current = self.identity_path.stat()
            if self.identity_path.read_bytes() == data and stat.S_IMODE(current.st_mode) == 0o600:
                return False
        atomic_write_bytes(self.identity_path, data, mode=0o600)
        return True

    def remove_identity(self) -> bool:
        if not self.identity_path.exists():
            return False
        self.identity_path.unlink()
        return True

    # -- the marked block in ~/.ssh/config -------------------------------------------------

    def _target(self) -> Path:
        # A dotfile manager's symlink stays a symlink: write where it points.
        path = self.user_config
        return Path(os.path.realpath(path)) if path.is_symlink() else path

    def block(self, newline: str = "\n") -> str:
        """The marked block Bivy puts at the top of ~/.ssh/config."""
        include = f"Include {_ssh_quote(self.include_file.as_posix())}"
        return newline.join([BLOCK_BEGIN, include, BLOCK_END]) + newline

    @staticmethod
    def _find_block(content: bytes) -> tuple[int, int] | None:
        """(start, end) of the marked block including its last newline, or None."""
        begin = content.find(BLOCK_BEGIN.encode())
        if begin < 0:
            if BLOCK_END.encode() in content:
                raise _damaged()
            return None
        if begin > 0 and content[begin - 1 : begin] != b"\n":
            raise _damaged()
        end_marker = content.find(BLOCK_END.encode(), begin)
        if end_marker < 0:
            raise _damaged()
        end = end_marker + len(BLOCK_END)
        if content[end : end + 2] == b"\r\n":
            end += 2
        elif content[end : end + 1] == b"\n":
            end += 1
        return begin, end

    def ensure_include(self) -> bool:
        """Put the marked Include block at the top of ~/.ssh/config; returns whether it wrote."""
        self.ssh_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        target = self._target()
        content = target.read_bytes() if target.exists() else b""
        newline = "\r\n" if b"\r\n" in content else "\n"
        block = self.block(newline).encode()
        found = self._find_block(content)
        if found is None:
            updated = block + content
        else:
            start, end = found
            if content[start:end] == block:
                return False
            updated = content[:start] + block + content[end:]
        mode = stat.S_IMODE(target.stat().st_mode) if target.exists() else 0o600
        _remove_stale_temps(target.parent)
        atomic_write_bytes(target, updated, mode=mode)
        return True

    def remove_include(self) -> bool:
        """Take the marked block out again, leaving every other byte as it was."""
        target = self._target()
        if not target.exists():
            return False
        content = target.read_bytes()
        found = self._find_block(content)
        if found is None:
            return False
        start, end = found
        mode = stat.S_IMODE(target.stat().st_mode)
        atomic_write_bytes(target, content[:start] + content[end:], mode=mode)
        return True

    def ssh_command(self, name: str, command: list[str] | None = None) -> list[str]:
        """The ``ssh`` argv for ``bivy ssh NAME [-- cmd]``: only Bivy's file, not the user's."""
        # "--" before the host: nothing after it is read as an ssh option; the command's words
        # are joined by ssh and run by the remote shell, as with plain ssh.
        return ["ssh", "-F", self.include_file.as_posix(), "--", host_alias(name), *(command or [])]


def _damaged() -> BivyError:
    return BivyError(
        "the Bivy block in ~/.ssh/config is damaged (one of its marker lines is missing)",
        hint=f"Remove the lines between '{BLOCK_BEGIN}' and '{BLOCK_END}' by hand",
    )


async def add_workspace(record: WorkspaceRecord, secrets: SecretStore) -> bool:
    """Add ``ssh bivy-<name>`` for a registry record (call once its address is known).

    Returns False (and changes nothing) while the record has no address or pinned key yet.
    """
    if not record.ipv4 or not record.host_public_key:
        return False
    private_key = await secrets.aget(SecretKeys.SSH_PRIVATE_KEY)
    if not private_key:
        return False
    entry = SshHostEntry(record.name, record.ipv4, record.host_public_key, record.ssh_port)
    return await asyncio.to_thread(SshConfigManager().add, entry, private_key)


async def remove_workspace(name: str) -> bool:
    """Remove ``bivy-<name>`` (the last one also removes the key file and the Include line)."""
    return await asyncio.to_thread(SshConfigManager().remove, name)
