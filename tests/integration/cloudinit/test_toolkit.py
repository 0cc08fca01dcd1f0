"""The toolkit (app/cloudinit/render.py ``split`` layout) on the VM side, for real: the bootstrap
of a rendered stage-1 tree waits for the archive the app sends, refuses one whose sha256 is not
the one workspace.env names, installs the right one and goes on to ``ready``; toolkit-install
refuses members that would land outside its folder.

The system tools are the stand-ins of test_bootstrap.py; git, python3, the status writer and
toolkit-install are real. The archive sent is the rendered toolkit with ``devcontainer-up``
replaced by test_bootstrap's recorder (tested for real elsewhere), so workspace.env names that
archive's sha256; that the rendered toolkit plus stage 1 is every file of the VM is checked on
its own.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import lzma
import os
import subprocess
import tarfile
import time
from pathlib import Path

import pytest
import yaml

from app.cloudinit import LIB_DIR, STAGE1, pack_toolkit, render_user_data
from app.domain import WorkspaceSpec
from tests.integration.cloudinit import test_bootstrap
from tests.unit.cloudinit.vmtree import inputs_for, materialize, write_files

SPEC = WorkspaceSpec(name="w", repo_url="https://github.com/o/r.git", branch="feat/$(x)")


def _members(archive: bytes) -> dict[str, tuple[int, bytes]]:
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:xz") as tar:
        return {
            m.name: (m.mode, tar.extractfile(m).read())  # type: ignore[union-attr]
            for m in tar.getmembers()
        }


def _split_tree(spec: WorkspaceSpec, root: Path, **overrides: object) -> dict[str, str]:
    rendered = render_user_data(inputs_for(spec, **overrides))  # type: ignore[arg-type]
    assert rendered.layout == "split" and rendered.toolkit is not None
    env = materialize(rendered.sent_config, root)
    (root / "toolkit").write_bytes(rendered.toolkit)
    return env


@pytest.fixture
def vm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[dict[str, str], Path, bytes]:
    """test_bootstrap's VM, but with the split layout's stage 1 only; returns its environment,
    the stub log and the archive to send (its sha256 is workspace.env's)."""
    monkeypatch.setattr(test_bootstrap, "render_tree", _split_tree)
    env, log = test_bootstrap._make_vm(tmp_path)
    lib = tmp_path / "vm" / "lib"
    recorder = (lib / "devcontainer-up").read_text()
    (lib / "devcontainer-up").unlink()
    assert sorted(p.name for p in lib.iterdir() if p.is_file()) == sorted(STAGE1)
    rendered = (tmp_path / "vm" / "toolkit").read_bytes()
    files = [
        {"path": f"{LIB_DIR}/{name}", "permissions": f"{mode:04o}",
         "content": recorder if name == "devcontainer-up" else data.decode()}
        for name, (mode, data) in _members(rendered).items()
    ]  # fmt: skip
    archive = pack_toolkit(files)
    with (tmp_path / "vm" / "etc" / "workspace.env").open("a") as handle:
        handle.write(f"BIVY_TOOLKIT_SHA256={hashlib.sha256(archive).hexdigest()}\n")
    incoming = tmp_path / "incoming"
    env.update(BIVY_INCOMING_DIR=str(incoming), BIVY_BUNDLE_WAIT_SECONDS="60")
    return env, log, archive


def _send(incoming: Path, archive: bytes) -> None:
    """As the app does: the archive, then its .sha256 last (atomically)."""
    incoming.mkdir(exist_ok=True)
    (incoming / "toolkit.tar.xz").write_bytes(archive)
    (incoming / "toolkit.tar.xz.sha256.tmp").write_text(hashlib.sha256(archive).hexdigest())
    os.replace(incoming / "toolkit.tar.xz.sha256.tmp", incoming / "toolkit.tar.xz.sha256")


def _status(tmp_path: Path) -> dict[str, object]:
    data: dict[str, object] = json.loads((tmp_path / "vm" / "state" / "status.json").read_text())
    return data


def _start(tmp_path: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["bash", str(tmp_path / "vm" / "lib" / "bootstrap")], env=env, text=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def _wait_for_detail(tmp_path: Path, detail: str, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    while _status(tmp_path).get("detail") != detail:
        assert process.poll() is None, _status(tmp_path)
        assert time.monotonic() < deadline, _status(tmp_path)
        time.sleep(0.05)


def test_the_bootstrap_waits_for_the_toolkit_installs_it_and_goes_on(
    tmp_path: Path, vm: tuple[dict[str, str], Path, bytes]
) -> None:
    env, log, archive = vm
    process = _start(tmp_path, env)
    try:
        _wait_for_detail(tmp_path, "waiting for Bivy's tools from the app", process)
        assert _status(tmp_path)["phase"] == "installing"
        time.sleep(1)  # still waiting, nothing of the toolkit there yet
        assert process.poll() is None
        assert not (tmp_path / "vm" / "lib" / "session").exists()
        _send(tmp_path / "incoming", archive)
        assert process.wait(timeout=60) == 0, _status(tmp_path)
    finally:
        if process.poll() is None:
            process.kill()
    status = _status(tmp_path)
    assert status["phase"] == "ready", status
    lib = tmp_path / "vm" / "lib"
    for name, (mode, data) in _members(archive).items():
        assert (lib / name).read_bytes() == data, name
        assert (lib / name).stat().st_mode & 0o7777 == mode, name
    assert "devcontainer-up" in log.read_text()  # the toolkit's (recorder) ran
    assert list((tmp_path / "incoming").iterdir()) == []  # the inbox is emptied
    assert "toolkit" in status["steps"]  # type: ignore[operator]


def test_a_wrong_archive_is_refused_and_the_bootstrap_fails(
    tmp_path: Path, vm: tuple[dict[str, str], Path, bytes]
) -> None:
    env, _log, archive = vm
    # The toolkit as rendered, but not the archive workspace.env names (another sha256).
    other = (tmp_path / "vm" / "toolkit").read_bytes()
    assert other != archive
    _send(tmp_path / "incoming", other)
    process = _start(tmp_path, env)
    assert process.wait(timeout=60) == 1
    status = _status(tmp_path)
    assert status["phase"] == "failed"
    assert status["error"] == "installing Bivy's tools from the app failed"
    assert "is not the archive the app rendered" in str(status["log_tail"])
    assert not (tmp_path / "vm" / "lib" / "devcontainer-up").exists()
    assert not (tmp_path / "vm" / "lib" / "session").exists()


def test_no_toolkit_within_the_limit_fails_the_bootstrap(
    tmp_path: Path, vm: tuple[dict[str, str], Path, bytes]
) -> None:
    env, _log, _archive = vm
    env["BIVY_BUNDLE_WAIT_SECONDS"] = "1"
    process = _start(tmp_path, env)
    assert process.wait(timeout=60) == 1
    status = _status(tmp_path)
    assert status["phase"] == "failed"
    assert "the app did not send Bivy's tools within 1 seconds" in str(status["log_tail"])


def test_stage1_plus_the_toolkit_is_the_whole_vm(tmp_path: Path) -> None:
    """The split layout's files and its toolkit together are exactly the files layout's LIB_DIR
    (same contents and modes), and the toolkit is deterministic."""
    inputs = inputs_for(SPEC, git_token="t")
    rendered = render_user_data(inputs)
    again = render_user_data(inputs)
    assert rendered.layout == "split" and rendered.toolkit == again.toolkit
    assert rendered.toolkit_sha256 == hashlib.sha256(rendered.toolkit or b"").hexdigest()
    assert f"BIVY_TOOLKIT_SHA256={rendered.toolkit_sha256}" in rendered.sent_config
    whole = {
        e["path"][len(LIB_DIR) + 1 :]: (int(e["permissions"], 8), e["content"].encode())
        for e in write_files(rendered.cloud_config)
        if e["path"].startswith(f"{LIB_DIR}/")
    }
    stage1 = {
        e["path"][len(LIB_DIR) + 1 :]: (int(e["permissions"], 8), e["content"].encode())
        for e in write_files(rendered.sent_config)
        if e["path"].startswith(f"{LIB_DIR}/")
    }
    toolkit = _members(rendered.toolkit or b"")
    assert set(stage1) == STAGE1 and not set(stage1) & set(toolkit)
    assert {**toolkit, **{k: v for k, v in stage1.items() if k != "toolkit-install"}} == whole


def _tar(members: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for info, data in members:
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return lzma.compress(buffer.getvalue(), format=lzma.FORMAT_XZ)


def _install(tmp_path: Path, archive: bytes, dest: Path) -> subprocess.CompletedProcess[str]:
    rendered = render_user_data(inputs_for(SPEC))
    script = next(
        e["content"] for e in write_files(rendered.sent_config)
        if e["path"] == f"{LIB_DIR}/toolkit-install"
    )  # fmt: skip
    (tmp_path / "toolkit-install").write_text(script)
    (tmp_path / "archive").write_bytes(archive)
    digest = hashlib.sha256(archive).hexdigest()
    return subprocess.run(
        ["python3", str(tmp_path / "toolkit-install"), digest, str(tmp_path / "archive"),
         str(dest)], capture_output=True, text=True, check=False,
    )  # fmt: skip


def _file(name: str, mode: int = 0o644) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mode = mode
    return info


def _link(name: str, target: str, kind: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


@pytest.mark.parametrize(
    "bad",
    [
        [(_file("/etc/evil"), b"x")],
        [(_file("../evil"), b"x")],
        [(_file("hook/../../evil"), b"x")],
        [(_link("hook", "/etc", tarfile.SYMTYPE), b"")],
        [(_link("evil", "/etc/passwd", tarfile.LNKTYPE), b"")],
    ],
    ids=["absolute", "dotdot", "inner-dotdot", "symlink", "hardlink"],
)
def test_toolkit_install_refuses_members_outside_its_folder(
    tmp_path: Path, bad: list[tuple[tarfile.TarInfo, bytes]]
) -> None:
    dest = tmp_path / "lib"
    dest.mkdir()
    result = _install(tmp_path, _tar([(_file("ok"), b"fine"), *bad]), dest)
    assert result.returncode == 1 and "refusing the member" in result.stderr, result
    assert list(dest.iterdir()) == []  # nothing written
    assert not (tmp_path / "evil").exists()


def test_toolkit_install_does_not_follow_a_link_in_its_folder(tmp_path: Path) -> None:
    dest, outside = tmp_path / "lib", tmp_path / "outside"
    dest.mkdir()
    outside.mkdir()
    (dest / "hook").symlink_to(outside)
    result = _install(tmp_path, _tar([(_file("hook/agent-hook", 0o755), b"#!/bin/sh\n")]), dest)
    assert result.returncode == 1 and "leads it out" in result.stderr, result
    assert list(outside.iterdir()) == []


def test_toolkit_install_extracts_files_with_their_modes(tmp_path: Path) -> None:
    dest = tmp_path / "lib"
    (dest / "hook").mkdir(parents=True)
    (dest / "hook" / "agent-hook").write_text("old")
    archive = _tar([(_file("hook/agent-hook", 0o755), b"new"), (_file("a/b/c", 0o600), b"c")])
    result = _install(tmp_path, archive, dest)
    assert result.returncode == 0, result.stderr
    assert (dest / "hook" / "agent-hook").read_text() == "new"
    assert (dest / "hook" / "agent-hook").stat().st_mode & 0o7777 == 0o755
    assert (dest / "a" / "b" / "c").stat().st_mode & 0o7777 == 0o600
    assert not list(dest.rglob("*.toolkit-new"))


def test_the_inline_layout_installs_every_file_as_runcmd_does(tmp_path: Path) -> None:
    """Where the whole archive fits (DigitalOcean, Scaleway, OVH), runcmd's toolkit-install
    turns the user data into exactly the files layout's tree."""
    inputs = inputs_for(SPEC, git_token="t", user_data_limit=48000, gzip_base64_ok=False)
    rendered = render_user_data(inputs)
    assert rendered.layout == "inline" and rendered.toolkit is None
    env = materialize(rendered.sent_config, tmp_path / "vm")
    lib, state = Path(env["BIVY_LIB_DIR"]), Path(env["BIVY_STATE_DIR"])
    assert sorted(p.name for p in lib.iterdir()) == ["toolkit-install"]
    # The runcmd line, with the VM's directories mapped into the test tree.
    command = next(c for c in yaml.safe_load(rendered.sent_config)["runcmd"] if c[0] == "python3")
    mapped = [str(lib / "toolkit-install"), command[2], str(state / "toolkit.tar.xz"), str(lib)]
    # materialize wrote the b64 entry as text: cloud-init writes its decoded bytes.
    archive = base64.b64decode((state / "toolkit.tar.xz").read_text())
    (state / "toolkit.tar.xz").write_bytes(archive)
    result = subprocess.run(["python3", *mapped], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    whole = {
        e["path"][len(LIB_DIR) + 1 :]: (int(e["permissions"], 8), e["content"])
        for e in write_files(rendered.cloud_config)
        if e["path"].startswith(f"{LIB_DIR}/")
    }
    for name, (mode, content) in whole.items():
        assert (lib / name).read_text() == content, name
        assert (lib / name).stat().st_mode & 0o7777 == mode, name
    installed = {str(p.relative_to(lib)) for p in lib.rglob("*") if p.is_file()}
    assert installed == set(whole) | {"toolkit-install"}
