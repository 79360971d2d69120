"""Release packaging: the sdist and the wheel build, pass ``twine check``, and the wheel
installs into a clean virtual environment and runs."""

from __future__ import annotations

import re
import subprocess
import sys
import tarfile
import venv
import zipfile
from pathlib import Path

import pytest
import requests
import yaml
from services import Process, wait_until

from neat_exporter import __version__

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    return out


def test_sdist_and_wheel_pass_twine_check(dist):
    sdist = dist / f"neat_exporter-{__version__}.tar.gz"
    wheel = dist / f"neat_exporter-{__version__}-py3-none-any.whl"
    assert sdist.is_file() and wheel.is_file(), sorted(p.name for p in dist.iterdir())
    result = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", str(sdist), str(wheel)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    with tarfile.open(sdist) as archive:
        names = {Path(*Path(n).parts[1:]).as_posix() for n in archive.getnames()}
    assert {"LICENSE", "README.md", "pyproject.toml", "neat_exporter/__init__.py"} <= names
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = archive.read(f"neat_exporter-{__version__}.dist-info/METADATA").decode()
    assert "neat_exporter/py.typed" in names
    assert f"neat_exporter-{__version__}.dist-info/licenses/LICENSE" in names
    assert re.search(r"^License-Expression: Apache-2.0$", metadata, re.M)
    assert re.search(r"^Provides-Extra: libvirt$", metadata, re.M)


def test_wheel_installs_and_runs_in_a_clean_venv(dist, tmp_path):
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)  # the test venv's pip installs into it: faster
    wheel = next(dist.glob("*.whl"))
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(env_dir / "bin/python"), "install",
         "--quiet", "--disable-pip-version-check", str(wheel)],
        check=True, capture_output=True, timeout=180,
    )  # fmt: skip
    command = str(env_dir / "bin/neat-exporter")
    version = subprocess.run([command, "--version"], capture_output=True, text=True, timeout=30)
    assert version.stdout.strip() == f"neat-exporter {__version__}"

    demo = Process([command, "demo", "--listen", "127.0.0.1:0"], tmp_path / "demo.log")
    try:
        url = wait_until(
            lambda: re.search(r"serving on (http://\S+/) ", demo.log()), 20, "the demo's address"
        ).group(1)
        wait_until(
            lambda: "neat_host_overloaded" in requests.get(f"{url}metrics", timeout=5).text,
            20,
            "a decision on /metrics",
        )
    finally:
        assert demo.stop() == 0, demo.log()


def test_version_has_one_source():
    """The chart's appVersion (the image tag it runs by default) is the package's version."""
    chart = yaml.safe_load((ROOT / "helm/neat-exporter/Chart.yaml").read_text())
    assert chart["appVersion"] == __version__
    assert "0.0.0" not in __version__
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert re.search(rf"^## \[{re.escape(__version__)}\]", changelog, re.M)


def test_make_demo_takes_another_address():
    def command(*variables: str) -> str:
        result = subprocess.run(
            ["make", "--no-print-directory", "-n", "demo", *variables],
            cwd=ROOT, capture_output=True, text=True, timeout=30, check=True,
        )  # fmt: skip
        return result.stdout.strip().splitlines()[-1]

    assert command().endswith("neat-exporter demo")
    moved = command("LISTEN=127.0.0.1:9850", "DEMO_ARGS=--seed 3")
    assert moved.endswith("neat-exporter demo --listen 127.0.0.1:9850 --seed 3")
