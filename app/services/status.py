"""Live VM status over SSH: status.json, agent.json and the sessions on an interval, changes as
events; leases.

The files are read with one exec channel without a pty (``cat``), which the VM's idle monitor
does not count as activity (it counts pty sessions and connections to ttyd only; see
notes/CONTRACTS.md). The third record is the VM's ``session ls --json`` (issue 15: every agent
session with its worktree, branch and agent state; empty before the bootstrap has made ``main``
or on a VM without sessions). Events tell the window and the tray what changed: the bootstrap
phase, the agent's state (``waiting`` → a notification), each session's state (``SESSION_*``,
see ``StatusEventKind``), deadlines coming close.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shlex
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TypeVar

from pydantic import ValidationError

from app.domain import AgentReport, AgentState, Phase, SessionReport, StatusReport, utcnow
from app.errors import BivyError, SSHError
from app.services.tunnels import Tunnel, TunnelService

log = logging.getLogger(__name__)

STATUS_PATH = "/var/lib/bivy/status.json"
AGENT_PATH = "/var/lib/bivy/agent.json"
LEASE_PATH = "/var/lib/bivy/lease"
#: The VM's session command (cloudinit/scripts/session.sh); ``ls --json`` needs no root.
SESSION_COMMAND = "/usr/local/lib/bivy/session"

# ASCII record separator: JSON text can never contain it unescaped, so it splits the two files.
_SEPARATOR = "\x1e"


@dataclass(frozen=True)
class StatusSnapshot:
    """One read of a workspace's VM.

    Attributes:
        workspace: whose VM; read_at: when it was read (UTC).
        status / agent: the parsed files, None when missing or unreadable.
        sessions: the VM's sessions, ``main`` first (empty when it reports none).
    """

    workspace: str
    status: StatusReport | None
    agent: AgentReport | None
    read_at: datetime
    sessions: tuple[SessionReport, ...] = ()

    def session(self, name: str) -> SessionReport | None:
        return next((s for s in self.sessions if s.name == name), None)

    @property
    def phase(self) -> Phase:
        return self.status.phase if self.status is not None else Phase.UNKNOWN

    @property
    def agent_state(self) -> AgentState:
        return self.agent.state if self.agent is not None else AgentState.UNKNOWN

    def idle_remaining(self, now: datetime | None = None) -> timedelta | None:
        """Time until the idle delete, or None while the VM is not idle."""
        if self.status is None or self.status.idle_deadline is None:
            return None
        return max(timedelta(0), self.status.idle_deadline - (now or utcnow()))

    def lifetime_remaining(self, now: datetime | None = None) -> timedelta | None:
        """Time until the hard lifetime ends, if the VM reports it."""
        if self.status is None or self.status.lifetime_deadline is None:
            return None
        return max(timedelta(0), self.status.lifetime_deadline - (now or utcnow()))


class StatusEventKind(StrEnum):
    """What a ``StatusEvent`` announces."""

    UPDATED = "updated"  # every successful read (countdowns refresh from it)
    PHASE_CHANGED = "phase-changed"
    AGENT_CHANGED = "agent-changed"
    AGENT_WAITING = "agent-waiting"  # the agent turned to waiting: notify the user
    EXPIRY_WARNING = "expiry-warning"  # an idle or lifetime deadline is near (once per deadline)
    # Per session (issue 15); ``session`` names it, ``previous_agent`` is its state before.
    SESSION_ADDED = "session-added"  # a session appeared (also each one at the first read)
    SESSION_REMOVED = "session-removed"  # a session is gone (``session`` is its last report)
    SESSION_CHANGED = "session-changed"  # its agent state (or failed flag) changed
    SESSION_WAITING = "session-waiting"  # its agent turned to waiting: notify the user
    UNREACHABLE = "unreachable"  # a read failed; the previous snapshot stays valid


@dataclass(frozen=True)
class StatusEvent:
    """One change, as listeners receive it.

    Attributes:
        kind: what happened; workspace: where.
        snapshot: the latest snapshot (None only for a first read that failed).
        previous_phase / previous_agent: the values before a change.
        error: why the read failed (UNREACHABLE).
        deadline: the deadline an EXPIRY_WARNING is about; reason: "idle" or "lifetime".
        session: the session a SESSION_* event is about (its latest report).
    """

    kind: StatusEventKind
    workspace: str
    snapshot: StatusSnapshot | None
    previous_phase: Phase | None = None
    previous_agent: AgentState | None = None
    error: BivyError | None = None
    deadline: datetime | None = None
    reason: str = ""
    session: SessionReport | None = None


_M = TypeVar("_M", StatusReport, AgentReport)

StatusListener = Callable[[StatusEvent], None]


def parse_files(output: str) -> tuple[StatusReport | None, AgentReport | None]:
    """Split and parse what the read command printed; a missing or broken file gives None."""
    parts = output.split(_SEPARATOR)
    status_text = parts[0] if parts else ""
    agent_text = parts[1] if len(parts) > 1 else ""
    return _parse(StatusReport, status_text), _parse(AgentReport, agent_text)


def parse_sessions(output: str) -> tuple[SessionReport, ...]:
    """The third record of the read (``session ls --json``): the sessions that parse, in the
    VM's order; none when the record is missing or not a JSON list."""
    parts = output.split(_SEPARATOR)
    text = parts[2] if len(parts) > 2 else ""
    if not text.strip():
        return ()
    try:
        rows = json.loads(text)
    except ValueError:
        log.warning("ignoring an unreadable session list")
        return ()
    sessions = []
    for row in rows if isinstance(rows, list) else ():
        try:
            sessions.append(SessionReport.model_validate(row))
        except ValidationError:
            log.warning("ignoring an unreadable session entry")
    return tuple(sessions)


def _parse(model: type[_M], text: str) -> _M | None:
    if not text.strip():
        return None
    try:
        return model.model_validate(json.loads(text))
    except (ValueError, ValidationError) as exc:
        # The VM writes both atomically, so this is a bug there; say so without dumping content.
        log.warning("ignoring unreadable %s: %s", model.__name__, type(exc).__name__)
        return None


class StatusService:
    """Reads workspace status over the tunnels and tells listeners what changed.

    Attributes:
        interval: seconds between reads once the VM is ready.
        fast_interval: seconds between reads while it boots (phases move quickly then).
        warn_before: how long before an idle or lifetime deadline EXPIRY_WARNING fires.
        status_path / agent_path / lease_path: the files on the VM (tests point them elsewhere).
        session_command: the VM's session command (tests point it elsewhere).
    """

    def __init__(
        self,
        tunnels: TunnelService,
        *,
        interval: float = 10.0,
        fast_interval: float = 2.0,
        warn_before: timedelta = timedelta(minutes=10),
        status_path: str = STATUS_PATH,
        agent_path: str = AGENT_PATH,
        lease_path: str = LEASE_PATH,
        session_command: str = SESSION_COMMAND,
        clock: Callable[[], datetime] = utcnow,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.tunnels = tunnels
        self.interval = interval
        self.fast_interval = fast_interval
        self.warn_before = warn_before
        self.status_path = status_path
        self.agent_path = agent_path
        self.lease_path = lease_path
        self.session_command = session_command
        self._clock = clock
        self._sleep = sleep
        self._latest: dict[str, StatusSnapshot] = {}
        self._watches: dict[str, asyncio.Task[None]] = {}
        self._warned: dict[str, set[tuple[str, datetime]]] = {}
        self._listeners: list[StatusListener] = []

    def add_listener(self, listener: StatusListener) -> Callable[[], None]:
        """Call ``listener`` with every event; returns a function that removes it."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def _emit(self, event: StatusEvent) -> None:
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                log.exception("status listener failed")

    def latest(self, workspace: str) -> StatusSnapshot | None:
        return self._latest.get(workspace)

    def _tunnel(self, workspace: Tunnel | str) -> Tunnel:
        if isinstance(workspace, Tunnel):
            return workspace
        tunnel = self.tunnels.get(workspace)
        if tunnel is None:
            raise SSHError(f"workspace {workspace!r} has no open SSH connection")
        return tunnel

    def read_command(self) -> str:
        """The shell command that prints both files and the session list, separated (missing
        files print nothing; a VM without the session command lists nothing).

        The agent file is writable from inside the container: only a regular file is read, and
        at most 64 KiB of it, so a FIFO or a device planted there cannot hang or flood the read
        (the session command reads the sessions' agent files the same way).
        """
        paths = " ".join(shlex.quote(p) for p in (self.status_path, self.agent_path))
        session = shlex.quote(self.session_command)
        return (
            f"for f in {paths}; do "
            f'if [ -f "$f" ]; then head -c 65536 -- "$f" 2>/dev/null; fi; printf \'\\036\'; done; '
            f"if [ -x {session} ]; then {session} ls --json 2>/dev/null | head -c 1048576; fi; "
            "printf '\\036'"
        )

    async def read(self, workspace: Tunnel | str) -> StatusSnapshot:
        """Read the files and the sessions once (no events)."""
        tunnel = self._tunnel(workspace)
        result = await tunnel.run(self.read_command(), limit=20.0)
        status, agent = parse_files(result.stdout)
        sessions = parse_sessions(result.stdout)
        return StatusSnapshot(tunnel.target.workspace, status, agent, self._clock(), sessions)

    async def poll_once(self, workspace: Tunnel | str) -> StatusSnapshot | None:
        """Read, compare with the previous read and emit the events; errors become UNREACHABLE."""
        name = workspace.target.workspace if isinstance(workspace, Tunnel) else workspace
        previous = self._latest.get(name)
        try:
            snapshot = await self.read(workspace)
        except BivyError as exc:
            self._emit(StatusEvent(StatusEventKind.UNREACHABLE, name, previous, error=exc))
            return None
        self._latest[name] = snapshot
        self._emit_changes(previous, snapshot)
        return snapshot

    def _emit_changes(self, previous: StatusSnapshot | None, snapshot: StatusSnapshot) -> None:
        name = snapshot.workspace
        self._emit(StatusEvent(StatusEventKind.UPDATED, name, snapshot))
        old_phase = previous.phase if previous is not None else None
        if snapshot.status is not None and snapshot.phase != old_phase:
            self._emit(
                StatusEvent(StatusEventKind.PHASE_CHANGED, name, snapshot, previous_phase=old_phase)
            )
        old_agent = previous.agent_state if previous is not None else None
        if snapshot.agent is not None and snapshot.agent_state != old_agent:
            self._emit(
                StatusEvent(StatusEventKind.AGENT_CHANGED, name, snapshot, previous_agent=old_agent)
            )
            if snapshot.agent_state == AgentState.WAITING:
                self._emit(
                    StatusEvent(
                        StatusEventKind.AGENT_WAITING, name, snapshot, previous_agent=old_agent
                    )
                )
        self._emit_session_changes(previous, snapshot)
        self._warn_deadlines(snapshot)

    def _emit_session_changes(
        self, previous: StatusSnapshot | None, snapshot: StatusSnapshot
    ) -> None:
        """SESSION_ADDED / REMOVED / CHANGED / WAITING, one per session that changed. A read
        that returned no sessions while the VM had some is not taken as "all removed" unless
        the VM answered (status present): a half-written read must not flap every session."""
        name = snapshot.workspace
        before = {s.name: s for s in previous.sessions} if previous is not None else {}
        if not snapshot.sessions and before and snapshot.status is None:
            return
        now = {s.name: s for s in snapshot.sessions}
        for session in snapshot.sessions:
            old = before.get(session.name)
            if old is None:
                self._emit(
                    StatusEvent(StatusEventKind.SESSION_ADDED, name, snapshot, session=session)
                )
            elif old.state != session.state or old.failed != session.failed:
                self._emit(
                    StatusEvent(
                        StatusEventKind.SESSION_CHANGED, name, snapshot,
                        previous_agent=old.state, session=session,
                    )
                )  # fmt: skip
            else:
                continue
            if session.state == AgentState.WAITING and (old is None or old.state != session.state):
                self._emit(
                    StatusEvent(
                        StatusEventKind.SESSION_WAITING, name, snapshot,
                        previous_agent=old.state if old is not None else None, session=session,
                    )
                )  # fmt: skip
        for gone, last in before.items():
            if gone not in now:
                self._emit(
                    StatusEvent(StatusEventKind.SESSION_REMOVED, name, snapshot, session=last)
                )

    def _warn_deadlines(self, snapshot: StatusSnapshot) -> None:
        if snapshot.status is None:
            return
        warned = self._warned.setdefault(snapshot.workspace, set())
        now = self._clock()
        for reason, deadline in (
            ("idle", snapshot.status.idle_deadline),
            ("lifetime", snapshot.status.lifetime_deadline),
        ):
            if deadline is None or deadline - now > self.warn_before:
                continue
            if (reason, deadline) in warned:
                continue
            warned.add((reason, deadline))
            self._emit(
                StatusEvent(
                    StatusEventKind.EXPIRY_WARNING,
                    snapshot.workspace,
                    snapshot,
                    deadline=deadline,
                    reason=reason,
                )
            )

    def watch(self, workspace: str) -> None:
        """Poll ``workspace`` until ``unwatch``/``close`` (its tunnel must be open)."""
        if workspace in self._watches:
            return
        self._watches[workspace] = asyncio.create_task(
            self._loop(workspace), name=f"bivy-status-{workspace}"
        )

    async def _loop(self, workspace: str) -> None:
        while True:
            snapshot = await self.poll_once(workspace)
            ready = snapshot is not None and snapshot.phase == Phase.READY
            await self._sleep(self.interval if ready else self.fast_interval)

    async def unwatch(self, workspace: str) -> None:
        task = self._watches.pop(workspace, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def close(self) -> None:
        """Stop every poll loop (the app's quit path; tunnels are closed by their service)."""
        for name in list(self._watches):
            await self.unwatch(name)

    async def keep_alive(self, workspace: Tunnel | str, seconds: int) -> datetime:
        """Keep the VM alive for ``seconds`` from now: write the lease file (UTC epoch seconds)."""
        if seconds <= 0:
            raise ValueError("seconds must be positive")
        tunnel = self._tunnel(workspace)
        until = self._clock().replace(microsecond=0) + timedelta(seconds=seconds)
        epoch = int(until.timestamp())
        result = await tunnel.run(
            f"printf '%s\\n' {epoch} > {shlex.quote(self.lease_path)}", limit=20.0
        )
        if result.exit_status != 0:
            raise SSHError(
                f"could not write the keep-alive lease on workspace "
                f"{tunnel.target.workspace!r}: {result.stderr.strip()[:200]}",
                hint="The VM may still be starting; try again in a minute",
            )
        log.info("workspace %s kept alive until %s", tunnel.target.workspace, until.isoformat())
        return until
