"""The ``Agent`` description every coding agent plug-in fills in (Qt-free, no I/O at import).

An agent plug-in says how Bivy installs the agent in the devcontainer (an npm package and a
version command), which credentials it takes (keychain keys, environment names, least-privilege
advice), where its persistent config lives inside the container (and the environment variables
that point it there), and how it reports activity into ``agent.json`` — the file the VM's idle
monitor reads: ``{"state": "working" | "waiting" | "idle", "event", "message",
"background_tasks", "updated_at"}``. The facts behind each plug-in, with their sources, are in
docs/agents.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from app.paths import cloudinit_path

__all__ = [
    "ACTIVITY_STATES",
    "Agent",
    "Credential",
    "HookConfig",
]

#: The states an agent can report into agent.json (the idle monitor's contract).
ACTIVITY_STATES = frozenset({"working", "waiting", "idle"})

#: Where the agents' persistent config dirs live inside the devcontainer (kept by the backups).
CONTAINER_AGENTS_DIR = "/bivy"


@dataclass(frozen=True)
class Credential:
    """One way to give the agent its credential; an agent's credentials are alternatives.

    Attributes:
        env: the environment variable the agent reads (and Bivy passes into the container).
        key: where Bivy keeps it in the keychain (service ``bivy``).
        label: what the Settings dialog and ``bivy agents`` call it.
    """

    env: str
    key: str
    label: str


@dataclass(frozen=True)
class HookConfig:
    """A file that wires the agent's activity mechanism to Bivy's adapter.

    Attributes:
        template: the file under cloudinit/ (``{{ hook }}`` is the adapter command).
        target: where it goes inside the container.
        merge: how it lands: "replace" (Bivy owns the file), "json" (merged into the agent's
            JSON settings, Bivy's keys win) or "toml" (appended to the agent's TOML config).
    """

    template: str
    target: str
    merge: str = "replace"

    def path(self) -> Path:
        return cloudinit_path(*self.template.split("/"))

    def render(self, hook: str, hook_js: str = "") -> str:
        """The file's text with the adapter command filled in."""
        text = self.path().read_text(encoding="utf-8")
        return text.replace("{{ hook_js }}", hook_js).replace("{{ hook }}", hook)


@dataclass(frozen=True)
class Agent:
    """A coding agent Bivy can run in a workspace session.

    Attributes:
        name: the short name used on the command line (``--agent NAME``).
        display_name: what the window shows.
        npm_package: the package ``npm install -g`` installs in the devcontainer.
        binary: the command the package installs.
        version_command: the command that prints the installed version.
        credentials: the ways to pass a credential (any one is enough); empty: none needed.
        credential_advice: the least-privilege advice Settings shows next to the credential.
        login_hint: how to log in from the agent's terminal when no credential is given.
        config_dir: the agent's persistent config dir inside the container.
        config_env: environment variables that point the agent at ``config_dir``.
        activity: the agent.json states the agent reports through its own mechanism.
        activity_mechanism: what that mechanism is, in a few words (shown in the UI).
        hook_adapter: the adapter under cloudinit/ that writes agent.json, or "".
        hook_configs: the files that wire the mechanism to the adapter.
        docs_url: the agent's own documentation of that mechanism.
        env_login: a shell command that logs the agent in from its credential's environment
            variable, for agents that do not read the variable by themselves ("": not needed).
        node_min: the oldest node major version the package runs on (its package.json
            ``engines``), checked in the container before installing; 0: no check.
        prompt_args: how a session starts the agent's interactive UI with a first prompt: the
            arguments after ``binary``, ``{prompt}`` standing for the prompt (one argument).
    """

    name: str
    display_name: str
    npm_package: str
    binary: str
    version_command: tuple[str, ...]
    credentials: tuple[Credential, ...]
    credential_advice: str
    login_hint: str
    config_dir: str
    config_env: Mapping[str, str] = field(default_factory=dict)
    activity: frozenset[str] = ACTIVITY_STATES
    activity_mechanism: str = ""
    hook_adapter: str = ""
    hook_configs: tuple[HookConfig, ...] = ()
    docs_url: str = ""
    env_login: str = ""
    node_min: int = 0
    prompt_args: tuple[str, ...] = ("{prompt}",)

    def __post_init__(self) -> None:
        unknown = self.activity - ACTIVITY_STATES
        if unknown:
            raise ValueError(f"{self.name}: unknown activity states {sorted(unknown)}")
        if not self.config_dir.startswith(CONTAINER_AGENTS_DIR + "/"):
            raise ValueError(f"{self.name}: config_dir must be under {CONTAINER_AGENTS_DIR}/")

    def __hash__(self) -> int:
        return hash(self.name)

    @property
    def reports_activity(self) -> bool:
        """Whether the agent can say it is working; without it Bivy falls back to terminal
        activity (output on the agent's tmux pane), never to "the process exists"."""
        return "working" in self.activity

    @property
    def install_command(self) -> tuple[str, ...]:
        return ("npm", "install", "-g", self.npm_package)

    def start_command(self, prompt: str | None = None) -> tuple[str, ...]:
        """The command a session runs to start the agent, with ``prompt`` as its first prompt
        (interactive either way: the agent keeps running in the session's terminal)."""
        if not prompt:
            return (self.binary,)
        if prompt.startswith("-"):  # one argument, never taken for an option
            prompt = " " + prompt
        return (self.binary, *(prompt if a == "{prompt}" else a for a in self.prompt_args))

    @property
    def credential_envs(self) -> tuple[str, ...]:
        return tuple(c.env for c in self.credentials)
