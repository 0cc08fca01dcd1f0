"""Reading the VM's review answers: git's ``-z`` numstat/name-status (renames, binary files,
odd paths), the diff JSON, the push sentence; the command line carries no secret."""

from __future__ import annotations

import base64
import json
import shlex
import subprocess
from pathlib import Path

import pytest

from app.errors import ActionFailed
from app.services.review import (
    PushResult,
    PushTarget,
    ReviewService,
    parse_diff,
    parse_stat,
    review_script,
)
from app.settings import SecretStore
from tests.support.local_repo import git


def _z(*parts: bytes) -> bytes:
    return b"\0".join(parts) + b"\0"


def test_renames_binary_and_paths_with_tabs() -> None:
    numstat = _z(b"3\t1\tsrc/a.py", b"0\t0\t", b"old\tname.txt", b"new name.txt", b"-\t-\tlogo.png")
    status = _z(b"M", b"src/a.py", b"R100", b"old\tname.txt", b"new name.txt", b"A", b"logo.png")
    stat = parse_stat(numstat, status, _z(b"logo.png"))
    assert [(f.path, f.old_path, f.status, f.insertions, f.deletions) for f in stat.files] == [
        ("src/a.py", None, "M", 3, 1),
        ("new name.txt", "old\tname.txt", "R", 0, 0),
        ("logo.png", None, "A", None, None),
    ]
    assert stat.files[2].binary and stat.files[2].untracked and not stat.files[0].untracked
    assert (stat.insertions, stat.deletions) == (3, 1)
    assert stat.summary() == "3 files changed, 3 insertions(+), 1 deletion(-)"
    assert parse_stat(b"", b"").summary() == "no changes"


def test_a_non_utf8_path_is_shown_not_fatal() -> None:
    stat = parse_stat(_z(b"1\t0\tbad-\xff.txt"), _z(b"A", b"bad-\xff.txt"))
    assert stat.files[0].path == "bad-\ufffd.txt"


def test_real_git_output_parses_the_same(tmp_path: Path) -> None:
    repo = tmp_path / "r"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "keep.txt").write_text("a\nb\nc\nd\ne\nf\n")
    (repo / "tab\there.txt").write_text("x\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "one")
    git(repo, "mv", "keep.txt", "kept.txt")
    (repo / "tab\there.txt").write_text("x\ny\n")
    (repo / "bin.dat").write_bytes(b"\0\1\2" * 100)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "two")

    def run(*args: str) -> bytes:
        return subprocess.run(
            ["git", "diff", "-z", "-M", *args, "HEAD~1", "HEAD"],
            cwd=repo,
            capture_output=True,
            check=True,
        ).stdout

    stat = parse_stat(run("--numstat"), run("--name-status"))
    assert {f.path: (f.status, f.old_path, f.insertions) for f in stat.files} == {
        "kept.txt": ("R", "keep.txt", 0),
        "tab\there.txt": ("M", None, 1),
        "bin.dat": ("A", None, None),
    }


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_parse_diff_and_its_text() -> None:
    answer = {
        "session": "s1",
        "branch": "bivy/s1",
        "base": "a" * 40,
        "base_commit": "a" * 40,
        "head": "b" * 40,
        "worktree": "/workspaces/p/.bivy/worktrees/s1",
        "encoding": "base64",
        "log": _b64(_z(b"bbbbbbb\x1fSecond thing", b"ccccccc\x1fFirst")),
        "committed": {
            "numstat": _b64(_z(b"2\t1\tsrc/x.py")),
            "name_status": _b64(_z(b"M", b"src/x.py")),
        },
        "uncommitted": {
            "numstat": _b64(_z(b"4\t0\tnew.md")),
            "name_status": _b64(_z(b"A", b"new.md")),
            "untracked": _b64(_z(b"new.md")),
        },
    }
    diff = parse_diff("demo", json.dumps(answer))
    assert [c.subject for c in diff.commits] == ["Second thing", "First"]
    assert diff.has_uncommitted
    text = diff.text()
    assert text.splitlines()[0] == (
        "Session s1 of demo: branch bivy/s1, 2 commit(s) since aaaaaaaaaaaa (aaaaaaaaaaaa)"
    )
    assert "Committed: 1 file changed, 2 insertions(+), 1 deletion(-)" in text
    assert "+4 -0  new.md  (new, untracked)" in text
    with pytest.raises(ActionFailed):
        parse_diff("demo", "not json")
    with pytest.raises(ActionFailed):
        parse_diff("demo", json.dumps({**answer, "log": "%%%"}))


def test_push_sentences() -> None:
    remote = PushResult("w", "s1", "bivy/s1", "c" * 40, False, PushTarget.REMOTE,
                        remote="https://x/r.git", outcome="[new branch]")  # fmt: skip
    assert remote.summary() == "Pushed bivy/s1 (cccccccccc) to https://x/r.git [new branch]."
    same = PushResult("w", "s1", "bivy/s1", "c" * 40, False, PushTarget.REMOTE,
                      remote="https://x/r.git", outcome="[up to date]")  # fmt: skip
    assert same.summary() == "Already up to date: bivy/s1 (cccccccccc) at https://x/r.git."
    home = PushResult("w", "s1", "bivy/s1", "c" * 40, True, PushTarget.HOME,
                      local_repo="/src/p", local_branch="bivy/s1")  # fmt: skip
    assert home.summary().startswith("Committed the uncommitted changes, then fetched bivy/s1")


def test_the_command_line_quotes_every_word_and_never_holds_a_secret() -> None:
    service = ReviewService(SecretStore())
    line = service._line("push", "s1", "--remote-url", "https://x/r.git; rm -rf /")
    assert shlex.split(line) == [
        "sudo", "-n", "/usr/local/lib/bivy/session-review",
        "push", "s1", "--remote-url", "https://x/r.git; rm -rf /",
    ]  # fmt: skip
    assert "{{" not in review_script() and review_script().startswith("#!/bin/bash\n")
    assert '. "${BIVY_LIB_DIR:-/usr/local/lib/bivy}/lib.sh"' in review_script()


def test_the_install_step_writes_only_a_script_with_the_right_digest(tmp_path: Path) -> None:
    import hashlib

    from app.services.review import _INSTALL

    target = tmp_path / "lib" / "session-review"
    script = review_script()
    digest = hashlib.sha256(script.encode()).hexdigest()

    def install(text: str, where: Path = target, sha: str = digest) -> int:
        return subprocess.run(
            ["sh", "-c", _INSTALL, "install", str(where), sha], input=text, text=True
        ).returncode

    assert install(script) == 3  # no such folder: not a Bivy VM
    target.parent.mkdir()
    assert install(script[:-20]) == 4 and list(target.parent.iterdir()) == []  # cut short
    assert install(script) == 0
    assert target.read_text() == script and (target.stat().st_mode & 0o777) == 0o755
    stamp = target.stat().st_mtime_ns
    assert install(script) == 0 and target.stat().st_mtime_ns == stamp  # already there


async def test_the_git_token_comes_from_the_environment_then_the_keychain() -> None:
    from app.settings import SecretKeys

    secrets = SecretStore()
    assert await ReviewService(secrets, environ={}).git_token() is None
    secrets.set(SecretKeys.GIT_TOKEN, "ghp_keychain")
    assert await ReviewService(secrets, environ={}).git_token() == "ghp_keychain"
    env = {"BIVY_GIT_TOKEN": " ghp_env \n"}
    assert await ReviewService(secrets, environ=env).git_token() == "ghp_env"
