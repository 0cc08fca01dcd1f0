"""The CLI in-process: dispatch, exit codes, one-line errors, confirmation and login prompts."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path
from typing import Any

import pytest

from app import cli
from app.errors import NotFound

REPO = "https://github.com/example/project"


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("bivy ")


def test_no_command_prints_help_and_exits_2() -> None:
    code, _, err = run()
    assert code == 2
    assert "COMMAND" in err


def test_every_command_is_in_the_table() -> None:
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(sub.choices) == {c.name for c in cli.COMMANDS}
    assert {"providers", "sizes", "ls", "create", "rm", "login"} <= set(sub.choices)


def _table_with(handler: cli.Handler, monkeypatch: pytest.MonkeyPatch) -> None:
    def add(sub: cli.SubParsers) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = sub.add_parser("boom")
        return parser

    monkeypatch.setattr(cli, "COMMANDS", [cli.Command("boom", add, handler)])


def test_bivy_error_is_one_line_exit_1(monkeypatch: pytest.MonkeyPatch) -> None:
    async def handler(args: argparse.Namespace, ctx: cli.CliContext) -> int:
        raise NotFound("there is no such thing", hint="Look elsewhere", request_id="r-1")

    _table_with(handler, monkeypatch)
    code, out, err = run("boom")
    assert (code, out) == (1, "")
    assert err == "bivy: there is no such thing. Look elsewhere. (request id r-1)\n"


def test_ctrl_c_exits_130_quietly(monkeypatch: pytest.MonkeyPatch) -> None:
    def handler(args: argparse.Namespace, ctx: cli.CliContext) -> int:
        raise KeyboardInterrupt

    _table_with(handler, monkeypatch)
    code, _, err = run("boom")
    assert code == 130
    assert err == "bivy: interrupted\n"


def test_a_bug_is_one_line_without_its_text(monkeypatch: pytest.MonkeyPatch) -> None:
    def handler(args: argparse.Namespace, ctx: cli.CliContext) -> int:
        raise RuntimeError("token=supersecret in a message")

    _table_with(handler, monkeypatch)
    code, _, err = run("boom")
    assert code == 70
    assert err == "bivy: internal error (RuntimeError); run with --debug for details\n"


def test_bad_spec_values_name_the_flag() -> None:
    code, _, err = run("create", "demo", "--repo", REPO, "--idle-minutes", "0")
    assert code == 1
    assert err.startswith("bivy: --idle-minutes: ")
    code, _, err = run("create", "demo", "--repo", "not a url")
    assert code == 1 and err.startswith("bivy: --repo: ")
    code, _, err = run("create", "-bad", "--repo", REPO)
    assert code == 2  # argparse: "-bad" looks like an option


def test_ls_without_accounts_says_how_to_add_one() -> None:
    code, out, err = run("ls", "--json")
    assert code == 0 and json.loads(out) == []
    assert "bivy login hetzner" in err


def test_rm_refuses_without_yes_off_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    # No account and no emulator: it must refuse before looking anything up.
    code, _, err = run("rm", "demo")
    assert code == 1 and "pass --yes" in err


def test_login_refuses_a_secret_on_the_command_line() -> None:
    code, _, err = run("login", "hetzner", "--option", "token=abc")
    assert code == 1 and "read without echo" in err


def test_create_with_a_local_folder_checks_it_and_mentions_uncommitted_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.support.local_repo import make_repo

    plain = tmp_path / "plain"
    plain.mkdir()
    monkeypatch.chdir(tmp_path)
    code, _, err = run("create", "demo", "--repo", "plain")
    assert code == 1
    assert err.startswith(f"bivy: --repo: {plain} is not a git checkout")
    make_repo(tmp_path / "project")
    # relative to the current folder; stops later (no account), after the one-line notice
    code, _, err = run("create", "demo", "--repo", "project", "--provider", "nosuch")
    assert code == 1
    lines = err.splitlines()
    assert lines[0] == (
        f"{tmp_path / 'project'} has uncommitted changes; only commits are sent "
        "(add --include-uncommitted to send them too)"
    )
    code, _, err = run(
        "create", "demo", "--repo", "project", "--include-uncommitted", "--provider", "nosuch"
    )
    assert code == 1 and "uncommitted" not in err


def test_create_passes_the_checkout_and_reports_a_long_upload(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.domain import Workspace, WorkspaceSpec
    from app.services.workspaces import CreateProgress, WorkspaceService
    from tests.support.local_repo import make_repo

    make_repo(tmp_path / "project")
    monkeypatch.chdir(tmp_path)
    seen: list[WorkspaceSpec] = []

    async def create(
        self: WorkspaceService,
        spec: WorkspaceSpec,
        on_progress: Any = None,
        use_prebuild: bool = True,
    ) -> Workspace:
        seen.append(spec)
        on_progress(CreateProgress("wait", "Server 1 is running", 0.79))
        on_progress(CreateProgress("repository", "Waiting for the VM's SSH server", 0.8))
        for percent in range(101):
            on_progress(
                CreateProgress(
                    "repository", "Sending the repository (12.3 MB)", 0.8 + 0.19 * percent / 100
                )
            )
        on_progress(CreateProgress("repository", "Repository sent", 0.99))
        return Workspace(name=spec.name, account="a", provider="hetzner", repo_url=spec.repo_url)

    monkeypatch.setattr(WorkspaceService, "create", create)
    code, out, err = run("create", "demo", "--repo", "project", "--include-uncommitted")
    assert code == 0, err
    assert (seen[0].repo_url, seen[0].include_uncommitted) == (str(tmp_path / "project"), True)
    sending = [line for line in err.splitlines() if "Sending the repository" in line]
    assert 4 <= len(sending) <= 6  # about every fifth of the upload, not every percent
    assert err.splitlines()[-1] == "[ 99%] Repository sent"
    assert out == "Workspace demo is running.\n"
