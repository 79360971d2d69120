"""Every metric of docs/metrics.md, checked through a real Prometheus scraping a running
neat-exporter."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

from services import Exporter, Prometheus

ROOT = Path(__file__).resolve().parent.parent
HISTOGRAMS = {"neat_cycle_duration_seconds", "neat_migration_request_duration_seconds"}


def documented_metrics() -> list[str]:
    """Every exporter metric in the tables of docs/metrics.md (the bridge's and the global
    manager's are their own)."""
    text = (ROOT / "docs" / "metrics.md").read_text()
    names = set(re.findall(r"^\| `(neat_[a-z_]+)", text, flags=re.MULTILINE))
    return sorted(name for name in names if not name.startswith(("neat_bridge_", "neat_gm_")))


def selecting_libvirt_config(uri: str) -> dict:
    """The exporter on libvirt at ``uri`` with an overload threshold far below the CPU use of any
    running VM, so every cycle selects VMs and makes a (dry-run) migration request."""
    return {
        "interval": 0.5,
        "time_step": 300,
        "source": {"type": "libvirt", "libvirt": {"uri": uri}},
        "algorithms": {
            "underload": {"name": "threshold", "params": {"threshold": 0.0}},
            "overload": {"name": "threshold", "params": {"threshold": 0.01}},
        },
        "global_manager": {"mode": "dry_run"},
    }


@contextlib.contextmanager
def scraped_exporter(
    tmp_path: Path, config: dict, more_targets: Sequence[str] = ()
) -> Iterator[Prometheus]:
    """`neat-exporter run --config` with ``config`` (plus a history directory), scraped by a
    real Prometheus until it is up, with ``more_targets`` in the same job; stops both
    afterwards."""
    exporter = Exporter(tmp_path, {**config, "history_dir": str(tmp_path / "history")})
    prometheus = None
    try:
        prometheus = Prometheus(tmp_path / "prometheus", [exporter.address, *more_targets])
        prometheus.wait_for('up{job="neat"} == 1', timeout=30)
        yield prometheus
    finally:
        if prometheus is not None:
            prometheus.stop()
        assert exporter.stop() == 0, exporter.log()
    assert (tmp_path / "history" / "host").exists()


def assert_every_documented_metric(
    prometheus: Prometheus, host: str, source: str, cpus: int, absent: frozenset[str] = frozenset()
):
    """Every metric of docs/metrics.md is queryable but those in ``absent``, which must not be
    (so the test notices when they appear), and the host and detectors are labelled."""
    names = documented_metrics()
    assert len(names) >= 25, names
    assert absent <= set(names), absent - set(names)
    for name in absent:
        assert not prometheus.query(name), name
    for name in sorted(set(names) - absent):
        query = f"{name}_count" if name in HISTOGRAMS else name
        assert prometheus.wait_for(query, timeout=15), name
    assert {r["metric"]["detector"] for r in prometheus.query("neat_detector_ready")} == {
        "underload",
        "overload",
    }
    info = prometheus.query("neat_host_info")[0]["metric"]
    assert (info["host"], info["source"], info["cpus"]) == (host, source, str(cpus))
