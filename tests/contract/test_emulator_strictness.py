"""The emulators are as strict as the real APIs are for us, and the suite's run policy holds.

- A body property the spec does not define is a violation (the real API ignores a misspelt
  ``user_dat``: our bug would pass silently), in requests and in the emulators' own answers.
- ``format`` is checked (uuid, date-time, email, ipv4).
- A violation is always recorded; served, it is answered 400 "spec violation"; a test whose app
  code swallowed it still fails (the autouse check in tests/conftest.py).
- Without the test-only packages an emulator runs unvalidated (the README's try-it path), but
  never silently so in tests.
- Under CI=true a skipped test, or a non-strict xfail, fails the run with its reason printed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.emulators.hetzner import HetznerEmulator
from tests.emulators.openapi import OpenAPISpec, SpecViolation

REPO = Path(__file__).resolve().parents[2]
TOKEN = "strict-token"
SERVER = {"name": "demo", "server_type": "cx23", "image": "ubuntu-24.04", "location": "nbg1"}


def _client(emu: HetznerEmulator) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=emu.transport(),
        base_url="https://api.hetzner.cloud/v1/",
        headers={"Authorization": f"Bearer {TOKEN}"},
    )


async def test_a_misspelt_request_field_is_a_violation() -> None:
    emu = HetznerEmulator(token=TOKEN)
    async with _client(emu) as client:
        with pytest.raises(SpecViolation, match="'user_dat' is not defined by the spec"):
            await client.post("servers", json={**SERVER, "user_dat": "#cloud-config\n"})
        nested = {**SERVER, "public_net": {"enable_ipv4": True, "enable_ipv6s": False}}
        with pytest.raises(SpecViolation, match="public_net: property 'enable_ipv6s'"):
            await client.post("servers", json=nested)
        # Free-form maps the spec declares as such (labels) stay open; the right name passes.
        ok = await client.post(
            "servers", json={**SERVER, "user_data": "#cloud-config\n", "labels": {"any": "x"}}
        )
        assert ok.status_code == 201
    assert len(emu.take_violations()) == 2


def test_served_violation_is_a_400_that_says_so() -> None:
    emu = HetznerEmulator(token=TOKEN, strict=False)
    with emu.serve() as url:
        answer = httpx.post(
            f"{url}/servers",
            json={**SERVER, "user_dat": "x"},
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "spec_violation"
    assert "spec violation" in answer.json()["error"]["message"]
    assert emu.project.servers == {}  # rejected, not half-handled
    assert emu.calls("POST", r"/v1/servers")[0].status == 400
    assert len(emu.take_violations()) == 1


async def test_an_emulator_answer_with_an_undefined_field_is_a_violation() -> None:
    emu = HetznerEmulator(token=TOKEN)
    original = emu._dispatch

    def with_extra(request: Any) -> Any:
        response = original(request)
        if isinstance(response.body, dict) and "server_types" in response.body:
            response.body["server_types"][0]["gpu_count"] = 0  # not in the spec
        return response

    emu._dispatch = with_extra  # type: ignore[method-assign]
    async with _client(emu) as client:
        with pytest.raises(SpecViolation, match="'gpu_count' is not defined by the spec"):
            await client.get("server_types")
    assert len(emu.take_violations()) == 1


# -- formats and composition, on a small document ------------------------------------------------

_DOC: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {"title": "t", "version": "1"},
    "paths": {
        "/things": {
            "post": {
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Thing"}}
                    },
                },
                "responses": {"201": {"description": "ok"}},
            }
        }
    },
    "components": {
        "schemas": {
            "Base": {"type": "object", "properties": {"id": {"type": "string", "format": "uuid"}}},
            "Thing": {
                "allOf": [
                    {"$ref": "#/components/schemas/Base"},
                    {
                        "type": "object",
                        "properties": {
                            "when": {"type": "string", "format": "date-time"},
                            "mail": {"type": "string", "format": "email"},
                            "ip": {"type": "string", "format": "ipv4"},
                            "meta": {"type": "object", "additionalProperties": {"type": "string"}},
                            "free": {"type": "object"},
                            "target": {
                                "oneOf": [
                                    {
                                        "type": "object",
                                        "required": ["host"],
                                        "properties": {"host": {"type": "string"}},
                                    },
                                    {
                                        "type": "object",
                                        "required": ["port"],
                                        "properties": {"port": {"type": "integer"}},
                                    },
                                ]
                            },
                        },
                    },
                ]
            },
        }
    },
}
_GOOD = {
    "id": "0b5c3a52-2a3f-4c8e-9a51-3f8ab1ec6e2a",
    "when": "2026-01-30T23:55:00Z",
    "mail": "sammy@example.com",
    "ip": "203.0.113.7",
    "meta": {"anything": "goes"},
    "free": {"nested": {"also": 1}},
    "target": {"host": "h"},
}


def _errors(body: dict[str, Any]) -> str:
    spec = OpenAPISpec(_DOC)
    try:
        spec.validate_request("POST", "/things", body=json.dumps(body).encode())
    except SpecViolation as exc:
        return str(exc)
    return ""


def test_the_good_document_passes() -> None:
    assert _errors(_GOOD) == ""


@pytest.mark.parametrize(
    ("field", "bad", "expected"),
    [
        ("id", "not-a-uuid", "is not a 'uuid'"),
        ("when", "yesterday", "is not a 'date-time'"),
        ("when", "2026-01-30 23:55", "is not a 'date-time'"),
        ("mail", "sammy.example.com", "is not a 'email'"),
        ("ip", "203.0.113", "is not a 'ipv4'"),
        ("ip", "2001:db8::1", "is not a 'ipv4'"),
    ],
)
def test_formats_are_checked(field: str, bad: str, expected: str) -> None:
    assert expected in _errors({**_GOOD, field: bad})


def test_allof_members_add_up_and_only_the_matching_oneof_branch_counts() -> None:
    assert "'extra' is not defined" in _errors({**_GOOD, "extra": 1})
    assert "target: property 'colour' is not defined" in _errors(
        {**_GOOD, "target": {"host": "h", "colour": 1}}
    )
    assert _errors({**_GOOD, "target": {"port": 22}}) == ""
    # the nested free-form object and the typed map stay open
    assert _errors({**_GOOD, "free": {"x": [1]}, "meta": {"k": "v", "l": "w"}}) == ""
    assert "meta/k: 1 is not of type 'string'" in _errors({**_GOOD, "meta": {"k": 1}})


# -- the run policy, in a child pytest (tests/conftest.py as a plugin) ---------------------------


def _child_pytest(tmp_path: Path, source: str, *, ci: bool) -> subprocess.CompletedProcess[str]:
    test_file = tmp_path / "test_child.py"
    test_file.write_text(textwrap.dedent(source))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["CI"] = "true" if ci else "false"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.conftest", "-p", "no:cacheprovider",
         "-c", os.devnull, "--rootdir", str(tmp_path), "-q", "-rA", "-o", "asyncio_mode=auto",
         "-W", "ignore::DeprecationWarning", str(test_file)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip


def test_a_swallowed_violation_still_fails_the_test(tmp_path: Path) -> None:
    result = _child_pytest(
        tmp_path,
        """
        import httpx
        from tests.emulators.hetzner import HetznerEmulator

        async def test_app_catches_everything():
            emu = HetznerEmulator(token="t")
            async with httpx.AsyncClient(transport=emu.transport(),
                                         base_url="http://x/v1/",
                                         headers={"Authorization": "Bearer t"}) as c:
                try:
                    await c.post("servers", json={"name": "a", "server_type": "cx23",
                                                  "image": "ubuntu-24.04", "user_dat": "x"})
                except Exception as exc:  # an app-level catch-all, shown as UI text
                    shown = f"Error: {exc}"
            assert shown
        """,
        ci=False,
    )
    assert result.returncode == 1, result.stdout
    assert "spec violations" in result.stdout
    assert "'user_dat' is not defined by the spec" in result.stdout
    assert "1 passed, 1 error" in result.stdout


def test_a_longer_lived_emulator_is_checked_after_each_test(tmp_path: Path) -> None:
    result = _child_pytest(
        tmp_path,
        """
        import httpx
        import pytest
        from tests.emulators.hetzner import HetznerEmulator

        @pytest.fixture(scope="module")
        def served():
            emu = HetznerEmulator(token="t", strict=False)
            with emu.serve() as url:
                yield url

        def test_fine(served):
            assert httpx.get(served + "/locations",
                             headers={"Authorization": "Bearer t"}).status_code == 200

        def test_bad(served):
            httpx.get(served + "/locations", params={"sort": "bogus:desc"},
                      headers={"Authorization": "Bearer t"})

        def test_fine_again(served):
            assert httpx.get(served + "/locations",
                             headers={"Authorization": "Bearer t"}).status_code == 200
        """,
        ci=False,
    )
    assert result.returncode == 1, result.stdout
    assert "ERROR at teardown of test_bad" in result.stdout
    assert "3 passed, 1 error" in result.stdout


_SKIPPING = """
    import pytest

    def test_runs():
        pass

    def test_needs_a_tool():
        pytest.skip("no frobnicator here")

    @pytest.mark.skipif(True, reason="conditional")
    def test_conditional():
        pass

    @pytest.mark.xfail(reason="loose expectation")
    def test_loose():
        assert False

    @pytest.mark.xfail(reason="a known, pinned failure", strict=True)
    def test_strict():
        assert False
"""


def test_under_ci_a_skip_or_a_loose_xfail_fails_the_run(tmp_path: Path) -> None:
    result = _child_pytest(tmp_path, _SKIPPING, ci=True)
    assert result.returncode == 1, result.stdout
    out = result.stdout
    assert "CI=true: skipped tests counted as failures" in out
    assert "test_needs_a_tool [call]: skipped: no frobnicator here" in out
    assert "test_conditional [setup]: skipped: conditional" in out
    assert "test_loose [call]: xfail (not strict): loose expectation" in out
    assert "2 failed, 1 passed, 1 xfailed, 1 error" in out


def test_outside_ci_skips_stay_skips(tmp_path: Path) -> None:
    result = _child_pytest(tmp_path, _SKIPPING, ci=False)
    assert result.returncode == 0, result.stdout
    assert "1 passed, 2 skipped, 2 xfailed" in result.stdout


# -- validation is optional outside tests, never silently off in them ------------------------------

_WITHOUT_TEST_PACKAGES = """
import sys

class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"referencing", "jsonschema", "openapi_schema_validator",
                                  "pytest"}:
            raise ImportError(f"{name} is not installed (blocked)")
        return None

sys.meta_path.insert(0, Block())
import httpx
from tests.emulators.hetzner import HetznerEmulator

emu = HetznerEmulator(token="demo", strict=False)
assert emu.spec is None and not emu.validating
with emu.serve() as url:
    answer = httpx.get(url + "/server_types", headers={"Authorization": "Bearer demo"})
print(answer.status_code, len(answer.json()["server_types"]))
"""


def _without_test_packages(env_extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "BIVY_EMULATOR_VALIDATION"}
    env.update(env_extra)
    return subprocess.run(
        [sys.executable, "-c", _WITHOUT_TEST_PACKAGES],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip


def test_without_the_test_packages_the_emulator_runs_unvalidated() -> None:
    result = _without_test_packages({})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[0] == "200"


def test_a_test_process_never_runs_it_unvalidated() -> None:
    result = _without_test_packages({"BIVY_EMULATOR_VALIDATION": "required"})
    assert result.returncode != 0
    assert "cannot validate requests" in result.stderr
    assert "referencing" in result.stderr or "openapi_schema_validator" in result.stderr


@pytest.mark.needs_root("to run a child pytest as an unprivileged user")
def test_a_root_only_test_says_so_and_fails_ci_when_not_root() -> None:
    import shutil
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="bivy-needs-root-"))
    try:
        folder.chmod(0o755)
        test_file = folder / "test_child.py"
        test_file.write_text(
            "import pytest\n\n"
            "@pytest.mark.needs_root('network namespaces')\n"
            "def test_root():\n    pass\n"
        )
        test_file.chmod(0o644)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
        env.update(CI="true", HOME=str(folder))
        result = subprocess.run(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
             sys.executable, "-m", "pytest", "-p", "tests.conftest", "-p", "no:cacheprovider",
             "-c", os.devnull, "--rootdir", str(folder), "-q", "-W", "ignore::DeprecationWarning",
             str(test_file)],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "needs root: network namespaces (CI runs as root)" in result.stdout
    assert "1 error" in result.stdout
