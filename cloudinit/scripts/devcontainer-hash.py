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


def kind(path):
    try:
        return stat.S_IFMT(os.lstat(path).st_mode)
    except OSError:
        return 0


def digest_of(path):
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest().encode()


def config_hash(root, default):
    found = [".devcontainer.json"] if kind(os.path.join(root, ".devcontainer.json")) == stat.S_IFREG else []
    if kind(os.path.join(root, ".devcontainer")) == stat.S_IFDIR:
        for current, _dirs, names in os.walk(os.path.join(root, ".devcontainer")):
            found += [os.path.relpath(os.path.join(current, n), root) for n in names
                      if kind(os.path.join(current, n)) == stat.S_IFREG]
    digest = hashlib.sha256()
    for relative in sorted(os.fsencode(f.replace(os.sep, "/")) for f in found):
        digest.update(relative + b"\0" + digest_of(os.path.join(os.fsencode(root), relative)) + b"\n")
    if not found:
        digest.update(b"bivy-default\0" + digest_of(default) + b"\n")
    return digest.hexdigest()[:16]


if __name__ == "__main__":
    print(config_hash(*sys.argv[1:3]))
