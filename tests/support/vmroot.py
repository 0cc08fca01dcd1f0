"""The VM's own paths and login user on this machine, seen only by an sshd started for a test.

Usage (see ``tests/integration/test_restic_s3.py``)::

    with vm_sshd(layout={"/usr/local/lib/bivy": lib, "/etc/bivy": etc, "/var/lib/bivy": state},
                 user=VmUser(name="dev", sudo="ALL=(ALL) NOPASSWD:ALL")) as server:
        ...  # ssh in as server.user; `sudo -n /usr/local/lib/bivy/backup` runs the real thing

So a test runs the production command line, unchanged (absolute VM paths, ``sudo -n``, the
VM's user and sudo rule), against a VM tree rendered into a temp dir, and nothing on the machine
changes. How: ``unshare --mount --propagation private`` runs a shell that mounts a tmpfs scratch,
lays overlayfs (upper dirs in the scratch) over the parents of the VM paths (/etc, /usr/local/lib,
/var/lib) so they become private writable copies, bind-mounts the test's dirs onto the VM paths,
adds the user to passwd/group/shadow and its rule to sudoers.d as cloud-init does, then execs
sshd. Everything sshd starts (the session, sudo, the script) lives in that namespace; when sshd
ends, the namespace and its mounts go with it.

Needs root (CAP_SYS_ADMIN) and overlayfs, as CI has (it runs the suite as root): without them
``vm_sshd`` fails, it never skips. Differences from the VM, all environment-only: the user's
shadow entry is ``*`` (cloud-init's ``lock_passwd`` writes ``!``, which sshd without PAM treats
as a locked account; the VM's sshd uses PAM and accepts keys either way); /etc/hosts is the
image's own (the container's bind-mounted one is hidden by the overlay), so sudo may warn that it
cannot resolve the host name.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from tests.support.sshd import SshServer, start_sshd

#: Runs as root inside the new mount namespace; "$@" is the sshd command line.
_SETUP = r"""
set -eu
scratch=$1 user=$2 uid=$3 shell=$4 rule=$5 home=$6 mounts=$7
shift 7
mount -t tmpfs -o mode=0755 bivy-vmroot "$scratch"
for parent in /etc /usr/local/lib /var/lib; do
  key=$(printf '%s' "$parent" | tr / _)
  mkdir -p "$scratch/$key/upper" "$scratch/$key/work"
  mount -t overlay overlay \
    -o "lowerdir=$parent,upperdir=$scratch/$key/upper,workdir=$scratch/$key/work" "$parent"
done
# mounts: lines of "VM path<TAB>source dir"
printf '%s\n' "$mounts" | while IFS="$(printf '\t')" read -r target source; do
  [ -n "$target" ] || continue
  mkdir -p "$target"
  mount --bind "$source" "$target"
done
mkdir -p "$home"
chown "$uid:$uid" "$home"
printf '%s:x:%s:%s:Bivy:%s:%s\n' "$user" "$uid" "$uid" "$home" "$shell" >> /etc/passwd
printf '%s:x:%s:\n' "$user" "$uid" >> /etc/group
printf '%s:*:20000:0:99999:7:::\n' "$user" >> /etc/shadow
printf '%s %s\n' "$user" "$rule" > /etc/sudoers.d/90-cloud-init-users
chmod 0440 /etc/sudoers.d/90-cloud-init-users
exec "$@"
"""

#: Parents that are overlaid (and so may hold new VM paths); a VM path must lie under one.
PARENTS = ("/etc/", "/usr/local/lib/", "/var/lib/")


@dataclass(frozen=True)
class VmUser:
    """The VM's login user as the cloud-config defines it (``users:`` entry)."""

    name: str
    sudo: str
    shell: str = "/bin/bash"


def _free_uid() -> int:
    taken = {entry.pw_uid for entry in pwd.getpwall()}
    return next(uid for uid in range(61000, 65000) if uid not in taken)


@contextlib.contextmanager
def vm_sshd(
    layout: Mapping[str, Path], user: VmUser, *, extra_config: str = ""
) -> Iterator[SshServer]:
    """sshd on 127.0.0.1 in a mount namespace where each ``layout`` VM path shows its source dir
    and ``user`` exists with its sudo rule; sshd's login user is ``user.name``.
    ``extra_config``: more sshd_config lines (e.g. ``Subsystem sftp internal-sftp``)."""
    assert os.geteuid() == 0, "the VM's paths and user need root (CI runs the suite as root)"
    unshare = shutil.which("unshare")
    assert unshare is not None, "unshare is needed (apt: util-linux)"
    for target in layout:
        assert target.startswith(PARENTS), f"{target} is not under {PARENTS}"
    # The user reads its authorized_keys and enters its home: both must be reachable by it.
    base = Path(tempfile.mkdtemp(prefix="bivy-vmroot-", dir="/tmp"))
    base.chmod(0o755)
    scratch = base / "scratch"
    scratch.mkdir()
    mounts = "".join(f"{target}\t{source}\n" for target, source in layout.items())
    launcher = [
        unshare, "--mount", "--propagation", "private", "sh", "-c", _SETUP, "vmroot",
        str(scratch), user.name, str(_free_uid()), user.shell, user.sudo,
        str(scratch / "home" / user.name), mounts,
    ]  # fmt: skip
    server = start_sshd(base / "sshd", user=user.name, launcher=launcher, extra_config=extra_config)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)
