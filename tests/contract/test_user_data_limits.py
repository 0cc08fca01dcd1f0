"""The real user data (app.cloudinit, everything enabled) fits each provider's limit, in the form
that provider accepts, and its emulator takes it unchanged through ``create``."""

from __future__ import annotations

import base64
import dataclasses
import gzip
import secrets

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from app.cloudinit import BackupInputs, UserDataInputs, render_user_data
from app.domain import WorkspaceSpec
from app.errors import InvalidInput
from tests.contract.harness import HARNESSES, Harness, ssh_public_key
from tests.emulators.base import ManualClock

#: Worst realistic case: the longest workspace name, a long repo URL and branch, backups on.
SPEC = WorkspaceSpec(
    name="a" + "b" * 38 + "c",
    repo_url="https://github.com/some-organisation-name/a-rather-long-repository-name.git",
    branch="feature/a-long-branch-name-for-the-agent-to-work-on",
    idle_minutes=45,
    max_hours=24,
)


def host_key() -> tuple[str, str]:
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    ).decode()
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return private, public.decode() + " bivy-host"


def inputs_for(harness: Harness, provider: object) -> UserDataInputs:
    caps = provider.capabilities  # type: ignore[attr-defined]
    private, public = host_key()
    return UserDataInputs(
        spec=SPEC,
        provider=harness.kind,
        user_data_limit=caps.user_data_limit,
        gzip_base64_ok=caps.user_data_gzip_base64,
        ssh_authorized_key=ssh_public_key(),
        host_key_private=private,
        host_key_public=public,
        ttyd_password=secrets.token_urlsafe(24),
        self_delete_script=provider.self_delete_script(),  # type: ignore[attr-defined]
        self_delete_env=provider.self_delete_env(),  # type: ignore[attr-defined]
        agent_env={"ANTHROPIC_API_KEY": "sk-ant-api03-" + secrets.token_urlsafe(72)},
        git_token="github_pat_" + secrets.token_urlsafe(60),
        backup=BackupInputs(
            repository="s3:https://0123456789abcdef.r2.cloudflarestorage.com/bivy-backups/bivy/"
            + SPEC.name,
            keys={
                "AWS_ACCESS_KEY_ID": secrets.token_hex(16),
                "AWS_SECRET_ACCESS_KEY": secrets.token_hex(32),
            },
            password=secrets.token_urlsafe(32),
            include_uncommitted=True,
        ),
    )


#: (provider, backup) pairs whose user data is over the provider's limit: the renderer must then
#: refuse clearly, before any API call. Empty since the renderer packs embedded files with
#: cloud-init's gz+b64 encoding when plain text would not fit (OVH with backups: 35,795 of 49,149).
TOO_BIG: set[tuple[str, bool]] = set()
#: Providers whose user data cannot hold Bivy's tools even as one archive (app/cloudinit
#: render.py ``split``): the app sends them over SSH. The others work without the app.
SPLIT = {"hetzner"}


@pytest.mark.parametrize("backup", [False, True], ids=["plain", "with-backup"])
@pytest.mark.parametrize("harness", HARNESSES, ids=[h.kind for h in HARNESSES])
async def test_rendered_user_data_fits_and_is_accepted(harness: Harness, backup: bool) -> None:
    clock = ManualClock()
    emulator, options = harness.make(clock)

    async def sleep(seconds: float) -> None:
        clock.advance(seconds)

    provider = harness.provider_cls(options, transport=emulator.transport(), sleep=sleep)
    inputs = inputs_for(harness, provider)
    if not backup:
        inputs = dataclasses.replace(inputs, backup=None, git_token=None)
    if (harness.kind, backup) in TOO_BIG:
        with pytest.raises(InvalidInput, match=str(provider.capabilities.user_data_limit)):
            render_user_data(inputs)
        await provider.aclose()
        return
    rendered = render_user_data(inputs)
    limit = provider.capabilities.user_data_limit
    size = len(rendered.user_data.encode())
    print(
        f"{harness.kind}: {size} of {limit} bytes (compressed={rendered.compressed}, "
        f"layout={rendered.layout}, toolkit sent over SSH: {len(rendered.toolkit or b'')} bytes)"
    )
    assert size <= limit
    assert (rendered.layout == "split") == (harness.kind in SPLIT)
    assert (rendered.toolkit is not None) == (rendered.layout == "split")
    if rendered.toolkit is not None:  # the same inputs give the same archive
        assert render_user_data(inputs).toolkit == rendered.toolkit
        assert f"BIVY_TOOLKIT_SHA256={rendered.toolkit_sha256}" in rendered.sent_config
    if provider.capabilities.user_data_gzip_base64 and rendered.compressed:
        plain = gzip.decompress(base64.b64decode(rendered.user_data)).decode()
    else:
        assert not rendered.compressed  # DigitalOcean, Scaleway, OVH: plain text only
        plain = rendered.user_data
    assert plain == rendered.sent_config
    assert plain.startswith("#cloud-config")
    config = yaml.safe_load(plain)
    assert isinstance(config, dict)
    if not provider.capabilities.firewall:
        # No firewall API (DigitalOcean's spec subset, OVH v1): the VM closes all but SSH itself.
        assert any("ufw allow 22/tcp" in str(cmd) for cmd in config["runcmd"])

    request = harness.request("udata", user_data=rendered.user_data)
    server = await provider.create(request)
    await provider.aclose()
    emulator.assert_no_violations()
    stored = {
        "digitalocean": lambda: emulator.user_data[int(server.id)],
        "scaleway": lambda: emulator.user_data[tuple(server.id.split("/"))]["cloud-init"].decode(),
        "ovh": lambda: emulator.user_data[server.id],
    }
    if harness.kind in stored:
        assert stored[harness.kind]() == rendered.user_data
