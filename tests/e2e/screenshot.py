"""A screenshot of the app's window with a workspace's agent terminal tab open.

    python -m tests.e2e.screenshot NAME OUT.png [--account local] [--timeout S]

Runs the real window (MainWindow + Shell over this installation's settings, keychain and
registry: the caller's HOME, BIVY_* folders and the keyring's D-Bus session), under Xvfb
(``xvfb-run``) when there is no display. It selects workspace NAME once the listing shows it,
waits until the VM's status read over the SSH tunnel enables Terminal, triggers it like a user,
waits until the terminal tab (QtWebEngine → tunnel → ttyd → the agent's tmux session) has
painted text, and saves a grab of the whole window. Exit 0 with the PNG written, 1 on timeout.

The e2e matrix (tests/e2e/test_workspace_e2e.py) runs it on a ready workspace when
``BIVY_E2E_SCREENSHOT_DIR`` names a folder; docs/ keeps one such picture.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

SIZE = (1280, 800)


def _reexec_under_xvfb(argv: list[str]) -> int | None:
    if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
        return None
    xvfb = shutil.which("xvfb-run")
    if xvfb is None:
        raise SystemExit("no display and no xvfb-run: install xvfb")
    screen = f"-screen 0 {SIZE[0] + 100}x{SIZE[1] + 100}x24"
    command = [xvfb, "-a", "-s", screen, sys.executable, "-m", "tests.e2e.screenshot", *argv]
    return subprocess.call(command)


def _dark_ratio(image: object, step: int = 4) -> float:
    from PySide6.QtGui import QImage

    assert isinstance(image, QImage)
    image = image.convertToFormat(QImage.Format.Format_RGB32)
    dark = total = 0
    for y in range(0, image.height(), step):
        for x in range(0, image.width(), step):
            total += 1
            dark += image.pixelColor(x, y).lightness() < 60
    return dark / max(total, 1)


def _lit_rows(image: object) -> int:
    """Rows of the image with light (glyph) pixels: text painted on the dark terminal."""
    from PySide6.QtGui import QImage

    assert isinstance(image, QImage)
    image = image.convertToFormat(QImage.Format.Format_RGB32)
    width = image.width() - 20  # leave out the scrollbar
    return sum(
        any(image.pixelColor(x, y).lightness() > 140 for x in range(0, width, 3))
        for y in range(0, image.height(), 2)
    )


async def _until(what: str, check: object, deadline: float) -> None:
    assert callable(check)
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.5)


async def _shoot(name: str, account: str, out: Path, timeout: float) -> None:
    from app.ui.main_window import MainWindow
    from app.ui.shell import Shell

    deadline = time.monotonic() + timeout
    window = MainWindow()
    window.resize(*SIZE)
    shell = Shell.from_environment(window)
    await shell.start()
    window.resize(*SIZE)
    try:
        await _until(
            f"workspace {name} in the list",
            lambda: window.model.row_of(account, name) is not None,
            deadline,
        )
        window.select(account, name)
        # READY comes from the VM over the app's SSH tunnel (pinned host key)
        await _until("Terminal to be enabled", window.act_terminal.isEnabled, deadline)
        window.act_terminal.trigger()
        await _until("the terminal tab", lambda: window.tab_for(name) is not None, deadline)
        tab = window.tab_for(name)
        view = getattr(tab, "view", tab)
        await _until(
            "the terminal to paint text",
            lambda: (
                _dark_ratio(view.grab().toImage()) > 0.5  # type: ignore[union-attr]
                and _lit_rows(view.grab().toImage()) >= 6
            ),  # type: ignore[union-attr]
            deadline,
        )
        await asyncio.sleep(3)  # let the agent's screen settle
        image = window.grab().toImage()
        out.parent.mkdir(parents=True, exist_ok=True)
        if not image.save(str(out), "PNG"):
            raise RuntimeError(f"could not write {out}")
        print(f"screenshot: {out} ({image.width()}x{image.height()})", flush=True)
    finally:
        await shell.shutdown()


def main(argv: list[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m tests.e2e.screenshot", description=__doc__)
    parser.add_argument("name")
    parser.add_argument("out", type=Path)
    parser.add_argument("--account", default="local")
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args(args_list)
    code = _reexec_under_xvfb(args_list)
    if code is not None:
        return code

    import qasync

    from app.ui.main import _application, _prepare_webengine

    _prepare_webengine()
    app = _application()
    loop = qasync.QEventLoop(app)
    asyncio.set_event_loop(loop)
    code = 0
    try:
        with loop:
            loop.run_until_complete(
                _shoot(args.name, args.account, args.out.resolve(), args.timeout)
            )
    except TimeoutError as exc:
        print(f"screenshot: {exc}", file=sys.stderr, flush=True)
        code = 1
    # Leave without the interpreter's finalisation: a collection of Qt/QtWebEngine objects at
    # that point aborted the process once (PySide6 "bool_dealloc", exit 134) after the PNG was
    # written and the shell had shut down.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    raise SystemExit(main())
