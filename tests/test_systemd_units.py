"""The systemd units in deploy/systemd: valid for systemd itself, and hardened.

``systemd-analyze verify`` needs no running systemd: it loads the unit from a private root (the
unit, the standard targets it is ordered against, and a stand-in at ExecStart's path, whose
existence systemd checks). ``security --offline`` scores the unit file alone.
"""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from services import require_program

UNITS_DIR = Path(__file__).resolve().parent.parent / "deploy" / "systemd"
UNITS = sorted(p.name for p in UNITS_DIR.glob("*.service"))
#: systemd's exposure scale runs from 0 (locked down) to 10; "OK" is up to 3.9. The units score
#: 1.4 with systemd 252; a change that weakens them fails here.
MAX_EXPOSURE = 2.0
SYSTEM_UNITS = Path("/usr/lib/systemd/system")


def _unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # systemd keys are case-sensitive
    parser.read(UNITS_DIR / name)
    return parser


def _private_root(tmp_path: Path, name: str) -> Path:
    """A root with the unit, the standard units and an executable at ExecStart's path."""
    root = tmp_path / "root"
    (root / "etc/systemd/system").mkdir(parents=True)
    shutil.copy(UNITS_DIR / name, root / "etc/systemd/system" / name)
    shutil.copytree(SYSTEM_UNITS, root / "usr/lib/systemd/system", symlinks=True)
    executable = root / _unit(name)["Service"]["ExecStart"].split()[0].lstrip("/")
    executable.parent.mkdir(parents=True, exist_ok=True)
    executable.write_text("#!/bin/sh\n")
    executable.chmod(0o755)
    return root


def test_there_are_units_for_the_exporter_the_bridge_and_the_global_manager():
    commands = {name: _unit(name)["Service"]["ExecStart"].split()[1] for name in UNITS}
    assert sorted(commands.values()) == ["bridge", "global-manager", "run"]


@pytest.mark.parametrize("name", UNITS)
def test_unit_verifies(tmp_path, name):
    require_program("systemd-analyze")
    root = _private_root(tmp_path, name)
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", f"--root={root}", name],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    # verify exits 0 on unknown keys and misspelt values, only saying so: any output is a fault.
    assert result.returncode == 0 and not result.stdout + result.stderr, result.stderr


def test_verify_catches_a_bad_unit(tmp_path):
    """The check above can fail: an unknown key and a missing ExecStart program are reported."""
    require_program("systemd-analyze")
    name = UNITS[0]
    root = _private_root(tmp_path, name)
    unit = root / "etc/systemd/system" / name
    unit.write_text(unit.read_text().replace("[Service]", "[Service]\nProtectSystm=strict"))
    executable = root / _unit(name)["Service"]["ExecStart"].split()[0].lstrip("/")
    executable.unlink()
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", f"--root={root}", name],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert "Unknown key 'ProtectSystm'" in result.stderr
    assert result.returncode != 0 and "is not executable" in result.stderr


@pytest.mark.parametrize("name", UNITS)
def test_unit_security_exposure_is_low(name):
    require_program("systemd-analyze")
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(UNITS_DIR / name)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    score = re.search(r"Overall exposure level for \S+: ([\d.]+)", result.stdout)
    assert score, result.stdout + result.stderr
    assert float(score.group(1)) <= MAX_EXPOSURE, result.stdout


@pytest.mark.parametrize("name", UNITS)
def test_unit_is_hardened_as_documented(name):
    service = _unit(name)["Service"]
    assert service["User"] == "neat-exporter"
    assert service["NoNewPrivileges"] == "yes"
    assert service["ProtectSystem"] == "strict"
    assert service["CapabilityBoundingSet"] == ""
    assert service["Restart"] == "on-failure"
    assert service["EnvironmentFile"].startswith("-/etc/neat-exporter/")
    # Writable: only the unit's own state directory, if it keeps one.
    state = service.get("StateDirectory")
    assert service.get("ReadWritePaths") == (f"/var/lib/{state}" if state else None)
