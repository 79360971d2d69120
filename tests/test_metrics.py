"""Rendering a snapshot on /metrics: the collector reads it and does nothing else."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from served import served

from neat_exporter.config import config_from_mapping
from neat_exporter.daemon import Daemon
from neat_exporter.exposition import Exposition
from neat_exporter.metrics import snapshot_families
from neat_exporter.snapshot import DetectorView, Snapshot, VmView
from neat_exporter.sources.replay import ReplaySource


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple], float]:
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def a_snapshot(**changes) -> Snapshot:
    config = config_from_mapping({})
    fields = dict(
        time=1000.0,
        host="compute1",
        source="libvirt",
        cpus=4,
        core_mhz=2500.0,
        capacity_hz=9e9,
        utilization=0.95,
        hypervisor_hz=1e8,
        history_samples=12,
        decision="overload",
        detectors={
            "underload": DetectorView(0.93, 0.5, True),
            "overload": DetectorView(0.95, None, False),
        },
        migration_time=51.2,
        selected=("vm-b",),
        vms=(
            VmView("vm-a", 1e9, 2**30, False, {"instance_name": "web", "project_id": "p1"}),
            VmView("vm-b", None, 2**31, True),
        ),
        algorithms=config.algorithms,
    )
    fields.update(changes)
    return Snapshot(**fields)


def test_renders_every_field_of_a_snapshot():
    registry = CollectorRegistry()
    registry.register(Exposition(snapshot_families(a_snapshot())))
    got = samples(registry)
    host_info = (("cpu_mhz", "2500"), ("cpus", "4"), ("host", "compute1"), ("source", "libvirt"))
    assert got[("neat_host_info", host_info)] == 1
    assert got[("neat_host_cpu_capacity_hertz", ())] == 9e9
    assert got[("neat_host_cpu_utilization_ratio", ())] == 0.95
    assert got[("neat_host_hypervisor_cpu_usage_hertz", ())] == 1e8
    assert got[("neat_host_history_samples", ())] == 12
    assert got[("neat_host_underloaded", ())] == 0
    assert got[("neat_host_overloaded", ())] == 1
    assert got[("neat_migration_time_seconds", ())] == 51.2
    assert got[("neat_last_cycle_timestamp_seconds", ())] == 1000.0
    assert got[("neat_detector_input_ratio", (("detector", "underload"),))] == 0.93
    assert got[("neat_detector_threshold_ratio", (("detector", "underload"),))] == 0.5
    assert ("neat_detector_threshold_ratio", (("detector", "overload"),)) not in got
    assert got[("neat_detector_ready", (("detector", "overload"),))] == 0
    algorithms = (
        ("overload", "mhod"),
        ("underload", "last_n_average_threshold"),
        ("vm_selection", "minimum_migration_time_max_cpu"),
    )
    assert got[("neat_algorithm_info", algorithms)] == 1
    vm_a = (
        ("domain", ""),
        ("flavor_name", ""),
        ("instance_name", "web"),
        ("project_id", "p1"),
        ("project_name", ""),
        ("user_id", ""),
        ("vm_uuid", "vm-a"),
    )
    assert got[("neat_vm_info", vm_a)] == 1
    assert got[("neat_vm_cpu_usage_hertz", (("vm_uuid", "vm-a"),))] == 1e9
    assert ("neat_vm_cpu_usage_hertz", (("vm_uuid", "vm-b"),)) not in got  # no sample yet
    assert got[("neat_vm_memory_max_bytes", (("vm_uuid", "vm-b"),))] == 2**31
    assert got[("neat_vm_selected_for_migration", (("vm_uuid", "vm-a"),))] == 0
    assert got[("neat_vm_selected_for_migration", (("vm_uuid", "vm-b"),))] == 1
    assert {name for name, _ in got if "instance" in dict(_) or "job" in dict(_)} == set()


def test_before_the_first_cycle_only_the_build_info():
    registry = CollectorRegistry()
    registry.register(Exposition(snapshot_families(None)))
    assert [name for name, _ in samples(registry)] == ["neat_exporter_build_info"]


class CountingSource(ReplaySource):
    def __init__(self):
        super().__init__({"vm": [50.0]}, host_cpu_mhz=4000, cpus=4, vm_ram_mb=1024)
        self.calls = 0

    def collect(self):
        self.calls += 1
        return super().collect()


def test_scrapes_do_no_work():
    source = CountingSource()
    daemon = Daemon(config_from_mapping({"source": {"type": "replay"}}), source)
    daemon.run_cycle()
    first = samples(served(daemon))
    for _ in range(5):
        assert samples(served(daemon)) == first
    assert source.calls == 1
    assert first[("neat_cycles_total", ())] == 1
    assert first[("neat_vm_cpu_usage_hertz", (("vm_uuid", "vm"),))] == 500e6
