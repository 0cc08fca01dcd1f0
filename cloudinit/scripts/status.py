#!/usr/bin/python3
# Bivy status writer: merges KEY=VALUE pairs into status.json and replaces it atomically.
#
# Values: "" clears a field (null); "@EPOCH" in a *_at/*_since/*_deadline field becomes ISO-8601
# UTC; "<PATH" reads the last lines of a file (for log_tail); progress is a number; the flags
# (prebuild_stale, from_prebuild) are true or false;
# "steps.NAME=SECONDS" records how long a bootstrap step took (in the "steps" object). A new phase
# also records when it began ("timings": {phase: epoch seconds}, first time only);
# "timings.PHASE=EPOCH" sets one explicitly (the boot, which began before any writer ran). updated_at is
# always set. BIVY_NOW fakes the clock; BIVY_STATE_DIR moves the file (both for tests only).
"""Bivy status writer (see the comment above)."""

import fcntl
import json
import os
import sys
import tempfile
import time
from datetime import datetime, timezone

TIME_SUFFIXES = ("_at", "_since", "_deadline")
TAIL_LINES = 40
FLAGS = ("prebuild_stale", "from_prebuild")


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def tail(path: str) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 16384))
            lines = handle.read().decode("utf-8", "replace").splitlines()
    except OSError as exc:
        return f"(no log: {exc.strerror})"
    return "\n".join(lines[-TAIL_LINES:])


def convert(key: str, value: str) -> object:
    if value == "":
        return None
    if key in FLAGS:
        return value == "true"
    if key == "progress":
        return max(0.0, min(1.0, float(value)))
    if key.endswith(TIME_SUFFIXES) and value.startswith("@"):
        return iso(float(value[1:]))
    if value.startswith("<"):
        return tail(value[1:])
    return value


def main(argv: list[str]) -> int:
    state_dir = os.environ.get("BIVY_STATE_DIR", "{{ state_dir }}")
    path = os.path.join(state_dir, "status.json")
    # The bootstrap, the idle monitor and the backup all write: merge one at a time, so no
    # writer puts back a field another has just changed.
    with open(os.path.join(state_dir, ".status.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return merge(path, state_dir, argv)


def merge(path: str, state_dir: str, argv: list[str]) -> int:
    try:
        with open(path, encoding="utf-8") as handle:
            status = json.load(handle)
        if not isinstance(status, dict):
            status = {}
    except (OSError, ValueError):
        status = {}
    now = float(os.environ.get("BIVY_NOW") or time.time())
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or not key:
            print(f"bivy-status: expected KEY=VALUE, got {arg!r}", file=sys.stderr)
            return 2
        group, dot, name = key.partition(".")
        if dot and group in ("steps", "timings"):
            values = status.get(group)
            values = values if isinstance(values, dict) else {}
            values[name] = round(float(value), 1 if group == "steps" else 3)
            status[group] = values
            continue
        status[key] = convert(key, value)
        if key == "phase" and value:
            timings = status.get("timings")
            timings = timings if isinstance(timings, dict) else {}
            timings.setdefault(value, round(now, 3))
            status["timings"] = timings
    status["updated_at"] = iso(now)
    fd, tmp = tempfile.mkstemp(prefix=".status.", dir=state_dir)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(status, handle, indent=1, sort_keys=True)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
