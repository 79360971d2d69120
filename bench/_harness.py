"""The tests' harness for the benchmarks: importing this module puts ``tests/`` on the import path,
as tests/conftest.py does for the tests, so that the benchmarks start and read the real services
(libvirtd, Prometheus, the exporter, the global manager) through the same helpers as the tests
(tests/services.py, tests/libvirt_hosts.py, ...) rather than copies of them."""

import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent / "tests"
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))
