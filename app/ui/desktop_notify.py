"""Desktop notifications over D-Bus (``org.freedesktop.Notifications``), for desktops without a
tray (GNOME without an AppIndicator extension): a session that needs the user is announced with
an "Open terminal" action, and a click on it comes back as ``activated(notice)``.

Talks to the session bus with jeepney (pure Python, asyncio; keyring's Secret Service backend
already depends on it on Linux). Where there is no session bus, no notification server or no
jeepney, ``notify`` says so (False) and the window's own bar and status line remain.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import Any

from PySide6.QtCore import QObject, Signal

from app.paths import resource_path
from app.ui.notifications import Notice

__all__ = ["DesktopNotifier"]

log = logging.getLogger(__name__)

_PATH = "/org/freedesktop/Notifications"
_NAME = "org.freedesktop.Notifications"
#: How long the server shows a notice (ms); a click still works until it closes it.
EXPIRE_MS = 15000


class DesktopNotifier(QObject):
    """Sends notices to the desktop's notification server and reports clicks.

    Signals:
        activated(Notice): the user clicked the notice (or its "Open terminal" action).
    Attributes:
        pending: the notices on screen, by the server's notification id.
    """

    activated = Signal(object)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.pending: dict[int, Notice] = {}
        self._stack: contextlib.AsyncExitStack | None = None
        self._router: Any = None
        self._listener: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    @staticmethod
    def available() -> bool:
        if not os.environ.get("DBUS_SESSION_BUS_ADDRESS"):
            return False
        try:
            import jeepney  # type: ignore[import-untyped]  # noqa: F401
        except ImportError:
            return False
        return True

    async def notify(self, notice: Notice) -> bool:
        """Show ``notice``; False when no notification server took it."""
        if not self.available():
            return False
        from jeepney import DBusAddress, new_method_call

        try:
            router = await self._connect()
            actions = ["default", "Open terminal"] if notice.session else []
            message = new_method_call(
                DBusAddress(_PATH, bus_name=_NAME, interface=_NAME),
                "Notify",
                "susssasa{sv}i",
                (
                    "Bivy",
                    0,
                    str(resource_path("icons", "bivy.svg")),
                    notice.title,
                    notice.text,
                    actions,
                    {"urgency": ("y", 2 if notice.urgent else 1)},
                    EXPIRE_MS,
                ),
            )
            reply = await asyncio.wait_for(router.send_and_get_reply(message), 10)
        except (TimeoutError, OSError, ValueError, RuntimeError) as exc:
            log.info("no desktop notification: %s", exc)
            return False
        from jeepney import MessageType

        if reply.header.message_type is not MessageType.method_return:
            log.info("the notification server refused: %s", reply.body)
            return False
        self.pending[int(reply.body[0])] = notice
        return True

    async def _connect(self) -> Any:
        async with self._lock:
            if self._router is not None:
                return self._router
            from jeepney import MatchRule, message_bus
            from jeepney.io.asyncio import (  # type: ignore[import-untyped]
                Proxy,
                open_dbus_router,
            )

            stack = contextlib.AsyncExitStack()
            try:
                router = await stack.enter_async_context(open_dbus_router(bus="SESSION"))
                rule = MatchRule(type="signal", interface=_NAME, path=_PATH)
                await Proxy(message_bus, router).AddMatch(rule)
                queue: asyncio.Queue[Any] = asyncio.Queue()
                stack.enter_context(router.filter(rule, queue=queue, bufsize=64))
            except BaseException:
                await stack.aclose()
                raise
            self._stack, self._router = stack, router
            self._listener = asyncio.ensure_future(self._listen(queue))
            return router

    async def _listen(self, queue: asyncio.Queue[Any]) -> None:
        while True:
            message = await queue.get()
            member = message.header.fields.get(_MEMBER)
            if member == "ActionInvoked":
                ident, _action = message.body
                notice = self.pending.pop(int(ident), None)
                if notice is not None:
                    self.activated.emit(notice)
            elif member == "NotificationClosed":
                self.pending.pop(int(message.body[0]), None)

    async def aclose(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None
        if self._stack is not None:
            with contextlib.suppress(Exception):
                await self._stack.aclose()
            self._stack, self._router = None, None


def _member_field() -> Any:
    try:
        from jeepney.low_level import HeaderFields  # type: ignore[import-untyped]
    except ImportError:  # pragma: no cover - jeepney is there wherever notify() runs
        return None
    return HeaderFields.member


_MEMBER = _member_field()
