"""End to end: a real Prometheus scrapes a running neat-exporter and every documented metric is
queryable through its HTTP API, with the replay source and with libvirt (a private libvirtd
serving the test driver)."""

from __future__ import annotations

import pytest
from libvirt_fixtures import expected_info, vm_uuid, write_node_xml
from prometheus_checks import (
    assert_every_documented_metric,
    scraped_exporter,
    selecting_libvirt_config,
)
from services import Libvirtd

# libvirt's test driver reports constant node CPU counters, so the host's busy time, hence the
# hypervisor overhead, is unknown there (test_libvirt_qemu.py checks it against a real host).
TEST_DRIVER_ABSENT = frozenset({"neat_host_hypervisor_cpu_usage_hertz"})
# The replay source has no host memory to report.
REPLAY_ABSENT = frozenset({"neat_host_memory_bytes"})


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
        assert_every_documented_metric(prometheus, "compute-e2e", "replay", 2, absent=REPLAY_ABSENT)
        assert len(prometheus.query("neat_vm_cpu_usage_hertz")) == 4
        assert prometheus.wait_for(
            'neat_migration_requests_total{reason="underload", result="dry_run"} > 0'
        )


@pytest.mark.services
def test_prometheus_scrapes_every_documented_metric_from_libvirt(tmp_path):
    """The test driver's domains carry Nova metadata and use about one core each (see
    sources/libvirt.py)."""
    libvirt = pytest.importorskip("libvirt", reason="libvirt-python is not installed")
    domains = 3
    node = write_node_xml(tmp_path / "node.xml", domains, shut_off_every=0, cpus=(1, 1, 4, 1))
    libvirtd = Libvirtd(tmp_path / "libvirtd")
    uri = libvirtd.uri(str(node))
    try:
        hostname = libvirt.openReadOnly(uri).getHostname()
        with scraped_exporter(tmp_path, selecting_libvirt_config(uri)) as prometheus:
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
