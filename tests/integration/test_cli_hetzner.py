"""The ``bivy`` CLI as a separate process against the Hetzner emulator served on 127.0.0.1.

Every CLI run uses a real, private gnome-keyring over D-Bus (``secret_service``), as on a
user's desktop: the child processes through ``secret_service.env``, the in-process runs through
keyring's SecretService backend (``keychain``). The in-memory keyring is for unit tests only.
"""

from __future__ import annotations

import base64
import getpass
import gzip
import io
import json
import os
import signal
import subprocess
import sys
import time
from decimal import Decimal

import pytest

from app import cli
from app.settings import SecretKeys, SecretStore, load_settings, settings_path
from tests.support.fixtures import REPO_ROOT, CliRunner, ServedHetzner
from tests.support.secret_service import SecretServiceSession
from tests.support.waits import WAIT_S

REPO = "https://github.com/example/project"


@pytest.fixture
def keyring_env(secret_service: SecretServiceSession) -> dict[str, str]:
    """What a CLI child process needs to use the private gnome-keyring."""
    return secret_service.env({})


def assert_clean_failure(result: subprocess.CompletedProcess[str], *fragments: str) -> str:
    """Non-zero, no traceback, exactly one ``bivy:`` error line containing ``fragments``."""
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    errors = [line for line in result.stderr.splitlines() if line.startswith("bivy:")]
    assert len(errors) == 1, result.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


def test_version_and_providers(cli: CliRunner, keyring_env: dict[str, str]) -> None:
    version = cli("--version")
    assert version.returncode == 0
    assert version.stdout.startswith("bivy ")
    providers = cli("providers", env=keyring_env)
    assert providers.returncode == 0, providers.stderr
    assert providers.stdout.splitlines()[1].split()[0] == "hetzner"  # listed first
    as_json = json.loads(cli("providers", "--json", env=keyring_env).stdout)
    assert as_json[0]["kind"] == "hetzner" and as_json[0]["accounts"] == []


def test_usage_errors_exit_2_without_traceback(cli: CliRunner) -> None:
    result = cli("create", "demo")  # --repo missing
    assert result.returncode == 2
    assert "--repo" in result.stderr and "Traceback" not in result.stderr


def test_login_with_a_bad_token_fails_cleanly_and_stores_nothing(
    cli: CliRunner, hetzner_api: ServedHetzner, secret_service: SecretServiceSession
) -> None:
    env = {**secret_service.env({}), **hetzner_api.env(with_token=False)}
    bad = "Wrong" + hetzner_api.token
    result = cli("login", "hetzner", "--token-stdin", input=bad + "\n", env=env)
    assert_clean_failure(result, "rejected the API token", "request id")
    assert bad not in result.stdout + result.stderr
    assert not settings_path().exists()
    keychain = SecretStore(secret_service.backend())
    assert keychain.get(SecretKeys.account("hetzner", "token")) is None  # nothing stored
    ls = cli("ls", "--json", env=env)  # no Hetzner account: only the local provider is asked
    assert ls.returncode == 0 and json.loads(ls.stdout) == [], ls.stderr
    assert not hetzner_api.emulator.calls("GET", r"/v1/servers")

    good = cli("login", "hetzner", "--token-stdin", input=hetzner_api.token + "\n", env=env)
    assert good.returncode == 0, good.stderr
    assert "Logged in: account hetzner" in good.stdout
    assert hetzner_api.token not in settings_path().read_text()
    # The token is in the keychain: a later run needs no environment variable.
    ls = cli("ls", "--json", env=env)
    assert ls.returncode == 0, ls.stderr
    assert json.loads(ls.stdout) == []


def test_login_without_a_keychain_is_a_clear_error(
    cli: CliRunner, hetzner_api: ServedHetzner
) -> None:
    env = {
        "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring",
        **hetzner_api.env(with_token=False),
    }
    result = cli("login", "hetzner", "--token-stdin", input=hetzner_api.token + "\n", env=env)
    assert_clean_failure(result, "no system keychain", "environment variable")
    assert not settings_path().exists()


def test_sizes_shows_live_prices(
    cli: CliRunner, hetzner_api: ServedHetzner, keyring_env: dict[str, str]
) -> None:
    env = {**keyring_env, **hetzner_api.env()}
    hetzner_api.emulator.set_price("cx23", "fsn1", "0.0123", "7.6543")
    table = cli("sizes", "hetzner", "--region", "fsn1", env=env)
    assert table.returncode == 0, table.stderr
    header = table.stdout.splitlines()[0].split()
    assert header[-2:] == ["EUR/HOUR", "EUR/MONTH"]
    assert {"NAME", "CORES", "MEMORY", "DISK"} <= set(header)
    row = next(line.split() for line in table.stdout.splitlines() if line.startswith("cx23 "))
    # Gross prices (the emulator adds 19 % VAT to the net ones set above).
    assert Decimal(row[-2]) == (Decimal("0.0123") * Decimal("1.19")).quantize(Decimal("0.0001"))
    assert Decimal(row[-1]) == (Decimal("7.6543") * Decimal("1.19")).quantize(Decimal("0.01"))
    assert "VAT included" in table.stderr

    data = json.loads(cli("sizes", "hetzner", "--region", "fsn1", "--json", env=env).stdout)
    cx23 = next(s for s in data if s["name"] == "cx23")
    assert (cx23["cores"], cx23["memory_gb"], cx23["disk_gb"]) == (2, 4.0, 40)
    assert cx23["currency"] == "EUR" and cx23["region"] == "fsn1"
    assert Decimal(cx23["price_hourly"]) > 0 and Decimal(cx23["price_monthly"]) > 0


@pytest.mark.slow
def test_create_ls_rm_with_a_rate_limit_in_the_middle(
    cli: CliRunner, hetzner_api: ServedHetzner, secret_service: SecretServiceSession
) -> None:
    env = {**secret_service.env({}), **hetzner_api.env()}
    emulator = hetzner_api.emulator
    # One 429 while the CLI waits for the server to run: it waits for RateLimit-Reset, retries.
    emulator.inject_error("GET", r"/v1/servers/\d+", 429, "rate_limit_exceeded", times=1)
    created = cli("create", "demo", "--repo", REPO, "--region", "fsn1", "--json", env=env)
    assert created.returncode == 0, created.stderr
    assert [r.status for r in emulator.requests if r.status == 429] == [429]
    workspace = json.loads(created.stdout)
    assert workspace["name"] == "demo" and workspace["status"] == "running"
    assert "[100%]" in created.stderr  # progress went to stderr

    ls = cli("ls", "--json", env=env)
    assert ls.returncode == 0, ls.stderr
    listed = json.loads(ls.stdout)
    assert [(w["name"], w["status"], w["repo_url"]) for w in listed] == [("demo", "running", REPO)]
    table = cli("ls", env=env).stdout
    assert table.splitlines()[1].split()[:3] == ["demo", "hetzner", "running"]

    clash = cli("create", "demo", "--repo", REPO, env=env)
    assert_clean_failure(clash, "already exists", "bivy rm demo")

    refused = cli("rm", "demo", env=env)  # stdin is not a terminal: --yes is required
    assert_clean_failure(refused, "--yes")
    removed = cli("rm", "demo", "--yes", env=env)
    assert removed.returncode == 0, removed.stderr
    ls = cli("ls", "--json", env=env)
    assert ls.returncode == 0 and json.loads(ls.stdout) == []
    assert emulator.server_status(int(workspace["server_id"])) is None


@pytest.mark.slow
def test_ctrl_c_during_create_exits_130_and_deletes_the_server(
    cli: CliRunner, hetzner_api: ServedHetzner, keyring_env: dict[str, str]
) -> None:
    emulator = hetzner_api.emulator
    # The server is created, its answer held: Ctrl-C lands while the request is in flight, so
    # the CLI cannot know the server's id and must find it to delete it.
    emulator.inject_latency("POST", r"/v1/servers", 10.0, times=1)
    env = {**cli.env, **keyring_env, **hetzner_api.env()}
    process = subprocess.Popen(
        [sys.executable, "-m", "app", "create", "demo", "--repo", REPO],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO_ROOT,
    )
    try:
        deadline = time.monotonic() + WAIT_S
        while not emulator.calls("POST", r"/v1/servers") and time.monotonic() < deadline:
            time.sleep(0.02)  # the emulator runs in this process's thread: poll its log
        assert emulator.calls("POST", r"/v1/servers"), "the CLI never asked for a server"
        process.send_signal(signal.SIGINT)
        _out, err = process.communicate(timeout=WAIT_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 130, err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == "bivy: interrupted"
    # In order: the name check (GET), the create (POST), then the cleanup's own look-up of the
    # server among Bivy's labelled ones (a GET after the POST), then the DELETE of what it found.
    log = [(r.method, r.path, r.query) for r in emulator.requests]
    post = next(i for i, (m, p, _) in enumerate(log) if (m, p) == ("POST", "/v1/servers"))
    lookups = [
        i
        for i, (m, p, q) in enumerate(log)
        if i > post
        and (m, p) == ("GET", "/v1/servers")
        and any("managed-by=bivy" in v for v in q.get("label_selector", []))
    ]
    assert lookups, log[post:]
    deletes = [
        i for i, (m, p, _) in enumerate(log) if m == "DELETE" and p.startswith("/v1/servers/")
    ]
    assert deletes and deletes[0] > lookups[0], log[post:]
    assert emulator.project.servers  # the server existed: the cleanup had something to find
    for sid in list(emulator.project.servers):
        assert emulator.server_status(sid) in (None, "deleting")


def test_unknown_workspace_and_bad_input_are_one_line(
    cli: CliRunner, hetzner_api: ServedHetzner, keyring_env: dict[str, str]
) -> None:
    env = {**keyring_env, **hetzner_api.env()}
    assert_clean_failure(cli("rm", "ghost", "--yes", env=env), "no workspace named 'ghost'")
    assert_clean_failure(cli("create", "Bad_Name", "--repo", REPO, env=env), "NAME")
    assert_clean_failure(cli("sizes", "nope", env=env), "unknown provider 'nope'")
    no_token = {**keyring_env, **hetzner_api.env(with_token=False)}
    assert_clean_failure(
        cli("create", "demo", "--repo", REPO, env=no_token), "no hetzner account", "bivy login"
    )
    assert not emulator_posts(hetzner_api)


def emulator_posts(api: ServedHetzner) -> list[object]:
    return list(api.emulator.calls("POST", r"/v1/servers"))


@pytest.mark.slow
def test_debug_output_never_shows_a_secret(
    cli: CliRunner, hetzner_api: ServedHetzner, keyring_env: dict[str, str]
) -> None:
    agent_key = "sk-ant-api03-" + "S3cr3t" * 8
    env = {**keyring_env, **hetzner_api.env(), "ANTHROPIC_API_KEY": agent_key}
    created = cli("--debug", "create", "demo", "--repo", REPO, env=env)
    assert created.returncode == 0, created.stderr
    listed = cli("--debug", "ls", env=env)
    removed = cli("--debug", "rm", "demo", "--yes", "--no-wait", env=env)
    assert listed.returncode == removed.returncode == 0
    everything = "".join(r.stdout + r.stderr for r in (created, listed, removed))
    assert "HTTP Request: POST" in everything  # debug logging was on
    for secret in (hetzner_api.token, agent_key, "PRIVATE KEY"):
        assert secret not in everything
    # The agent key did reach the VM's user data (and only there).
    sent = hetzner_api.emulator.calls("POST", r"/v1/servers")[0].body["user_data"]
    plain = sent if sent.startswith("#cloud") else gzip.decompress(base64.b64decode(sent)).decode()
    assert agent_key in plain


# -- in-process: terminal prompts (input and getpass faked, the API served) ---------------------


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def use_emulator(monkeypatch: pytest.MonkeyPatch, api: ServedHetzner, token: bool = True) -> None:
    for key, value in api.env(with_token=token).items():
        monkeypatch.setenv(key, value)


def on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)


def test_rm_asks_on_a_terminal(
    monkeypatch: pytest.MonkeyPatch, hetzner_api: ServedHetzner, keychain: SecretStore
) -> None:
    use_emulator(monkeypatch, hetzner_api)
    emulator = hetzner_api.emulator
    sid = emulator.add_server("bivy-demo", labels={"managed-by": "bivy", "bivy-workspace": "demo"})
    on_a_terminal(monkeypatch)
    questions: list[str] = []
    answers = iter(["n", "yes"])

    def fake_input(prompt: str = "") -> str:
        questions.append(prompt)
        return next(answers)

    monkeypatch.setattr("builtins.input", fake_input)
    code, _, err = run("rm", "demo", "--no-wait")
    assert code == 1 and "Not deleted." in err
    assert emulator.server_status(sid) not in ("deleting", None)
    code, out, _ = run("rm", "demo", "--no-wait")
    assert code == 0 and "Workspace demo deleted." in out
    assert emulator.server_status(sid) in ("deleting", None)
    assert questions == ["Delete workspace 'demo' and its server? Unsaved work is lost. [y/N] "] * 2


def test_login_reads_the_token_without_echo_on_a_terminal(
    monkeypatch: pytest.MonkeyPatch, hetzner_api: ServedHetzner, keychain: SecretStore
) -> None:
    use_emulator(monkeypatch, hetzner_api, token=False)
    on_a_terminal(monkeypatch)
    prompts: list[str] = []

    def fake_getpass(prompt: str = "") -> str:
        prompts.append(prompt)
        return hetzner_api.token + "  "

    monkeypatch.setattr(getpass, "getpass", fake_getpass)
    code, out, err = run("login", "hetzner", "--account", "work", "--label", "Work")
    assert code == 0, err
    assert prompts == ["Hetzner Cloud API token: "]
    assert "Logged in: account work" in out
    assert keychain.get(SecretKeys.account("work", "token")) == hetzner_api.token
    settings = load_settings()
    assert [(a.id, a.label) for a in settings.accounts] == [("work", "Work")]
    assert hetzner_api.token not in settings_path().read_text() + out + err


def test_login_token_stdin(
    monkeypatch: pytest.MonkeyPatch, hetzner_api: ServedHetzner, keychain: SecretStore
) -> None:
    use_emulator(monkeypatch, hetzner_api, token=False)
    monkeypatch.setattr(sys, "stdin", io.StringIO(hetzner_api.token + "\n"))
    code, _, err = run("login", "hetzner", "--token-stdin")
    assert code == 0, err
    assert keychain.get(SecretKeys.account("hetzner", "token")) == hetzner_api.token


def _read_until(fd: int, needle: bytes, timeout: float = WAIT_S) -> bytes:
    import select

    seen = b""
    deadline = time.monotonic() + timeout
    while needle not in seen and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
    return seen


def test_login_on_a_real_terminal_does_not_echo_the_token(
    cli: CliRunner, hetzner_api: ServedHetzner, secret_service: SecretServiceSession
) -> None:
    import pty

    master, slave = pty.openpty()
    env = {**cli.env, **secret_service.env({}), **hetzner_api.env(with_token=False)}
    process = subprocess.Popen(
        [sys.executable, "-m", "app", "login", "hetzner"],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        cwd=REPO_ROOT,
        start_new_session=True,  # the pty becomes its controlling terminal, as for a user
    )
    os.close(slave)
    try:
        before = _read_until(master, b"API token: ")
        assert b"Hetzner Cloud API token: " in before
        os.write(master, hetzner_api.token.encode() + b"\n")
        after = _read_until(master, b"keychain.")
        assert process.wait(timeout=60) == 0, (before + after).decode(errors="replace")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(master)
    assert hetzner_api.token.encode() not in before + after  # typed without echo
    assert b"Logged in: account hetzner" in after
