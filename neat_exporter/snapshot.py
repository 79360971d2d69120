"""The result of one decision cycle, immutable, as /metrics and the landing page show it.

The cycle builds a new :class:`Snapshot` and swaps it in whole; readers (scrapes, the landing
page) only ever see a complete one and never compute anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from neat_exporter.manager import HostDecision
from neat_exporter.sources.base import Reading
from neat_exporter.vocabulary import AlgorithmSet

MHZ = 1e6
MIB = 1024 * 1024

DECISIONS = ("underload", "overload", "none")
RECENT_CYCLES = 60
"""Cycles a snapshot remembers (newest last), for the landing page's history chart."""


@dataclass(frozen=True, slots=True)
class DetectorView:
    input: float | None
    threshold: float | None
    ready: bool
    fired: bool = False
    """The detector's own decision (an overload is not acted on when underload also fired)."""


@dataclass(frozen=True, slots=True)
class PastCycle:
    """What one cycle decided, kept for the history chart."""

    time: float
    utilization: float | None
    decision: str
    detectors: Mapping[str, DetectorView]


@dataclass(frozen=True, slots=True)
class VmView:
    uuid: str
    cpu_hz: float | None
    """Latest CPU use; None when the VM has no sample yet (first sight)."""
    memory_max_bytes: float
    selected: bool
    info: Mapping[str, str] = field(default_factory=dict)
    cpu_time_ns: int | None = None
    memory_used_mb: float | None = None


@dataclass(frozen=True, slots=True)
class Snapshot:
    time: float
    """Wall-clock end of the cycle that built it."""
    host: str
    source: str
    cpus: int
    core_mhz: float
    capacity_hz: float
    """Usable capacity: cores × MHz × host_cpu_usable_by_vms."""
    utilization: float | None
    hypervisor_hz: float | None
    history_samples: int
    decision: str
    """``underload``, ``overload`` or ``none`` (also when there was nothing to decide)."""
    detectors: Mapping[str, DetectorView]
    """By detector (``underload``, ``overload``); empty when no detector ran."""
    migration_time: float | None
    selected: tuple[str, ...]
    vms: tuple[VmView, ...]
    algorithms: AlgorithmSet
    recent: tuple[PastCycle, ...] = ()
    """The latest RECENT_CYCLES cycles since the process started, this one last."""
    memory_bytes: float | None = None
    """The host's physical memory; None when the source does not know it."""

    @property
    def underloaded(self) -> bool:
        return self.decision == "underload"

    @property
    def overloaded(self) -> bool:
        return self.decision == "overload"


def build_snapshot(
    *,
    now: float,
    host: str,
    source: str,
    reading: Reading,
    capacity_mhz: float,
    decision: HostDecision | None,
    algorithms: AlgorithmSet,
    previous: Snapshot | None = None,
) -> Snapshot:
    """The snapshot of one cycle; ``previous`` (the last cycle's) carries the recent cycles."""
    overhead = reading.hypervisor_overhead_mhz
    if decision is not None:
        utilization = decision.utilization[-1]
    elif overhead is not None:
        utilization = (reading.vms_cpu_mhz + overhead) / capacity_mhz
    else:
        utilization = None
    selected = () if decision is None else decision.selected  # empty unless there is a reason
    leaving = frozenset(selected)  # an underloaded host selects every VM
    detectors = {}
    if decision is not None:
        for name, detection in (("underload", decision.underload), ("overload", decision.overload)):
            detectors[name] = DetectorView(
                detection.input, detection.threshold, detection.ready, detection.decision
            )
    detectors = MappingProxyType(detectors)
    decision_name = _decision_name(decision)
    this_cycle = PastCycle(now, utilization, decision_name, detectors)
    earlier = () if previous is None else previous.recent[-(RECENT_CYCLES - 1) :]
    return Snapshot(
        time=now,
        host=host,
        source=source,
        cpus=reading.cpu_cores,
        core_mhz=reading.core_mhz,
        capacity_hz=capacity_mhz * MHZ,
        utilization=utilization,
        hypervisor_hz=None if overhead is None else overhead * MHZ,
        history_samples=0 if decision is None else len(decision.utilization),
        decision=decision_name,
        detectors=detectors,
        migration_time=None if decision is None else decision.migration_time,
        selected=tuple(selected),
        vms=tuple(
            VmView(
                uuid=uuid,
                cpu_hz=None if vm.cpu_mhz is None else vm.cpu_mhz * MHZ,
                memory_max_bytes=vm.ram_max_mb * MIB,
                selected=uuid in leaving,
                info=MappingProxyType(dict(vm.info)),
                cpu_time_ns=vm.cpu_time_ns,
                memory_used_mb=vm.memory_used_mb,
            )
            for uuid, vm in sorted(reading.vms.items())
        ),
        algorithms=algorithms,
        recent=(*earlier, this_cycle),
        memory_bytes=None if reading.ram_total_mb is None else reading.ram_total_mb * MIB,
    )


def _decision_name(decision: HostDecision | None) -> str:
    if decision is None or decision.reason is None:
        return "none"
    return decision.reason.label
