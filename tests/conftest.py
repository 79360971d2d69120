import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("NEAT_SHARED_DIR", ROOT.parent / "shared"))
PLANETLAB = SHARED / "data" / "planetlab"

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="session")
def planetlab_dir() -> Path:
    """The PlanetLab traces, read in place from ../shared (never copied into the repo)."""
    if not (PLANETLAB / "20110303.tar.gz").exists():
        pytest.skip(f"PlanetLab traces not found at {PLANETLAB} (set NEAT_SHARED_DIR)")
    return PLANETLAB


@pytest.fixture(scope="session")
def openstack_cloud():
    """One real OpenStack control plane (tests/openstack_cloud.py) shared by every test marked
    ``openstack``; skipped, saying why, where the machine lacks its parts."""
    from openstack_cloud import OpenStackCloud, missing_parts

    missing = missing_parts()
    if missing:
        pytest.skip(missing)
    cloud = OpenStackCloud()
    try:
        cloud.start()
        yield cloud
    finally:
        cloud.stop()
