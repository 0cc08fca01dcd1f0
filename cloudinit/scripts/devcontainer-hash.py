#!/usr/bin/python3
# The devcontainer config hash of a checkout (notes/CONTRACTS2.md; the app's twin is
# app/services/prebuild_hash.py, and a test runs both on the same trees).
#
# Files: .devcontainer.json when it is a regular file, every regular file under .devcontainer/
# (symbolic links neither followed nor counted), as POSIX paths relative to REPO_DIR sorted by
# their bytes; each goes in as path + NUL + sha256(content) hex + newline. Without any, Bivy's
# default devcontainer.json (the VM's own copy) goes in as "bivy-default" + NUL + its sha256 hex
# + newline. Prints the first 16 hex characters.
"""Usage: devcontainer-hash REPO_DIR DEFAULT_DEVCONTAINER_JSON"""

import hashlib
import os
import stat
import sys


def regular(path):
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def files(root):
    found = []
    if regular(os.path.join(root, ".devcontainer.json")):
        found.append(b".devcontainer.json")
    folder = os.path.join(root, ".devcontainer")
    try:
        is_dir = stat.S_ISDIR(os.lstat(folder).st_mode)
    except OSError:
        is_dir = False
    if is_dir:
        for current, _dirs, names in os.walk(folder, followlinks=False):
            for name in names:
                path = os.path.join(current, name)
                if regular(path):
                    relative = os.path.relpath(path, root).replace(os.sep, "/")
                    found.append(os.fsencode(relative))
    return sorted(found)


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest().encode()


def config_hash(root, default):
    digest = hashlib.sha256()
    found = files(root)
    for relative in found:
        content = sha256_file(os.path.join(os.fsencode(root), relative))
        digest.update(relative + b"\0" + content + b"\n")
    if not found:
        digest.update(b"bivy-default\0" + sha256_file(default) + b"\n")
    return digest.hexdigest()[:16]


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: devcontainer-hash REPO_DIR DEFAULT_DEVCONTAINER_JSON")
    print(config_hash(sys.argv[1], sys.argv[2]))
