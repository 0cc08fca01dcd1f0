"""What deserves a notification, from one refresh of the workspaces to the next."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from app.domain import AgentState, Phase, Workspace
from app.ui.models import idle_deadline, lifetime_deadline, workspace_key

IDLE_WARNING = timedelta(minutes=5)
LIFETIME_WARNING = timedelta(minutes=15)


@dataclass(frozen=True)
class Notice:
    """One notification.

    Attributes:
        kind: "ready", "failed", "waiting", "idle", "lifetime".
        workspace: the workspace name; title and text: what the tray shows.
        urgent: shown with a warning icon.
    """

    kind: str
    workspace: str
    title: str
    text: str
    urgent: bool = False


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
        old_agent = old.agent.state if old is not None and old.agent is not None else None
        agent = new.agent.state if new.agent is not None else None
        if agent is AgentState.WAITING and old_agent is not AgentState.WAITING:
            message = (new.agent.message if new.agent else "") or "The agent needs your input."
            out.append(Notice("waiting", new.name, f"{new.name}: agent waiting", message))
        key = workspace_key(new)
        idle_at = idle_deadline(new)
        if idle_at is not None and now < idle_at <= now + IDLE_WARNING:
            if (*key, "idle") not in self._warned:
                self._warned.add((*key, "idle"))
                minutes = max(1, int((idle_at - now).total_seconds() // 60))
                out.append(
                    Notice(
                        "idle",
                        new.name,
                        f"{new.name} deletes itself in {minutes} min",
                        "Nobody used it. Keep it alive from the window if you still need it.",
                        urgent=True,
                    )
                )
        elif idle_at is None or idle_at > now + IDLE_WARNING:
            self._warned.discard((*key, "idle"))  # activity resumed: warn again next time
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
