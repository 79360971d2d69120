"""Neat's arithmetic between raw samples and the algorithms' inputs.

``host_utilization`` is Neat's ``vm_mhz_to_percentage`` (local manager) and ``migration_time``
its ``calculate_migration_time`` (common).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from neat_exporter.algorithms.params import as_histories, as_history
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
    _check_positive(capacity_mhz, "capacity_mhz")
    matrix = _left_padded(list(as_histories(vms_mhz, "vms_mhz").values()))
    length = matrix.shape[1]
    if length == 0:
        return []
    overhead = as_history(host_overhead_mhz, "host_overhead_mhz")[-length:]
    # Neat adds the VMs one after the other, then the hypervisor: a running sum down the rows
    # gives the same floats (the zero padding adds exactly nothing).
    total = np.cumsum(matrix, axis=0)[-1]
    total[length - len(overhead) :] += overhead
    return (total / float(capacity_mhz)).tolist()


def _check_positive(value: float, name: str) -> None:
    if not (isinstance(value, int | float) and math.isfinite(value)) or value <= 0:
        raise InputError(f"{name}: must be a finite number > 0, got {value!r}")


def _left_padded(series: list[np.ndarray]) -> np.ndarray:
    """The series as rows of one array, left-padded with zeros to the longest."""
    length = max((len(s) for s in series), default=0)
    if series and all(len(s) == length for s in series):
        return np.stack(series)
    matrix = np.zeros((len(series), length))
    for row, values in enumerate(series):
        matrix[row, length - len(values) :] = values
    return matrix


def migration_time(
    vms_ram_mb: Mapping[str, float] | Sequence[float], bandwidth_mb_s: float
) -> float:
    """Seconds to migrate an average VM: mean RAM (MB) / bandwidth (MB/s); 0.0 without VMs."""
    _check_positive(bandwidth_mb_s, "bandwidth_mb_s")
    ram = vms_ram_mb.values() if isinstance(vms_ram_mb, Mapping) else vms_ram_mb
    values = as_history(list(ram), "vms_ram_mb")
    if len(values) == 0:
        return 0.0
    return float(np.mean(values)) / float(bandwidth_mb_s)
