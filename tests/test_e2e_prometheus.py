"""End to end: a real Prometheus scrapes a running neat-exporter and every documented metric is
queryable through its HTTP API."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import requests
import yaml
from services import Process, Prometheus, free_port, wait_until

ROOT = Path(__file__).resolve().parent.parent
HISTOGRAMS = {"neat_cycle_duration_seconds", "neat_migration_request_duration_seconds"}


def documented_metrics() -> list[str]:
    """Every exporter metric in the tables of docs/metrics.md (the bridge's are its own)."""
    text = (ROOT / "docs" / "metrics.md").read_text()
    names = set(re.findall(r"^\| `(neat_[a-z_]+)", text, flags=re.MULTILINE))
    return sorted(name for name in names if not name.startswith("neat_bridge_"))


@pytest.mark.services
def test_prometheus_scrapes_every_documented_metric(tmp_path):
    names = documented_metrics()
    assert len(names) >= 25, names
    port = free_port()
    config = {
        "host": "compute-e2e",
        "listen": f"127.0.0.1:{port}",
        "interval": 0.5,
        "time_step": 300,
        "history_dir": str(tmp_path / "history"),
        "source": {"type": "replay", "replay": {"vms": 4, "cpus": 2, "seed": 7}},
        "algorithms": {
            "underload": {"name": "last_n_average_threshold", "params": {"threshold": 0.5}},
            "overload": {"name": "otf", "params": {"otf": 0.1, "threshold": 0.9, "limit": 5}},
        },
        "global_manager": {"mode": "dry_run"},
    }
    config_path = tmp_path / "neat-exporter.yml"
    config_path.write_text(yaml.safe_dump(config))
    exporter = Process(
        [sys.executable, "-m", "neat_exporter", "run", "--config", str(config_path)],
        tmp_path / "exporter.log",
    )
    prometheus = None
    try:
        wait_until(
            lambda: requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).ok,
            20,
            "the exporter",
        )
        prometheus = Prometheus(tmp_path / "prometheus", [f"127.0.0.1:{port}"])
        prometheus.wait_for('up{job="neat"} == 1', timeout=30)
        for name in names:
            query = f"{name}_count" if name in HISTOGRAMS else name
            result = prometheus.wait_for(query, timeout=15)
            assert result, name
        per_vm = prometheus.query("neat_vm_cpu_usage_hertz")
        assert len(per_vm) == 4
        assert {r["metric"]["detector"] for r in prometheus.query("neat_detector_ready")} == {
            "underload",
            "overload",
        }
        info = prometheus.query("neat_host_info")[0]["metric"]
        assert (info["host"], info["source"], info["cpus"]) == ("compute-e2e", "replay", "2")
        dry_runs = prometheus.wait_for(
            'neat_migration_requests_total{reason="underload", result="dry_run"} > 0'
        )
        assert dry_runs
    finally:
        if prometheus is not None:
            prometheus.stop()
        assert exporter.stop() == 0, exporter.log()
    assert (tmp_path / "history" / "host").exists()
