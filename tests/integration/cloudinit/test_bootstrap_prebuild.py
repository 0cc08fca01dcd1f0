"""The bootstrap on a VM booted from a prebuild image (issue 14): prebuild.json and the clone are
there, so the clone is updated instead of made (real git, from a URL and from the app's bundle),
and what the prebuild built (untracked dependencies, build output) stays. The system tools and
devcontainer-up are the recorders of test_bootstrap; the devcontainer side runs for real in
test_prebuild_real.py."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

from tests.integration.cloudinit.test_bootstrap import _make_vm, _run

GIT_ID = ["-c", "user.name=t", "-c", "user.email=t@example.org"]


def _git(repo: Path, *args: str) -> str:
    result = subprocess.run(
        ["git", "-c", f"safe.directory={repo}", *GIT_ID, "-C", str(repo), *args],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return result.stdout.strip()


def _as_prebuilt(tmp_path: Path, clone: Path) -> None:
    """What a sealed prebuild leaves: prebuild.json, and the clone owned by the devcontainer's
    user (uid 1000 here), with build output git does not track."""
    state = tmp_path / "vm" / "state"
    (state / "prebuild.json").write_text(json.dumps({"config_hash": "0" * 16}))
    (clone / "node_modules").mkdir()
    (clone / "node_modules" / "dep.js").write_text("built\n")
    (clone / ".git" / "info" / "exclude").write_text("node_modules/\n")
    if os.geteuid() == 0:  # git refuses a repository another user owns, root included
        subprocess.run(["chown", "-R", "1000:1000", str(clone)], check=True)


def _status(tmp_path: Path) -> dict[str, object]:
    data: dict[str, object] = json.loads((tmp_path / "vm" / "state" / "status.json").read_text())
    return data


def _logs(tmp_path: Path) -> str:
    logs = tmp_path / "vm" / "state" / "log"
    return "\n".join(f"--- {p.name}\n{p.read_text()}" for p in sorted(logs.glob("*.log")))


def test_the_prebuilt_clone_is_updated_to_the_branchs_latest_commit(tmp_path: Path) -> None:
    env, log = _make_vm(tmp_path)  # branch feat/$(x) of a local origin
    origin = tmp_path / "origin"
    clone = tmp_path / "workspaces" / "r"
    subprocess.run(["git", "clone", "-q", "--branch", "feat/$(x)", str(origin), str(clone)],
                   check=True)  # fmt: skip
    (origin / "gone.txt").write_text("x\n")  # not in the prebuild: appears; README changes
    _git(origin, "checkout", "-q", "feat/$(x)")
    (origin / "README.md").write_text("newer\n")
    _git(origin, "add", "-A")
    _git(origin, "commit", "-q", "-m", "after the prebuild")
    latest = _git(origin, "rev-parse", "HEAD")
    _as_prebuilt(tmp_path, clone)
    result = _run(tmp_path, env)
    assert result.returncode == 0, _logs(tmp_path)
    assert _git(clone, "rev-parse", "HEAD") == latest
    assert _git(clone, "branch", "--show-current") == "feat/$(x)"
    assert _git(clone, "rev-parse", "--abbrev-ref", "@{upstream}") == "origin/feat/$(x)"
    assert (clone / "README.md").read_text() == "newer\n"
    assert (clone / "gone.txt").exists()
    assert (clone / "node_modules" / "dep.js").read_text() == "built\n"  # the prebuild's work
    status = _status(tmp_path)
    assert status["phase"] == "ready" and status["from_prebuild"] is True
    # The token was offered to the fetch and is gone as after a clone.
    assert not (tmp_path / "vm" / "etc" / "git-token").exists()
    assert "ghp_once" not in (clone / ".git" / "config").read_text()
    assert "devcontainer-up" in log.read_text()
    # Still the devcontainer user's (devcontainer-up hands it over anyway): no walk to dev.
    assert "chown -R dev:dev" not in log.read_text()


def test_the_default_branch_is_the_remotes(tmp_path: Path) -> None:
    env, _ = _make_vm(tmp_path)
    with (tmp_path / "vm" / "etc" / "workspace.env").open("a") as handle:
        handle.write("BIVY_BRANCH=''\n")
    origin = tmp_path / "origin"
    clone = tmp_path / "workspaces" / "r"
    subprocess.run(["git", "clone", "-q", "--branch", "feat/$(x)", str(origin), str(clone)],
                   check=True)  # fmt: skip
    (origin / "README.md").write_text("main moved on\n")
    _git(origin, "commit", "-q", "-am", "main")
    _as_prebuilt(tmp_path, clone)
    assert _run(tmp_path, env).returncode == 0, _logs(tmp_path)
    assert _git(clone, "branch", "--show-current") == "main"
    assert (clone / "README.md").read_text() == "main moved on\n"


def test_a_prebuilt_clone_of_another_repository_is_replaced(tmp_path: Path) -> None:
    env, _ = _make_vm(tmp_path)
    other = tmp_path / "other"
    subprocess.run(["git", "init", "-q", "-b", "main", str(other)], check=True)
    (other / "OTHER").write_text("x\n")
    _git(other, "add", "-A")
    _git(other, "commit", "-q", "-m", "other")
    clone = tmp_path / "workspaces" / "r"
    subprocess.run(["git", "clone", "-q", str(other), str(clone)], check=True)
    _as_prebuilt(tmp_path, clone)
    assert _run(tmp_path, env).returncode == 0, _logs(tmp_path)
    assert not (clone / "OTHER").exists() and (clone / "README.md").read_text() == "hello\n"
    assert _git(clone, "branch", "--show-current") == "feat/$(x)"


def _bundle(repo: Path, target: Path, *extra: str) -> None:
    subprocess.run(["git", "-C", str(repo), "bundle", "create", "-q", str(target), "HEAD",
                    "--branches", *extra], check=True)  # fmt: skip


def test_a_bundle_updates_the_prebuilt_clone(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    subprocess.run(["git", "init", "-q", "-b", "trunk", str(mine)], check=True)
    (mine / "a.txt").write_text("one\n")
    (mine / "gone.txt").write_text("removed later\n")
    _git(mine, "add", "-A")
    _git(mine, "commit", "-q", "-m", "one")
    _git(mine, "branch", "side")
    first = tmp_path / "first.bundle"
    _bundle(mine, first)
    # The prebuild's clone, as the bundle path leaves it (no remote, local branches).
    clone = tmp_path / "workspaces" / "r"
    subprocess.run(["git", "clone", "-q", str(first), str(clone)], check=True)
    _git(clone, "remote", "remove", "origin")
    # The user went on: a.txt changed, gone.txt deleted, side moved, work not committed.
    (mine / "a.txt").write_text("two\n")
    (mine / "gone.txt").unlink()
    _git(mine, "add", "-A")
    _git(mine, "commit", "-q", "-m", "two")
    latest = _git(mine, "rev-parse", "HEAD")
    _git(mine, "branch", "-f", "side", "HEAD")
    (mine / "a.txt").write_text("uncommitted\n")
    index = tmp_path / "index"
    wip_env = {**os.environ, "GIT_INDEX_FILE": str(index)}
    subprocess.run(["git", "-C", str(mine), "add", "-A"], env=wip_env, check=True)
    tree = subprocess.run(["git", "-C", str(mine), "write-tree"], env=wip_env,
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    wip = _git(mine, "commit-tree", tree, "-p", "HEAD", "-m", "wip")
    _git(mine, "update-ref", "refs/bivy/uncommitted", wip)
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    bundle = incoming / "repo.bundle"
    _bundle(mine, bundle, "refs/bivy/uncommitted")
    (incoming / "repo.bundle.sha256").write_text(hashlib.sha256(bundle.read_bytes()).hexdigest())

    env, _ = _make_vm(tmp_path, repo_url=str(mine), branch="")
    env.update(BIVY_INCOMING_DIR=str(incoming))
    _as_prebuilt(tmp_path, clone)
    assert _run(tmp_path, env).returncode == 0, _logs(tmp_path)
    assert _git(clone, "branch", "--show-current") == "trunk"
    assert _git(clone, "rev-parse", "HEAD") == latest
    assert _git(clone, "rev-parse", "side") == latest
    assert not (clone / "gone.txt").exists()
    assert (clone / "a.txt").read_text() == "uncommitted\n"  # still uncommitted
    assert _git(clone, "status", "--porcelain") == "M a.txt"
    assert (clone / "node_modules" / "dep.js").exists()
    assert "refs/bivy/" not in _git(clone, "for-each-ref")
    assert _git(clone, "remote") == ""
    assert list(incoming.iterdir()) == []
    assert _status(tmp_path)["from_prebuild"] is True
