"""Domain objects for UI tests: workspaces in every state the table has to show."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

from app.domain import (
    LABEL_MANAGED_BY,
    LABEL_WORKSPACE,
    AgentReport,
    AgentState,
    Phase,
    Price,
    Server,
    ServerStatus,
    SessionReport,
    StatusReport,
    Workspace,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=datetime.now().astimezone().tzinfo).astimezone()


def workspace(
    name: str,
    *,
    account: str = "hetzner",
    phase: Phase | None = Phase.READY,
    progress: float = 0.0,
    status: ServerStatus = ServerStatus.RUNNING,
    agent: AgentState | None = None,
    created_ago: timedelta = timedelta(hours=1),
    idle_in: timedelta | None = timedelta(minutes=25),
    now: datetime = NOW,
    server: bool = True,
) -> Workspace:
    srv = (
        Server(
            provider="hetzner",
            id=str(abs(hash(name)) % 100000),
            name=f"bivy-{name}",
            status=status,
            region="fsn1",
            size="cx23",
            ipv4="203.0.113.7",
            created_at=now - created_ago,
            labels={LABEL_MANAGED_BY: "bivy", LABEL_WORKSPACE: name},
            price=Price(currency="EUR", hourly=Decimal("0.0080"), monthly=Decimal("4.99")),
        )
        if server
        else None
    )
    report = (
        StatusReport(
            phase=phase,
            progress=progress,
            detail=f"{phase.value} step",
            log_tail=f"log of {name}\nline 2",
            idle_deadline=now + idle_in if idle_in is not None else None,
        )
        if phase is not None
        else None
    )
    return Workspace(
        name=name,
        account=account,
        provider="hetzner",
        server=srv,
        repo_url=f"https://github.com/example/{name}.git",
        status=report,
        agent=AgentReport(state=agent, message="Allow Bash?") if agent else None,
    )


def session(
    name: str,
    state: AgentState = AgentState.IDLE,
    *,
    agent: str = "claude",
    failed: bool = False,
    message: str = "",
) -> SessionReport:
    """One agent session as the VM's ``session ls --json`` reports it."""
    return SessionReport(
        name=name,
        agent=agent,
        branch="" if name == "main" else f"bivy/{name}",
        base="main",
        worktree="" if name == "main" else f"/workspaces/repo/.bivy/worktrees/{name}",
        state=state,
        message=message,
        failed=failed,
    )


def with_sessions(ws: Workspace, *sessions: SessionReport) -> Workspace:
    return ws.model_copy(update={"sessions": list(sessions)})


#: One session in each state the window tells apart.
EVERY_STATE = (
    session("main", AgentState.WORKING),
    session("review", AgentState.WAITING, agent="codex", message="Allow git push?"),
    session("docs", AgentState.IDLE, agent="gemini"),
    session("tests", failed=True, agent="opencode", message="npm install failed"),
)
