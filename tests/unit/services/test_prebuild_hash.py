"""The devcontainer config hash (notes/CONTRACTS2.md): the app's ``devcontainer_config_hash``
and the VM's ``cloudinit/scripts/devcontainer-hash.py`` (run with python3 as the VM runs it)
agree on the same trees — default devcontainer, single file, folder, both, symbolic links,
nested and non-ASCII names — and the hash moves with the config and only with it. Plus the
repository key and label values."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from app.paths import cloudinit_path
from app.services.prebuild_hash import (
    default_devcontainer_bytes,
    devcontainer_config_hash,
    devcontainer_config_hash_at,
    devcontainer_files,
    label_value,
    repo_key,
    version_label,
)

VM_SCRIPT = cloudinit_path("scripts", "devcontainer-hash.py")
PYTHON3 = shutil.which("python3") or "python3"


def vm_hash(root: Path, default: Path) -> str:
    done = subprocess.run(
        [PYTHON3, str(VM_SCRIPT), str(root), str(default)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return done.stdout.strip()


def write(root: Path, files: dict[str, str | bytes]) -> Path:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return root


def tree_none(root: Path) -> None:
    write(root, {"README.md": "# no devcontainer\n", "src/main.py": "print(1)\n"})


def tree_single(root: Path) -> None:
    write(root, {".devcontainer.json": '{"image": "node:22"}\n', "README.md": "x\n"})


def tree_folder(root: Path) -> None:
    write(root, {
        ".devcontainer/devcontainer.json": '{"build": {"dockerfile": "Dockerfile"}}\n',
        ".devcontainer/Dockerfile": "FROM debian:12\nRUN true\n",
        ".devcontainer/scripts/post create.sh": "#!/bin/sh\necho hi\n",
        ".devcontainer/a/b/c.txt": b"\x00\x01binary\xff",
        ".devcontainer/Zeta": "upper case sorts first\n",
        ".devcontainer/é-accent.json": "{}\n",
    })  # fmt: skip


def tree_both(root: Path) -> None:
    tree_single(root)
    tree_folder(root)


def tree_links(root: Path) -> None:
    tree_folder(root)
    outside = write(root.parent / "outside", {"secret.json": "{}\n", "dir/x": "x\n"})
    os.symlink(outside / "secret.json", root / ".devcontainer" / "linked.json")
    os.symlink(outside / "dir", root / ".devcontainer" / "linked-dir")
    os.symlink(outside / "secret.json", root / ".devcontainer.json")  # a link: not counted


def tree_linked_folder(root: Path) -> None:
    outside = write(root.parent / "elsewhere", {"devcontainer.json": "{}\n"})
    os.symlink(outside, root / ".devcontainer")  # a linked folder is not followed
    write(root, {"README.md": "x\n"})


def tree_empty_folder(root: Path) -> None:
    (root / ".devcontainer" / "empty").mkdir(parents=True)


TREES: dict[str, Callable[[Path], None]] = {
    "none": tree_none,
    "single": tree_single,
    "folder": tree_folder,
    "both": tree_both,
    "links": tree_links,
    "linked-folder": tree_linked_folder,
    "empty-folder": tree_empty_folder,
}


@pytest.mark.parametrize("kind", sorted(TREES))
def test_app_and_vm_agree(tmp_path: Path, kind: str) -> None:
    root = tmp_path / "repo"
    root.mkdir()
    TREES[kind](root)
    default = tmp_path / "default-devcontainer.json"
    default.write_bytes(default_devcontainer_bytes())
    app = devcontainer_config_hash(root)
    assert re.fullmatch(r"[0-9a-f]{16}", app)
    assert vm_hash(root, default) == app


@pytest.mark.parametrize("kind", sorted(TREES))
def test_the_hash_of_a_commit_is_what_its_clone_hashes_to(tmp_path: Path, kind: str) -> None:
    """What the app computes from a commit (no checkout) is what the VM computes on a clone."""
    root = tmp_path / "repo"
    root.mkdir()
    TREES[kind](root)
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@x", "PATH": os.environ["PATH"],
           "HOME": str(tmp_path)}  # fmt: skip
    commit = ["commit", "-q", "--allow-empty", "-m", "x"]
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], commit):
        subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True, env=env)
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(root), str(clone)], check=True, env=env)
    default = tmp_path / "default-devcontainer.json"
    default.write_bytes(default_devcontainer_bytes())
    assert devcontainer_config_hash_at(root) == vm_hash(clone, default)
    (root / "README.md").write_text("uncommitted\n")
    assert devcontainer_config_hash_at(root) == vm_hash(clone, default)


def test_no_devcontainer_is_the_default_ones_hash(tmp_path: Path) -> None:
    tree_none(tmp_path)
    expected = hashlib.sha256(
        b"bivy-default\0" + hashlib.sha256(default_devcontainer_bytes()).hexdigest().encode()
        + b"\n"
    ).hexdigest()[:16]  # fmt: skip
    assert devcontainer_config_hash(tmp_path) == expected
    # The default is the file the VM gets (what the user data writes), JSON with an image.
    assert b'"image"' in default_devcontainer_bytes()


def test_files_are_listed_sorted_by_bytes_without_links(tmp_path: Path) -> None:
    tree_links(tmp_path / "repo")
    assert devcontainer_files(tmp_path / "repo") == [
        ".devcontainer/Dockerfile",
        ".devcontainer/Zeta",
        ".devcontainer/a/b/c.txt",
        ".devcontainer/devcontainer.json",
        ".devcontainer/scripts/post create.sh",
        ".devcontainer/é-accent.json",
    ]


def test_the_hash_moves_with_the_config_only(tmp_path: Path) -> None:
    tree_folder(tmp_path)
    first = devcontainer_config_hash(tmp_path)
    write(tmp_path, {"src/app.py": "changed\n", "README.md": "changed\n"})
    assert devcontainer_config_hash(tmp_path) == first
    write(tmp_path, {".devcontainer/Dockerfile": "FROM debian:13\n"})
    second = devcontainer_config_hash(tmp_path)
    assert second != first
    (tmp_path / ".devcontainer" / "Dockerfile").rename(tmp_path / ".devcontainer" / "Dockerfile2")
    assert devcontainer_config_hash(tmp_path) not in (first, second)  # the path counts too


def test_repo_key_and_labels() -> None:
    url = "https://github.com/o/r.git"
    assert repo_key(url, None) == repo_key(url, "") == hashlib.sha256(
        url.encode() + b"\0").hexdigest()[:16]  # fmt: skip
    assert repo_key(url, "dev") != repo_key(url, None)
    assert repo_key("/home/me/project", None) != repo_key(url, None)
    label = re.compile(r"^[a-zA-Z0-9]([a-zA-Z0-9_.-]{0,61}[a-zA-Z0-9])?$")
    for value in (version_label("0.4.1"), version_label("0.0.0+source"), label_value("a b/c"),
                  label_value("-x-"), label_value(""), label_value("x" * 80)):  # fmt: skip
        assert label.match(value), value
    assert version_label("0.4.1") == "0-4-1"
