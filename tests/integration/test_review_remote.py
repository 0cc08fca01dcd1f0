"""``bivy session diff`` / ``bivy session push`` end to end against a real sshd that shows the
VM's paths and user (tests/support/vmroot.py): the app's own command line (``sudo -n
/usr/local/lib/bivy/session-review …``) through its pinned-key connection, logged in as ``dev``
with the VM's sudo rule, running the rendered script on a real repository with a session.

- A workspace from a checkout on this computer: push brings the branch home — the VM bundles it,
  the app downloads it over SFTP, deletes it on the VM and fetches it into the checkout as
  ``bivy/s1``; the user's checked-out branch, index and work tree stay exactly as they were.
- A workspace cloned by URL: push sends the branch to a bare repository served by
  ``git http-backend`` over TLS behind basic auth, with the git token from the keychain on the
  command's stdin; afterwards the token is nowhere on the VM's disk or in RAM files.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app import cli
from app.cli.base import Command, SubParsers
from app.cli.review import add_review_verbs
from app.errors import ActionFailed, InvalidInput
from app.services.registry import Registry, WorkspaceRecord
from app.services.review import ReviewService, review_script
from app.services.tunnels import SSHTarget, TunnelService
from app.settings import SecretKeys, SecretStore
from tests.support.git_http import serve_git_http
from tests.support.local_repo import git
from tests.support.review_vm import (
    OWNER,
    Vm,
    files_containing,
    make_home_repo,
    make_vm,
    owner_git,
    refs_of,
    write_file,
)
from tests.support.sshd import SshServer
from tests.support.vmroot import VmUser, vm_sshd

pytestmark = pytest.mark.needs_root("to show the VM's paths and user to an sshd")

TOKEN = "ghp_RemoteReviewToken0123456789abcdefXY"
SFTP = "Subsystem sftp internal-sftp\n"


@pytest.fixture(autouse=True)
def _root_reads_any_repository(monkeypatch: pytest.MonkeyPatch) -> None:
    """This test's own git (as root) may read the owner's repositories."""
    monkeypatch.setenv("GIT_CONFIG_COUNT", "1")
    monkeypatch.setenv("GIT_CONFIG_KEY_0", "safe.directory")
    monkeypatch.setenv("GIT_CONFIG_VALUE_0", "*")


@pytest.fixture
def base() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="bivy-review-", dir="/tmp"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def temp_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where the app's temporary folders go (to check the downloaded bundle is removed)."""
    folder = tmp_path / "app-tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def _vm_user() -> VmUser:
    import yaml

    from app.cloudinit import render_cloud_config
    from app.domain import WorkspaceSpec
    from tests.unit.cloudinit.vmtree import inputs_for

    spec = WorkspaceSpec(name="w", repo_url="https://example.invalid/r.git")
    users = yaml.safe_load(render_cloud_config(inputs_for(spec)))["users"]
    entry = next(u for u in users if isinstance(u, dict) and u.get("sudo"))
    return VmUser(name=entry["name"], sudo=entry["sudo"], shell=entry.get("shell", "/bin/bash"))


def _layout(vm: Vm, **more: Path) -> dict[str, Path]:
    return {
        "/usr/local/lib/bivy": vm.lib,
        "/etc/bivy": vm.root / "etc",
        "/var/lib/bivy": vm.root / "state",
        **{path.replace("_", "/"): source for path, source in more.items()},
    }


def _register(server: SshServer, repo_url: str) -> None:
    Registry().put(
        WorkspaceRecord(
            name="demo",
            account="local",
            provider="local",
            repo_url=repo_url,
            ipv4=server.host,
            ssh_port=server.port,
            host_public_key=server.host_public_key,
        )
    )
    SecretStore().set(SecretKeys.SSH_PRIVATE_KEY, server.client_private_key)


def _session_group(sub: SubParsers) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser("session")
    add_review_verbs(parser.add_subparsers(dest="verb", metavar="VERB"))
    return parser


def bivy(*argv: str, monkeypatch: pytest.MonkeyPatch) -> tuple[int, str, str]:
    """The real ``bivy`` entry point; the ``session`` group is the one in app/cli/sessions.py
    once it exists, else a stand-in that only holds the review verbs."""
    if not any(c.name == "session" for c in cli.COMMANDS):
        stand_in = Command("session", _session_group, lambda args, ctx: 2)
        monkeypatch.setattr(cli, "COMMANDS", [*cli.COMMANDS, stand_in])
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def _state(repo: Path) -> dict[str, Any]:
    """What bringing a branch home must leave alone in the user's checkout."""
    return {
        "head": (repo / ".git" / "HEAD").read_text(),
        "index": hashlib.sha256((repo / ".git" / "index").read_bytes()).hexdigest(),
        "status": git(repo, "status", "--porcelain", "--untracked-files=all"),
        "branches": [
            line
            for line in git(repo, "for-each-ref", "--format=%(objectname) %(refname)").splitlines()
            if not line.endswith(" refs/heads/bivy/s1")
        ],
        "files": sorted(
            (str(p.relative_to(repo)), p.read_bytes())
            for p in repo.rglob("*")
            if p.is_file() and ".git" not in p.relative_to(repo).parts
        ),
    }


def test_bring_home_fetches_the_branch_into_the_checkout_and_nothing_else(
    base: Path, temp_dirs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = make_home_repo(base / "home" / "project")
    git(home, "config", "user.name", "Grace Hopper")
    git(home, "config", "user.email", "grace@example.invalid")
    vm = make_vm(base / "vm", source=home, repo_url=str(home))
    # the user works on in their checkout meanwhile: another branch, uncommitted changes
    git(home, "checkout", "-q", "-b", "mine")
    write_file(home / "README.md", "hello, my own edit\n")
    write_file(home / "scratch.txt", "untracked\n")
    before = _state(home)
    (vm.lib / "session-review").unlink()  # the app puts its own version there on first use

    with vm_sshd(_layout(vm), _vm_user(), extra_config=SFTP) as server:
        _register(server, str(home))
        code, out, err = bivy("session", "diff", "demo", "s1", monkeypatch=monkeypatch)
        assert code == 0, err
        assert (vm.lib / "session-review").read_text() == review_script()
        assert (vm.lib / "session-review").stat().st_uid == 0
        assert out.startswith("Session s1 of demo: branch bivy/s1, 2 commit(s) since ")
        assert "+2 -1  src/app.py" in out and "binary  logo.bin" in out
        assert "Uncommitted: 3 files changed" in out and "(new, untracked)" in out
        code, out, err = bivy("session", "diff", "demo", "s1", "--json", monkeypatch=monkeypatch)
        assert code == 0, err
        data = json.loads(out)
        assert (data["committed"]["insertions"], data["committed"]["deletions"]) == (6, 2)
        logo = next(f for f in data["committed"]["files"] if f["path"] == "logo.bin")
        assert logo["binary"] is True and logo["insertions"] is None
        assert [f["path"] for f in data["uncommitted"]["files"] if f["untracked"]] == [
            "notes/todo.md"
        ]

        refused = bivy("session", "push", "demo", "s1", monkeypatch=monkeypatch)
        assert refused[0] == 1
        assert "uncommitted changes in 3 file(s)" in refused[2]
        assert "Give a commit message" in refused[2]
        assert git(home, "branch", "--list", "bivy/*") == ""

        code, out, err = bivy(
            "session", "push", "demo", "s1", "-m", "Review: finish", monkeypatch=monkeypatch
        )
        assert code == 0, err
        head = git(vm.worktree, "rev-parse", "HEAD").strip()
        assert out.strip() == (
            f"Committed the uncommitted changes, then fetched bivy/s1 ({head[:10]}) into "
            f"{home} as branch bivy/s1; your checked-out branch and files were not touched."
        )
        assert "Downloading the branch (" in err
        # the branch is home, as the VM has it, committed by the user's identity from here
        assert git(home, "rev-parse", "refs/heads/bivy/s1").strip() == head
        assert git(home, "log", "-1", "--format=%an <%ae>|%s", "bivy/s1") == (
            "Grace Hopper <grace@example.invalid>|Review: finish\n"
        )
        assert "notes/todo.md" in git(home, "show", "--name-only", "--format=", "bivy/s1")
        # nothing else in the checkout moved; nothing is left behind on either side
        assert _state(home) == before
        assert list(temp_dirs.iterdir()) == []
        tunnels = TunnelService(client_key=server.client_private_key)

        async def leftovers() -> str:
            try:
                tunnel = await tunnels.open(
                    SSHTarget("demo", server.host, server.host_public_key, server.port)
                )
                return (await tunnel.run("ls -A ~/bivy-outgoing")).stdout
            finally:
                await tunnels.close_all()

        assert asyncio.run(leftovers()) == ""

        # again, nothing new: a fast-forward to the same commit
        assert bivy("session", "push", "demo", "s1", monkeypatch=monkeypatch)[0] == 0
        # the user's bivy/s1 moved on at home: never overwritten
        tree = git(home, "rev-parse", "bivy/s1^{tree}").strip()
        mine = git(home, "commit-tree", tree, "-p", head, "-m", "my own work on it").strip()
        git(home, "branch", "-f", "bivy/s1", mine)
        diverged = bivy("session", "push", "demo", "s1", monkeypatch=monkeypatch)
        assert diverged[0] == 1
        assert "bivy/s1 in " in diverged[2] and "has commits the session's branch" in diverged[2]
        assert git(home, "rev-parse", "bivy/s1").strip() == mine
        # checked out at home: refused before anything runs on the VM
        git(home, "branch", "-f", "bivy/s1", head)
        git(home, "stash", "-q", "-u")
        git(home, "checkout", "-q", "bivy/s1")
        busy = bivy("session", "push", "demo", "s1", monkeypatch=monkeypatch)
        assert busy[0] == 1 and "has bivy/s1 checked out" in busy[2]


def test_push_by_url_uses_the_keychain_token_once(
    base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    vm = make_vm(base / "vm")
    owner_git(vm.worktree, "add", "-A")
    owner_git(vm.worktree, "commit", "-q", "-m", "agent: all of it")
    head = git(vm.worktree, "rev-parse", "HEAD").strip()
    served = tmp_path / "served"
    served.mkdir()
    bare = served / "project.git"
    subprocess.run(["git", "init", "-q", "--bare", str(bare)], check=True)
    with serve_git_http(served, token=TOKEN) as http:
        certs = base / "certs"
        certs.mkdir()
        shutil.copy(http.ca_file, certs / "ca-certificates.crt")  # the VM trusts the server
        certs.chmod(0o755)
        url = http.url_for("project.git")
        with vm_sshd(_layout(vm, _etc_ssl_certs=certs), _vm_user()) as server:
            _register(server, url)
            no_token = bivy("session", "push", "demo", "s1", monkeypatch=monkeypatch)
            assert no_token[0] == 1 and "no git token is set" in no_token[2]
            assert http.authorized == [] and http.refused == []

            SecretStore().set(SecretKeys.GIT_TOKEN, TOKEN)
            code, out, err = bivy("session", "push", "demo", "s1", monkeypatch=monkeypatch)
            assert code == 0, err
            assert out.strip() == f"Pushed bivy/s1 ({head[:10]}) to {url} [new branch]."
            assert any("git-receive-pack" in line for line in http.authorized)
            assert refs_of(bare) == f"{head} refs/heads/bivy/s1\n"
            assert TOKEN not in server.log()
            assert files_containing(TOKEN.encode(), base, Path("/dev/shm")) == []

            # JSON for scripts; the second push has nothing new
            code, out, err = bivy(
                "session", "push", "demo", "s1", "--json", monkeypatch=monkeypatch
            )
            assert code == 0, err
            assert '"outcome": "[up to date]"' in out and '"target": "remote"' in out


async def test_service_diff_reports_both_sides(base: Path) -> None:
    vm = make_vm(base / "vm")
    with vm_sshd(_layout(vm), _vm_user()) as server:
        _register(server, "https://example.invalid/o/project.git")
        service = ReviewService(SecretStore())
        try:
            diff = await service.diff("demo", "s1")
            main = await service.diff("demo", "main")
            with pytest.raises(InvalidInput):
                await service.diff("demo", "Not-A-Name")
            with pytest.raises(ActionFailed, match="there is no session nope"):
                await service.diff("demo", "nope")
        finally:
            await service.aclose()
    assert diff.branch == "bivy/s1" and diff.base_commit == vm.base
    assert [c.subject for c in diff.commits] == ["agent: readme", "agent: feature"]
    assert {f.path: (f.insertions, f.deletions) for f in diff.committed.files}["src/app.py"] == (
        2,
        1,
    )
    assert diff.committed.summary() == "6 files changed, 6 insertions(+), 2 deletions(-)"
    assert diff.has_uncommitted and {f.path for f in diff.uncommitted.files if f.untracked} == {
        "notes/todo.md"
    }
    assert main.branch == "main" and not main.has_uncommitted
    assert os.path.isdir(vm.repo) and OWNER
