"""Where Bivy's files are: data files (resources/, cloudinit/) and the user's data dir."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import platformdirs

from app import APP_ID


def install_root() -> Path:
    """The folder holding resources/ and cloudinit/: the PyInstaller bundle or the source tree."""
    bundle = getattr(sys, "_MEIPASS", None)
    if bundle:
        return Path(bundle)
    return Path(__file__).resolve().parents[1]


def resource_path(*parts: str) -> Path:
    """A file under resources/, e.g. ``resource_path("icons", "bivy.svg")``."""
    return install_root().joinpath("resources", *parts)


def cloudinit_path(*parts: str) -> Path:
    """A template under cloudinit/."""
    return install_root().joinpath("cloudinit", *parts)


def data_dir() -> Path:
    """Where the user's data lives: ``$BIVY_DATA_DIR`` or the platform's user data dir.

    The same rule as ``app.settings.data_dir``, here for the layers below settings (the local
    provider keeps its VMs under ``data_dir()/local``).
    """
    override = os.environ.get("BIVY_DATA_DIR")
    return Path(override) if override else Path(platformdirs.user_data_dir(APP_ID))
