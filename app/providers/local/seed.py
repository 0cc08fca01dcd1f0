"""The NoCloud seed: an ISO 9660 volume labelled ``cidata`` holding ``user-data`` (the same
rendered user data the clouds get) and ``meta-data`` (instance id, host name), built in Python
with pycdlib (Rock Ridge and Joliet names, so every guest sees the lower-case file names)."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pycdlib

#: cloud-init's NoCloud datasource looks for a filesystem with this label.
VOLUME_LABEL = "cidata"


def meta_data(instance_id: str, hostname: str) -> str:
    """NoCloud ``meta-data`` (YAML; JSON is valid YAML, and quotes every value safely)."""
    return json.dumps({"instance-id": instance_id, "local-hostname": hostname}, indent=2) + "\n"


def build_seed(path: Path, user_data: str, meta: str) -> None:
    """Write the seed ISO to ``path`` (atomically: a temp file beside it, then a rename)."""
    files = {"user-data": user_data.encode(), "meta-data": meta.encode()}
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, vol_ident=VOLUME_LABEL, sys_ident="LINUX", joliet=3,
            rock_ridge="1.09")  # fmt: skip
    for name, data in files.items():
        short = name.upper().replace("-", "_") + ".;1"
        iso.add_fp(io.BytesIO(data), len(data), f"/{short}", rr_name=name,
                   joliet_path=f"/{name}")  # fmt: skip
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        # The user data holds secrets (host key, terminal password): readable by the user only.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            iso.write_fp(handle)
        os.replace(tmp, path)
    finally:
        iso.close()
        tmp.unlink(missing_ok=True)


def read_seed(path: Path) -> dict[str, bytes]:
    """The files of a seed ISO by their Rock Ridge names (for tests and diagnostics)."""
    iso = pycdlib.PyCdlib()
    iso.open(str(path))
    try:
        found: dict[str, bytes] = {}
        for child in iso.list_children(rr_path="/"):
            if child.is_dir():
                continue
            name = child.rock_ridge.name().decode()
            out = io.BytesIO()
            iso.get_file_from_iso_fp(out, rr_path=f"/{name}")
            found[name] = out.getvalue()
        return found
    finally:
        iso.close()


def volume_label(path: Path) -> str:
    """The ISO's volume identifier (``cidata`` for a seed)."""
    with path.open("rb") as handle:
        handle.seek(16 * 2048 + 40)
        return handle.read(32).decode("ascii", errors="replace").strip()
