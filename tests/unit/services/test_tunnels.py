"""TunnelService without a server: targets from records, backoff, key parsing, refusals."""

from __future__ import annotations

import pytest

from app.errors import SSHError
from app.services.registry import WorkspaceRecord
from app.services.tunnels import ReconnectPolicy, SSHTarget, TunnelService, TunnelState
from tests.support.sshd import new_keypair


def test_target_from_record() -> None:
    _, host_public = new_keypair()
    record = WorkspaceRecord(
        name="demo",
        account="h",
        provider="hetzner",
        ipv4="203.0.113.5",
        host_public_key=host_public,
    )
    target = SSHTarget.from_record(record)
    assert (target.host, target.port, target.username) == ("203.0.113.5", 22, "dev")
    assert target.host_public_key == host_public


@pytest.mark.parametrize(
    ("changes", "message"),
    [({"ipv4": None}, "no IP address"), ({"host_public_key": ""}, "no pinned host key")],
)
def test_target_needs_address_and_pinned_key(changes: dict[str, object], message: str) -> None:
    _, host_public = new_keypair()
    record = WorkspaceRecord(
        name="demo",
        account="h",
        provider="hetzner",
        ipv4="203.0.113.5",
        host_public_key=host_public,
    ).model_copy(update=changes)
    with pytest.raises(SSHError, match=message):
        SSHTarget.from_record(record)


def test_backoff_retries_at_once_then_grows_to_the_cap() -> None:
    policy = ReconnectPolicy(initial=0.5, maximum=8.0, factor=2.0, jitter=0.0)
    assert [policy.delay(n) for n in range(1, 8)] == [0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 8.0]
    jittery = ReconnectPolicy(initial=1.0, maximum=30.0, jitter=0.2)
    assert all(0.8 <= jittery.delay(2) <= 1.2 for _ in range(50))


async def test_bad_pinned_key_is_an_error_before_any_connection() -> None:
    client_private, _ = new_keypair()
    service = TunnelService(client_key=client_private)
    target = SSHTarget(
        workspace="demo", host="127.0.0.1", port=1, host_public_key="ssh-ed25519 nope"
    )
    with pytest.raises(SSHError, match="not a valid SSH public key"):
        await service.open(target)
    assert service.state("demo") == TunnelState.CLOSED


async def test_unreachable_host_is_an_ssh_error() -> None:
    client_private, _ = new_keypair()
    _, host_public = new_keypair()
    service = TunnelService(client_key=client_private, connect_timeout=2.0)
    # port 1 on loopback: nothing listens, the connection is refused at once
    target = SSHTarget(workspace="demo", host="127.0.0.1", port=1, host_public_key=host_public)
    with pytest.raises(SSHError, match="cannot reach workspace 'demo'"):
        await service.open(target)
