"""``session-review`` against a session made by the real session command in a real devcontainer
(the pinned @devcontainers/cli, a private Docker engine; tests/integration/cloudinit/
test_sessions_real.py builds it): the worktree's paths are the container's, its files the
remote user's. The diff reads it from the VM's side; the commit the user asks for runs through
``docker exec`` as the remote user in the session's container folder; the bundle carries it.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.integration.cloudinit.test_sessions_real import (
    SessionVm,
    _log,
    _payload,
    claude_image,
    devcontainer_cli,
    session_vm,
)
from tests.support.review_vm import install_review_script

__all__ = ["claude_image", "devcontainer_cli", "session_vm"]


def review(vm: SessionVm, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(vm.lib / "session-review"), *args],
        env=vm.env, input="", capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


@pytest.mark.timeout(1500)
def test_review_of_a_real_session_in_its_devcontainer(
    session_vm: SessionVm, tmp_path: Path
) -> None:
    vm = session_vm
    install_review_script(vm.lib)
    assert vm.session("new", "main", "--agent", "claude").returncode == 0, _log(vm)
    made = vm.session("new", "feature", "--agent", "claude", stdin=_payload(None))
    assert made.returncode == 0, made.stderr + _log(vm)
    worktree = vm.sessions()["feature"].worktree
    # The agent's work, as the remote user inside the container: a commit, then more.
    vm.exec(
        "node", "sh", "-c",
        f"cd {worktree} && printf 'hello\\nmore\\n' > README.md && echo 'x = 1' > new.py && "
        "git add -A && git -c user.name=Agent -c user.email=agent@example.org commit -qm "
        "'agent: work' && echo 'y = 2' >> new.py && echo todo > todo.txt",
    )  # fmt: skip

    done = review(vm, "diff", "feature", "--json")
    assert done.returncode == 0, done.stderr
    from tests.integration.cloudinit.test_session_review import files_of

    data = json.loads(done.stdout)
    assert data["branch"] == "bivy/feature" and data["worktree"] == worktree
    assert files_of(data["committed"]) == {"README.md": ("M", 1, 0), "new.py": ("A", 1, 0)}
    assert files_of(data["uncommitted"]) == {"new.py": ("M", 1, 0), "todo.txt": ("A", 1, 0)}

    refused = review(vm, "bundle", "feature")
    assert refused.returncode == 3, refused.stderr
    bundled = review(
        vm, "bundle", "feature", "--commit-message", "Review: the rest",
        "--author-name", "Ada", "--author-email", "ada@example.org",
    )  # fmt: skip
    assert bundled.returncode == 0, bundled.stderr
    result = json.loads(bundled.stdout)
    assert result["committed"] is True
    # committed inside the container, as its user, in the worktree
    log = vm.exec("node", "sh", "-c", f"cd {worktree} && git log -1 --format='%H|%an|%s'")
    assert log.stdout.strip() == f"{result['commit']}|Ada|Review: the rest"
    assert vm.exec("node", "sh", "-c", f"cd {worktree} && git status --porcelain").stdout == ""
    clone = tmp_path / "home"
    subprocess.run(
        ["git", "clone", "-q", "-b", "bivy/feature", result["path"], str(clone)], check=True
    )
    assert (clone / "todo.txt").read_text() == "todo\n"

    main = review(vm, "diff", "main")
    assert main.returncode == 0, main.stderr
    assert main.stdout.startswith("Session main: branch main, 0 commit(s) since ")
