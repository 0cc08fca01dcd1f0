"""What deserves a notification, from one refresh of the workspaces to the next.

A session whose agent turns to waiting is announced naming the session and its workspace;
clicking that notice opens the session's terminal tab (``OPEN_SESSION``)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from app.domain import AgentState, Phase, SessionReport, Workspace
from app.ui.models import (
    IDLE_WARNING,
    idle_minutes,
    idle_warning_left,
    lifetime_deadline,
    workspace_key,
)
from app.ui.theme import SessionState, session_state

__all__ = [
    "IDLE_WARNING",
    "KEEP_ALIVE",
    "LIFETIME_WARNING",
    "OPEN_SESSION",
    "Notice",
    "Notifier",
]

#: A notice whose click keeps its workspace alive (the window's Keep alive, one hour).
KEEP_ALIVE = "keep-alive"
#: A notice whose click opens its session's terminal tab.
OPEN_SESSION = "open-session"
LIFETIME_WARNING = timedelta(minutes=15)


@dataclass(frozen=True)
class Notice:
    """One notification.

    Attributes:
        kind: "ready", "failed", "waiting", "session-failed", "idle", "lifetime".
        workspace: the workspace name; title and text: what the tray shows.
        urgent: shown with a warning icon.
        account: the workspace's account (names are unique per account only).
        action: what clicking the notification does: ``KEEP_ALIVE``, ``OPEN_SESSION`` or
            nothing ("").
        session: the session a "waiting" notice is about ("" for the workspace).
    """

    kind: str
    workspace: str
    title: str
    text: str
    urgent: bool = False
    account: str = ""
    action: str = ""
    session: str = ""


@dataclass
class Notifier:
    """Remembers what it already said, so each event is announced once per workspace."""

    _seen: dict[tuple[str, str], Workspace] = field(default_factory=dict)
    _warned: set[tuple[str, str, str]] = field(default_factory=set)

    def update(self, workspaces: Iterable[Workspace], now: datetime) -> list[Notice]:
        notices: list[Notice] = []
        current: dict[tuple[str, str], Workspace] = {}
        for ws in workspaces:
            key = workspace_key(ws)
            current[key] = ws
            notices.extend(self._compare(self._seen.get(key), ws, now))
        self._warned = {w for w in self._warned if (w[0], w[1]) in current}
        self._seen = current
        return notices

    def _compare(self, old: Workspace | None, new: Workspace, now: datetime) -> list[Notice]:
        out: list[Notice] = []
        old_phase = old.status.phase if old is not None and old.status is not None else None
        phase = new.status.phase if new.status is not None else None
        if phase is Phase.READY and old_phase not in (None, Phase.READY):
            out.append(Notice("ready", new.name, f"{new.name} is ready", "Open its terminal."))
        if phase is Phase.FAILED and old_phase is not Phase.FAILED:
            reason = (new.status.error if new.status else None) or "see the log tail"
            out.append(Notice("failed", new.name, f"{new.name} failed", reason, urgent=True))
        if new.sessions or (old is not None and old.sessions):
            out.extend(_session_notices(old, new))  # main's agent is one of them
        else:
            old_agent = old.agent.state if old is not None and old.agent is not None else None
            agent = new.agent.state if new.agent is not None else None
            if agent is AgentState.WAITING and old_agent is not AgentState.WAITING:
                message = (new.agent.message if new.agent else "") or "The agent needs your input."
                out.append(Notice("waiting", new.name, f"{new.name}: agent waiting", message))
        key = workspace_key(new)
        idle_left = idle_warning_left(new, now)
        if idle_left is None:
            self._warned.discard((*key, "idle"))  # active again or kept alive: warn next time
        elif (*key, "idle") not in self._warned:
            self._warned.add((*key, "idle"))
            minutes = idle_minutes(idle_left)
            when = f"in {minutes} minute{'' if minutes == 1 else 's'}" if idle_left else "now"
            out.append(
                Notice(
                    "idle",
                    new.name,
                    f"{new.name} will be deleted {when}",
                    "Nobody has used it for a while.",
                    urgent=True,
                    account=new.account,
                    action=KEEP_ALIVE,
                )
            )
        life_at = lifetime_deadline(new)
        if life_at is not None and now < life_at <= now + LIFETIME_WARNING:  # noqa: SIM102
            if (*key, "lifetime") not in self._warned:
                self._warned.add((*key, "lifetime"))
                minutes = max(1, int((life_at - now).total_seconds() // 60))
                out.append(
                    Notice(
                        "lifetime",
                        new.name,
                        f"{new.name} reaches its maximum lifetime in {minutes} min",
                        "It will be deleted then; push or back up your work.",
                        urgent=True,
                    )
                )
        return out


def _session_notices(old: Workspace | None, new: Workspace) -> list[Notice]:
    """A notice per session that turned to needing the user or failed since ``old``."""
    before: dict[str, SessionReport] = {x.name: x for x in (old.sessions if old else [])}
    out: list[Notice] = []
    for session in new.sessions:
        state = session_state(session)
        previous = before.get(session.name)
        was = session_state(previous) if previous is not None else None
        if state is SessionState.WAITING and was is not SessionState.WAITING:
            agent = f" ({session.agent})" if session.agent else ""
            out.append(
                Notice(
                    "waiting",
                    new.name,
                    f"{session.name} in {new.name} needs you",
                    f"{session.message or 'The agent waits for your input.'}{agent}",
                    account=new.account,
                    action=OPEN_SESSION,
                    session=session.name,
                )
            )
        elif state is SessionState.FAILED and was is not SessionState.FAILED:
            out.append(
                Notice(
                    "session-failed",
                    new.name,
                    f"Session {session.name} in {new.name} failed",
                    session.message or "See its terminal.",
                    urgent=True,
                    account=new.account,
                    action=OPEN_SESSION,
                    session=session.name,
                )
            )
    return out
