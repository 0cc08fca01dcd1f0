"""The private Docker engine and the offline base image that the e2e and devcontainer tests use."""

from __future__ import annotations

import pytest

from tests.support.docker_engine import BASE_IMAGE, DockerEngine

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(900)]


def test_the_base_image_runs_offline_as_node_with_git_and_node(docker_engine: DockerEngine) -> None:
    result = docker_engine.docker(
        "run",
        "--rm",
        "--user",
        "node",
        BASE_IMAGE,
        "sh",
        "-c",
        "id -un; git --version; node --version; sudo -n true && echo sudo-ok",
    )
    lines = result.stdout.split()
    assert lines[0] == "node"
    assert "git" in result.stdout and "sudo-ok" in result.stdout
    major = int(result.stdout.split("\nv", 1)[1].split(".", 1)[0])
    assert major >= 18, result.stdout  # Claude Code's minimum


def test_npm_reaches_its_registry_through_the_proxy_with_the_machine_ca(
    docker_engine: DockerEngine,
) -> None:
    result = docker_engine.docker(
        "run",
        "--rm",
        BASE_IMAGE,
        "npm",
        "view",
        "@anthropic-ai/claude-code",
        "version",
        timeout=300,
    )
    assert result.stdout.strip().count(".") == 2, result.stdout


def test_the_engine_is_private(docker_engine: DockerEngine) -> None:
    assert docker_engine.socket.exists()
    assert str(docker_engine.root).startswith("/var/tmp/bivy-dockerd-")
    info = docker_engine.docker("info", "--format", "{{.DockerRootDir}} {{.Driver}}").stdout
    assert info.split()[0].startswith(str(docker_engine.root))
    assert info.split()[1] == docker_engine.storage_driver
