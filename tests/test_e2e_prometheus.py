"""End to end: a real Prometheus scrapes a running neat-exporter and every documented metric is
queryable through its HTTP API, with the replay source and with libvirt (a private libvirtd
serving the test driver)."""

from __future__ import annotations

import contextlib
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import yaml
from libvirt_fixtures import expected_info, vm_uuid, write_node_xml
from services import Libvirtd, Process, Prometheus, free_port, wait_until

ROOT = Path(__file__).resolve().parent.parent
HISTOGRAMS = {"neat_cycle_duration_seconds", "neat_migration_request_duration_seconds"}
# libvirt's test driver reports constant node CPU counters, so the host's busy time, hence the
# hypervisor overhead, is unknown there (test_libvirt_qemu.py checks it against a real host).
TEST_DRIVER_ABSENT = frozenset({"neat_host_hypervisor_cpu_usage_hertz"})


def documented_metrics() -> list[str]:
    """Every exporter metric in the tables of docs/metrics.md (the bridge's are its own)."""
    text = (ROOT / "docs" / "metrics.md").read_text()
    names = set(re.findall(r"^\| `(neat_[a-z_]+)", text, flags=re.MULTILINE))
    return sorted(name for name in names if not name.startswith("neat_bridge_"))


@contextlib.contextmanager
def scraped_exporter(tmp_path: Path, config: dict) -> Iterator[Prometheus]:
    """`neat-exporter run --config` with ``config`` (plus a free listen port and a history
    directory), scraped by a real Prometheus until it is up; stops both afterwards."""
    port = free_port()
    config = {**config, "listen": f"127.0.0.1:{port}", "history_dir": str(tmp_path / "history")}
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


@pytest.mark.services
def test_prometheus_scrapes_every_documented_metric_from_replay(tmp_path):
    config = {
        "host": "compute-e2e",
        "interval": 0.5,
        "time_step": 300,
        "source": {"type": "replay", "replay": {"vms": 4, "cpus": 2, "seed": 7}},
        "algorithms": {
            "underload": {"name": "last_n_average_threshold", "params": {"threshold": 0.5}},
            "overload": {"name": "otf", "params": {"otf": 0.1, "threshold": 0.9, "limit": 5}},
        },
        "global_manager": {"mode": "dry_run"},
    }
    with scraped_exporter(tmp_path, config) as prometheus:
        assert_every_documented_metric(prometheus, "compute-e2e", "replay", 2)
        assert len(prometheus.query("neat_vm_cpu_usage_hertz")) == 4
        assert prometheus.wait_for(
            'neat_migration_requests_total{reason="underload", result="dry_run"} > 0'
        )


@pytest.mark.services
def test_prometheus_scrapes_every_documented_metric_from_libvirt(tmp_path):
    """The test driver's domains carry Nova metadata; an overload threshold far below their CPU
    use (about one core each, see sources/libvirt.py) makes every cycle select VMs."""
    libvirt = pytest.importorskip("libvirt", reason="libvirt-python is not installed")
    domains = 3
    node = write_node_xml(tmp_path / "node.xml", domains, shut_off_every=0, cpus=(1, 1, 4, 1))
    libvirtd = Libvirtd(tmp_path / "libvirtd")
    uri = libvirtd.uri(str(node))
    config = {
        "interval": 0.5,
        "time_step": 300,
        "source": {"type": "libvirt", "libvirt": {"uri": uri}},
        "algorithms": {
            "underload": {"name": "threshold", "params": {"threshold": 0.0}},
            "overload": {"name": "threshold", "params": {"threshold": 0.01}},
        },
        "global_manager": {"mode": "dry_run"},
    }
    try:
        hostname = libvirt.openReadOnly(uri).getHostname()
        with scraped_exporter(tmp_path, config) as prometheus:
            assert_every_documented_metric(
                prometheus, hostname, "libvirt", 4, absent=TEST_DRIVER_ABSENT
            )
            info = {r["metric"]["vm_uuid"]: r["metric"] for r in prometheus.query("neat_vm_info")}
            assert sorted(info) == sorted(vm_uuid(index) for index in range(domains))
            for index in range(domains):
                labels = {k: info[vm_uuid(index)][k] for k in expected_info(index)}
                assert labels == expected_info(index)
            assert len(prometheus.query("neat_vm_cpu_usage_hertz")) == domains
            assert prometheus.wait_for("neat_host_overloaded == 1")
            assert prometheus.wait_for("neat_vm_selected_for_migration == 1")
            assert prometheus.wait_for(
                'neat_migration_requests_total{reason="overload", result="dry_run"} > 0'
            )
    finally:
        libvirtd.stop()
