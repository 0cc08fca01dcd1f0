"""The *toolkit*: Bivy's VM scripts as one deterministic tar.xz, for user data that cannot hold
them file by file (the ``inline`` and ``split`` layouts; docs/user-data.md). Used by
:mod:`app.cloudinit.render`; installed on the VM by ``cloudinit/scripts/toolkit-install.py``."""

from __future__ import annotations

import base64
import gzip
import io
import lzma
import tarfile
from typing import Literal

__all__ = [
    "LAYOUTS",
    "LIB_DIR",
    "STAGE1",
    "TOOLKIT_NAME",
    "Layout",
    "fit",
    "gzip_entries",
    "pack_toolkit",
    "toolkit_files",
]

#: Where Bivy's VM scripts live (app.cloudinit.LIB_DIR).
LIB_DIR = "/usr/local/lib/bivy"
#: Files under LIB_DIR always in the user data: what keeps the user's money safe (idle and
#: lifetime deletion) and lets the VM report, and what installs the rest.
STAGE1 = frozenset(
    {"lib.sh", "status", "idle-monitor", "self-delete", "metadata-guard", "metadata-guard.nft",
     "bootstrap", "bootstrap-stopped", "git-askpass", "toolkit-install"}
)  # fmt: skip
TOOLKIT_NAME = "toolkit.tar.xz"
Layout = Literal["files", "inline", "split"]
#: In the order they are tried: the first that fits the provider's limit wins.
LAYOUTS: tuple[Layout, ...] = ("files", "inline", "split")


def pack_toolkit(files: list[dict[str, str]]) -> bytes:
    """``files`` (write_files entries under LIB_DIR) as a tar.xz with paths relative to LIB_DIR:
    deterministic (sorted, mtime 0, uid/gid 0, no names), modes kept."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for entry in sorted(files, key=lambda e: e["path"]):
            data = entry["content"].encode()
            info = tarfile.TarInfo(entry["path"][len(LIB_DIR) + 1 :])
            info.size, info.mode, info.mtime = len(data), int(entry["permissions"], 8), 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    return lzma.compress(buffer.getvalue(), format=lzma.FORMAT_XZ, preset=9 | lzma.PRESET_EXTREME)


def toolkit_files(files: list[dict[str, str]], layout: Layout) -> list[dict[str, str]]:
    """The entries of ``files`` that go in the toolkit: in ``inline`` all of LIB_DIR but its
    installer (runcmd runs it before any unit starts), in ``split`` all but stage 1."""
    keep = {"toolkit-install"} if layout == "inline" else STAGE1
    return [
        f for f in files
        if f["path"].startswith(f"{LIB_DIR}/") and f["path"][len(LIB_DIR) + 1 :] not in keep
    ]  # fmt: skip


def gzip_entries(files: list[dict[str, str]]) -> None:
    """Scripts and units of ``files`` as ``encoding: gz+b64`` (cloud-init decodes them), for a
    datasource that does not decode a gzipped whole; user values stay plain."""
    for entry in files:
        if entry["path"].startswith((f"{LIB_DIR}/", "/etc/systemd/")):
            packed = gzip.compress(entry["content"].encode(), 9, mtime=0)
            entry.update(content=base64.b64encode(packed).decode(), encoding="gz+b64")


def fit(config: str, limit: int, gzip_base64_ok: bool) -> tuple[str, bool] | None:
    """``config`` as sent (plain, else base64(gzip) where the datasource decodes it) when it
    fits ``limit``, with whether it is compressed; else None."""
    if len(config.encode()) <= limit:
        return config, False
    if gzip_base64_ok:
        packed = base64.b64encode(gzip.compress(config.encode(), 9, mtime=0)).decode()
        if len(packed) <= limit:
            return packed, True
    return None
