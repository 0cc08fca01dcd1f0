#!/usr/bin/env python3
# Installs Bivy's toolkit: ``toolkit-install SHA256 ARCHIVE DEST``.
#
# The toolkit is the tar.xz of Bivy's VM scripts beyond stage 1 (app/cloudinit/render.py), in the
# user data or sent by the app over SSH as user dev. Only the archive the app rendered is
# accepted: ARCHIVE is read once, its sha256 must be SHA256 (from the root-only workspace.env),
# and it is extracted from those same bytes. Every member must be a regular file or a directory
# with a relative path inside DEST (no absolute path, no "..", no link), and a write never follows
# a link: each file is written beside its target and renamed over it. Exit 1 with the reason on
# stderr otherwise; nothing is written then.

import hashlib
import io
import os
import sys
import tarfile


def refuse(reason):
    print(f"toolkit-install: {reason}", file=sys.stderr)
    return 1


def main(argv):
    if len(argv) != 4:
        return refuse("usage: toolkit-install SHA256 ARCHIVE DEST")
    expected, archive, dest = argv[1:]
    with open(archive, "rb") as handle:
        data = handle.read()
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        return refuse(f"{archive} is not the archive the app rendered (sha256 {actual}, expected {expected})")
    root = os.path.realpath(dest)
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:xz") as tar:
            members = tar.getmembers()
            contents = {}
            for member in members:
                parts = member.name.split("/")
                if member.name.startswith("/") or any(p in ("", ".", "..") for p in parts):
                    return refuse(f"refusing the member {member.name!r}: not a plain relative path")
                if not (member.isfile() or member.isdir()):
                    return refuse(f"refusing the member {member.name!r}: not a file or directory")
                if member.isfile():
                    contents[member.name] = tar.extractfile(member).read()
    except (tarfile.TarError, EOFError, OSError) as exc:
        return refuse(f"{archive} is not a tar.xz archive ({exc})")
    for member in members:
        real = os.path.realpath(os.path.join(root, member.name))
        if not real.startswith(root + os.sep):
            return refuse(f"refusing {member.name!r}: a link in {root} leads it out")
    for member in members:
        target = os.path.join(root, member.name)
        if member.isdir():
            os.makedirs(target, 0o755, exist_ok=True)
            continue
        os.makedirs(os.path.dirname(target), 0o755, exist_ok=True)
        partial = target + ".toolkit-new"
        if os.path.lexists(partial):
            os.unlink(partial)
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(contents[member.name])
        os.chmod(partial, member.mode & 0o7777)
        os.replace(partial, target)
    print(f"toolkit-install: {len(contents)} files installed in {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
