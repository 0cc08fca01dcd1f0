"""The registry across processes and with broken records: nothing lost, nothing destroyed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from app.errors import InvalidInput
from app.services.registry import Registry, WorkspaceRecord, registry_path
from app.settings import take_notices

ROOT = Path(__file__).resolve().parents[3]


def good(name: str) -> dict[str, object]:
    return {"name": name, "account": "hetzner", "provider": "hetzner", "server_id": "1"}


def test_one_bad_record_hides_only_itself_and_the_original_is_kept() -> None:
    registry_path().parent.mkdir(parents=True)
    bad = {**good("broken"), "host_public_key": "-----BEGIN OPENSSH PRIVATE KEY-----"}
    original = json.dumps(
        {"schema_version": 1, "workspaces": [good("alpha"), bad, good("gamma"), 7]}
    ).encode()
    registry_path().write_bytes(original)
    take_notices()

    assert [r.name for r in Registry().all()] == ["alpha", "gamma"]
    (notice,) = take_notices()
    assert "record 2 (broken): host_public_key" in notice.text
    assert "record 4" in notice.text
    assert "PRIVATE KEY" not in notice.text  # the value itself is never echoed
    kept = Path(notice.kept_at)
    assert kept.read_bytes() == original  # kept whole, bad records included
    # The live file now holds the good records only, so the next read is clean and quiet.
    assert [r.name for r in Registry().all()] == ["alpha", "gamma"]
    assert take_notices() == []
    Registry().put(WorkspaceRecord.model_validate(good("delta")))
    assert [r.name for r in Registry().all()] == ["alpha", "delta", "gamma"]
    assert kept.read_bytes() == original


def test_a_file_that_cannot_be_read_is_left_alone_and_never_written_over() -> None:
    registry_path().mkdir(parents=True)  # a directory where the file should be: EISDIR
    with pytest.raises(InvalidInput, match="cannot read the workspace registry"):
        Registry().all()
    with pytest.raises(InvalidInput, match="will not write over"):
        Registry().put(WorkspaceRecord.model_validate(good("alpha")))
    assert registry_path().is_dir()


_WRITER = textwrap.dedent(
    """
    import sys
    from app.services.registry import Registry, WorkspaceRecord
    tag, count = sys.argv[1], int(sys.argv[2])
    registry = Registry()
    for i in range(count):
        registry.put(WorkspaceRecord(
            name=f"{tag}-{i}", account="hetzner", provider="hetzner", server_id=str(i)))
    print("done", flush=True)
    """
)


@pytest.mark.slow
def test_two_processes_writing_at_once_lose_nothing() -> None:
    """Two real processes each add 40 records at the same time: all 80 are there."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, tag, "40"],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for tag in ("left", "right")
    ]
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert out.strip() == "done"
    names = {r.name for r in Registry().all()}
    assert names == {f"{tag}-{i}" for tag in ("left", "right") for i in range(40)}


def test_a_broken_registry_that_cannot_be_moved_is_never_written_over(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from app.settings import files

    registry_path().parent.mkdir(parents=True)
    original = json.dumps({"workspaces": [good("alpha"), {"name": "bad"}]}).encode()
    registry_path().write_bytes(original)

    def refuse(src: object, dst: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(files.os, "replace", refuse)
    take_notices()
    assert [r.name for r in Registry().all()] == ["alpha"]  # reading still shows the good one
    assert "could not be moved aside" in take_notices()[0].text
    with pytest.raises(InvalidInput, match="could not be moved aside"):
        Registry().put(WorkspaceRecord.model_validate(good("beta")))
    assert registry_path().read_bytes() == original
