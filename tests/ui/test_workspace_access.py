"""The shell hands the window's and the tray's "into the workspace" actions to WorkspaceAccess."""

from __future__ import annotations

import asyncio

from PySide6.QtGui import QGuiApplication
from pytestqt.qtbot import QtBot

from app.domain import Workspace
from app.settings import SecretStore, Settings
from app.ui.shell import Shell


async def _no_validation(kind: str, options: object) -> str:
    return "unused"


def test_copy_ssh_from_the_window_reaches_the_clipboard(
    qtbot: QtBot, qloop: asyncio.AbstractEventLoop
) -> None:
    shell = Shell(
        Settings(),
        SecretStore(),
        workspace_service=None,
        providers={},
        validator=_no_validation,  # type: ignore[arg-type]
    )
    try:
        assert shell.access.window is shell.window
        ws = Workspace(name="t", account="hetzner", provider="hetzner")
        shell.window.copySshRequested.emit(ws)
        assert QGuiApplication.clipboard().text() == "ssh bivy-t"
        assert shell.window.statusBar().currentMessage() == "Copied: ssh bivy-t"
        shell.tray.openRequested.emit(ws)  # no status service: no tab, no error
        assert shell.window.tab_for("t") is None
    finally:
        task = asyncio.ensure_future(shell.shutdown())
        qtbot.waitUntil(task.done, timeout=10_000)
        shell.window.close()
        shell.window.deleteLater()
        shell.deleteLater()
