#!/usr/bin/python3
"""Turns `devcontainer up`'s JSON result into shell assignments (quoted) for the other scripts.

Usage: container-env UP_JSON [--override-config PATH] (the config chosen at the first start, so
later CLI calls use the same one).
"""

import json
import shlex
import sys


def main(path: str, *rest: str) -> int:
    with open(path, encoding="utf-8") as handle:
        lines = [line for line in handle.read().splitlines() if line.startswith("{")]
    result = json.loads(lines[-1])
    if result.get("outcome") != "success":
        print(f"devcontainer up: {result.get('message', 'failed')}", file=sys.stderr)
        return 1
    values = {
        "BIVY_CONTAINER_ID": result["containerId"],
        "BIVY_REMOTE_USER": result.get("remoteUser") or "root",
        "BIVY_REMOTE_WORKSPACE": result.get("remoteWorkspaceFolder") or "/",
    }
    override = rest[1] if len(rest) == 2 and rest[0] == "--override-config" else ""
    values["BIVY_DEVCONTAINER_OVERRIDE"] = override
    for key, value in values.items():
        print(f"{key}={shlex.quote(str(value))}")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
