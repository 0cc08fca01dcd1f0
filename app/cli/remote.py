"""``bivy ssh``: commands on a workspace's VM."""

from __future__ import annotations

import argparse
import asyncio

from app.cli.base import (
    CliContext,
    Command,
    SubParsers,
)

# -- ssh (tunnel engineer) ------------------------------------------------------------------------


def _add_ssh_parser(sub: SubParsers) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(
        "ssh",
        help="open a shell on a workspace's VM (OpenSSH, pinned host key)",
        description="Log in to the workspace's VM as 'dev' with OpenSSH, or run COMMAND there. "
        "Also makes `ssh bivy-NAME` work from any terminal and from VS Code Remote-SSH.",
    )
    parser.add_argument("name", help="workspace name")
    parser.add_argument(
        "remote", nargs=argparse.REMAINDER, metavar="-- COMMAND", help="run this instead of a shell"
    )
    return parser


async def _cmd_ssh(args: argparse.Namespace, ctx: CliContext) -> int:
    import shutil
    import subprocess

    from app.errors import NotFound, SSHError
    from app.services.registry import Registry
    from app.services.sshconfig import SshConfigManager, SshHostEntry
    from app.settings import SecretKeys

    record = await Registry().aget(args.name)
    if record is None:
        raise NotFound(
            f"no workspace named {args.name!r} was created by this installation of Bivy",
            hint="`bivy ls` lists the workspaces",
        )
    if not record.ipv4 or not record.host_public_key:
        raise SSHError(
            f"workspace {args.name!r} has no address or pinned host key yet",
            hint="Wait until it is running (`bivy ls`), then try again",
        )
    private_key = await ctx.secrets.aget(SecretKeys.SSH_PRIVATE_KEY)
    if not private_key:
        raise SSHError("this installation has no SSH key in the keychain")
    ssh = shutil.which("ssh")
    if ssh is None:
        raise SSHError(
            "the OpenSSH client (ssh) is not installed",
            hint="Install it (Debian/Ubuntu: openssh-client; Windows: the OpenSSH Client feature)",
        )
    manager = SshConfigManager()
    entry = SshHostEntry(record.name, record.ipv4, record.host_public_key, record.ssh_port)
    await asyncio.to_thread(manager.add, entry, private_key)
    remote = list(args.remote)
    if remote[:1] == ["--"]:
        remote = remote[1:]
    argv = [ssh, *manager.ssh_command(record.name, remote)[1:]]
    # ssh owns the terminal; its exit status (255 = ssh itself failed) is ours.
    return await asyncio.to_thread(subprocess.call, argv)


COMMANDS = [Command("ssh", _add_ssh_parser, _cmd_ssh)]
