"""A private Docker engine for tests, plus the offline base image ``bivy-test/base:latest``.

No container registry is reachable from the test machines, so the base image is built here
from Debian packages (``mmdebstrap`` → ``docker import``) and cached; the engine is a private
``dockerd`` (own data root, exec root, unix socket and bridge) so it never clashes with a system
one or another test session, and it is stopped at the end.

Use from a test (the fixture is session-scoped; register it with
``pytest_plugins = ["tests.support.docker_engine"]`` in a conftest, or import it into one)::

    from tests.support.docker_engine import DockerEngine

    def test_up(docker_engine: DockerEngine) -> None:
        env = docker_engine.env()          # os.environ + DOCKER_HOST=unix://…
        subprocess.run(["docker", "run", "--rm", docker_engine.base_image, "true"], env=env)
        # devcontainer.json may name "image": "bivy-test/base:latest" (offline); the image has
        # git, node, npm, sudo, and this machine's CA bundle with NODE_EXTRA_CA_CERTS set,
        # so ``npm install`` works inside through the TLS-intercepting proxy.

Outside pytest::

    with docker_engine_session() as engine:
        engine.docker("images")

The base image's rootfs tarball (``base_rootfs_tarball()``) is cached under ``cache_dir()``
(``$BIVY_TEST_CACHE``, else ``/var/cache/bivy-test`` when writable, else ``~/.cache/bivy-test``
of the real user), keyed by a hash of the recipe: the first build takes ~1 min, later runs
seconds. The e2e guest image (tests/e2e/image.py) preloads the same tarball.

Needs (Debian): docker.io, mmdebstrap, iproute2, iptables; root (dockerd). ``skip_reason()``
says what is missing; under ``CI=true`` the fixture fails instead of skipping.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import itertools
import json
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

#: The image every test devcontainer may name offline.
BASE_IMAGE = "bivy-test/base:latest"
#: Debian release of the base container image (node 18: enough for Claude Code and npm).
BASE_SUITE = "bookworm"
BASE_PACKAGES = (
    "git",
    "nodejs",
    "npm",
    "ca-certificates",
    "sudo",
    "curl",
    "less",
    "procps",
    "tmux",
    "openssh-client",
    "locales",
)
#: Where the machine's CA bundle (incl. the TLS-intercepting proxy's CA) lands in test images.
CA_BUNDLE_HOST = Path("/etc/ssl/certs/ca-certificates.crt")
CA_BUNDLE_IN_IMAGE = "/etc/ssl/certs/ca-certificates.crt"
BASE_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "NODE_EXTRA_CA_CERTS": CA_BUNDLE_IN_IMAGE,
    "SSL_CERT_FILE": CA_BUNDLE_IN_IMAGE,
    "PIP_CERT": CA_BUNDLE_IN_IMAGE,
}
DEBIAN_MIRROR = os.environ.get("BIVY_TEST_DEBIAN_MIRROR", "http://deb.debian.org/debian")

_RECIPE_VERSION = "1"


def cache_dir() -> Path:
    """Cache for test images (rootfs tarballs, guest disks), kept between runs."""
    configured = os.environ.get("BIVY_TEST_CACHE")
    if configured:
        path = Path(configured)
    else:
        system = Path("/var/cache/bivy-test")
        try:
            system.mkdir(parents=True, exist_ok=True)
            path = system if os.access(system, os.W_OK) else _user_cache()
        except OSError:
            path = _user_cache()
    path.mkdir(parents=True, exist_ok=True)
    return path


def _user_cache() -> Path:
    # The real user's home, not $HOME: the test suite points HOME at a temp dir per test.
    return Path(pwd.getpwuid(os.getuid()).pw_dir) / ".cache" / "bivy-test"


def skip_reason() -> str | None:
    """Why the engine cannot run here (None when it can)."""
    if os.geteuid() != 0:
        return "a private dockerd needs root"
    for tool, package in (
        ("dockerd", "docker.io"),
        ("docker", "docker.io"),
        ("mmdebstrap", "mmdebstrap"),
        ("ip", "iproute2"),
        ("iptables", "iptables"),
    ):
        if not shutil.which(tool):
            return f"{tool} is missing (apt: {package})"
    return None


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive flock on ``path`` (serialises cache builds across processes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def recipe_hash(*parts: object) -> str:
    """A short stable hash of a build recipe (anything JSON-serialisable)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _ca_digest() -> str:
    return hashlib.sha256(CA_BUNDLE_HOST.read_bytes()).hexdigest()[:16]


def base_rootfs_tarball() -> Path:
    """The base image's rootfs tarball (built with mmdebstrap on first use, then cached)."""
    key = recipe_hash(_RECIPE_VERSION, BASE_SUITE, BASE_PACKAGES, DEBIAN_MIRROR, _ca_digest())
    target = cache_dir() / f"base-{BASE_SUITE}-{key}.tar"
    if target.is_file():
        return target
    with file_lock(cache_dir() / "base.lock"):
        if target.is_file():
            return target
        partial = target.with_suffix(".partial.tar")
        hooks = [
            # the machine's CA bundle (the TLS proxy's CA): npm/pip inside reach their registries
            f'--customize-hook=cp "{CA_BUNDLE_HOST}" "$1{CA_BUNDLE_IN_IMAGE}"',
            '--customize-hook=rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin',
            # a sudoer with uid 1000 like the devcontainer images have ("node" there)
            '--customize-hook=chroot "$1" useradd -m -u 1000 -s /bin/bash -G sudo node',
            '--customize-hook=echo "node ALL=(ALL) NOPASSWD:ALL" > "$1"/etc/sudoers.d/node',
            '--customize-hook=chmod 0440 "$1"/etc/sudoers.d/node',
            '--customize-hook=echo "C.UTF-8 UTF-8" > "$1"/etc/locale.gen',
        ]
        command = [
            "mmdebstrap",
            "--variant=minbase",
            "--quiet",
            "--include=" + ",".join(BASE_PACKAGES),
            "--dpkgopt=path-exclude=/usr/share/doc/*",
            "--dpkgopt=path-exclude=/usr/share/man/*",
            "--dpkgopt=path-exclude=/usr/share/locale/*",
            "--dpkgopt=path-include=/usr/share/doc/*/copyright",
            *hooks,
            BASE_SUITE,
            str(partial),
            DEBIAN_MIRROR,
        ]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            partial.unlink(missing_ok=True)
            raise RuntimeError(f"mmdebstrap failed ({result.returncode}):\n{result.stderr[-4000:]}")
        partial.rename(target)
        for stale in cache_dir().glob(f"base-{BASE_SUITE}-*.tar"):
            if stale != target:
                stale.unlink(missing_ok=True)
    return target


def docker_import_args(tags: tuple[str, ...] = (BASE_IMAGE,)) -> list[str]:
    """``docker import`` arguments (without the tarball) that give the base image its CMD/ENV."""
    changes = [f'ENV {name}="{value}"' for name, value in BASE_ENV.items()]
    changes += ['CMD ["/bin/bash"]', "WORKDIR /"]
    args = ["import"]
    for change in changes:
        args += ["--change", change]
    return [*args, "-", tags[0]]


@dataclass
class DockerEngine:
    """A running private dockerd.

    Attributes:
        root: its folder (data root, logs); deleted on stop.
        socket: the unix socket it listens on.
        storage_driver: ``overlay2`` or ``vfs``.
        base_image: the offline base image tag (``bivy-test/base:latest``), once imported.
        process: the dockerd process.
    """

    root: Path
    socket: Path
    storage_driver: str
    process: subprocess.Popen[bytes] = field(repr=False)
    base_image: str = BASE_IMAGE

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"

    def env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """Environment for a child process (docker, devcontainer) that should use this engine."""
        env = dict(base if base is not None else os.environ)
        env["DOCKER_HOST"] = self.host
        env.pop("DOCKER_CONTEXT", None)
        return env

    def docker(
        self, *args: str, input: bytes | None = None, timeout: float = 300, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run the docker client against this engine."""
        result = subprocess.run(
            [_docker_client(), *args],
            input=input.decode() if input is not None else None,
            capture_output=True,
            text=True,
            env=self.env(),
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args)} failed: {result.stderr.strip()[-2000:]}")
        return result

    def import_base_image(self) -> None:
        """Import ``bivy-test/base:latest`` from the cached rootfs tarball (if absent)."""
        if self.docker("image", "inspect", BASE_IMAGE, check=False).returncode == 0:
            return
        tarball = base_rootfs_tarball()
        with tarball.open("rb") as handle:
            result = subprocess.run(
                [_docker_client(), *docker_import_args()],
                stdin=handle,
                capture_output=True,
                text=True,
                env=self.env(),
                timeout=600,
                check=False,
            )
        if result.returncode != 0:
            raise RuntimeError(f"docker import failed: {result.stderr.strip()[-2000:]}")


def _docker_client() -> str:
    # The client from the same package as dockerd when present (API versions match).
    return "/usr/bin/docker" if Path("/usr/bin/docker").exists() else "docker"


_bridges = itertools.count()


def _bridge_name() -> str:
    # One per engine, also when one process starts several (at most 15 characters).
    return f"bivyt{os.getpid() % 10000}x{next(_bridges)}"


def _free_subnet() -> str:
    """A 10.213.X.0/24 not in use on this machine (one per engine)."""
    used = subprocess.run(
        ["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True, check=False
    ).stdout
    for third in range(os.getpid() % 200, 256):
        prefix = f"10.213.{third}."
        if prefix not in used:
            return f"{prefix}1/24"
    raise RuntimeError("no free 10.213.x.0/24 subnet for the test bridge")


@contextlib.contextmanager
def docker_engine_session(
    *,
    with_base_image: bool = True,
    start_timeout: float = 60.0,
    data_root: Path | None = None,
    storage_drivers: tuple[str, ...] = ("overlay2", "vfs"),
) -> Iterator[DockerEngine]:
    """Start a private dockerd (overlay2, else vfs), import the base image, stop it on exit.

    ``data_root`` keeps the engine's data in that folder (kept on exit; e.g. a guest rootfs's
    /var/lib/docker), else a temp folder that is deleted."""
    reason = skip_reason()
    if reason:
        raise RuntimeError(reason)
    # Under /var/tmp (a real disk: overlay2 cannot sit on overlayfs/tmpfs); exec root kept short
    # because containerd's socket paths must fit in 108 bytes.
    root = Path(tempfile.mkdtemp(prefix="bivy-dockerd-", dir="/var/tmp"))
    exec_root = Path(tempfile.mkdtemp(prefix="bdk-", dir="/tmp"))
    socket = exec_root / "docker.sock"
    bridge = _bridge_name()
    address = _free_subnet()
    subprocess.run(["ip", "link", "add", bridge, "type", "bridge"], check=True)
    process: subprocess.Popen[bytes] | None = None
    try:
        subprocess.run(["ip", "addr", "add", address, "dev", bridge], check=True)
        subprocess.run(["ip", "link", "set", bridge, "up"], check=True)
        last_error = ""
        for driver in storage_drivers:
            log = (root / f"dockerd-{driver}.log").open("wb")
            process = subprocess.Popen(
                [
                    "dockerd",
                    f"--data-root={data_root or root / 'data'}",
                    f"--exec-root={exec_root}",
                    f"--pidfile={exec_root / 'docker.pid'}",
                    f"-H=unix://{socket}",
                    f"--storage-driver={driver}",
                    f"--bridge={bridge}",
                    "--iptables=true",
                    "--ip-masq=true",
                    "--userland-proxy=false",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            log.close()
            engine = DockerEngine(root=root, socket=socket, storage_driver=driver, process=process)
            if _wait_ready(engine, start_timeout):
                break
            last_error = (root / f"dockerd-{driver}.log").read_text(errors="replace")[-3000:]
            _stop(process)
            process = None
            if data_root is None:
                shutil.rmtree(root / "data", ignore_errors=True)
        else:
            raise RuntimeError(f"dockerd did not start:\n{last_error}")
        if with_base_image:
            engine.import_base_image()
        yield engine
    finally:
        if process is not None:
            with contextlib.suppress(Exception):
                _remove_all_containers(DockerEngine(root, socket, "", process))
            _stop(process)
        subprocess.run(["ip", "link", "delete", bridge], check=False, capture_output=True)
        _unmount_below(root)
        _unmount_below(exec_root)
        if data_root is not None:
            _unmount_below(data_root)
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(exec_root, ignore_errors=True)


def _wait_ready(engine: DockerEngine, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if engine.process.poll() is not None:
            return False
        if engine.socket.exists():
            probe = engine.docker("info", "--format", "{{.Driver}}", check=False, timeout=10)
            if probe.returncode == 0:
                return True
        time.sleep(0.2)  # polling a foreign daemon's socket: no event to wait on
    return False


def _remove_all_containers(engine: DockerEngine) -> None:
    ids = engine.docker("ps", "-aq", check=False, timeout=30).stdout.split()
    if ids:
        engine.docker("rm", "-f", "-v", *ids, check=False, timeout=120)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            # dockerd and its containerd (same session) only: never a broad kill
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def _unmount_below(path: Path) -> None:
    """Unmount anything a dead dockerd left mounted under ``path`` (deepest first)."""
    prefix = str(path) + "/"
    mounts = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mounts").read_text().splitlines():
            target = line.split()[1].replace("\\040", " ")
            if target.startswith(prefix) or target == str(path):
                mounts.append(target)
    for target in sorted(mounts, key=len, reverse=True):
        subprocess.run(["umount", "-l", target], check=False, capture_output=True)


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[DockerEngine]:
    """A private dockerd with ``bivy-test/base:latest`` imported, for the whole session."""
    reason = skip_reason()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the Docker engine cannot run: {reason}")
        pytest.skip(reason)
    with docker_engine_session() as engine:
        yield engine
