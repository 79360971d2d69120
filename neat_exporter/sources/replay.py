"""A recorded or synthetic workload played back one step per collection.

Each trace is a VM's CPU utilization in percent of one core (PlanetLab's format), so a VM at
100 % uses one core: ``core_mhz = host_cpu_mhz / cpus``. Every ``collect()`` advances one step,
whatever the wall-clock time, which is how ``neat-exporter demo`` runs a day of 5-minute samples
in minutes. Traces loop when they end.

:func:`synthetic_workload` is the built-in workload: a few VMs whose common load swings, period
after period, through underload, normal load and overload, with seeded noise.
"""

from __future__ import annotations

import time
import uuid as uuidlib
from collections.abc import Mapping

import numpy as np

from neat_exporter.neat_files import NeatFiles
from neat_exporter.sources.base import Reading, VmReading

SYNTHETIC_PERIOD = 40
"""Steps in one underload → normal → overload → normal swing."""

# (step, host utilization) corners of one period: low, normal, high, normal, back to low.
_PROFILE = (
    (0, 0.30),
    (9, 0.30),
    (13, 0.70),
    (19, 0.70),
    (23, 1.05),
    (31, 1.05),
    (35, 0.70),
    (38, 0.70),
    (40, 0.30),
)
SYNTHETIC_OVERHEAD = 0.02
"""Hypervisor overhead of the synthetic host, as a fraction of its capacity."""


def synthetic_workload(
    vms: int, cpus: int, seed: int = 0, periods: int = 8
) -> dict[str, np.ndarray]:
    """Percent-of-a-core traces of ``vms`` VMs on a host of ``cpus`` cores.

    Their sum plus :data:`SYNTHETIC_OVERHEAD` follows the profile (30 % → 70 % → 105 % of the
    host → 70 % ...), shared unevenly between VMs (seeded weights) with seeded noise. With fewer
    VMs than cores the host cannot reach overload, since a VM uses at most one core.
    """
    rng = np.random.default_rng(seed)
    steps = np.arange(SYNTHETIC_PERIOD * periods)
    corners = np.array(_PROFILE, dtype=float)
    host = np.interp(steps % SYNTHETIC_PERIOD, corners[:, 0], corners[:, 1])
    weights = rng.uniform(0.5, 1.5, size=vms)
    weights *= vms / weights.sum()
    per_vm_cores = (host - SYNTHETIC_OVERHEAD) * cpus / vms
    loads = weights[:, None] * per_vm_cores[None, :] + rng.normal(0, 0.03, (vms, steps.size))
    percent = np.clip(loads, 0.0, 1.0) * 100
    names = [str(uuidlib.UUID(bytes=rng.bytes(16), version=4)) for _ in range(vms)]
    return {name: percent[i] for i, name in enumerate(names)}


class ReplaySource:
    """Plays ``traces`` (``{vm: percent of a core per step}``) on a host of ``cpus`` cores."""

    name = "replay"
    keeps_history = False

    def __init__(
        self,
        traces: Mapping[str, np.ndarray],
        *,
        host_cpu_mhz: float,
        cpus: int,
        vm_ram_mb: float,
        host: str = "replay",
        overhead: float = 0.0,
        info: Mapping[str, Mapping[str, str]] | None = None,
    ):
        self.traces = {name: np.asarray(values, dtype=float) for name, values in traces.items()}
        self.host = host
        self.cpus = cpus
        self.core_mhz = host_cpu_mhz / cpus
        self.vm_ram_mb = vm_ram_mb
        self.overhead_mhz = overhead * host_cpu_mhz
        self.info = info or {}
        self.step = 0

    def collect(self) -> Reading:
        vms = {
            name: VmReading(
                uuid=name,
                cpu_mhz=float(trace[self.step % len(trace)]) / 100 * self.core_mhz,
                ram_max_mb=self.vm_ram_mb,
                info=self.info.get(name, {}),
            )
            for name, trace in self.traces.items()
        }
        self.step += 1
        busy = sum(vm.cpu_mhz for vm in vms.values()) + self.overhead_mhz
        return Reading(
            time=time.time(),
            host=self.host,
            cpu_cores=self.cpus,
            core_mhz=self.core_mhz,
            host_busy_mhz=busy,
            vms=vms,
        )

    def read_history(self) -> NeatFiles:
        return NeatFiles()  # the daemon keeps the history of what this source reads

    def close(self) -> None:
        pass


def synthetic_info(names: list[str]) -> dict[str, dict[str, str]]:
    """Nova-like labels for the synthetic VMs, so the demo fills neat_vm_info."""
    return {
        name: {
            "domain": f"instance-{i + 1:08x}",
            "instance_name": f"demo-{i + 1}",
            "project_id": "demo",
            "project_name": "demo",
            "flavor_name": "m1.small",
            "user_id": "demo",
        }
        for i, name in enumerate(names)
    }
