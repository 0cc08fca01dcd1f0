"""Where Bivy's data files (resources/, cloudinit/) are, from a source tree or a frozen bundle."""

from __future__ import annotations

import sys
from pathlib import Path


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
