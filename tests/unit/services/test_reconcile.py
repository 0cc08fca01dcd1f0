"""Write-ahead records settled by the listing (``app.services.reconcile``), against the Hetzner
emulator in-process: adopt, forget, leave a running create alone, show the unrecorded."""

from __future__ import annotations

import asyncio

import pytest

from app.domain import Workspace, WorkspaceSpec
from app.errors import Conflict
from app.services.reconcile import create_lock_path, hold_create_lock
from app.services.registry import Registry, WorkspaceRecord
from app.services.workspaces import TTYD_PASSWORD
from app.settings import SecretKeys, SecretStore, try_hold
from tests.emulators.hetzner import HetznerEmulator
from tests.unit.services.test_workspaces import REPO, make_emulator, make_service

LABELS = {"managed-by": "bivy", "bivy-workspace": "demo"}
HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostKeyOfTheVmForTestsOnly0123456789ab bivy-host"


def pending(**kw: object) -> WorkspaceRecord:
    values: dict[str, object] = {
        "name": "demo",
        "account": "hetzner",
        "provider": "hetzner",
        "host_public_key": HOST_KEY,
        "state": "creating",
        "repo_url": REPO,
    }
    values.update(kw)
    return WorkspaceRecord.model_validate(values)


def listed(emulator: HetznerEmulator) -> list[Workspace]:
    async def main() -> list[Workspace]:
        service = make_service(emulator)
        try:
            return (await service.list_workspaces()).workspaces
        finally:
            await service.aclose()

    return asyncio.run(main())


def test_an_interrupted_create_whose_server_exists_is_adopted() -> None:
    emulator = make_emulator()
    sid = emulator.add_server("bivy-demo", labels=LABELS)
    Registry().put(pending())
    SecretStore().set(SecretKeys.workspace("demo", TTYD_PASSWORD), "pw")
    (ws,) = listed(emulator)
    assert not ws.unrecorded and ws.repo_url == REPO
    record = Registry().get("demo")
    assert record is not None and record.state == "ready" and record.server_id == str(sid)
    assert record.host_public_key == HOST_KEY and record.ipv4 == ws.server.ipv4  # type: ignore[union-attr]
    assert SecretStore().get(SecretKeys.workspace("demo", TTYD_PASSWORD)) == "pw"


def test_an_interrupted_create_without_a_server_is_forgotten_with_its_secret() -> None:
    emulator = make_emulator()
    Registry().put(pending())
    SecretStore().set(SecretKeys.workspace("demo", TTYD_PASSWORD), "pw")
    assert listed(emulator) == []
    assert Registry().get("demo") is None
    assert SecretStore().get(SecretKeys.workspace("demo", TTYD_PASSWORD)) is None


def test_a_create_still_running_is_left_alone_even_in_this_process() -> None:
    emulator = make_emulator()
    Registry().put(pending())
    held = try_hold(create_lock_path(Registry(), "demo"))
    assert held is not None
    try:
        assert listed(emulator) == []
        record = Registry().get("demo")
        assert record is not None and record.pending  # neither forgotten nor adopted
    finally:
        held.release()


def test_a_finished_delete_is_forgotten_and_a_labelled_server_without_record_is_shown() -> None:
    emulator = make_emulator()
    Registry().put(pending(state="deleting", server_id="999"))
    emulator.add_server("bivy-other", labels={**LABELS, "bivy-workspace": "other"})
    (ws,) = listed(emulator)
    assert ws.name == "other" and ws.unrecorded
    assert Registry().all() == []


def test_a_second_server_of_a_recorded_name_is_unrecorded() -> None:
    emulator = make_emulator()
    first = emulator.add_server("bivy-demo", labels=LABELS)
    emulator.add_server("bivy-demo", labels=LABELS)
    Registry().put(pending(state="ready", server_id=str(first)))
    workspaces = listed(emulator)
    assert sorted((w.server.id, w.unrecorded) for w in workspaces if w.server) == [
        (str(first), False),
        (str(first + 1), True),
    ]


def test_create_and_rm_refuse_a_name_another_create_holds() -> None:
    emulator = make_emulator()
    Registry().put(pending())

    async def main() -> None:
        held = await hold_create_lock(Registry(), "demo")
        assert held is not None
        service = make_service(emulator)
        try:
            with pytest.raises(Conflict, match="being created by another Bivy process"):
                await service.create(WorkspaceSpec(name="demo", repo_url=REPO))
            with pytest.raises(Conflict, match="being created right now"):
                await service.delete("demo")
        finally:
            held.release()
            await service.aclose()

    asyncio.run(main())
    assert not emulator.calls("POST", r"/v1/servers")
    assert Registry().get("demo") is not None  # the running create's record is untouched


def test_create_writes_the_record_before_the_provider_is_asked() -> None:
    emulator = make_emulator()
    seen: list[WorkspaceRecord | None] = []
    handle = emulator.handle

    def spy(request):  # type: ignore[no-untyped-def]
        if request.method == "POST" and request.path == "/v1/servers":
            seen.append(Registry().get("demo"))
        return handle(request)

    emulator.handle = spy  # type: ignore[method-assign]

    async def main() -> None:
        service = make_service(emulator)
        try:
            await service.create(WorkspaceSpec(name="demo", repo_url=REPO, region="fsn1"))
        finally:
            await service.aclose()

    asyncio.run(main())
    (before,) = seen
    assert before is not None and before.pending and before.host_public_key.startswith("ssh-")
    assert before.ssh_key_fingerprint.startswith("SHA256:") and before.repo_url == REPO
    after = Registry().get("demo")
    assert after is not None and after.state == "ready" and after.server_id
    assert after.host_public_key == before.host_public_key
