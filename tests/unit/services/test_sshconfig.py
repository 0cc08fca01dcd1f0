"""The ~/.ssh/config edit: idempotent, byte-for-byte preservation, atomic, and OpenSSH reads it."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from app.errors import BivyError, InvalidInput
from app.services import sshconfig
from app.services.sshconfig import BLOCK_BEGIN, BLOCK_END, SshConfigManager, SshHostEntry
from tests.support.sshd import new_keypair

USER_CONFIG = (
    b"# my own settings\n"
    b"Host github.com\n"
    b"    IdentityFile ~/.ssh/id_github\n"
    b"\n"
    b"Host *\n"
    b"\tServerAliveInterval 30   \n"  # tabs and trailing spaces must survive
    b"# no newline at the end"
)


@pytest.fixture
def keys() -> tuple[str, str]:
    return new_keypair()


@pytest.fixture
def manager(tmp_path: Path) -> SshConfigManager:
    return SshConfigManager(tmp_path / "home" / ".ssh")


def entry(host_key: str, name: str = "demo", host: str = "203.0.113.7") -> SshHostEntry:
    return SshHostEntry(name=name, host=host, host_public_key=host_key)


def write_user_config(manager: SshConfigManager, content: bytes = USER_CONFIG) -> None:
    manager.ssh_dir.mkdir(parents=True, exist_ok=True)
    manager.user_config.write_bytes(content)
    manager.user_config.chmod(0o644)


def test_add_writes_block_include_known_hosts_and_key(
    manager: SshConfigManager, keys: tuple[str, str]
) -> None:
    client_private, _ = keys
    _, host_public = new_keypair()
    write_user_config(manager)
    assert manager.add(entry(host_public), client_private) is True

    content = manager.user_config.read_bytes()
    block = manager.block().encode()
    assert content.startswith(block)  # at the top: an Include after a Host would be scoped
    assert content[len(block) :] == USER_CONFIG
    assert stat.S_IMODE(manager.user_config.stat().st_mode) == 0o644  # mode kept

    include = manager.include_file.read_text()
    assert "Host bivy-demo\n" in include
    assert "HostName 203.0.113.7" in include
    assert "User dev" in include
    assert "StrictHostKeyChecking yes" in include
    assert f'UserKnownHostsFile "{manager.known_hosts.as_posix()}"' in include
    assert f'IdentityFile "{manager.identity_path.as_posix()}"' in include
    assert manager.known_hosts.read_text() == f"bivy-demo {host_public.split(' ')[0]} " + (
        host_public.split(" ")[1] + "\n"
    )
    assert manager.identity_path.read_text() == client_private
    assert stat.S_IMODE(manager.identity_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(manager.identity_path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(manager.include_file.stat().st_mode) == 0o600


def test_add_is_idempotent(manager: SshConfigManager, keys: tuple[str, str]) -> None:
    client_private, _ = keys
    _, host_public = new_keypair()
    write_user_config(manager)
    manager.add(entry(host_public), client_private)
    files = [manager.user_config, manager.include_file, manager.known_hosts, manager.identity_path]
    before = {p: (p.read_bytes(), p.stat().st_ino, p.stat().st_mtime_ns) for p in files}
    assert manager.add(entry(host_public), client_private) is False
    assert manager.ensure_include() is False
    after = {p: (p.read_bytes(), p.stat().st_ino, p.stat().st_mtime_ns) for p in files}
    assert after == before  # not even rewritten with the same bytes
    assert manager.user_config.read_bytes().count(BLOCK_BEGIN.encode()) == 1


def test_entries_added_and_removed_with_workspaces(
    manager: SshConfigManager, keys: tuple[str, str]
) -> None:
    client_private, _ = keys
    _, key_a = new_keypair()
    _, key_b = new_keypair()
    write_user_config(manager)
    manager.add(entry(key_a, "alpha", "198.51.100.1"), client_private)
    manager.add(entry(key_b, "beta", "198.51.100.2"), client_private)
    assert set(manager.entries()) == {"alpha", "beta"}
    assert "Host bivy-alpha" in manager.include_file.read_text()
    assert manager.known_hosts.read_text().count("\n") == 2

    # a new VM for the same workspace (new address and key) replaces the entry
    _, key_a2 = new_keypair()
    assert manager.add(entry(key_a2, "alpha", "198.51.100.9"), client_private)
    assert "198.51.100.1" not in manager.include_file.read_text()
    assert key_a.split()[1] not in manager.known_hosts.read_text()

    assert manager.remove("alpha") is True
    assert "bivy-alpha" not in manager.include_file.read_text()
    assert manager.identity_path.exists()  # beta still needs it
    assert manager.remove("beta") is True
    # the last one takes everything with it: the user's file is exactly what it was
    assert manager.user_config.read_bytes() == USER_CONFIG
    assert not manager.identity_path.exists()
    assert not manager.include_file.exists()
    assert not manager.known_hosts.exists()
    assert manager.remove("beta") is False


def test_crlf_config_keeps_its_line_endings(
    manager: SshConfigManager, keys: tuple[str, str]
) -> None:
    original = b"Host x\r\n    User me\r\n"
    write_user_config(manager, original)
    _, host_public = new_keypair()
    manager.add(entry(host_public), keys[0])
    content = manager.user_config.read_bytes()
    assert content == manager.block("\r\n").encode() + original
    manager.remove("demo")
    assert manager.user_config.read_bytes() == original


def test_missing_config_is_created_private(
    manager: SshConfigManager, keys: tuple[str, str]
) -> None:
    _, host_public = new_keypair()
    manager.add(entry(host_public), keys[0])
    assert manager.user_config.read_bytes() == manager.block().encode()
    assert stat.S_IMODE(manager.user_config.stat().st_mode) == 0o600
    assert stat.S_IMODE(manager.ssh_dir.stat().st_mode) == 0o700


def test_symlinked_config_stays_a_symlink(
    manager: SshConfigManager, keys: tuple[str, str], tmp_path: Path
) -> None:
    dotfiles = tmp_path / "dotfiles" / "ssh_config"
    dotfiles.parent.mkdir()
    dotfiles.write_bytes(USER_CONFIG)
    manager.ssh_dir.mkdir(parents=True)
    manager.user_config.symlink_to(dotfiles)
    _, host_public = new_keypair()
    manager.add(entry(host_public), keys[0])
    assert manager.user_config.is_symlink()
    assert dotfiles.read_bytes() == manager.block().encode() + USER_CONFIG


def test_block_moved_by_the_user_is_updated_in_place(
    manager: SshConfigManager, keys: tuple[str, str]
) -> None:
    stale = f"{BLOCK_BEGIN}\nInclude /old/place\n{BLOCK_END}\n".encode()
    write_user_config(manager, b"Host a\n" + stale + b"Host b\n")
    _, host_public = new_keypair()
    manager.add(entry(host_public), keys[0])
    assert manager.user_config.read_bytes() == b"Host a\n" + manager.block().encode() + b"Host b\n"


def test_damaged_block_is_refused_untouched(
    manager: SshConfigManager, keys: tuple[str, str]
) -> None:
    damaged = f"{BLOCK_BEGIN}\nInclude x\nHost mine\n".encode()
    write_user_config(manager, damaged)
    _, host_public = new_keypair()
    with pytest.raises(BivyError, match="damaged"):
        manager.add(entry(host_public), keys[0])
    assert manager.user_config.read_bytes() == damaged


@pytest.mark.parametrize(
    "bad",
    [
        {"host": "203.0.113.7\n    ProxyCommand touch /tmp/pwned"},
        {"host": "evil host"},
        {"name": "Bad Name"},
        {"host_public_key": "ssh-ed25519 AAAA\nHost *"},
        {"port": 0},
    ],
)
def test_values_that_could_inject_config_are_refused(
    manager: SshConfigManager, keys: tuple[str, str], bad: dict[str, object]
) -> None:
    _, host_public = new_keypair()
    fields: dict[str, object] = {
        "name": "demo",
        "host": "203.0.113.7",
        "host_public_key": host_public,
    }
    fields.update(bad)
    with pytest.raises(InvalidInput):
        manager.add(SshHostEntry(**fields), keys[0])  # type: ignore[arg-type]
    assert not manager.include_file.exists()


def test_failed_rename_leaves_config_intact(
    manager: SshConfigManager, keys: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    write_user_config(manager)
    _, host_public = new_keypair()
    manager.add(entry(host_public), keys[0])
    with_block = manager.user_config.read_bytes()

    def crash(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(sshconfig.os, "replace", crash)
    with pytest.raises(OSError):
        manager.remove("demo")
    monkeypatch.undo()
    assert manager.user_config.read_bytes() == with_block
    assert not list(manager.ssh_dir.glob(".bivy-tmp-*"))  # an exception cleans its temp file


def test_crash_between_write_and_rename_keeps_old_file(
    manager: SshConfigManager, keys: tuple[str, str], tmp_path: Path
) -> None:
    """A process killed after writing the temp file and before the rename changes nothing."""
    write_user_config(manager)
    script = textwrap.dedent(
        f"""
        import os
        from pathlib import Path
        from app.services import sshconfig

        def die(src, dst):
            assert Path(src).read_bytes().startswith(b"# >>> bivy")  # fully written, fsync-ed
            os._exit(9)  # like a power cut: no cleanup, no finally

        sshconfig.os.replace = die
        sshconfig.SshConfigManager(Path({str(manager.ssh_dir)!r})).ensure_include()
        """
    )
    run = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).parents[3])
    assert run.returncode == 9
    assert manager.user_config.read_bytes() == USER_CONFIG
    leftovers = list(manager.ssh_dir.glob(".bivy-tmp-*"))
    assert len(leftovers) == 1  # the half-done write, never seen under the real name

    # the next run succeeds, and clears the stale temp file once it is old
    old = time.time() - 3600
    os.utime(leftovers[0], (old, old))
    _, host_public = new_keypair()
    manager.add(entry(host_public), keys[0])
    assert manager.user_config.read_bytes() == manager.block().encode() + USER_CONFIG
    assert not list(manager.ssh_dir.glob(".bivy-tmp-*"))


def test_openssh_resolves_the_host(manager: SshConfigManager, keys: tuple[str, str]) -> None:
    """The real ``ssh -G`` reading the user's config follows the Include to our Host block."""
    write_user_config(manager)
    _, host_public = new_keypair()
    manager.add(entry(host_public), keys[0])
    resolved = subprocess.run(
        ["ssh", "-G", "-F", str(manager.user_config), "bivy-demo"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    options = dict(line.split(" ", 1) for line in resolved if " " in line)
    assert options["hostname"] == "203.0.113.7"
    assert options["user"] == "dev"
    assert options["port"] == "22"
    assert options["stricthostkeychecking"] == "true"
    assert options["hostkeyalias"] == "bivy-demo"
    assert options["identityfile"] == manager.identity_path.as_posix()
    assert options["userknownhostsfile"] == manager.known_hosts.as_posix()
    assert options["identitiesonly"] == "yes"
    # the user's own hosts still resolve as before
    github = subprocess.run(
        ["ssh", "-G", "-F", str(manager.user_config), "github.com"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "identityfile ~/.ssh/id_github" in github


async def test_workspace_helpers_follow_the_registry_record() -> None:
    from app.services.registry import WorkspaceRecord
    from app.services.sshconfig import add_workspace, remove_workspace
    from app.settings import SecretKeys, SecretStore

    client_private, _ = new_keypair()
    _, host_public = new_keypair()
    secrets = SecretStore()
    record = WorkspaceRecord(name="demo", account="h", provider="hetzner", host_public_key="")
    assert await add_workspace(record, secrets) is False  # no address or key yet
    record = record.model_copy(update={"ipv4": "203.0.113.9", "host_public_key": host_public})
    assert await add_workspace(record, secrets) is False  # no install key in the keychain yet
    secrets.set(SecretKeys.SSH_PRIVATE_KEY, client_private)
    assert await add_workspace(record, secrets) is True
    manager = SshConfigManager()  # the real defaults: ~/.ssh under the test's HOME
    assert manager.user_config.read_bytes() == manager.block().encode()
    assert "HostName 203.0.113.9" in manager.include_file.read_text()
    assert await remove_workspace("demo") is True
    assert manager.user_config.read_bytes() == b""
    assert not manager.identity_path.exists()
