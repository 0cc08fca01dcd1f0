#!/usr/bin/python3
# Bivy sessions: the JSON side of the VM's `session` command (cloudinit/scripts/session.sh).
#
#     session-data receive LIB_DIR WORK_DIR AGENT < payload.json
#         the app's payload for `session new` (see notes/CONTRACTS2.md, "Sessions"): writes the
#         first prompt to WORK_DIR/prompt, the agent's description to WORK_DIR/agent.json, its
#         credentials to WORK_DIR/credentials.env (docker's KEY=VALUE format) and its files to
#         their places under LIB_DIR (only under agents/AGENT/, hook/agents/ and agent-config).
#     session-data launcher NAME WORKDIR STATE_DIR ENV_FILE DESCRIPTOR|- > NAME.sh
#         the sh file the in-container launcher (session-agent) sources: values quoted for sh.
#     session-data record FILE key=value...     writes a session record atomically (0644)
#     session-data get FILE KEY                 prints one field of a JSON object ("" if none)
#     session-data env-sh ENV_FILE              docker KEY=VALUE lines as sh `export` lines
#     session-data ls STATE_DIR                 the sessions joined with their agent.json (JSON)
#
# Runs as root on the VM; every file it reads that the container could have written (agent.json)
# is read without following links or blocking, and only so much of it.

from __future__ import annotations

import json
import os
import re
import shlex
import stat
import sys
import tempfile
from pathlib import Path
from typing import Any

VM_LIB_DIR = "{{ lib_dir }}"
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,29}$")
ENV_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SAFE_VALUE_RE = re.compile(r"^[A-Za-z0-9/_.-]+$")
BINARY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
STATES = {"working", "waiting", "idle"}
MAX_PROMPT = 100_000


def fail(message: str) -> int:
    print(f"session: {message}", file=sys.stderr)
    return 2


def write_atomic(path: Path, text: str, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def receive(lib_dir: str, work_dir: str, agent: str) -> int:
    raw = sys.stdin.read()
    work = Path(work_dir)
    if not raw.strip():
        return 0
    try:
        payload = json.loads(raw)
    except json.JSONDecodeError:
        return fail("the session's input is not JSON")
    if not isinstance(payload, dict):
        return fail("the session's input is not a JSON object")
    prompt = payload.get("prompt") or ""
    if not isinstance(prompt, str) or len(prompt) > MAX_PROMPT or "\0" in prompt:
        return fail("the first prompt is not usable text")
    if prompt:
        write_atomic(work / "prompt", prompt, 0o600)
    description = payload.get("agent")
    if description is None:
        return 0
    if not isinstance(description, dict) or description.get("name") != agent:
        return fail(f"the agent's description is not {agent}'s")
    binary = description.get("binary", "")
    command = description.get("command") or [binary]
    config_env = description.get("config_env") or {}
    if not BINARY_RE.match(str(binary)) or not isinstance(command, list) or command[:1] != [binary]:
        return fail("the agent's command is not usable")
    if not all(isinstance(word, str) and "\0" not in word for word in command):
        return fail("the agent's command is not usable")
    if not isinstance(config_env, dict) or not all(
        ENV_KEY_RE.match(str(k)) and SAFE_VALUE_RE.match(str(v)) for k, v in config_env.items()
    ):
        return fail("the agent's config variables are not usable")
    config_dir = str(description.get("config_dir", ""))
    if not re.match(r"^/bivy/[a-z0-9-]+$", config_dir):
        return fail("the agent's config dir is not usable")
    env_login = description.get("env_login") or ""
    if not isinstance(env_login, str):
        return fail("the agent's login command is not usable")
    credentials = description.get("credentials") or {}
    lines = []
    for key, value in credentials.items() if isinstance(credentials, dict) else ():
        if not ENV_KEY_RE.match(str(key)) or not isinstance(value, str):
            return fail("the agent's credentials are not usable")
        if any(ch in value for ch in "\r\n\0"):
            return fail(f"the agent credential {key} contains a line break")
        lines.append(f"{key}={value}\n")
    write_atomic(work / "credentials.env", "".join(lines), 0o600)
    allowed = (f"agents/{agent}/", "hook/agents/", "agent-config")
    for entry in description.get("files") or []:
        path = str(entry.get("path", ""))
        relative = path[len(VM_LIB_DIR) + 1 :] if path.startswith(VM_LIB_DIR + "/") else ""
        if (
            not relative.startswith(allowed)
            or ".." in relative.split("/")
            or not isinstance(entry.get("content"), str)
        ):
            return fail(f"refusing to write {path!r}")
        mode = int(str(entry.get("permissions", "0644")), 8) & 0o755
        write_atomic(Path(lib_dir) / relative, entry["content"], mode)
    kept = {
        "name": agent,
        "display": str(description.get("display", agent)),
        "binary": binary,
        "command": command,
        "config_dir": config_dir,
        "config_env": config_env,
        "env_login": env_login,
    }
    write_atomic(work / "agent.json", json.dumps(kept, indent=1) + "\n", 0o644)
    return 0


def launcher(name: str, workdir: str, state_dir: str, env_file: str, descriptor: str) -> int:
    # The sh assignments session-agent sources (it runs inside the container as the remote
    # user). Every value is quoted; the prompt stays in a file and becomes one argument.
    agent: dict[str, Any] = {}
    if descriptor != "-":
        agent = json.loads(Path(descriptor).read_text(encoding="utf-8"))
    out = [
        f"BIVY_SESSION={shlex.quote(name)}",
        f"BIVY_SESSION_DIR={shlex.quote(workdir)}",
        f"BIVY_AGENT_STATE_DIR={shlex.quote(state_dir)}",
        f"BIVY_SESSION_AGENT_ENV={shlex.quote(env_file)}",
        "export BIVY_SESSION BIVY_AGENT_STATE_DIR",
    ]
    for key, value in (agent.get("config_env") or {}).items():
        out.append(f"export {key}={shlex.quote(value)}")
    command = agent.get("command") or []
    if command:
        plain = shlex.quote(command[0])  # without a prompt: the agent alone, no prompt flag
        with_prompt = " ".join('"$1"' if w == "{prompt}" else shlex.quote(w) for w in command)
        out.append(f"BIVY_SESSION_BINARY={shlex.quote(command[0])}")
        out.append(
            "bivy_session_start() {\n"
            + '    if [ -n "${1:-}" ]; then set -- ' + with_prompt
            + "; else set -- " + plain + "; fi\n"
            + '    "$@"\n'
            + "}"
        )
    else:
        out.append("BIVY_SESSION_BINARY=")
    print("\n".join(out))
    return 0


def record(path: str, pairs: list[str]) -> int:
    target = Path(path)
    data: dict[str, Any] = {}
    if target.exists():
        data = json.loads(target.read_text(encoding="utf-8"))
    for pair in pairs:
        key, _, value = pair.partition("=")
        data[key] = value == "true" if key in ("failed", "restored") else value
    write_atomic(target, json.dumps(data, indent=1) + "\n", 0o644)
    return 0


def get(path: str, key: str) -> int:
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8")).get(key, "")
    except (OSError, ValueError, AttributeError):
        value = ""
    print(value if isinstance(value, str) else json.dumps(value))
    return 0


def env_sh(path: str) -> int:
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        key, sep, value = line.partition("=")
        if sep and ENV_KEY_RE.match(key):
            print(f"export {key}={shlex.quote(value)}")
    return 0


def load_untrusted(path: Path) -> dict[str, Any]:
    # agent.json is the container's to write: a regular file only, no link, 64 KiB at most.
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    except OSError:
        return {}
    try:
        with os.fdopen(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                return {}
            data = json.loads(handle.read(65536))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def agent_file(state_dir: Path, name: str) -> Path:
    # Where a session's agent writes its state: main keeps the first agent's path.
    if name == "main":
        return state_dir / "agent" / "agent.json"
    return state_dir / "agent" / name / "agent.json"


def sessions(state_dir: Path) -> list[dict[str, Any]]:
    reports = []
    directory = state_dir / "sessions"
    paths = sorted(directory.glob("*.json")) if directory.is_dir() else []
    for path in paths:
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        name = entry.get("name") if isinstance(entry, dict) else None
        if not isinstance(name, str) or not NAME_RE.match(name) or path.stem != name:
            continue
        agent = load_untrusted(agent_file(state_dir, name))
        state = agent.get("state") if agent.get("state") in STATES else "unknown"
        report = {
            "name": name,
            "agent": str(entry.get("agent", "")),
            "branch": str(entry.get("branch", "")),
            "base": str(entry.get("base", "")),
            "worktree": str(entry.get("worktree", "")),
            "created_at": str(entry.get("created_at", "")),
            "state": state,
            "event": str(agent.get("event", ""))[:64],
            "message": str(agent.get("message", ""))[:500],
            "background_tasks": agent.get("background_tasks", 0)
            if isinstance(agent.get("background_tasks"), int)
            else 0,
            "updated_at": agent.get("updated_at") if isinstance(agent.get("updated_at"), str) else None,
            "failed": bool(entry.get("failed", False)),
        }
        if report["failed"]:
            report["message"] = str(entry.get("message", ""))[:500]
        reports.append(report)
    # main first, then by creation
    reports.sort(key=lambda r: (r["name"] != "main", r["created_at"], r["name"]))
    return reports


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        return fail("usage: session-data receive|launcher|record|get|env-sh|ls ...")
    command, args = argv[1], argv[2:]
    if command == "receive" and len(args) == 3:
        return receive(*args)
    if command == "launcher" and len(args) == 5:
        return launcher(*args)
    if command == "record" and args:
        return record(args[0], args[1:])
    if command == "get" and len(args) == 2:
        return get(*args)
    if command == "env-sh" and len(args) == 1:
        return env_sh(args[0])
    if command == "ls" and len(args) == 1:
        print(json.dumps(sessions(Path(args[0]))))
        return 0
    return fail(f"unknown use of session-data: {command}")


if __name__ == "__main__":
    sys.exit(main(sys.argv))
