"""Agent sessions of a workspace (issue 15): several agents side by side, each on its own git
worktree and branch, in its own terminal, with its own state.

Over the workspace's SSH connection (pinned host key) the app runs the VM's session command,
``/usr/local/lib/bivy/session`` (cloudinit/scripts/session.sh): ``new`` and ``rm`` as root
(``sudo -n``), ``ls --json`` as dev (it reads world-readable files only). ``new`` gets on its
stdin what the VM needs to run the agent: the first prompt, and the agent's description from
``app.cloudinit.render.render_session_agent`` (its files, its start command) with its
credentials from this computer (its environment variable, else the keychain) — only when the
agent is not the workspace's own, whose credentials the VM has had since it was created. The
credentials travel inside the SSH channel's stdin, never on a command line or in a log.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
from collections.abc import Mapping

from app.agents import Agent, get_agent
from app.cloudinit import LIB_DIR
from app.cloudinit.agent_files import render_session_agent
from app.domain import SessionReport
from app.domain.validation import validate_branch
from app.errors import ActionFailed, InvalidInput
from app.services.registry import Registry, WorkspaceRecord
from app.services.tunnels import SSHTarget, Tunnel, TunnelService
from app.settings import SecretStore, Settings

__all__ = [
    "MAIN_SESSION",
    "SESSION_COMMAND",
    "SESSION_NAME_RE",
    "SessionService",
    "parse_session_list",
    "suggest_name",
]

log = logging.getLogger(__name__)

#: The VM's session command.
SESSION_COMMAND = f"{LIB_DIR}/session"
#: A session's name (notes/CONTRACTS2.md); ``main`` is the workspace's first.
SESSION_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,29}$")
MAIN_SESSION = "main"
#: A first prompt longer than this is refused here (the VM refuses it too).
MAX_PROMPT = 100_000


def parse_session_list(text: str) -> list[SessionReport]:
    """``session ls --json`` output → reports (entries that do not parse are left out)."""
    try:
        rows = json.loads(text) if text.strip() else []
    except ValueError:
        raise ActionFailed("the VM's session list is not readable") from None
    reports = []
    for row in rows if isinstance(rows, list) else []:
        try:
            reports.append(SessionReport.model_validate(row))
        except ValueError:
            log.warning("ignoring an unreadable session entry")
    return reports


def suggest_name(agent: str, taken: list[str]) -> str:
    """``codex``, then ``codex-2``, ``codex-3``… (the first name not taken; as the window's
    New session dialog suggests)."""
    if agent not in taken:
        return agent
    n = 2
    while f"{agent}-{n}" in taken:
        n += 1
    return f"{agent}-{n}"


def _check_name(name: str) -> None:
    if not SESSION_NAME_RE.match(name):
        raise InvalidInput(
            f"{name!r} is not a session name",
            hint="Use 1-30 lower-case letters, digits and dashes, starting with a letter or digit",
        )


def _last_lines(text: str, count: int = 3) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " ".join(lines[-count:])[:500]


class SessionService:
    """``new`` / ``ls`` / ``rm`` of a workspace's sessions (see the module docstring).

    ``tunnels``: the app's tunnel service (its connections are reused); without one the service
    makes its own and ``aclose`` closes it. ``sudo``: what makes the VM command root (tests on a
    VM tree that already run as root pass ``()``). ``environ``: where credentials are looked up
    first (None: this process's environment).
    """

    def __init__(
        self,
        settings: Settings | None,
        secrets: SecretStore,
        tunnels: TunnelService | None = None,
        *,
        registry: Registry | None = None,
        command: str = SESSION_COMMAND,
        sudo: tuple[str, ...] = ("sudo", "-n"),
        environ: Mapping[str, str] | None = None,
        timeout: float = 900.0,
    ) -> None:
        self._settings = settings
        self._secrets = secrets
        self._own_tunnels = tunnels is None
        self._tunnels = tunnels or TunnelService(secrets, connect_timeout=15.0)
        self._registry = registry or Registry()
        self._command = command
        self._sudo = sudo
        self._environ = environ
        self._timeout = timeout

    async def aclose(self) -> None:
        if self._own_tunnels:
            await self._tunnels.close_all()

    async def _record(self, workspace: str) -> WorkspaceRecord:
        return await self._registry.arequire(workspace)

    async def _tunnel(self, workspace: str) -> Tunnel:
        return await self._tunnels.open(SSHTarget.from_record(await self._record(workspace)))

    async def _run(
        self, tunnel: Tunnel, words: list[str], *, root: bool, stdin: str = "", what: str
    ) -> str:
        line = shlex.join([*(self._sudo if root else ()), self._command, *words])
        result = await tunnel.run(line, input=stdin, limit=self._timeout)
        if result.exit_status == 0:
            return result.stdout
        if result.exit_status == 127 or "No such file" in result.stderr:
            raise ActionFailed(
                f"workspace {tunnel.target.workspace!r} has no session command",
                hint="It was created by an older Bivy: recreate it to run several sessions",
            )
        reason = _last_lines(result.stderr) or f"exit status {result.exit_status}"
        raise ActionFailed(f"{what} failed: {reason.removeprefix('session: ')}")

    async def ls(self, workspace: str) -> list[SessionReport]:
        """The workspace's sessions, ``main`` first, each with its agent's state."""
        tunnel = await self._tunnel(workspace)
        return parse_session_list(
            await self._run(tunnel, ["ls", "--json"], root=False, what="listing the sessions")
        )

    async def new(
        self,
        workspace: str,
        name: str | None,
        *,
        agent: str,
        branch: str | None = None,
        prompt: str | None = None,
        base: str | None = None,
    ) -> SessionReport:
        """Start session ``name`` running ``agent`` on a new worktree (branch ``bivy/NAME``
        unless ``branch`` names one), with ``prompt`` as its agent's first prompt. ``name``
        None: the agent's name, else the first free ``AGENT-N``."""
        if name is not None:
            _check_name(name)
            if name == MAIN_SESSION:
                raise InvalidInput("main is the workspace's own session; choose another name")
        plugin = get_agent(agent)
        if branch:
            try:
                validate_branch(branch)
            except ValueError as exc:
                raise InvalidInput(f"{branch!r}: {exc}") from None
        if base is not None and (not base.strip() or base.startswith("-")):
            raise InvalidInput(f"{base!r} is not a commit or branch to start from")
        if prompt is not None and (len(prompt) > MAX_PROMPT or "\0" in prompt):
            raise InvalidInput(f"the first prompt must be text of at most {MAX_PROMPT} characters")
        tunnel = await self._tunnel(workspace)
        existing = parse_session_list(
            await self._run(tunnel, ["ls", "--json"], root=False, what="listing the sessions")
        )
        main = next((s for s in existing if s.name == MAIN_SESSION), None)
        if main is None:
            raise ActionFailed(
                f"workspace {workspace!r} is not ready for sessions yet",
                hint="Wait until it is ready (`bivy wait NAME`), then try again",
            )
        if name is None:
            name = suggest_name(plugin.name, [s.name for s in existing])
        same = next((s for s in existing if s.name == name), None)
        if same is not None and same.event != "SessionRestored":
            raise InvalidInput(f"workspace {workspace!r} has a session called {name} already")
        # A session a backup brought back is started again (its agent set up when needed).
        description = render_session_agent(plugin)
        if plugin.name != main.agent:
            # The workspace's own agent has its credentials on the VM already.
            description["credentials"] = await self._credentials(plugin)
        words = ["new", name, "--agent", plugin.name]
        if branch:
            words += ["--branch", branch]
        if base:
            words += ["--base", base]
        payload = json.dumps({"prompt": prompt or None, "agent": description})
        await self._run(tunnel, words, root=True, stdin=payload, what=f"starting session {name}")
        log.info("workspace %s: session %s started (%s)", workspace, name, plugin.name)
        for report in await self.ls(workspace):
            if report.name == name:
                return report
        raise ActionFailed(f"session {name} was started but the VM does not list it")

    async def rm(self, workspace: str, name: str, *, force: bool = False) -> None:
        """Remove session ``name``: its terminal, worktree and state (and its branch when it is
        ``bivy/NAME``). The VM refuses uncommitted or unpushed work unless ``force``."""
        _check_name(name)
        if name == MAIN_SESSION:
            raise InvalidInput("main is the workspace's own session and cannot be removed")
        tunnel = await self._tunnel(workspace)
        words = ["rm", name, *(["--force"] if force else [])]
        await self._run(tunnel, words, root=True, what=f"removing session {name}")
        log.info("workspace %s: session %s removed", workspace, name)

    async def _credentials(self, agent: Agent) -> dict[str, str]:
        """Every credential of ``agent`` that is set: its variable here, else the keychain."""
        environ = os.environ if self._environ is None else self._environ
        found: dict[str, str] = {}
        for cred in agent.credentials:
            value = environ.get(cred.env, "").strip()
            if not value:
                value = (await self._secrets.aget(cred.key) or "").strip()
            if value:
                found[cred.env] = value
        if not found and agent.credentials:
            log.warning("no credential for %s: log it in from its terminal", agent.name)
        return found
