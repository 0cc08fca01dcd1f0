"""A server with Bivy's labels but no record here (issue 13): its row says so and offers only
Delete (no pinned host key: terminal, browser, ssh and backup cannot be trusted to reach it)."""

from __future__ import annotations

from pytestqt.qtbot import QtBot

from app.ui.main_window import MainWindow
from tests.ui.factories import NOW, workspace


def test_an_unrecorded_row_offers_delete_only(qtbot: QtBot) -> None:
    window = MainWindow(now=lambda: NOW, confirm=lambda *_: True)
    qtbot.addWidget(window)
    window.show()
    stray = workspace("stray", phase=None).model_copy(update={"unrecorded": True, "repo_url": ""})
    window.set_workspaces([workspace("mine"), stray])
    window.select("hetzner", "mine")
    assert window.act_terminal.isEnabled() and window.act_copy_ssh.isEnabled()
    window.select("hetzner", "stray")
    assert "unrecorded (delete only)" in window.detail.header.text()
    for action in (
        window.act_terminal,
        window.act_browser,
        window.act_backup,
        window.act_copy_ssh,
        window.act_keep_alive,
    ):
        assert not action.isEnabled(), action.text()
    assert window.act_delete.isEnabled()
    with qtbot.waitSignal(window.deleteRequested) as deleted:
        window.act_delete.trigger()
    assert deleted.args[0].name == "stray"
