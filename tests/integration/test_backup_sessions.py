"""Backups keep every session (issue 15): the VM's backup scripts for real (Debian's restic
against moto's S3 server, as tests/integration/test_restic_s3.py runs them) on a workspace with a
second session — its worktree's commits, uncommitted and untracked work, its record, and the
config dir of its agent — and a restore on a new VM brings the worktree back on its branch.

The session's worktree is made as the container makes it, with the container's paths in its
git links (here they are not this machine's paths), which the backup must not depend on.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from app.cloudinit import render_cloud_config
from tests.integration import test_restic_s3
from tests.integration.test_restic_s3 import VM, S3Server, _git, _make_vm, s3
from tests.unit.cloudinit.vmtree import inputs_for, materialize

__all__ = ["s3"]

pytestmark = pytest.mark.skipif(test_restic_s3.RESTIC is None, reason="restic is needed")


@pytest.fixture(autouse=True)
def _plain_cloud_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """The VM's files from the plain cloud-config: the scripts are under test, not the fit."""

    def render(spec: object, root: Path, **overrides: object) -> dict[str, str]:
        return materialize(render_cloud_config(inputs_for(spec, **overrides)), root)  # type: ignore[arg-type]

    monkeypatch.setattr(test_restic_s3, "render_tree", render)


def _record(vm: VM, name: str, branch: str, agent: str = "claude") -> None:
    sessions = vm.root / "state" / "sessions"
    sessions.mkdir(parents=True, exist_ok=True)
    worktree = "/workspaces/demo" + ("" if name == "main" else f"/.bivy/worktrees/{name}")
    record = {"name": name, "agent": agent, "branch": branch, "base": "", "worktree": worktree,
              "created_at": "2026-12-02T02:00:00Z"}  # fmt: skip
    (sessions / f"{name}.json").write_text(json.dumps(record))


def _as_in_the_container(ws: Path, name: str, container: str) -> None:
    """Rewrite the worktree's links to the paths the container saw (``container`` is the
    repository folder there), as `git worktree add` run inside it leaves them."""
    (ws / ".bivy" / "worktrees" / name / ".git").write_text(
        f"gitdir: {container}/.git/worktrees/{name}\n"
    )
    (ws / ".git" / "worktrees" / name / "gitdir").write_text(
        f"{container}/.bivy/worktrees/{name}/.git\n"
    )


@pytest.mark.slow
def test_a_sessions_worktree_and_agent_survive_backup_and_restore(
    tmp_path: Path, s3: S3Server
) -> None:
    remote = tmp_path / "remote.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(remote)], check=True)
    seed = tmp_path / "seed"
    subprocess.run(["git", "clone", "-q", str(remote), str(seed)], check=True, capture_output=True)
    (seed / ".gitignore").write_text("*.log\n")
    (seed / "app.py").write_text("print('v1')\n")
    _git(seed, "add", ".")
    _git(seed, "commit", "-q", "-m", "initial")
    _git(seed, "push", "-q", "origin", "HEAD:main")

    repository = s3.repository("bivy/sessions")
    first = _make_vm(tmp_path, "first", repository)
    first.agent.mkdir()
    first.workspace.parent.mkdir(parents=True)
    subprocess.run(["git", "clone", "-q", str(remote), str(first.workspace)], check=True)
    ws = first.workspace
    (ws / ".git" / "info" / "exclude").write_text("/.bivy/\n")
    _git(ws, "worktree", "add", "-q", "-b", "bivy/feature", ".bivy/worktrees/feature")
    tree = ws / ".bivy" / "worktrees" / "feature"
    (tree / "feature.py").write_text("def feature():\n    return 42\n")
    _git(tree, "add", "feature.py")
    _git(tree, "commit", "-q", "-m", "the agent's commit")
    head = _git(tree, "rev-parse", "HEAD").strip()
    (tree / "app.py").write_text("print('v2 in the session')\n")  # uncommitted
    (tree / "notes.md").write_text("untracked in the session\n")
    (tree / "debug.log").write_text("ignored\n")
    _as_in_the_container(ws, "feature", "/workspaces/elsewhere")
    (ws / "app.py").write_text("print('main edits too')\n")
    _record(first, "main", "main")
    _record(first, "feature", "bivy/feature", agent="codex")
    codex = first.root / "state" / "agent" / ".agents" / "codex"
    codex.mkdir(parents=True)
    (codex / "auth.json").write_text('{"OPENAI_API_KEY": "sk-not-real"}')
    (codex / "sessions").mkdir()
    (codex / "sessions" / "rollout.jsonl").write_text('{"type":"turn"}\n')

    assert first.run("restore").returncode == 0
    result = first.run("backup")
    assert result.returncode == 0, result.stderr

    second = _make_vm(tmp_path, "second", repository)
    second.workspace.parent.mkdir(parents=True)
    subprocess.run(["git", "clone", "-q", str(remote), str(second.workspace)], check=True)
    result = second.run("restore")
    assert result.returncode == 0, result.stderr
    assert "restored session feature" in result.stderr
    ws2 = second.workspace
    tree2 = ws2 / ".bivy" / "worktrees" / "feature"
    # The worktree, on its branch at the agent's commit, with its unsaved work; main's too.
    assert _git(tree2, "rev-parse", "HEAD").strip() == head
    assert _git(tree2, "symbolic-ref", "--short", "HEAD").strip() == "bivy/feature"
    for name in ("app.py", "feature.py", "notes.md"):
        assert (tree2 / name).read_text() == (tree / name).read_text(), name
    assert not (tree2 / "debug.log").exists()
    assert {line[3:] for line in _git(tree2, "status", "--porcelain").splitlines()} == {
        "app.py",
        "notes.md",
    }
    assert (ws2 / "app.py").read_text() == "print('main edits too')\n"
    assert _git(ws2, "status", "--porcelain").splitlines() == [" M app.py"]  # .bivy/ excluded
    # Its record, for `session new main` to adopt; the main record is the bootstrap's to make.
    records = sorted(p.name for p in (second.root / "state" / "sessions").iterdir())
    assert records == ["feature.json"]
    record = json.loads((second.root / "state" / "sessions" / "feature.json").read_text())
    assert (record["agent"], record["branch"]) == ("codex", "bivy/feature")
    # The session's other agent's config dir came back as it was.
    codex2 = second.root / "state" / "agent" / ".agents" / "codex"
    assert (codex2 / "auth.json").read_text() == (codex / "auth.json").read_text()
    assert (codex2 / "sessions" / "rollout.jsonl").read_text() == '{"type":"turn"}\n'
