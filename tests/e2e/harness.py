"""Drives the real ``bivy`` CLI against a real local VM: the e2e tests and the benchmark use it.

``E2E`` holds one isolated installation (HOME, BIVY_CONFIG_DIR, BIVY_DATA_DIR from the test's
environment, a real gnome-keyring Secret Service, ``BIVY_LOCAL_IMAGE`` = the test guest's
manifest) and runs ``python -m app …`` as a child process for every step, as a user would.
The terminal check goes through the app's own tunnel code (pinned host key, ttyd password from
the keychain) and types into ttyd with ``tests.e2e.ttyd_client``.

Test repositories (``make_repo``) are git checkouts on the host; their devcontainers name
``bivy-test/base:latest`` (or ``bivy-test/claude:latest``, the same with Claude Code installed),
which the test guest carries preloaded in its Docker data root.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

REPO_ROOT = Path(__file__).resolve().parents[2]
BASE_IMAGE = "bivy-test/base:latest"
#: The base image with Claude Code already installed (tests/e2e/image.py builds it at host speed).
AGENT_IMAGE = "bivy-test/claude:latest"
#: The local provider's size for e2e VMs (2 vCPUs: Docker and npm inside an emulated guest).
SIZE = os.environ.get("BIVY_E2E_SIZE", "local-2cpu-4gb")


def log(message: str) -> None:
    print(f"[e2e {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- test repositories ----------------------------------------------------------------------------


def _git(repo: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "Bivy E2E",
        "GIT_AUTHOR_EMAIL": "e2e@bivy.invalid",
        "GIT_COMMITTER_NAME": "Bivy E2E",
        "GIT_COMMITTER_EMAIL": "e2e@bivy.invalid",
    }
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, env=env
    ).stdout


def make_repo(parent: Path, name: str, kind: str, image: str = BASE_IMAGE) -> Path:
    """A committed test repository. ``kind``: ``user`` (devcontainer with remote user ``node``),
    ``root`` (runs as root), ``compose`` (Docker Compose, remote user ``node``), ``compose-root``
    (Docker Compose, remote user ``root``), ``none`` (no devcontainer).
    ``image``: the container image its devcontainer (Compose: its ``app`` service) runs."""
    repo = parent / name
    repo.mkdir(parents=True)
    (repo / "README.md").write_text(f"# {name}\n\nA Bivy e2e test repository ({kind}).\n")
    dc = repo / ".devcontainer"
    if kind == "user":
        dc.mkdir()
        (dc / "devcontainer.json").write_text(
            json.dumps({"name": name, "image": image, "remoteUser": "node"}, indent=2)
        )
    elif kind == "root":
        dc.mkdir()
        (dc / "devcontainer.json").write_text(
            json.dumps(
                {"name": name, "image": image, "remoteUser": "root", "containerUser": "root"},
                indent=2,
            )
        )
    elif kind in ("compose", "compose-root"):
        dc.mkdir()
        (dc / "docker-compose.yml").write_text(
            "services:\n"
            "  app:\n"
            f"    image: {image}\n"
            "    command: sleep infinity\n"
            "    volumes:\n"
            f"      - ..:/workspaces/{name}:cached\n"
            "  cache:\n"
            f"    image: {BASE_IMAGE}\n"
            "    command: sleep infinity\n"
        )
        (dc / "devcontainer.json").write_text(
            json.dumps(
                {
                    "name": name,
                    "dockerComposeFile": "docker-compose.yml",
                    "service": "app",
                    "runServices": ["app", "cache"],
                    "workspaceFolder": f"/workspaces/{name}",
                    "remoteUser": "root" if kind == "compose-root" else "node",
                },
                indent=2,
            )
        )
    elif kind != "none":
        raise ValueError(kind)
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", f"{name}: first commit")
    return repo


def make_bare_clone(repo: Path, target: Path) -> Path:
    subprocess.run(
        ["git", "clone", "-q", "--bare", str(repo), str(target)], check=True, capture_output=True
    )
    return target


# -- the installation under test ------------------------------------------------------------------


@dataclass
class WaitResult:
    returncode: int
    lines: list[tuple[float, str]]

    @property
    def text(self) -> str:
        return "\n".join(line for _, line in self.lines)


@dataclass
class E2E:
    """One isolated Bivy installation.

    Attributes:
        env: the environment every ``bivy`` child process gets.
        data_dir: its BIVY_DATA_DIR (local VMs live under ``local/vms``).
        created_at: host epoch seconds when each workspace's ``bivy create`` started.
    """

    env: dict[str, str]
    data_dir: Path
    created_at: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_environment(cls, base: Mapping[str, str], image_manifest: Path) -> E2E:
        env = dict(base)
        env.pop("PYTEST_CURRENT_TEST", None)
        env["PYTHONUNBUFFERED"] = "1"
        env["BIVY_LOCAL_IMAGE"] = str(image_manifest)
        return cls(env=env, data_dir=Path(env["BIVY_DATA_DIR"]))

    def bivy(
        self, *args: str, timeout: float = 300, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "app", *args],
            input=input,
            capture_output=True,
            text=True,
            env=self.env,
            cwd=REPO_ROOT,
            timeout=timeout,
            check=False,
        )
        log(f"bivy {' '.join(args)} → {result.returncode} ({time.monotonic() - started:.1f} s)")
        return result

    def must(self, *args: str, timeout: float = 300) -> str:
        result = self.bivy(*args, timeout=timeout)
        assert result.returncode == 0, (
            f"bivy {' '.join(args)} exited {result.returncode}\n"
            f"stdout: {result.stdout[-3000:]}\nstderr: {result.stderr[-3000:]}"
        )
        return result.stdout

    def create(
        self, name: str, repo: str, *extra: str, size: str = SIZE, timeout: float = 900
    ) -> None:
        """``bivy create`` (with a local checkout it returns once the VM's sshd took the
        repository's bundle, so ``timeout`` covers the boot)."""
        self.created_at[name] = time.time()
        self.must(
            "create",
            name,
            "--provider",
            "local",
            "--size",
            size,
            "--repo",
            repo,
            *extra,
            timeout=timeout,
        )

    def wait(self, name: str, timeout: float, interval: float = 2.0) -> WaitResult:
        """``bivy wait NAME``, printing each line as it comes with the seconds since create.

        ``interval``: seconds between status reads (each one is an SSH exec on the guest,
        whose emulated CPU several VMs side by side share)."""
        command = ["wait", name, "--timeout", str(int(timeout)), "--interval", str(interval)]
        process = subprocess.Popen(
            [sys.executable, "-m", "app", *command],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=self.env,
            cwd=REPO_ROOT,
        )
        lines: list[tuple[float, str]] = []
        assert process.stdout is not None
        try:
            for raw in process.stdout:
                elapsed = time.time() - self.created_at.get(name, time.time())
                line = raw.rstrip("\n")
                lines.append((elapsed, line))
                log(f"  [{elapsed:6.1f} s] {line}")
            returncode = process.wait(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            process.stdout.close()
        return WaitResult(returncode, lines)

    def ls(self) -> list[dict[str, object]]:
        value = json.loads(self.must("ls", "--json", timeout=120))
        assert isinstance(value, list)
        return value

    def entry(self, name: str) -> dict[str, object] | None:
        return next((w for w in self.ls() if w.get("name") == name), None)

    def status(self, name: str) -> dict[str, object]:
        """The VM's status.json, read over SSH as dev."""
        out = self.must("ssh", name, "--", "cat", "/var/lib/bivy/status.json", timeout=120)
        value = json.loads(out)
        assert isinstance(value, dict)
        return value

    # -- what must be gone after a workspace is deleted ---------------------------------------

    def qemu_processes(self) -> list[int]:
        """QEMU processes started for this installation (their command line names data_dir)."""
        marker = str(self.data_dir).encode()
        pids = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                cmdline = (proc / "cmdline").read_bytes()
                if b"qemu" in cmdline.split(b"\0", 1)[0] and marker in cmdline:
                    pids.append(int(proc.name))
        return pids

    def vm_dirs(self) -> list[Path]:
        vms = self.data_dir / "local" / "vms"
        return sorted(vms.iterdir()) if vms.is_dir() else []


def workspace_secrets(name: str) -> list[str]:
    """Keychain items (Secret Service, current DBUS_SESSION_BUS_ADDRESS) of workspace ``name``."""
    import secretstorage

    connection = secretstorage.dbus_init()
    try:
        collection = secretstorage.get_default_collection(connection)
        found = []
        for item in collection.search_items({"service": "bivy"}):
            user = item.get_attributes().get("username", "")
            if user.startswith(f"workspace/{name}/"):
                found.append(user)
        return found
    finally:
        connection.close()


async def type_into_terminal(name: str, keychain: object, timeout: float = 120) -> float:
    """Open the workspace's terminal like the app does (SSH tunnel with the pinned host key,
    ttyd password from the keychain), type a unique word, and wait until the terminal shows it.
    Returns the host time it showed up."""
    from app.services.registry import Registry
    from app.services.tunnels import SSHTarget, TunnelService, open_terminal
    from app.settings import SecretStore
    from tests.e2e.ttyd_client import TtydClient

    store = SecretStore(keychain)  # type: ignore[arg-type]
    record = await Registry().aget(name)
    assert record is not None, f"no registry record for {name}"
    tunnels = TunnelService(store)
    word = f"bivye2e{secrets.token_hex(4)}"
    try:
        endpoint = await open_terminal(tunnels, SSHTarget.from_record(record), store)
        url = urlsplit(endpoint.url)
        assert url.hostname == "127.0.0.1" and url.port
        async with await TtydClient.connect(
            url.hostname, url.port, endpoint.username, endpoint.password
        ) as term:
            # No Enter: whatever runs in the terminal (a shell, or the agent's prompt) echoes it.
            await term.send_keys(word)
            await term.wait_for(word, timeout=timeout)
            shown_at = time.time()
            await term.send_keys("\x15")  # Ctrl-U: leave nothing typed behind
        return shown_at
    finally:
        await tunnels.close_all()


def terminal_check(name: str, keychain: object) -> float:
    return asyncio.run(type_into_terminal(name, keychain))


class OpenTerminal:
    """The workspace's terminal kept open in a background thread, as a user with the terminal
    tab open: tunnel (pinned host key) → ttyd (password from the keychain), a typed word shown.

    While it is open the VM is not idle (a terminal websocket is activity), so commands run
    with ``bivy exec`` meanwhile cannot race a short idle window.

    Attributes:
        shown_at: host time the typed word showed up in the terminal.
    """

    def __init__(self, name: str, keychain: object, timeout: float = 180) -> None:
        self.name = name
        self.keychain = keychain
        self.timeout = timeout
        self.shown_at = 0.0
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> OpenTerminal:
        self._thread.start()
        if not self._ready.wait(self.timeout + 60):
            raise TimeoutError(f"the terminal of {self.name} did not answer")
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(60)
        if self._error is not None and exc_info[0] is None:
            raise self._error

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        from app.services.registry import Registry
        from app.services.tunnels import SSHTarget, TunnelService, open_terminal
        from app.settings import SecretStore
        from tests.e2e.ttyd_client import TtydClient

        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        store = SecretStore(self.keychain)  # type: ignore[arg-type]
        tunnels = TunnelService(store)
        try:
            record = await Registry().aget(self.name)
            assert record is not None, f"no registry record for {self.name}"
            endpoint = await open_terminal(tunnels, SSHTarget.from_record(record), store)
            url = urlsplit(endpoint.url)
            assert url.hostname == "127.0.0.1" and url.port
            word = f"bivye2e{secrets.token_hex(4)}"
            async with await TtydClient.connect(
                url.hostname, url.port, endpoint.username, endpoint.password
            ) as term:
                await term.send_keys(word)  # no Enter: a shell or the agent's prompt echoes it
                await term.wait_for(word, timeout=self.timeout)
                self.shown_at = time.time()
                log(f"terminal of {self.name}: the typed word showed up")
                self._ready.set()
                await term.pump(self._stop)
                await term.send_keys("\x15")  # Ctrl-U: leave nothing typed behind
        except BaseException as exc:
            self._error = exc
        finally:
            self._ready.set()
            await tunnels.close_all()


#: Longer than the idle monitor needs to delete an idle VM with a 1-minute idle window (60-120 s
#: after the last activity).
LONG_EXEC_SECONDS = 150


def assert_a_long_exec_is_activity(e2e: E2E, name: str) -> None:
    """On a VM with a 1-minute idle window, no terminal, no pty and an idle agent, only a
    running ``bivy exec`` keeps the VM (it holds the keep-alive lease ahead while it runs): a
    command longer than the idle window must come back, and the VM must still be there."""
    started = time.monotonic()
    command = f"sleep {LONG_EXEC_SECONDS}; echo still-here"
    out = e2e.must("exec", name, "--", "sh", "-c", command, timeout=LONG_EXEC_SECONDS + 450)
    assert out.strip() == "still-here", out
    log(f"{name}: a {time.monotonic() - started:.0f} s bivy exec outlived the idle window")
    entry = e2e.entry(name)
    assert entry is not None and entry.get("phase") == "ready", entry
