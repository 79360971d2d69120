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
