"""Neat's arithmetic between raw samples and the algorithms' inputs.

``host_utilization`` is Neat's ``vm_mhz_to_percentage`` (local manager) and ``migration_time``
its ``calculate_migration_time`` (common).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from neat_exporter.algorithms.params import as_history
from neat_exporter.errors import InputError


def host_utilization(
    vms_mhz: Mapping[str, Sequence[float]],
    host_overhead_mhz: Sequence[float],
    capacity_mhz: float,
) -> list[float]:
    """The host's CPU utilization history, oldest first, as Neat's local manager computes it.

    The length is that of the longest VM history. Every VM history and the hypervisor overhead
    history (cut to its newest values when longer) are left-padded with zeros to that length,
    summed per step and divided by the usable capacity. Values may exceed 1.0. No VMs gives [].
    """
    if not (isinstance(capacity_mhz, int | float) and math.isfinite(capacity_mhz)) or (
        capacity_mhz <= 0
    ):
        raise InputError(f"capacity_mhz: must be a finite number > 0, got {capacity_mhz!r}")
    series = [as_history(mhz, f"vms_mhz[{uuid!r}]") for uuid, mhz in vms_mhz.items()]
    length = max((len(s) for s in series), default=0)
    if length == 0:
        return []
    overhead = as_history(host_overhead_mhz, "host_overhead_mhz")[-length:]
    total = np.zeros(length)
    # Row by row, in Neat's order (VMs, then the hypervisor): the same float sums as Neat's.
    for values in [*series, overhead]:
        if len(values):
            total[length - len(values) :] += values
    return (total / float(capacity_mhz)).tolist()


def migration_time(
    vms_ram_mb: Mapping[str, float] | Sequence[float], bandwidth_mb_s: float
) -> float:
    """Seconds to migrate an average VM: mean RAM (MB) / bandwidth (MB/s); 0.0 without VMs."""
    if not (isinstance(bandwidth_mb_s, int | float) and math.isfinite(bandwidth_mb_s)) or (
        bandwidth_mb_s <= 0
    ):
        raise InputError(f"bandwidth_mb_s: must be a finite number > 0, got {bandwidth_mb_s!r}")
    ram = vms_ram_mb.values() if isinstance(vms_ram_mb, Mapping) else vms_ram_mb
    values = as_history(list(ram), "vms_ram_mb")
    if len(values) == 0:
        return 0.0
    return float(np.mean(values)) / float(bandwidth_mb_s)
