"""Repository URL and branch validation: accepted forms, reasons for rejection, git's own rules."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from app.domain import WorkspaceSpec
from app.domain.validation import repo_dir_name, validate_branch, validate_repo_url

GOOD_URLS = [
    ("https://github.com/owner/repo.git", "repo"),
    ("https://github.com/owner/repo", "repo"),
    ("https://gitlab.example.com:8443/group/sub/project.git", "project"),
    ("ssh://git@github.com/owner/repo.git", "repo"),
    ("ssh://git@host.example:2222/~user/repo.git", "repo"),
    ("git@github.com:owner/repo.git", "repo"),
    ("github.com:owner/my.repo", "my.repo"),
]

BAD_URLS = [
    ("", "enter the repository URL"),
    ("http://github.com/o/r.git", "'http://' URLs are not supported"),
    ("file:///etc/passwd", "'file://' URLs are not supported"),
    ("ext::sh -c touch% /tmp/pwned", "spaces"),
    ("-oProxyCommand=touch /tmp/x", "spaces"),
    ("-uhost:repo", "must not start with '-'"),
    ("ssh://-oProxyCommand=x/repo", "host must not start with '-'"),
    ("git@-host:repo", "host must not start with '-'"),
    ("git@host:-repo", "must not start with '-'"),
    ("https://user:token@github.com/o/r.git", "remove the token"),
    ("https://token@github.com/o/r.git", "remove the user name"),
    ("https://github.com/o/r.git\nrm -rf /", "one line"),
    ("https://github.com/o/$(reboot).git", "must not contain $()"),
    ("https://github.com/o/`id`.git", "must not contain `"),
    ("https://github.com/o/r.git;id", "must not contain ;"),
    ("https://github.com/o/r?x=1", "'?' or '#'"),
    ("https://github.com/", "no repository path"),
    ("https://github.com/o/..", "'..'"),
    ("github.com/owner/repo", "use an https:// URL"),
    ("https://git\u00e9.com/o/r", "percent-encoded"),
    ("https://github.com/o/r\x00", "control character"),
]


@pytest.mark.parametrize(("url", "directory"), GOOD_URLS)
def test_accepted_urls(url: str, directory: str) -> None:
    assert validate_repo_url(url) == url
    assert repo_dir_name(url) == directory


@pytest.mark.parametrize(("url", "reason"), BAD_URLS)
def test_rejected_urls_say_why(url: str, reason: str) -> None:
    with pytest.raises(ValueError) as info:
        validate_repo_url(url)
    assert reason in str(info.value)


@pytest.mark.parametrize(
    ("branch", "reason"),
    [
        ("", "empty"),
        ("-delete", "start with '-'"),
        ("a..b", "'..'"),
        ("a b", "spaces"),
        ("a\nb", "line break"),
        ("a~1", "'~'"),
        ("a^", "'^'"),
        ("a:b", "':'"),
        ("a@{1}", "'@{'"),
        ("@", "'@'"),
        ("/a", "'/'"),
        ("a//b", "'//'"),
        ("a/.hidden", "start with '.'"),
        ("a.lock", "'.lock'"),
        ("a.", "end with '.'"),
    ],
)
def test_rejected_branches_say_why(branch: str, reason: str) -> None:
    with pytest.raises(ValueError) as info:
        validate_branch(branch)
    assert reason in str(info.value)


@pytest.mark.parametrize(
    "branch", ["main", "feature/x-1", "release/2.0", "fix/$(id)", "a'b\"c", "ünï"]
)
def test_accepted_branches(branch: str) -> None:
    assert validate_branch(branch) == branch


def test_workspace_spec_uses_the_validators() -> None:
    spec = WorkspaceSpec(name="w", repo_url="git@github.com:o/r.git", branch="")
    assert spec.branch is None
    with pytest.raises(ValidationError, match="must not start with '-'"):
        WorkspaceSpec(name="w", repo_url="-oProxyCommand=x:y")
    with pytest.raises(ValidationError, match=r"'\.\.'"):
        WorkspaceSpec(name="w", repo_url="https://github.com/o/r", branch="a..b")


_GIT = shutil.which("git")


@pytest.mark.skipif(_GIT is None, reason="git is needed to compare with git's own rules")
@settings(max_examples=150, deadline=None)
@given(
    st.text(
        alphabet=st.sampled_from(list("ab/.-@{}~^:?*[\\ $()'\"`;\n\tl0k")),
        min_size=1,
        max_size=12,
    )
)
def test_branch_rules_match_git_check_ref_format(branch: str) -> None:
    assert _GIT is not None
    git_ok = (
        subprocess.run(
            [_GIT, "check-ref-format", "--branch", branch],
            capture_output=True,
            check=False,
            cwd="/",  # outside a repository, so '@' is not expanded to HEAD
        ).returncode
        == 0
    )
    try:
        validate_branch(branch)
        ours = True
    except ValueError:
        ours = False
    # Ours may be stricter than git (never looser).
    assert not ours or git_ok, branch
    if git_ok and not branch.startswith("-") and branch != "@":  # "@" means HEAD to git
        assert ours, branch


@settings(max_examples=400)
@given(
    st.one_of(
        st.text(max_size=40),
        st.builds(
            lambda prefix, rest: prefix + rest,
            st.sampled_from(["https://", "ssh://", "git@", "https://h.example/", "ext::", "-", ""]),
            st.text(alphabet=st.sampled_from(list("ab-./:@$()`'\";|&\n\t %?#~")), max_size=20),
        ),
    )
)
def test_an_accepted_url_is_never_an_option_or_shell_code(url: str) -> None:
    try:
        validate_repo_url(url)
    except ValueError as exc:
        assert str(exc)  # always a reason
        return
    assert not url.startswith("-")
    assert not any(ch.isspace() or ord(ch) < 0x20 for ch in url)
    assert not set(url) & set("$`'\";|&()<>\\?#*")
    assert repo_dir_name(url) and not repo_dir_name(url).startswith("-")
