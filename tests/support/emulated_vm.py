"""The emulated providers' servers are not VMs: Hetzner's emulator hands out 127.0.113.x, where
no sshd listens. Bivy's tools the app sends a VM over SSH (the user data's ``split`` layout,
app/services/toolkit_send.py) are taken for such an address by this stand-in for the VM's
inbox, which checks what the VM would (an xz archive, reported like the real send) and keeps it
in ``RECEIVED``; any other address (a test sshd, a QEMU VM on 127.0.0.1) gets the real send.

tests/conftest.py installs it for every test; child processes get it through
``emulated_site/sitecustomize.py`` when they talk to a served emulator.
"""

from __future__ import annotations

import ipaddress
import lzma
from typing import Any

#: Hetzner's emulator (tests/emulators/hetzner.py) gives its servers these addresses.
EMULATED = ipaddress.ip_network("127.0.113.0/24")
#: (workspace, toolkit) of every send to an emulated server, in order.
RECEIVED: list[tuple[str, bytes]] = []


def is_emulated(host: str) -> bool:
    try:
        return ipaddress.ip_address(host) in EMULATED
    except ValueError:
        return False


def install() -> Any:
    """Route sends to emulated servers to the stand-in; returns the function to patch in."""
    from app.services import toolkit_send

    real = toolkit_send.send_toolkit
    if getattr(real, "emulated", False):
        return real

    async def send_toolkit(toolkit: bytes, target: Any, client_key: str, **kw: Any) -> None:
        if not is_emulated(target.host):
            return await real(toolkit, target, client_key, **kw)
        lzma.decompress(toolkit)  # what the VM's toolkit-install opens
        report = kw.get("on_progress") or (lambda _detail, _fraction: None)
        report("Waiting for the VM's SSH server to send Bivy's tools", 0.0)
        RECEIVED.append((target.workspace, toolkit))
        report("Bivy's tools sent", 1.0)
        return None

    send_toolkit.emulated = True  # type: ignore[attr-defined]
    return send_toolkit
