"""``bivy ssh``, ``bivy exec`` and ``bivy wait``: a workspace's VM and its devcontainer.

All three reach the VM with the pinned host key Bivy generated for it, at the address and SSH
port in the registry record (``ssh``/``exec`` through OpenSSH and Bivy's generated ssh config,
``wait`` through asyncssh like the window's status reads).

A command run with ``bivy exec`` or ``bivy ssh NAME -- CMD`` is use of the workspace, but the
VM's idle monitor sees no terminal in it (no pty, no ttyd connection). So the remote command
line starts a small keeper first, on the VM: while the command's shell lives, it keeps the
keep-alive lease (the file the window's "Keep alive" writes) at least ``COMMAND_LEASE_SECONDS``
ahead of the VM's clock, every ``COMMAND_LEASE_REFRESH`` seconds; it never shortens a longer
lease, and once the command has ended the lease runs out within ``COMMAND_LEASE_SECONDS``.
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import sys
import time
from typing import TYPE_CHECKING

from app.cli.base import EXIT_ERROR, EXIT_OK, CliContext, Command, SubParsers
from app.cloudinit import CONTAINER_AGENT_ENV, ETC_DIR, STATE_DIR

if TYPE_CHECKING:
    from app.domain import StatusReport
    from app.services.registry import WorkspaceRecord

#: ``bivy wait`` ran out of time (distinct from 1, "failed", for scripts).
EXIT_TIMEOUT = 2
#: ``bivy exec``: the devcontainer is not up yet (like ``docker run``'s own-failure code).
EXIT_NOT_READY = 125

#: Where the VM keeps what ``bivy exec`` needs (root-only files written by the bootstrap).
VM_WORKSPACE_ENV = f"{ETC_DIR}/workspace.env"
VM_CONTAINER_ENV = f"{STATE_DIR}/container.env"
#: The devcontainer CLI on the VM (the agent's credentials inside the container, in
#: ``CONTAINER_AGENT_ENV``, are loaded as the web terminal does).
DEVCONTAINER = "devcontainer"
#: The keep-alive lease on the VM (epoch seconds; dev may write it; the idle monitor counts a
#: future one as activity; app.services.status.LEASE_PATH is the same file).
VM_LEASE = f"{STATE_DIR}/lease"
#: While an exec/ssh command runs, the lease is kept this many seconds ahead of the VM's clock…
COMMAND_LEASE_SECONDS = 120
#: …and renewed this often (well inside COMMAND_LEASE_SECONDS).
COMMAND_LEASE_REFRESH = 30

# -- shared ---------------------------------------------------------------------------------------


async def _record(name: str) -> WorkspaceRecord:
    from app.services.registry import Registry

    return await Registry().arequire(name)


async def _openssh(
    ctx: CliContext, name: str, remote: list[str], *, tty: bool | None = None
) -> list[str]:
    """The OpenSSH argv for workspace ``name`` (its entry in Bivy's ssh config is refreshed).

    ``tty``: True forces a pty (``-t``), False none (``-T``), None leaves it to ssh.
    """
    import shutil

    from app.errors import SSHError
    from app.services.sshconfig import SshConfigManager, SshHostEntry
    from app.settings import SecretKeys

    record = await _record(name)
    if not record.ipv4 or not record.host_public_key:
        raise SSHError(
            f"workspace {name!r} has no address or pinned host key yet",
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
    argv = [ssh, *manager.ssh_command(record.name, remote)[1:]]
    if tty is not None:
        argv.insert(1, "-t" if tty else "-T")
    return argv


def _command_words(words: list[str]) -> list[str]:
    return words[1:] if words[:1] == ["--"] else words


def lease_keeper() -> str:
    """Shell text put before a remote command: keeps the VM's keep-alive lease ahead while the
    command's shell lives (see the module docstring).

    A background subshell (POSIX sh, runs as dev) with its stdio on /dev/null, so it neither
    reads the command's input nor holds SSH's channel open after the command ends; it watches
    ``/proc/$$`` (the command's shell, which may become a root ``sudo``: no signal permission
    needed) and ends by itself at most ``COMMAND_LEASE_REFRESH`` s after it. A lease it cannot
    write (not created yet while the VM bootstraps, which counts as activity anyway) is skipped
    silently. Ends with ``&``, so a command may follow after a space."""
    lease = shlex.quote(VM_LEASE)
    return (
        "( while [ -d /proc/$$ ]; do "
        f"t=$(( $(date +%s) + {int(COMMAND_LEASE_SECONDS)} )); "
        f"c=$(cat {lease} 2>/dev/null); "
        'case "$c" in ""|*[!0-9]*) c=0;; esac; '
        f'[ "$c" -ge "$t" ] || echo "$t" >{lease}; '
        f"sleep {int(COMMAND_LEASE_REFRESH)}; "
        "done ) </dev/null >/dev/null 2>&1 &"
    )


async def _call(argv: list[str]) -> int:
    import subprocess

    # ssh owns the terminal; its exit status (255 = ssh itself failed) is ours.
    return await asyncio.to_thread(subprocess.call, argv)


# -- ssh (tunnel engineer) ------------------------------------------------------------------------


def _add_ssh_parser(sub: SubParsers) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(
        "ssh",
        help="open a shell on a workspace's VM, or run one command there (OpenSSH, pinned key)",
        description="Log in to the workspace's VM as 'dev' with OpenSSH, or run COMMAND there "
        "(its words are joined and run by the VM's shell, as with plain ssh; the exit status is "
        "passed through; while it runs, the VM does not count as idle). Also makes `ssh bivy-NAME` "
        "work from any terminal and from VS Code Remote-SSH.",
    )
    parser.add_argument("name", help="workspace name")
    parser.add_argument(
        "remote", nargs=argparse.REMAINDER, metavar="-- COMMAND", help="run this instead of a shell"
    )
    return parser


async def _cmd_ssh(args: argparse.Namespace, ctx: CliContext) -> int:
    words = _command_words(list(args.remote))
    # A login shell has a pty (activity already); a command gets the lease keeper in front
    # (ssh joins the words with spaces, so the VM's shell runs "KEEPER & WORDS...").
    remote = [lease_keeper(), *words] if words else []
    return await _call(await _openssh(ctx, args.name, remote))


# -- exec -----------------------------------------------------------------------------------------


def _add_exec_parser(sub: SubParsers) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(
        "exec",
        help="run a command inside a workspace's devcontainer (as its user, in the repository)",
        description="Run COMMAND inside the workspace's devcontainer through `devcontainer "
        "exec`, as the container's remote user (the agent's), in the repository folder, with "
        "the devcontainer's remoteEnv. Each word is passed as one argument (no shell: use "
        "`-- sh -c '...'` for one). While it runs, the VM does not count as idle. The "
        "command's exit status is bivy's; 125 means the devcontainer is not up yet, 255 that "
        "SSH failed.",
    )
    parser.add_argument("name", help="workspace name")
    parser.add_argument("command", nargs=argparse.REMAINDER, metavar="-- COMMAND")
    return parser


def container_exec_command(words: list[str]) -> str:
    """The command line the VM runs (as dev, through its login shell) for ``bivy exec``.

    It becomes root with ``sudo -n`` (the container id and repository folder are in root-only
    files, and the docker socket is root's), then runs ``devcontainer exec`` with the same
    container, workspace folder and configuration the bootstrap used. Every word is
    ``shlex.quote``d; the script itself is constant (no user value is part of it).
    """
    script = "\n".join(
        [
            "set -e",
            f'. "{VM_WORKSPACE_ENV}"',
            f'if [ ! -r "{VM_CONTAINER_ENV}" ]; then',
            '  echo "bivy: the workspace\'s devcontainer is not up yet" >&2',
            f"  exit {EXIT_NOT_READY}",
            "fi",
            f'. "{VM_CONTAINER_ENV}"',
            'set -- --container-id "$BIVY_CONTAINER_ID" --workspace-folder "$BIVY_REPO_DIR" \\',
            '  ${BIVY_DEVCONTAINER_OVERRIDE:+--override-config "$BIVY_DEVCONTAINER_OVERRIDE"} \\',
            f"  sh -c 'set -a; [ -r {CONTAINER_AGENT_ENV} ] && . {CONTAINER_AGENT_ENV}; "
            'set +a; exec "$@"\' sh "$@"',
            f'exec {shlex.quote(DEVCONTAINER)} exec "$@"',
        ]
    )
    return shlex.join(["sudo", "-n", "--", "sh", "-c", script, "bivy-exec", *words])


async def _cmd_exec(args: argparse.Namespace, ctx: CliContext) -> int:
    from app.errors import InvalidInput

    words = _command_words(list(args.command))
    if not words:
        raise InvalidInput("give the command to run: `bivy exec NAME -- COMMAND [ARG...]`")
    interactive = sys.stdin.isatty() and sys.stdout.isatty()
    remote = f"{lease_keeper()} {container_exec_command(words)}"
    argv = await _openssh(ctx, args.name, [remote], tty=interactive)
    return await _call(argv)


# -- wait -----------------------------------------------------------------------------------------


def _add_wait_parser(sub: SubParsers) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(
        "wait",
        help="follow a workspace's VM until it is ready (or failed)",
        description="Follow the VM's phases (booting, installing, cloning, building, starting, "
        "ready) over SSH and print one line per phase: PHASE SECONDS DETAIL, SECONDS counted "
        "from the VM's first phase (from when `bivy wait` started if the VM has no timings). "
        "Exit status: 0 ready; 1 failed (the error and the log tail on stderr); 2 timed out.",
    )
    parser.add_argument("name", help="workspace name")
    parser.add_argument(
        "--timeout", type=float, default=1800.0, metavar="S", help="give up after S seconds"
    )
    parser.add_argument(
        "--interval", type=float, default=2.0, metavar="S", help="seconds between reads"
    )
    return parser


class _PhasePrinter:
    """Prints each phase once, in the order the VM entered them."""

    def __init__(self, ctx: CliContext, started: float) -> None:
        self.ctx = ctx
        self.started = started
        self.printed: set[str] = set()

    def show(self, report: StatusReport) -> None:
        timings = report.timings
        origin = min(timings.values()) if timings else None
        current = report.phase.value
        entered = sorted(timings.items(), key=lambda kv: kv[1])
        if current not in timings:
            entered.append((current, -1.0))
        for phase, at in entered:
            if phase in self.printed:
                continue
            self.printed.add(phase)
            if origin is not None and at >= 0:
                seconds = at - origin
            else:
                seconds = time.monotonic() - self.started
            detail = report.detail if phase == current else ""
            print(f"{phase} {seconds:.1f} {detail}".rstrip(), file=self.ctx.out, flush=True)


async def _cmd_wait(args: argparse.Namespace, ctx: CliContext) -> int:
    from app.domain import Phase
    from app.errors import BivyError, HostKeyMismatch, SSHError
    from app.services.status import StatusService
    from app.services.tunnels import SSHTarget, TunnelService

    started = time.monotonic()
    deadline = started + max(0.0, args.timeout)
    printer = _PhasePrinter(ctx, started)
    tunnels = TunnelService(ctx.secrets, connect_timeout=10.0)
    status = StatusService(tunnels)
    last_error: BivyError | None = None
    phase = Phase.UNKNOWN
    told_unreachable = False
    try:
        while True:
            record = await _record(args.name)  # read again: the address may only come now
            try:
                tunnel = await tunnels.open(SSHTarget.from_record(record))
                snapshot = await status.read(tunnel)
            except HostKeyMismatch:
                raise
            except SSHError as exc:
                last_error = exc
                await tunnels.close_all()
                if not told_unreachable:
                    told_unreachable = True
                    ctx.note(f"Waiting for workspace {args.name}'s SSH server…")
            else:
                report = snapshot.status
                if report is not None:
                    phase = report.phase
                    printer.show(report)
                    if phase in (Phase.READY, Phase.EXPIRING):
                        return EXIT_OK
                    if phase in (Phase.FAILED, Phase.DELETING):
                        what = "failed" if phase == Phase.FAILED else "is deleting itself"
                        ctx.note(
                            f"bivy: workspace {args.name} {what}: {report.error or report.detail}"
                        )
                        if report.log_tail:
                            ctx.err.write(report.log_tail.rstrip("\n") + "\n")
                        return EXIT_ERROR
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                why = (
                    f"; last error: {last_error.one_line()}"
                    if last_error and phase == Phase.UNKNOWN
                    else ""
                )
                ctx.note(
                    f"bivy: timed out after {args.timeout:g} s waiting for workspace "
                    f"{args.name} (phase: {phase.value}){why}"
                )
                return EXIT_TIMEOUT
            await asyncio.sleep(min(args.interval, remaining))
    finally:
        await tunnels.close_all()


COMMANDS = [
    Command("ssh", _add_ssh_parser, _cmd_ssh),
    Command("exec", _add_exec_parser, _cmd_exec),
    Command("wait", _add_wait_parser, _cmd_wait),
]
