"""The Ceilometer-compatible series, read by OpenStack Watcher's own Prometheus datasource
(python-watcher from the OpenStack venv) through a real Prometheus scraping the exporter on a
private libvirtd."""

from __future__ import annotations

import json
import subprocess

import pytest
from libvirt_fixtures import vm_uuid, write_node_xml
from openstack_cloud import VENV
from services import Exporter, Libvirtd, Prometheus

pytestmark = [pytest.mark.services, pytest.mark.openstack]

FQDN = "compute-e2e.example.org"
PERIOD = 5

# Watcher's datasource, configured as watcher.conf's [prometheus_client] section would be; it
# prints what Watcher's strategies would get for each instance, and the node label it resolves.
WATCHER_READS = """
import json, sys, types
from oslo_config import cfg
import watcher.conf
from watcher.decision_engine.datasources.prometheus import PrometheusHelper

host, port, period, fqdn, *uuids = sys.argv[1:]
cfg.CONF([], project="watcher", default_config_files=[])
cfg.CONF.set_override("host", host, "prometheus_client")
cfg.CONF.set_override("port", port, "prometheus_client")
helper = PrometheusHelper()
out = {"node": helper._resolve_prometheus_instance_label(fqdn.split(".")[0])}
for uuid in uuids:
    instance = types.SimpleNamespace(uuid=uuid, vcpus=4)
    out[uuid] = {
        "cpu": helper.get_instance_cpu_usage(instance, period=int(period), aggregate="mean"),
        "ram": helper.get_instance_ram_usage(instance, period=int(period), aggregate="mean"),
    }
print(json.dumps(out))
"""


def watcher_reads(prometheus: Prometheus, uuids: list[str]) -> dict:
    result = subprocess.run(
        [str(VENV / "bin" / "python"), "-c", WATCHER_READS, "127.0.0.1", str(prometheus.port),
         str(PERIOD), FQDN, *uuids],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.splitlines()[-1])


def test_watcher_reads_instance_cpu_and_ram_from_the_exporter(tmp_path):
    if not (VENV / "bin" / "watcher-api").exists():
        pytest.skip(f"the OpenStack venv {VENV} with python-watcher is missing (make test)")
    pytest.importorskip("libvirt", reason="libvirt-python is not installed")
    domains = 3
    node = write_node_xml(tmp_path / "node.xml", domains, shut_off_every=0, cpus=(1, 1, 4, 1))
    libvirtd = Libvirtd(tmp_path / "libvirtd")
    config = {
        "interval": 0.5,
        "ceilometer_series": True,
        "source": {"type": "libvirt", "libvirt": {"uri": libvirtd.uri(str(node))}},
    }
    exporter = prometheus = None
    try:
        exporter = Exporter(tmp_path, config)
        prometheus = Prometheus(
            tmp_path / "prometheus", [exporter.address], target_labels={"fqdn": FQDN}
        )
        uuids = [vm_uuid(index) for index in range(domains)]
        # rate() divides by the whole window: every series must be older than the period.
        prometheus.wait_for(f"count(count_over_time(ceilometer_cpu[{4 * PERIOD}s]) > 8) == 3")
        reads = watcher_reads(prometheus, uuids)
    finally:
        if prometheus is not None:
            prometheus.stop()
        if exporter is not None:
            exporter.stop()
        libvirtd.stop()
    assert reads["node"] == FQDN  # compute nodes are matched through the fqdn target label
    for index, uuid in enumerate(uuids):
        # The test driver's domains each use one core, reported as cumulative nanoseconds:
        # Watcher makes that 100 % / 4 vCPUs.
        assert reads[uuid]["cpu"] == pytest.approx(25, abs=5), reads
        assert reads[uuid]["ram"] == 512 + index % 4 * 512, reads  # MB, the domain's memory
