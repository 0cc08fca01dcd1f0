"""A workspace's repository may be a local checkout (an absolute path): detection and naming."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.domain import WorkspaceSpec
from app.domain.validation import (
    is_local_repo,
    repo_dir_name,
    validate_repo_source,
)


@pytest.mark.parametrize(
    ("value", "local"),
    [
        ("/home/me/src/project", True),
        ("C:\\Users\\me\\project", True),
        ("d:/work/project", True),
        ("https://example.com/me/project.git", False),
        ("git@example.com:me/project.git", False),
        ("relative/path", False),
        ("", False),
    ],
)
def test_local_paths_are_told_from_urls(value: str, local: bool) -> None:
    assert is_local_repo(value) is local


@pytest.mark.parametrize(
    ("path", "directory"),
    [
        ("/home/me/src/project", "project"),
        ("/home/me/src/project/", "project"),
        ("/srv/git/tool.git", "tool"),
        ("C:\\Users\\me\\my-repo", "my-repo"),
    ],
)
def test_a_local_checkout_keeps_its_folder_name_on_the_vm(path: str, directory: str) -> None:
    assert repo_dir_name(path) == directory


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/home/me/my project", "must be letters, digits"),
        ("/home/me/-rf", "must be letters, digits"),
        ("/home/me/x\nrm -rf /", "control character"),
        ("/", "must be letters, digits"),
    ],
)
def test_unusable_local_paths_say_why(path: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        validate_repo_source(path)


def test_workspace_spec_takes_a_local_checkout_and_still_refuses_file_urls() -> None:
    assert WorkspaceSpec(name="demo", repo_url="/home/me/project").repo_url == "/home/me/project"
    with pytest.raises(ValidationError, match="file://"):
        WorkspaceSpec(name="demo", repo_url="file:///home/me/project")
