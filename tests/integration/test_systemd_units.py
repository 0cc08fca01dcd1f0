"""The VM's systemd units, as app.cloudinit renders them, pass ``systemd-analyze verify``.

The rendered user data is laid out under a temp root exactly at the VM's paths (units in
/etc/systemd/system, the executables they name in /usr/local/lib/bivy with their modes) and
``systemd-analyze verify --root`` checks every bivy unit there: unknown keys or sections, bad
values, dependencies on units that do not exist, and commands that are missing or not
executable. Any message fails the test.

What a VM has and the temp root would not, and so is supplied (environment-only, never a unit
or script of ours):
- systemd's own units (sysinit.target, timers.target, network-online.target…): copied from this
  machine's systemd, which is what a VM image ships too;
- cloud-init's cloud-final.service: copied from this machine's cloud-init package when present,
  else a stub (the VM image has cloud-init: it is what runs our user data);
- docker.service and containerd.service: stubs (the bootstrap installs Docker; its units do not
  exist on a machine without Docker, and their content is not ours to check);
- system commands our units run outside /usr/local/lib/bivy (/usr/bin/touch): copied from this
  machine (coreutils on every VM image).
Our own executables are never supplied: a unit naming a script the user data does not install (or
installs without the executable bit) fails.
"""

from __future__ import annotations

import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from app.cloudinit import BackupInputs, render_user_data
from app.domain import WorkspaceSpec
from tests.unit.cloudinit.vmtree import inputs_for, write_files

SPEC = WorkspaceSpec(name="demo", repo_url="https://github.com/example/demo.git")
UNIT_DIR = "/etc/systemd/system"
OUR_LIB = "/usr/local/lib/bivy/"
#: Units of other packages our units name, present on a VM but maybe not here (see docstring).
FOREIGN_UNITS = ("cloud-final.service", "docker.service", "containerd.service")
SYSTEM_UNITS = Path("/usr/lib/systemd/system")
EXEC_KEY = re.compile(r"^(?:Exec[A-Za-z]+)=[-@:+!]*(/\S+)", re.MULTILINE)


def _backup() -> BackupInputs:
    return BackupInputs(
        repository="s3:https://fsn1.your-objectstorage.com/bucket/bivy/demo",
        keys={"AWS_ACCESS_KEY_ID": "AKIDTEST", "AWS_SECRET_ACCESS_KEY": "secret"},
        password="p" * 43,
        interval_minutes=15,
        include_uncommitted=True,
    )


def _lay_out(root: Path) -> list[str]:
    """Write the rendered user data's files under ``root``; returns the unit paths (VM paths)."""
    units = []
    for entry in write_files(render_user_data(inputs_for(SPEC, backup=_backup())).cloud_config):
        target = root / entry["path"].lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(entry["content"])
        target.chmod(int(entry["permissions"], 8))
        if entry["path"].startswith(UNIT_DIR + "/"):
            units.append(entry["path"])
    return units


def _supply_environment(root: Path, units: list[str]) -> None:
    """What a VM image has that the temp root lacks (the module docstring lists it)."""
    for link, target in (("lib", "usr/lib"), ("bin", "usr/bin"), ("sbin", "usr/sbin")):
        (root / link).symlink_to(target)  # merged /usr, as on Ubuntu 24.04 and Debian 12
    system = root / str(SYSTEM_UNITS).lstrip("/")
    shutil.copytree(SYSTEM_UNITS, system, symlinks=True, dirs_exist_ok=True)
    for name in FOREIGN_UNITS:
        if not (system / name).exists():
            (system / name).write_text(
                f"[Unit]\nDescription=stand-in for {name} (installed on the VM, not here)\n\n"
                "[Service]\nExecStart=/usr/bin/true\n"
            )
    commands = set()
    for unit in units:
        commands.update(EXEC_KEY.findall((root / unit.lstrip("/")).read_text()))
    for command in sorted(commands):
        if command.startswith(OUR_LIB):
            continue  # ours: must have come from the user data itself
        source = Path(command)
        assert source.is_file(), f"{command} (a system command a unit runs) is not on this machine"
        copy = root / command.lstrip("/")
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, copy)
    for name in ("true",):  # the stand-ins' command
        copy = root / "usr" / "bin" / name
        if not copy.exists():
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(Path("/usr/bin") / name, copy)


def _verify(root: Path, units: list[str]) -> subprocess.CompletedProcess[str]:
    analyze = shutil.which("systemd-analyze")
    assert analyze is not None, "systemd-analyze is needed (apt: systemd)"
    return subprocess.run(
        [analyze, "verify", f"--root={root}", "--man=no", *(str(root) + u for u in units)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "SYSTEMD_LOG_COLOR": "0"},
    )


@pytest.fixture
def vm_root(tmp_path: Path) -> tuple[Path, list[str]]:
    root = tmp_path / "vm"
    units = _lay_out(root)
    _supply_environment(root, units)
    return root, units


def test_every_unit_passes_systemd_analyze_verify(vm_root: tuple[Path, list[str]]) -> None:
    root, units = vm_root
    names = {Path(u).name for u in units}
    # All of them, backups included: a unit left out of the rendering is not checked by accident.
    expected = {p.name for p in (Path(__file__).parents[2] / "cloudinit" / "systemd").iterdir()}
    assert names == expected
    result = _verify(root, units)
    messages = (result.stdout + result.stderr).strip()
    assert result.returncode == 0 and messages == "", messages


def test_a_missing_or_non_executable_script_fails(vm_root: tuple[Path, list[str]]) -> None:
    """The check is real: our own executables are what the units find, nothing stands in."""
    root, units = vm_root
    script = root / OUR_LIB.lstrip("/") / "idle-monitor"
    script.chmod(0o644)
    result = _verify(root, units)
    assert result.returncode != 0
    assert "idle-monitor" in result.stdout + result.stderr
    script.chmod(0o755)
    (root / OUR_LIB.lstrip("/") / "ttyd-run").unlink()
    result = _verify(root, units)
    assert result.returncode != 0
    assert "ttyd-run" in result.stdout + result.stderr
    assert stat.S_IMODE(script.stat().st_mode) == 0o755
