"""A ttyd run as a VM runs it for sessions (``-a``: the URL's ``?arg=NAME`` picks the session),
its command a shell script that names the session it was given and waits at a prompt."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.support.sshd import Ttyd, free_port, ttyd_binary, wait_for_port

#: What each terminal prints first: the session ttyd handed over ("main" without an argument,
#: as the VM's ttyd-session does), then a prompt.
SCRIPT = r"""#!/bin/bash
session="${1:-main}"
printf 'Bivy session: %s\n' "$session"
if [ -n "${BIVY_BANNER_DIR:-}" ] && [ -r "$BIVY_BANNER_DIR/$session.txt" ]; then
    cat "$BIVY_BANNER_DIR/$session.txt"
fi
export PS1="dev@$session:~/repo\$ "
exec bash --norc --noprofile -i
"""


def start_session_ttyd(directory: Path, *, password: str, banners: Path | None = None) -> Ttyd:
    """ttyd with ``-a`` on a free loopback port, basic auth ``bivy:<password>``."""
    directory.mkdir(parents=True, exist_ok=True)
    script = directory / "ttyd-session"
    script.write_text(SCRIPT)
    script.chmod(0o755)
    port = free_port()
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(directory),
        "TERM": "xterm-256color",
        "LANG": "C.UTF-8",
    }
    if banners is not None:
        env["BIVY_BANNER_DIR"] = str(banners)
    process = subprocess.Popen(
        [
            str(ttyd_binary()),
            *("-i", "lo", "-p", str(port), "-W", "-O", "-a"),
            *("-c", f"bivy:{password}", "-t", "disableLeaveAlert=true"),
            *("-t", "disableResizeOverlay=true"),  # a screenshot's "179x42" otherwise
            "--",
            str(script),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        cwd=directory,
    )
    server = Ttyd(port=port, username="bivy", password=password, process=process)
    try:
        wait_for_port(port, process=process)
    except BaseException:
        server.stop()
        raise
    return server
