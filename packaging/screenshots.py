"""Renders the main window (empty, with workspaces), the create and settings dialogs into PNGs.

Usage: python packaging/screenshots.py [--out screenshots/out]
Runs under Xvfb (re-executes itself with xvfb-run when there is no display), with an isolated
config dir and keychain. Prices and regions come from the Hetzner and DigitalOcean emulators
through the real WorkspaceService (the create dialog is also shown comparing both accounts, and
while creating); the workspace rows are sample data covering every state the table shows, their
costs computed by the real CostService.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _reexec_under_xvfb() -> int | None:
    if os.environ.get("DISPLAY") or os.environ.get("QT_QPA_PLATFORM"):
        return None
    xvfb = shutil.which("xvfb-run")
    if xvfb is None:
        raise SystemExit("no display and no xvfb-run: install xvfb or set QT_QPA_PLATFORM")
    env = dict(os.environ, DBUS_SESSION_BUS_ADDRESS="disabled:")
    cmd = [xvfb, "-a", "-s", "-screen 0 1600x1000x24", sys.executable, *sys.argv]
    return subprocess.call(cmd, env=env)


def sample_workspaces() -> list[object]:
    from app.domain import (
        LABEL_MANAGED_BY,
        LABEL_WORKSPACE,
        AgentReport,
        AgentState,
        Phase,
        Price,
        Server,
        ServerStatus,
        StatusReport,
        Workspace,
        utcnow,
    )

    now = utcnow()
    rows = [
        ("api-refactor", "https://github.com/acme/api.git", Phase.READY, AgentState.WORKING, 3.2),
        ("docs-site", "git@github.com:acme/docs-site.git", Phase.READY, AgentState.WAITING, 1.1),
        ("ml-pipeline", "https://gitlab.com/acme/ml/pipeline.git", Phase.BUILDING, None, 0.1),
        ("frontend", "https://github.com/acme/frontend.git", Phase.CLONING, None, 0.05),
        ("legacy-port", "https://github.com/acme/legacy.git", Phase.FAILED, None, 0.4),
    ]
    out = []
    for i, (name, repo, phase, agent, hours) in enumerate(rows):
        server = Server(
            provider="hetzner",
            id=str(4711 + i),
            name=f"bivy-{name}",
            status=ServerStatus.RUNNING,
            region=["fsn1", "nbg1", "hel1"][i % 3],
            size=["cx23", "cx33", "cpx31"][i % 3],
            ipv4=f"203.0.113.{10 + i}",
            created_at=now - timedelta(hours=hours),
            labels={LABEL_MANAGED_BY: "bivy", LABEL_WORKSPACE: name},
            price=Price(currency="EUR", hourly=Decimal("0.0080"), monthly=Decimal("4.99")),
        )
        status = StatusReport(
            phase=phase,
            progress={Phase.BUILDING: 0.62, Phase.CLONING: 0.35}.get(phase, 1.0),
            detail={
                Phase.BUILDING: "devcontainer build: step 7/12",
                Phase.CLONING: "git clone --depth 50",
            }.get(phase, ""),
            error="devcontainer build failed: exit 1" if phase is Phase.FAILED else None,
            log_tail="[+] Building 41.2s (7/12)\n => [4/8] RUN npm ci\n"
            " => [5/8] COPY . /workspaces/api\n",
            idle_deadline=now + timedelta(minutes=[24, 7, 30, 30, 12][i]),
            last_backup_at=now - timedelta(minutes=9) if phase is Phase.READY else None,
        )
        out.append(
            Workspace(
                name=name,
                account="hetzner",
                provider="hetzner",
                server=server,
                repo_url=repo,
                status=status,
                agent=AgentReport(state=agent, message="Claude needs your permission to use Bash")
                if agent
                else None,
            )
        )
    return out


async def render(out: Path) -> list[Path]:
    from PySide6.QtWidgets import QApplication, QWidget

    from app.providers.registry import PROVIDERS
    from app.services.costs import CostService
    from app.services.workspaces import WorkspaceService
    from app.settings import Account, SecretKeys, SecretStore, Settings
    from app.ui.controllers import WorkspacesController
    from app.ui.create_dialog import CreateDialog
    from app.ui.main_window import MainWindow
    from app.ui.models import CostFigure
    from app.ui.settings_dialog import SettingsDialog
    from tests.emulators.digitalocean import DigitalOceanEmulator
    from tests.emulators.hetzner import HetznerEmulator

    app = QApplication.instance()
    assert app is not None
    written: list[Path] = []

    async def settle(widget: QWidget, name: str, until: object = None) -> None:
        # Awaiting lets the Qt loop run (never processEvents() inside a coroutine: re-entrancy).
        for _ in range(200):
            await asyncio.sleep(0.02)
            if until is None or until():  # type: ignore[operator]
                break
        await asyncio.sleep(0.2)
        path = out / f"{name}.png"
        widget.grab().save(str(path))
        written.append(path)

    empty = MainWindow()
    empty.show()
    await settle(empty, "main-empty")
    empty.set_has_accounts(True)
    await settle(empty, "main-empty-with-account")

    window = MainWindow()
    window.set_has_accounts(True)
    samples = sample_workspaces()
    window.set_workspaces(samples)  # type: ignore[arg-type]
    # The cost column comes from the real billing rules (Hetzner: per started hour), never
    # from a made-up figure: a screenshot must show what the app would show.
    snapshot = await CostService().snapshot(samples)  # type: ignore[arg-type]
    window.set_costs_summary(
        per_hour=snapshot.per_hour.get("EUR", Decimal(0)),
        month_to_date=Decimal("38.12"),
        currency="EUR",
        budget_warning="Budget €40.00: €38.12 spent, €44.60 projected this month",
    )
    window.model.set_costs(
        {
            key: CostFigure(cost.so_far, cost.currency, cost.hourly)
            for key, cost in snapshot.workspaces.items()
        }
    )
    window.show()
    window.select("hetzner", "api-refactor")
    await settle(window, "main-workspaces")

    emulator = HetznerEmulator(token="emulator-token", create_seconds=30, start_seconds=30)
    ocean = DigitalOceanEmulator()
    settings = Settings(accounts=[Account(id="hetzner", provider="hetzner", label="Personal")])
    secrets = SecretStore()
    secrets.set(SecretKeys.account("hetzner", "token"), "emulator-token")
    secrets.set(SecretKeys.account("ocean", "token"), ocean.token)
    emulators = {"hetzner": emulator, "digitalocean": ocean}
    service = WorkspaceService(
        settings, secrets, transport_factory=lambda a: emulators[a.provider].transport()
    )
    controller = WorkspacesController(service)
    dialog = CreateDialog(controller, settings, [("hetzner", "Personal (Hetzner Cloud)")], window)
    dialog.repo.setText("https://github.com/acme/api.git")
    dialog.show()
    await settle(dialog, "create-dialog", lambda: dialog.size_combo.count() > 0)
    dialog.repo.setText("ftp://example.com/repo")
    await settle(dialog, "create-dialog-invalid")
    dialog.close()

    # Two accounts: the same size class compared across them.
    two = Settings(
        accounts=[
            Account(id="hetzner", provider="hetzner", label="Personal"),
            Account(id="ocean", provider="digitalocean", label="Work"),
        ]
    )
    service.settings = two
    compare = CreateDialog(
        controller,
        two,
        [("hetzner", "Personal (Hetzner Cloud)"), ("ocean", "Work (DigitalOcean)")],
        window,
    )
    compare.repo.setText("https://github.com/acme/api.git")
    compare.credential.setCurrentIndex(compare.credential.findData("none"))
    compare.show()
    await settle(
        compare,
        "create-dialog-compare",
        lambda: (
            compare.size_combo.count() > 0
            and compare.compare_task is not None
            and compare.compare_task.done()
            and not compare.busy_loading()
        ),
    )
    # While creating: the progress through the phases, Cancel available.
    compare.start_create()
    await settle(compare, "create-dialog-creating", lambda: compare.progress.value() >= 30)
    compare.cancel()
    for _ in range(500):
        if compare.create_task is None:
            break
        await asyncio.sleep(0.02)
    await settle(compare, "create-dialog-cancelled")
    compare.close()
    await service.aclose()

    async def validate(kind: str, options: object) -> str:
        return "Hetzner Cloud project, read and write"

    async def public_key() -> str:
        return (
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGm0cSz3n1c6xv2Gm8pC5r4Yqk0sQm2m9vX5b1f7d0aS "
            "bivy@laptop"
        )

    settings_dialog = SettingsDialog(
        settings, secrets, PROVIDERS, validate, public_key=public_key, parent=window
    )
    settings_dialog.show()
    await settle(settings_dialog, "settings-accounts", lambda: not settings_dialog.tasks)
    for index in range(1, settings_dialog.tabs.count()):
        title = settings_dialog.tabs.tabText(index).split("&")[0].strip().lower()
        name = "settings-" + title.replace(" ", "-")
        settings_dialog.tabs.setCurrentIndex(index)
        await settle(settings_dialog, name, lambda: not settings_dialog.tasks)
    settings_dialog.close()
    window.close()
    empty.close()
    return written


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "screenshots" / "out")
    args = parser.parse_args()
    code = _reexec_under_xvfb()
    if code is not None:
        return code
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bivy-shots-") as tmp:
        os.environ.update(HOME=tmp, BIVY_CONFIG_DIR=f"{tmp}/config", BIVY_DATA_DIR=f"{tmp}/data")
        import keyring

        from tests.support.memory_keyring import MemoryKeyring

        keyring.set_keyring(MemoryKeyring())
        import qasync
        from PySide6.QtWidgets import QApplication

        app = QApplication(sys.argv[:1])
        app.setApplicationName("Bivy")
        loop = qasync.QEventLoop(app)
        asyncio.set_event_loop(loop)
        with loop:
            written = loop.run_until_complete(render(args.out))
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
