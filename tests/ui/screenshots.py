"""Screenshots of the window in each state, for the README (docs/screenshots/).

Run under a real X server (Xvfb), from the checkout::

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python -m tests.ui.screenshots

It builds the real window, panes and dialogs over domain objects in each state (the states
come from tests/ui/factories.py, as in the UI tests), forces a light or a dark palette (Fusion
style, so a screenshot does not depend on this machine's theme), and saves PNGs. The terminal
tabs are real: QtWebEngine showing a ttyd started with ``-a`` as on the VM, its command a shell
that prints the session it was handed. HOME, the config dirs and the keychain point into a
temporary directory: nothing of the user's is read or written.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

os.environ.setdefault("QTWEBENGINE_DISABLE_SANDBOX", "1")
_HOME = Path(tempfile.mkdtemp(prefix="bivy-shots-"))
for _var, _sub in (
    ("HOME", ""),
    ("XDG_CONFIG_HOME", ".config"),
    ("XDG_DATA_HOME", ".local/share"),
    ("XDG_CACHE_HOME", ".cache"),
    ("BIVY_CONFIG_DIR", "bivy-config"),
    ("BIVY_DATA_DIR", "bivy-data"),
):
    os.environ[_var] = str(_HOME / _sub)
os.environ["PYTHON_KEYRING_BACKEND"] = "keyring.backends.null.Keyring"

from PySide6.QtCore import QTimer  # noqa: E402
from PySide6.QtGui import QPalette  # noqa: E402
from PySide6.QtWidgets import QApplication, QWidget  # noqa: E402

from app.ui.ide import IdeTab  # noqa: E402  (QtWebEngine before the QApplication)

OUT = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
SIZE = (1480, 800)  # wide enough for every column at its default width
PASSWORD = "screenshot-only-7d2c"


def settle(app: QApplication, ms: int = 400) -> None:
    """Let Qt lay out and paint (and QtWebEngine load) for ``ms``."""
    import time

    end = time.monotonic() + ms / 1000
    while time.monotonic() < end:
        app.processEvents()
        time.sleep(0.01)


def wait_for(app: QApplication, check: Callable[[], bool], seconds: float = 60) -> None:
    import time

    end = time.monotonic() + seconds
    while not check():
        if time.monotonic() > end:
            raise TimeoutError("the screenshot scene did not come up")
        app.processEvents()
        time.sleep(0.02)


def save(widget: QWidget, name: str) -> Path:
    path = OUT / name
    if not widget.grab().save(str(path)):
        raise OSError(f"cannot write {path}")
    print(path)
    return path


def scenes_workspaces():  # type: ignore[no-untyped-def]
    """api: one session in each state; web: building; docs: all idle; old: deleting soon."""
    from app.domain import AgentState, Phase
    from tests.ui.factories import EVERY_STATE, session, with_sessions, workspace

    return [
        with_sessions(workspace("api"), *EVERY_STATE),
        workspace("web", phase=Phase.BUILDING, progress=0.45, created_ago=timedelta(minutes=4)),
        with_sessions(
            workspace("docs", created_ago=timedelta(hours=3, minutes=12)),
            session("main", AgentState.IDLE),
        ),
        with_sessions(
            workspace("old", idle_in=timedelta(minutes=3, seconds=30)),
            session("main", AgentState.IDLE),
            session("spike", AgentState.IDLE, agent="copilot"),
        ),
    ]


def make_window(app: QApplication):  # type: ignore[no-untyped-def]
    from app.ui.main_window import MainWindow
    from tests.ui.factories import NOW

    window = MainWindow(now=lambda: NOW)
    window.resize(*SIZE)
    window.show()
    settle(app)
    return window


def with_costs(window) -> None:  # type: ignore[no-untyped-def]
    from decimal import Decimal

    from app.ui.models import CostFigure

    window.model.set_costs(
        {
            ("hetzner", "api"): CostFigure(Decimal("0.04")),
            ("hetzner", "docs"): CostFigure(Decimal("0.03")),
            ("hetzner", "old"): CostFigure(Decimal("0.02")),
        }
    )
    window.set_costs_summary(
        per_hour=Decimal("0.0320"),
        month_to_date=Decimal("3.87"),
        currency="EUR",
        budget_warning=None,
    )


def shoot_all(app: QApplication, palette: QPalette, suffix: str) -> None:
    from app.domain import Phase
    from tests.ui.factories import EVERY_STATE, NOW

    app.setPalette(palette)
    window = make_window(app)
    save(window, f"first-run{suffix}.png")
    window.set_has_accounts(True)
    settle(app)
    save(window, f"empty{suffix}.png")
    window.set_workspaces(scenes_workspaces())
    with_costs(window)
    window.set_refreshed(NOW, {})
    window.select("hetzner", "api")
    review = EVERY_STATE[1]
    window.show_session_notice(
        "hetzner", "api", review.name, f"{review.name} in api needs you: {review.message}"
    )
    settle(app)
    save(window, f"sessions{suffix}.png")
    if suffix:
        window.close()
        window.deleteLater()
        return
    # A workspace whose sessions have not started yet (ready, nothing listed).
    from tests.ui.factories import workspace

    window.notice_bar.hide()
    window.set_workspaces([workspace("fresh"), workspace("web", phase=Phase.CLONING, progress=0.3)])
    window.select("hetzner", "fresh")
    settle(app)
    save(window, "no-sessions.png")
    # New session…
    from app.ui.session_dialog import NewSessionDialog

    window.set_workspaces(scenes_workspaces())
    window.select("hetzner", "api")

    async def never(_request: object) -> None:
        return None

    dialog = NewSessionDialog(window.selected(), never, None, window)  # type: ignore[arg-type]
    dialog.agent.setCurrentIndex(dialog.agent.findData("codex"))
    dialog.prompt.setPlainText("Fix the login redirect loop and add a test for it.")
    dialog.show()
    settle(app)
    save(dialog, "new-session.png")
    dialog.close()
    try:
        terminal_tabs(app, window)
    except (RuntimeError, TimeoutError, OSError) as exc:  # no ttyd here: the rest still stands
        print(f"terminal-tabs.png not made: {exc}", file=sys.stderr)
    window.close()


def terminal_tabs(app: QApplication, window) -> None:  # type: ignore[no-untyped-def]
    """Two sessions of api in their tabs, through a real ttyd (``-a``)."""
    from app.ui.workspace_access import session_url, tab_title
    from tests.ui.session_ttyd import start_session_ttyd

    banners = _HOME / "banners"
    banners.mkdir()
    (banners / "main.txt").write_text(
        "claude · branch main · /workspaces/api\n"
        "(a shell stands in for the agent in this screenshot)\n"
    )
    (banners / "review.txt").write_text(
        "codex · branch bivy/review · /workspaces/api/.bivy/worktrees/review\n"
        "(a shell stands in for the agent in this screenshot)\n"
    )
    ttyd = start_session_ttyd(_HOME / "ttyd", password=PASSWORD, banners=banners)
    try:
        url = f"http://127.0.0.1:{ttyd.port}/"
        tabs = []
        for name in ("main", "review"):
            tab = IdeTab(session_url(url, name), "bivy", PASSWORD, workspace="api", session=name)
            window.add_tab(tab, tab_title("api", name))
            tabs.append(tab)
        for tab in tabs:
            window.tabs.setCurrentWidget(tab)
            wait_for(app, lambda t=tab: _shows_prompt(app, t))
        settle(app, 1500)
        save(window, "terminal-tabs.png")
        for index in range(window.tabs.count() - 1, 0, -1):
            window.close_tab(index)
        settle(app, 300)
    finally:
        ttyd.stop()


def _shows_prompt(app: QApplication, tab: IdeTab) -> bool:
    result: list[str] = []
    tab.view.page().runJavaScript(
        "(() => { const b = window.term && window.term.buffer.active; if (!b) return '';"
        " const out = []; for (let i = 0; i < b.length; i++) { const l = b.getLine(i);"
        " if (l) out.push(l.translateToString(true)); } return out.join('\\n'); })()",
        0,
        lambda value: result.append(str(value or "")),
    )
    settle(app, 200)
    return bool(result) and "$ " in result[0]


def main() -> int:
    from app.ui.theme import dark_palette, light_palette

    if os.environ.get("QT_QPA_PLATFORM", "xcb") == "offscreen":
        print("run under Xvfb (xvfb-run), not the offscreen platform", file=sys.stderr)
        return 2
    OUT.mkdir(parents=True, exist_ok=True)
    app = QApplication(sys.argv)
    app.setStyle("Fusion")
    shoot_all(app, light_palette(), "")
    shoot_all(app, dark_palette(), "-dark")
    QTimer.singleShot(0, app.quit)
    app.exec()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
