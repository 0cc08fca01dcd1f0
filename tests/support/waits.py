"""How long a test waits for something that is going to happen (a signal, a condition).

Every such wait ends as soon as its condition holds, so a generous limit costs nothing when all
is well; it only decides how long a broken build takes to fail. Short limits (pytest-qt's 5 s
default) fail for no reason on a loaded 2-core machine, where starting a dialog, a thread or a
child process can take seconds. "Nothing happened" is never checked by waiting a while: tests
wait for a positive signal that the moment of decision has passed instead.
"""

from __future__ import annotations

#: pytest-qt's ``waitUntil``/``waitSignal`` limit, in milliseconds.
WAIT_MS = 60_000
#: The same for asyncio and polling loops, in seconds.
WAIT_S = 60.0
