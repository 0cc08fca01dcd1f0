#!/usr/bin/python3
"""Refuses a devcontainer configuration that would share the VM's network namespace.

A root process in a host-network container passes the metadata guard (its rule lets root of
the host through, and such a process is root in the host's network namespace), and the metadata
service serves this VM's secrets. So before anything of the repository runs, this reads the
devcontainer.json (JSON with comments) and the Compose files it names and lists every way it asks
for host networking: ``runArgs``/``build.options`` (``--network=host``, ``--net host``...), a
Compose service's ``network_mode: host`` or ``build.network: host``. After the container exists,
devcontainer-up also checks what Docker really did (``docker inspect``), which catches anything
this static read cannot see (variables, extends).

Usage: devcontainer-check CONFIG_JSON. Prints the reasons; exit 1 when refused, 0 when fine.
"""

import json
import os
import re
import sys

NETWORK_FLAGS = ("--network", "--net")


def strip_jsonc(text: str) -> str:
    """JSONC to JSON: drops // and /* */ comments and trailing commas, strings untouched."""
    out = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(text[i : j + 1])
            i = j + 1
        elif text.startswith("//", i):
            while i < n and text[i] != "\n":
                i += 1
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            i = n if end < 0 else end + 2
        else:
            out.append(ch)
            i += 1
    return re.sub(r",(\s*[}\]])", r"\1", "".join(out))


def host_network_args(args: object, where: str) -> list[str]:
    if not isinstance(args, list):
        return []
    words = [str(a) for a in args]
    reasons = []
    for index, word in enumerate(words):
        flag, sep, value = word.partition("=")
        if flag not in NETWORK_FLAGS:
            continue
        if not sep:
            value = words[index + 1] if index + 1 < len(words) else ""
        if value.strip().lower() == "host":
            reasons.append(f"{where} asks for host networking ({word}{'' if sep else ' ' + value})")
    return reasons


def compose_reasons(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        return [] if exc.errno == 2 else [f"cannot read {path}: {exc.strerror}"]
    name = os.path.basename(path)
    try:
        import yaml  # cloud-init depends on PyYAML, so every Bivy VM has it

        data = yaml.safe_load(text) or {}
    except ImportError:
        found = re.search(r"^\s*network_mode:\s*[\"']?host\b", text, re.MULTILINE)
        return [f"{name}: a service uses network_mode: host"] if found else []
    except Exception as exc:  # a broken file is for the CLI to report
        print(f"devcontainer-check: {name} is not valid YAML: {exc}", file=sys.stderr)
        return []
    services = data.get("services") if isinstance(data, dict) else None
    reasons = []
    for service, spec in (services or {}).items():
        if not isinstance(spec, dict):
            continue
        if str(spec.get("network_mode", "")).strip().lower() == "host":
            reasons.append(f"{name}: service {service} uses network_mode: host")
        build = spec.get("build")
        if isinstance(build, dict) and str(build.get("network", "")).strip().lower() == "host":
            reasons.append(f"{name}: service {service} builds with network: host")
    return reasons


def check(config_path: str) -> list[str]:
    with open(config_path, encoding="utf-8") as handle:
        config = json.loads(strip_jsonc(handle.read()))
    if not isinstance(config, dict):
        return []
    reasons = host_network_args(config.get("runArgs"), "runArgs")
    build = config.get("build")
    if isinstance(build, dict):
        reasons += host_network_args(build.get("options"), "build.options")
    compose = config.get("dockerComposeFile")
    files = [compose] if isinstance(compose, str) else compose if isinstance(compose, list) else []
    base = os.path.dirname(os.path.abspath(config_path))
    for name in files:
        reasons += compose_reasons(os.path.join(base, str(name)))
    return reasons


def main(argv: list[str]) -> int:
    try:
        reasons = check(argv[0])
    except (OSError, ValueError) as exc:
        # An unreadable config is the CLI's to report, with its own message.
        print(f"devcontainer-check: cannot read {argv[0]}: {exc}", file=sys.stderr)
        return 0
    for reason in reasons:
        print(reason)
    return 1 if reasons else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
