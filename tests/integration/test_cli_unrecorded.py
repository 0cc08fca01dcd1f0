"""``bivy ls`` shows a server carrying Bivy's labels that this installation has no record of
(issue 13): listed, marked unrecorded with delete as its one action, never silently skipped;
``bivy rm`` removes it. The window's list says the same in its status column."""

from __future__ import annotations

import io
import json
import time

import pytest

from app import cli
from app.domain import Server, ServerStatus, Workspace
from app.settings import SecretStore
from app.ui.models import status_text
from tests.support.fixtures import ServedHetzner
from tests.support.waits import WAIT_S

LABELS = {"managed-by": "bivy", "bivy-workspace": "stray"}


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_ls_shows_an_unrecorded_server_and_rm_deletes_it(
    monkeypatch: pytest.MonkeyPatch, hetzner_api: ServedHetzner, keychain: SecretStore
) -> None:
    for key, value in hetzner_api.env().items():
        monkeypatch.setenv(key, value)
    emulator = hetzner_api.emulator
    sid = emulator.add_server("bivy-stray", labels=LABELS)
    emulator.add_server("someone-elses", labels={})  # not Bivy's: not listed

    code, out, err = run("ls")
    assert code == 0, err
    rows = out.splitlines()[1:]
    assert len(rows) == 1 and rows[0].split()[0] == "stray"
    assert "(unrecorded: delete only)" in rows[0]
    assert f"stray (server {sid} in account hetzner)" in err and "bivy rm stray" in err

    deadline = time.monotonic() + WAIT_S  # running: ls --json then says why it reads no phase
    while emulator.server_status(sid) != "running" and time.monotonic() < deadline:
        time.sleep(0.05)
    code, out, err = run("ls", "--json")
    assert code == 0, err
    (item,) = json.loads(out)
    assert (item["name"], item["recorded"], item["server_id"]) == ("stray", False, str(sid))
    assert item["detail"] == "not created by this installation of Bivy"

    code, out, err = run("rm", "stray", "--yes")
    assert code == 0, err
    assert emulator.server_status(sid) is None
    code, out, err = run("ls")
    assert code == 0 and out == "", out


def test_the_window_marks_an_unrecorded_server() -> None:
    server = Server(provider="hetzner", id="7", name="bivy-stray", status=ServerStatus.RUNNING)
    ws = Workspace(name="stray", account="hetzner", provider="hetzner", server=server)
    assert status_text(ws) == "running · booting"
    unrecorded = ws.model_copy(update={"unrecorded": True})
    assert status_text(unrecorded) == "running · unrecorded (delete only)"
