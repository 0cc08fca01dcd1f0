#!/usr/bin/env python3
"""Bivy: puts an agent's hook configuration in place (agents other than Claude Code, which has
claude-config). Runs on the VM as root, after the devcontainer is up, before the agent starts.

    agent-config MANIFEST HOST_DIR CONTAINER_DIR [CONTAINER_ID]

MANIFEST is a JSON list of {"source", "target", "merge"} (the renderer writes it next to the
rendered files; a relative source is relative to the manifest). A target inside CONTAINER_DIR
(the agent's persistent config dir, bind-mounted from HOST_DIR) is written on this side; any
other target (Codex's /etc/codex/requirements.toml) is written inside the container as root with
`docker exec`. merge: "replace" writes the file;
"json" merges Bivy's "hooks" into the agent's JSON settings (the user's own hooks and keys stay,
Bivy's earlier entries are replaced; Bivy's other keys win); "toml" puts Bivy's top-level keys
first in the agent's TOML config, replacing the same keys, and leaves the rest alone.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

#: A hook command Bivy wrote earlier names its adapter under this directory.
BIVY_HOOK_MARK = "/bivy/hook/"


def _is_bivy(group: Any) -> bool:
    return BIVY_HOOK_MARK in json.dumps(group)


def _deep_merge(theirs: Any, ours: Any) -> Any:
    """Bivy's settings win; the user's other keys stay."""
    if isinstance(theirs, dict) and isinstance(ours, dict):
        return {**theirs, **{k: _deep_merge(theirs.get(k), v) for k, v in ours.items()}}
    return ours


def merge_json(existing: str, ours: str) -> str:
    try:
        current = json.loads(existing) if existing.strip() else {}
    except json.JSONDecodeError:
        current = {}
    if not isinstance(current, dict):
        current = {}
    mine = json.loads(ours)
    for key, value in mine.items():
        if key != "hooks":
            current[key] = _deep_merge(current.get(key), value)
    hooks = current.get("hooks") if isinstance(current.get("hooks"), dict) else {}
    for event, groups in mine.get("hooks", {}).items():
        kept = [g for g in hooks.get(event, []) if not _is_bivy(g)]
        hooks[event] = kept + groups
    current["hooks"] = hooks
    return json.dumps(current, indent=2) + "\n"


def merge_toml(existing: str, ours: str) -> str:
    keys = set(tomllib.loads(ours))
    try:
        tomllib.loads(existing)
    except tomllib.TOMLDecodeError:
        raise SystemExit("the agent's TOML config does not parse; left as it is") from None
    lines = existing.splitlines()
    # Top-level keys are the ones before the first table header.
    first_table = next((i for i, line in enumerate(lines) if line.lstrip().startswith("[")), None)
    top = lines if first_table is None else lines[:first_table]
    rest = [] if first_table is None else lines[first_table:]
    pattern = re.compile(r"^\s*(" + "|".join(map(re.escape, sorted(keys))) + r")\s*=")
    top = [line for line in top if not pattern.match(line)]
    merged = "\n".join([ours.rstrip("\n"), *top, *rest]).rstrip("\n") + "\n"
    tomllib.loads(merged)  # never leave a file the agent cannot read
    return merged


def _no_symlinks(root: Path, path: Path, target: str) -> None:
    """The container's user owns the config dir: root must not follow a link it planted."""
    part = path
    while part != root:
        if part.is_symlink():
            raise SystemExit(f"refusing to write through a symlink: {target}")
        part = part.parent
    if not path.resolve().is_relative_to(root.resolve()):
        raise SystemExit(f"refusing to write outside the agent's config dir: {target}")


def render(merge: str, existing: str, ours: str) -> str:
    if merge == "json":
        return merge_json(existing, ours)
    if merge == "toml":
        return merge_toml(existing, ours)
    return ours


def main(argv: list[str]) -> int:
    manifest, host_dir, container_dir = Path(argv[1]), Path(argv[2]), argv[3].rstrip("/")
    container = argv[4] if len(argv) > 4 else ""
    for entry in json.loads(manifest.read_text(encoding="utf-8")):
        ours = (manifest.parent / entry["source"]).read_text(encoding="utf-8")
        target: str = entry["target"]
        merge: str = entry.get("merge", "replace")
        if target.startswith(container_dir + "/"):
            path = host_dir / target[len(container_dir) + 1 :]
            _no_symlinks(host_dir, path, target)
            path.parent.mkdir(parents=True, exist_ok=True)
            existing = path.read_text(encoding="utf-8") if path.exists() else ""
            tmp = path.with_name(f".{path.name}.bivy")
            tmp.write_text(render(merge, existing, ours), encoding="utf-8")
            os.replace(tmp, path)
            print(f"wrote {target}")
            continue
        if not container:
            raise SystemExit(f"{target} is outside {container_dir} and no container was given")
        # Outside the persistent dir: a system file of the container, written by its root.
        script = 'mkdir -p "$(dirname "$1")" && cat >"$1" && chmod 0644 "$1"'
        subprocess.run(
            ["docker", "exec", "-i", "-u", "root", container, "sh", "-c", script, "sh", target],
            input=render(merge, "", ours),
            text=True,
            check=True,
        )
        print(f"wrote {target} in the container")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
