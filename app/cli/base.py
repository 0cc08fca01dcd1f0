"""What every ``bivy`` command shares: the context, the command table row, output helpers."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, TextIO

from app.domain import utcnow
from app.settings import SecretStore, Settings, load_settings, save_settings

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 70
EXIT_INTERRUPTED = 130

SubParsers = Any  # argparse's _SubParsersAction is private; this is what add_parser is called on


@dataclass
class CliContext:
    """What handlers share: settings, keychain and the workspace service, made on first use.

    Attributes:
        out: where data goes (stdout).
        err: where progress, warnings and errors go (stderr).
    """

    out: TextIO
    err: TextIO
    _settings: Settings | None = None
    _secrets: SecretStore | None = None
    _service: Any = None
    _closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings()
        return self._settings

    @property
    def secrets(self) -> SecretStore:
        if self._secrets is None:
            self._secrets = SecretStore()
        return self._secrets

    def save_settings(self) -> None:
        save_settings(self.settings)

    @property
    def service(self) -> Any:
        """The ``WorkspaceService`` (typed ``Any`` so this module imports services lazily)."""
        if self._service is None:
            from app.services.workspaces import WorkspaceService

            self._service = WorkspaceService(self.settings, self.secrets)
            self._closers.append(self._service.aclose)
        return self._service

    async def aclose(self) -> None:
        closers, self._closers = self._closers, []
        for close in closers:
            await close()

    def note(self, text: str) -> None:
        """One line on stderr."""
        print(text, file=self.err, flush=True)

    def emit_json(self, value: Any) -> None:
        json.dump(value, self.out, indent=2, default=json_default)
        self.out.write("\n")


Handler = Callable[[argparse.Namespace, CliContext], "int | Awaitable[int]"]


@dataclass(frozen=True)
class Command:
    """One subcommand: how to declare its arguments and how to run it."""

    name: str
    add_parser: Callable[[SubParsers], argparse.ArgumentParser]
    run: Handler


def json_default(value: object) -> object:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot encode {type(value).__name__}")


def table(rows: Sequence[Sequence[str]], header: Sequence[str], out: TextIO) -> None:
    """Columns padded to their widest cell; numbers (cells starting with a digit) right-aligned."""
    widths = [len(h) for h in header]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    right = [bool(rows) and all(r[i][:1].isdigit() for r in rows) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        parts = [
            c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right, strict=True)
        ]
        return "  ".join(parts).rstrip()

    print(line(header), file=out)
    for row in rows:
        print(line(row), file=out)


def gb(value: float) -> str:
    return f"{value:g} GB"


def age(moment: datetime | None) -> str:
    if moment is None:
        return "-"
    seconds = max(0, int((utcnow() - moment).total_seconds()))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600}h"


def confirm(question: str) -> bool:
    try:
        answer = input(question)
    except EOFError:
        return False
    return answer.strip().lower() in {"y", "yes"}


def read_secret(prompt: str, from_stdin: bool) -> str:
    if from_stdin or not sys.stdin.isatty():
        return sys.stdin.readline().strip()
    return getpass.getpass(prompt).strip()
