"""What every source yields once per cycle."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from neat_exporter.neat_files import NeatFiles

VM_INFO_LABELS = ("domain", "instance_name", "project_id", "project_name", "flavor_name", "user_id")
"""The keys of ``VmReading.info``: the labels of ``neat_vm_info``."""


class SourceError(Exception):
    """The source could not be read this cycle (libvirt down, directory missing, ...)."""


@dataclass(frozen=True, slots=True)
class VmReading:
    uuid: str
    cpu_mhz: float | None
    """Average CPU use over the last interval, Neat's ``calculate_cpu_mhz``; None on the first
    sight of the VM, when there is no baseline to take a difference from."""
    ram_max_mb: float
    info: Mapping[str, str] = field(default_factory=dict)
    """``neat_vm_info`` labels: domain, instance_name, project_id, project_name, flavor_name,
    user_id (empty strings when unknown)."""
    cpu_time_ns: int | None = None
    """Cumulative CPU time of the VM (libvirt's cpu.time), when the source reads it."""
    memory_used_mb: float | None = None
    """Memory the VM uses as Ceilometer's ``memory.usage`` counts it, when the source reads it."""


@dataclass(frozen=True, slots=True)
class Reading:
    """One collection from a source: the host and its running VMs at one instant."""

    time: float
    """Wall-clock time of the collection, in seconds since the epoch."""
    host: str
    cpu_cores: int
    core_mhz: float
    host_busy_mhz: float | None
    """Whole-host CPU use over the last interval (Neat's ``get_host_cpu_mhz``); None on the
    first collection. The hypervisor overhead is this minus the VMs' sum, floored at 0."""
    vms: Mapping[str, VmReading]
    """Running VMs only, by UUID."""
    skipped_vms: int = 0
    """VMs that errored or vanished during this collection and were left out."""
    rejected_vms: int = 0
    """VMs left out because their identifier is not a UUID (file names in Neat's data
    directory)."""
    ram_total_mb: float | None = None
    """The host's physical memory, for the global manager's placement; None when unknown."""

    @property
    def cpu_mhz_total(self) -> float:
        return self.cpu_cores * self.core_mhz

    @property
    def vms_cpu_mhz(self) -> float:
        """The VMs' CPU use summed, over the VMs that have a sample."""
        return sum(vm.cpu_mhz for vm in self.vms.values() if vm.cpu_mhz is not None)

    @property
    def hypervisor_overhead_mhz(self) -> float | None:
        """Host busy MHz minus the VMs' sum, floored at 0 (Neat's collector, §2 step 6); None
        while the host's busy time is unknown."""
        if self.host_busy_mhz is None:
            return None
        return max(0.0, self.host_busy_mhz - self.vms_cpu_mhz)


class Source(Protocol):
    name: str
    keeps_history: bool
    """True for a source whose VM histories are kept by someone else (Neat's data collector):
    the daemon then takes them from :meth:`read_history` after each :meth:`collect` and never
    writes a history of its own."""

    def collect(self) -> Reading:
        """Read the host now; raise SourceError when the source cannot be reached."""
        ...

    def read_history(self) -> NeatFiles:
        """The VMs' MHz histories and the hypervisor overhead history as of the latest
        :meth:`collect`, oldest first; empty for a source that keeps no history."""
        ...

    def close(self) -> None: ...
