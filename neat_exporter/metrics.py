"""What /metrics shows: the latest snapshot, rendered, plus the decision loop's own counters.

:func:`snapshot_families` turns a :class:`Snapshot` into metric families, once per cycle (see
neat_exporter.exposition); scrapes do nothing else (no libvirt call, no algorithm).
:class:`LoopMetrics` holds the counters the loop updates once per cycle. The names are the
contract of docs/metrics.md.
"""

from __future__ import annotations

import platform
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.core import GaugeMetricFamily

from neat_exporter import __version__
from neat_exporter.exposition import Family, GaugeRows
from neat_exporter.snapshot import DECISIONS, Snapshot
from neat_exporter.sources.base import VM_INFO_LABELS

_BLANKS = ("",) * len(VM_INFO_LABELS)  # a label Nova did not give is shown empty
STAGES = ("collect", "detect", "select", "publish", "act")


def live_registry() -> CollectorRegistry:
    """The registry of a process's live metrics, holding from the start the ``process_*``
    series every Prometheus exporter has (resident memory, CPU seconds, open file descriptors,
    start time: prometheus_client's ProcessCollector, which reads /proc)."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    return registry


def _gauge(name: str, documentation: str, value: float | None) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation)
    if value is not None:
        family.add_metric([], float(value))
    return family


def snapshot_families(snapshot: Snapshot | None, ceilometer: bool = False) -> list[Family]:
    """The families that show ``snapshot`` (None before the first cycle: only the build info);
    the per-VM ones as :class:`GaugeRows`, which neat_exporter.exposition encodes fast.
    ``ceilometer`` adds the series OpenStack Watcher's Prometheus datasource reads."""
    families = list(_build_info())
    if snapshot is not None:
        families += [*_host(snapshot), *_detectors(snapshot), *_vms(snapshot)]
        if ceilometer:
            families += list(_ceilometer(snapshot))
    return families


def _build_info() -> Iterator[GaugeMetricFamily]:
    info = GaugeMetricFamily(
        "neat_exporter_build_info",
        "The exporter's version and the Python running it.",
        labels=["version", "python_version"],
    )
    info.add_metric([__version__, platform.python_version()], 1)
    yield info


def _host(s: Snapshot) -> Iterator[GaugeMetricFamily]:
    info = GaugeMetricFamily(
        "neat_host_info",
        "The hypervisor host as the global manager knows it.",
        labels=["host", "cpus", "cpu_mhz", "source"],
    )
    info.add_metric([s.host, str(s.cpus), f"{s.core_mhz:g}", s.source], 1)
    yield info
    yield _gauge(
        "neat_host_cpu_capacity_hertz",
        "Usable CPU capacity: cores × MHz × host_cpu_usable_by_vms, in hertz.",
        s.capacity_hz,
    )
    yield _gauge(
        "neat_host_memory_bytes",
        "Physical memory of the host (absent when the source does not know it).",
        s.memory_bytes,
    )
    yield _gauge(
        "neat_host_cpu_utilization_ratio",
        "Latest host utilization: (sum of VMs + hypervisor overhead) / capacity; may exceed 1.",
        s.utilization,
    )
    yield _gauge(
        "neat_host_hypervisor_cpu_usage_hertz",
        "Latest hypervisor overhead: host busy minus the VMs, floored at 0, in hertz.",
        s.hypervisor_hz,
    )
    yield _gauge(
        "neat_host_history_samples",
        "Samples in the utilization history the detectors saw.",
        s.history_samples,
    )
    yield _gauge(
        "neat_host_underloaded",
        "1 when the latest cycle found the host underloaded.",
        s.underloaded,
    )
    yield _gauge(
        "neat_host_overloaded",
        "1 when the latest cycle found the host overloaded (and not underloaded).",
        s.overloaded,
    )
    yield _gauge(
        "neat_migration_time_seconds",
        "Estimated migration time given to the algorithms (mean VM RAM / bandwidth).",
        s.migration_time,
    )
    algorithms = GaugeMetricFamily(
        "neat_algorithm_info",
        "The configured algorithms.",
        labels=["underload", "overload", "vm_selection"],
    )
    a = s.algorithms
    algorithms.add_metric([a.underload.name, a.overload.name, a.vm_selection.name], 1)
    yield algorithms
    yield _gauge(
        "neat_last_cycle_timestamp_seconds",
        "End of the latest successful cycle, in seconds since the epoch.",
        s.time,
    )


def _detectors(s: Snapshot) -> Iterator[GaugeMetricFamily]:
    families = {
        "input": GaugeMetricFamily(
            "neat_detector_input_ratio",
            "The value the detector compared in the latest cycle.",
            labels=["detector"],
        ),
        "threshold": GaugeMetricFamily(
            "neat_detector_threshold_ratio",
            "The threshold the detector compared against in the latest cycle.",
            labels=["detector"],
        ),
        "ready": GaugeMetricFamily(
            "neat_detector_ready",
            "0 while the detector has too little history to decide.",
            labels=["detector"],
        ),
    }
    for detector in ("underload", "overload"):
        view = s.detectors.get(detector)
        if view is None:
            families["ready"].add_metric([detector], 0)
            continue
        if view.input is not None:
            families["input"].add_metric([detector], view.input)
        if view.threshold is not None:
            families["threshold"].add_metric([detector], view.threshold)
        families["ready"].add_metric([detector], float(view.ready))
    yield from families.values()


def _vms(s: Snapshot) -> Iterator[GaugeRows]:
    """The per-VM bulk, as rows: see neat_exporter.exposition."""
    vms = s.vms
    yield GaugeRows(
        "neat_vm_info",
        "Nova metadata of the VM.",
        ("vm_uuid", *VM_INFO_LABELS),
        [((vm.uuid, *map(vm.info.get, VM_INFO_LABELS, _BLANKS)), 1) for vm in vms],
    )
    yield GaugeRows(
        "neat_vm_cpu_usage_hertz",
        "Latest CPU use of the VM, in hertz.",
        ("vm_uuid",),
        [((vm.uuid,), vm.cpu_hz) for vm in vms if vm.cpu_hz is not None],
    )
    yield GaugeRows(
        "neat_vm_memory_max_bytes",
        "Maximum memory of the VM.",
        ("vm_uuid",),
        [((vm.uuid,), vm.memory_max_bytes) for vm in vms],
    )
    yield GaugeRows(
        "neat_vm_selected_for_migration",
        "1 for the VMs the latest cycle selected to leave this host.",
        ("vm_uuid",),
        [((vm.uuid,), float(vm.selected)) for vm in vms],
    )


def _ceilometer(s: Snapshot) -> Iterator[GaugeRows]:
    """The names, label and units of Ceilometer's Prometheus publisher, which Watcher's
    Prometheus and Aetos datasources query (``rate(ceilometer_cpu{resource=UUID}[...])`` and
    ``avg_over_time(ceilometer_memory_usage{resource=UUID}[...])``). Gauges, not counters, so
    that no encoder appends ``_total`` to the cumulative CPU time; ``rate()`` reads them alike."""
    vms = s.vms
    yield GaugeRows(
        "ceilometer_cpu",
        "Cumulative CPU time of the instance in nanoseconds (Ceilometer's cpu meter).",
        ("resource",),
        [((vm.uuid,), vm.cpu_time_ns) for vm in vms if vm.cpu_time_ns is not None],
    )
    yield GaugeRows(
        "ceilometer_memory_usage",
        "Memory used by the instance in MB (Ceilometer's memory.usage meter).",
        ("resource",),
        [((vm.uuid,), vm.memory_used_mb) for vm in vms if vm.memory_used_mb is not None],
    )


class LoopMetrics:
    """Counters of the decision loop, updated by the loop, read by scrapes."""

    def __init__(self, registry: CollectorRegistry):
        self.cycles = Counter("neat_cycles", "Decision cycles run.", registry=registry)
        self.errors = Counter(
            "neat_cycle_errors",
            "Failed cycles by stage (collect, detect, select, publish, act).",
            ["stage"],
            registry=registry,
        )
        self.duration = Histogram(
            "neat_cycle_duration_seconds",
            "Time of one decision cycle.",
            registry=registry,
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.source_up = Gauge(
            "neat_source_up", "1 when the latest collection reached its source.", registry=registry
        )
        self.decisions = Counter(
            "neat_decisions",
            "Decisions of the cycles: underload, overload, none.",
            ["decision"],
            registry=registry,
        )
        self.vms_skipped = Counter(
            "neat_vms_skipped",
            "VMs left out of a collection because they errored or vanished while being read.",
            registry=registry,
        )
        self.vms_rejected = Counter(
            "neat_vms_rejected",
            "VMs left out because their identifier is not a UUID (file names in Neat's data "
            "directory that are not VM UUIDs, or not UTF-8).",
            registry=registry,
        )
        self.history_dropped_lines = Counter(
            "neat_history_dropped_lines",
            "Lines of history files dropped when read: not numbers, or beyond the host's capacity.",
            registry=registry,
        )
        self.history_persist_errors = Counter(
            "neat_history_persist_errors",
            "Failed writes of the history to history_dir (read-only, full, missing).",
            registry=registry,
        )
        for stage in STAGES:
            self.errors.labels(stage)
        for decision in DECISIONS:
            self.decisions.labels(decision)
