"""The "New session…" dialog: an agent from the registry, a session name, an optional branch
and an optional first prompt; the shell starts the session on the VM (``SessionService.new``).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from PySide6.QtCore import Qt
from PySide6.QtGui import QRegularExpressionValidator
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QVBoxLayout,
    QWidget,
)
from shiboken6 import isValid

from app.agents.base import Agent
from app.agents.credentials import acredential_states
from app.agents.registry import AGENTS, DEFAULT_AGENT
from app.domain import Workspace
from app.errors import BivyError
from app.settings import SecretStore
from app.ui.formatting import code_plain
from app.ui.icons import icon

__all__ = ["SESSION_NAME", "NewSession", "NewSessionDialog", "suggest_name"]

#: A session's name (the sessions contract): the tmux session, worktree and branch use it.
SESSION_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,29}$")
#: A git branch name a user may type (refs/heads/ rules, kept simple and safe for a shell).
_BRANCH = re.compile(r"^(?!/|.*(?:\.\.|//|@\{|\.lock$|/$|\.$))[A-Za-z0-9._/-]{1,100}$")


@dataclass(frozen=True)
class NewSession:
    """What the user asked for: session ``name`` running ``agent`` on ``branch`` ("" for
    ``bivy/<name>``), started with ``prompt`` ("" for none)."""

    workspace: Workspace
    name: str
    agent: str
    branch: str = ""
    prompt: str = ""


def suggest_name(agent: str, taken: Sequence[str]) -> str:
    """``codex``, then ``codex-2``, ``codex-3``… (the first name not taken)."""
    if agent not in taken:
        return agent
    n = 2
    while f"{agent}-{n}" in taken:
        n += 1
    return f"{agent}-{n}"


class NewSessionDialog(QDialog):
    """Asks for the new session; ``start`` runs ``submit`` and closes on success (an error
    stays in the dialog so the user can fix the name or branch).

    Attributes:
        error: the last error shown ("" when none); task: the running submit, if any.
    """

    def __init__(
        self,
        ws: Workspace,
        submit: Callable[[NewSession], Awaitable[object]],
        secrets: SecretStore | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle(f"New session in {ws.name}")
        self.setWindowIcon(icon("new-session", self.palette()))
        self.setMinimumWidth(520)
        self.ws = ws
        self.submit = submit
        self.secrets = secrets
        self.taken = [x.name for x in ws.sessions] or ["main"]
        self.task: asyncio.Task[None] | None = None
        self._note_task: asyncio.Future[None] | None = None
        self.error = ""
        intro = QLabel(
            "A session is another agent on this workspace, on its own git worktree and "
            "branch, with its own terminal tab. The workspace stays up while any session works."
        )
        intro.setWordWrap(True)
        self.agent = QComboBox()
        for agent in AGENTS.values():
            self.agent.addItem(agent.display_name, agent.name)
        self.agent.setCurrentIndex(max(0, self.agent.findData(DEFAULT_AGENT)))
        self.agent_note = QLabel()
        self.agent_note.setWordWrap(True)
        self.agent_note.setTextFormat(Qt.TextFormat.PlainText)
        self.name = QLineEdit()
        self.name.setValidator(QRegularExpressionValidator(SESSION_NAME.pattern, self.name))
        self.name.setToolTip("Lower-case letters, digits and dashes, at most 30")
        self.branch = QLineEdit()
        self.branch.setToolTip("A new branch from main's HEAD; empty: bivy/<session name>")
        self.prompt = QPlainTextEdit()
        self.prompt.setPlaceholderText(
            "Optional: what the agent should do first (you can also type it in its terminal)"
        )
        self.prompt.setMinimumHeight(90)
        self.message = QLabel()
        self.message.setWordWrap(True)
        self.message.setTextFormat(Qt.TextFormat.PlainText)
        self.message.hide()
        form = QFormLayout()
        form.addRow("Agent", self.agent)
        form.addRow("", self.agent_note)
        form.addRow("Session name", self.name)
        form.addRow("Branch", self.branch)
        form.addRow("First prompt", self.prompt)
        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        self.ok = self.buttons.button(QDialogButtonBox.StandardButton.Ok)
        self.ok.setText("Start session")
        self.ok.setIcon(icon("new-session", self.palette()))
        self.buttons.accepted.connect(self.start)
        self.buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(intro)
        layout.addLayout(form)
        layout.addWidget(self.message)
        layout.addWidget(self.buttons)
        self._suggested = ""
        self.agent.currentIndexChanged.connect(self._agent_changed)
        self.name.textChanged.connect(self._validate)
        self.branch.textChanged.connect(self._validate)
        self._agent_changed()

    def chosen_agent(self) -> Agent:
        return AGENTS[str(self.agent.currentData())]

    def _agent_changed(self, *_: object) -> None:
        agent = self.chosen_agent()
        if not self.name.text() or self.name.text() == self._suggested:
            self._suggested = suggest_name(agent.name, self.taken)
            self.name.setText(self._suggested)
        self.branch.setPlaceholderText(f"bivy/{self.name.text() or '<name>'}")
        note = (
            f"Reports its state through {agent.activity_mechanism}."
            if agent.reports_activity and agent.activity_mechanism
            else "It cannot say when it works: Bivy watches its terminal's activity instead."
        )
        self.agent_note.setText(note)
        if self.secrets is not None:
            self._note_task = asyncio.ensure_future(self._credential_note(agent, note))

    async def _credential_note(self, agent: Agent, note: str) -> None:
        assert self.secrets is not None
        states = await acredential_states(agent, self.secrets)
        if not isValid(self.agent) or not isValid(self.agent_note):
            return  # the dialog closed meanwhile
        if agent is not self.chosen_agent() or not states or any(s.is_set for s in states):
            return
        hint = code_plain(agent.login_hint)
        self.agent_note.setText(f"{note} No credential is set: {hint}.")

    def problem(self) -> str:
        """Why the input cannot be submitted ("" when it can)."""
        name = self.name.text()
        if not SESSION_NAME.match(name):
            return "The session name takes lower-case letters, digits and dashes (at most 30)."
        if name in self.taken:
            return f"This workspace already has a session called {name}."
        branch = self.branch.text().strip()
        if branch and not _BRANCH.match(branch):
            return "That is not a branch name git accepts."
        return ""

    def _validate(self, *_: object) -> None:
        self.branch.setPlaceholderText(f"bivy/{self.name.text() or '<name>'}")
        problem = self.problem()
        self.ok.setEnabled(not problem and self.task is None)
        self.ok.setToolTip(problem)

    def request(self) -> NewSession:
        return NewSession(
            self.ws,
            self.name.text(),
            self.chosen_agent().name,
            self.branch.text().strip(),
            self.prompt.toPlainText().strip(),
        )

    def start(self) -> None:
        problem = self.problem()
        if problem:
            self._show(problem)
            return
        if self.task is not None:
            return
        self.ok.setEnabled(False)
        self._show(f"Starting {self.name.text()}…", error=False)
        self.task = asyncio.ensure_future(self._run(self.request()))

    async def _run(self, request: NewSession) -> None:
        try:
            await self.submit(request)
        except BivyError as exc:
            self.task = None
            self._show(exc.one_line())
            self._validate()
            return
        self.task = None
        self.accept()

    def _show(self, text: str, *, error: bool = True) -> None:
        self.error = text if error else ""
        self.message.setText(text)
        self.message.show()
