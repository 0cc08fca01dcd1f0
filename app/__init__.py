"""Bivy: disposable cloud workspaces for AI coding agents."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("bivy")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"

APP_NAME = "Bivy"
APP_ID = "bivy"
