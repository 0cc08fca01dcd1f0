"""The app's side of Bivy's tools (app/services/toolkit_send.py): a create on a provider whose
user data cannot hold them sends them once the VM answers, the archive whose sha256 the user
data names; the local provider takes the split layout when BIVY_LOCAL_USER_DATA_LIMIT says so.
(Through a real sshd: tests/integration/test_create_local_repo.py; the VM side:
tests/integration/cloudinit/test_toolkit.py.)"""

from __future__ import annotations

import base64
import gzip
import hashlib

import pytest

from app.domain import WorkspaceSpec
from app.errors import InvalidInput
from app.providers.local.provider import LocalProvider
from app.services.keys import generate_host_key
from app.services.vm_inputs import VmSecrets, vm_user_data
from app.services.workspaces import CreateProgress
from app.settings import SecretStore, Settings
from tests.support import emulated_vm
from tests.unit.services.test_workspaces import make_emulator, make_service


async def test_a_hetzner_create_sends_the_rendered_toolkit_before_it_is_done() -> None:
    emulator = make_emulator()
    service = make_service(emulator)
    seen: list[CreateProgress] = []
    emulated_vm.RECEIVED.clear()
    try:
        await service.create(
            WorkspaceSpec(name="tools", repo_url="https://github.com/o/r.git"), seen.append
        )
    finally:
        await service.aclose()
    [(workspace, toolkit)] = emulated_vm.RECEIVED
    assert workspace == "tools"
    sent = str(emulator.calls("POST", r"/v1/servers")[0].body["user_data"])
    plain = gzip.decompress(base64.b64decode(sent)).decode()
    assert f"BIVY_TOOLKIT_SHA256={hashlib.sha256(toolkit).hexdigest()}" in plain
    steps = [p.step for p in seen]
    assert steps.index("wait") < steps.index("toolkit") < steps.index("done")
    assert [p.fraction for p in seen] == sorted(p.fraction for p in seen)


def _local() -> LocalProvider:
    return LocalProvider({})


@pytest.mark.parametrize(
    ("environ", "layout"),
    [({}, "files"), ({"BIVY_LOCAL_USER_DATA_LIMIT": "32768"}, "split")],
    ids=["default", "forced-split"],
)
async def test_the_local_provider_splits_when_told(environ: dict[str, str], layout: str) -> None:
    source = VmSecrets(Settings(), SecretStore(), environ)
    spec = WorkspaceSpec(name="w", repo_url="https://github.com/o/r.git")
    rendered = await vm_user_data(
        source, spec, _local(), "ssh-ed25519 AAAA app", generate_host_key("w"), "p" * 24
    )
    assert rendered.layout == layout
    assert (rendered.toolkit is not None) == (layout == "split")
    assert rendered.size <= int(environ.get("BIVY_LOCAL_USER_DATA_LIMIT", 1 << 20))


async def test_a_bad_local_limit_is_a_clear_error() -> None:
    source = VmSecrets(Settings(), SecretStore(), {"BIVY_LOCAL_USER_DATA_LIMIT": "32k"})
    spec = WorkspaceSpec(name="w", repo_url="https://github.com/o/r.git")
    with pytest.raises(InvalidInput, match="BIVY_LOCAL_USER_DATA_LIMIT must be a number"):
        await vm_user_data(
            source, spec, _local(), "ssh-ed25519 AAAA app", generate_host_key("w"), "p" * 24
        )
