"""End to end, sessions (issue 15): a workspace from a checkout on this computer boots as a real
guest (``--provider local``) with a 1-minute idle window; ``bivy session new`` starts a second
session (its worktree, branch and tmux session inside the real devcontainer); while that
session's agent works — hook events from inside the container into its own agent.json — and
main's is idle, the VM stays, long past its idle window and the keep-alive of the last command;
once it is idle too, the VM deletes itself.

Slow (a VM under emulation): ``pytest -m e2e tests/e2e/test_sessions_e2e.py``, under the machine's
VM lock (``flock /work/notes/vm.lock``).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from tests.e2e.harness import AGENT_IMAGE, E2E, log, make_repo

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

WAIT_SECONDS = float(os.environ.get("BIVY_E2E_WAIT_SECONDS", "2400"))
#: How long the second session's agent "works" (a hook event every BEAT seconds).
WORK_SECONDS = 480
BEAT = 20
SELF_DELETE_SECONDS = 900


def _sessions(e2e: E2E, name: str) -> dict[str, dict[str, object]]:
    """``bivy session ls --json``: the app's SSH read, which is no activity for the VM."""
    rows = json.loads(e2e.must("session", "ls", name, "--json", timeout=300))
    return {str(r["name"]): r for r in rows}


@pytest.mark.timeout(WAIT_SECONDS + WORK_SECONDS + SELF_DELETE_SECONDS + 1800)
def test_a_working_session_keeps_the_vm_and_all_idle_deletes_it(e2e: E2E, tmp_path: Path) -> None:
    name = "e2e-sessions"
    # Claude Code comes preinstalled in this repository's image (the main e2e proves the npm
    # install; this test is about sessions, and runs beside the other VM tests in CI).
    repo = make_repo(tmp_path / "repos", "e2e-sessions", "user", image=AGENT_IMAGE)
    e2e.create(name, str(repo), "--idle-minutes", "1")
    result = e2e.wait(name, WAIT_SECONDS, 5.0)
    assert result.returncode == 0, f"{name} did not reach ready:\n{result.text[-6000:]}"
    # A command keeps the keep-alive lease 2 minutes ahead (app/cli/remote.py): time enough for
    # the next steps, whose own SSH reads are no activity for the VM.
    e2e.must("ssh", name, "--", "true", timeout=300)
    assert list(_sessions(e2e, name)) == ["main"]

    out = e2e.must("session", "new", name, "s1", "--agent", "claude", timeout=900)
    log(out)
    sessions = _sessions(e2e, name)
    assert list(sessions) == ["main", "s1"]
    assert sessions["s1"]["branch"] == "bivy/s1"
    worktree = str(sessions["s1"]["worktree"])
    assert worktree.endswith("/.bivy/worktrees/s1")

    # The session's agent works for WORK_SECONDS: a hook event from inside the container into
    # s1's state dir every BEAT seconds, then the end of the turn (Stop). Started in the
    # background by one `bivy exec`, whose keep-alive lease runs out 2 minutes after it.
    hook = "BIVY_AGENT_STATE_DIR=/bivy/state/s1 /bivy/hook/agent-hook"
    # (inside the outer sh's double quotes: the loop's own $ is escaped for it)
    loop = (
        f"i=0; while [ \\$i -lt {WORK_SECONDS // BEAT} ]; do echo '{{}}' | {hook} PreToolUse; "
        f"sleep {BEAT}; i=\\$((i+1)); done; echo '{{}}' | {hook} Stop"
    )
    e2e.must(
        "exec", name, "--", "sh", "-c",
        f"cd {worktree} && setsid nohup sh -c \"{loop}\" >/dev/null 2>&1 &",
        timeout=600,
    )  # fmt: skip
    started = time.monotonic()
    time.sleep(WORK_SECONDS - 120)  # past the lease and several idle windows
    sessions = _sessions(e2e, name)
    assert sessions["s1"]["state"] == "working", sessions
    assert sessions["main"]["state"] != "working", sessions
    entry = e2e.entry(name)
    assert entry is not None and entry.get("phase") == "ready", entry
    log(f"{name}: alive {time.monotonic() - started:.0f} s on s1's work alone")

    # s1 idle too: the VM deletes itself (the local provider reaps it).
    deadline = started + WORK_SECONDS + SELF_DELETE_SECONDS
    while e2e.entry(name) is not None:
        assert time.monotonic() < deadline, f"{name} still there with every session idle"
        time.sleep(15)
    gone = time.monotonic() - started
    log(f"{name} deleted itself {gone:.0f} s after s1 started working ({WORK_SECONDS} s of work)")
    assert gone > WORK_SECONDS - 30
