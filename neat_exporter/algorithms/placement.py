"""VM placement: Neat's Best Fit Decreasing (``neat.globals.vm_placement.bin_packing``).

Active hosts offer ``int(threshold · total - usage)`` of CPU (MHz) and RAM (MB); inactive hosts
offer the capacity given for them, unscaled. VMs, by descending (cpu, ram, uuid) with cpu the
mean of their newest ``last_n_vm_cpu`` values (integer division for integer histories, as in
Python 2), go to the first host in ascending (free cpu, free ram, name) order that fits them;
that order is computed once from the initial free capacity and extended when an inactive host
(the smallest first) has to be woken up. All VMs with CPU data are placed, or none: ``{}``.
VMs with an empty CPU history are left out, as in Neat.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from neat_exporter.algorithms.algorithm import Algorithm
from neat_exporter.algorithms.params import Param, as_history, integer, real, sequential_sum
from neat_exporter.errors import InputError


def _amount(value: Any, what: str) -> float:
    return float(as_history([value], what)[0])


def available_resources(
    threshold: float, usage: Mapping[str, float], total: Mapping[str, float], what: str
) -> dict[str, int]:
    """``int(threshold · total - usage)`` per host (truncated toward zero, may be negative)."""
    free = {}
    for host, used in usage.items():
        if host not in total:
            raise InputError(f"{what}_total: no capacity for host {host!r}")
        capacity = _amount(total[host], f"{what}_total[{host!r}]")
        free[host] = int(threshold * capacity - _amount(used, f"{what}_usage[{host!r}]"))
    return free


def vm_demand(history: Any, last_n: int, what: str) -> float | int | None:
    """Mean of the newest ``last_n`` values; floor division when they are all integers."""
    if isinstance(history, numbers.Real):
        history = [history]
    tail = list(history)[-last_n:]
    if not tail:
        return None
    values = as_history(tail, what)
    if all(isinstance(v, numbers.Integral) for v in tail):
        return sum(int(v) for v in tail) // len(tail)
    return sequential_sum(values) / len(tail)


class BestFitDecreasing(Algorithm):
    kind: ClassVar[str] = "vm_placement"
    name: ClassVar[str] = "best_fit_decreasing"
    PARAMS: ClassVar[Mapping[str, Param]] = {
        "cpu_threshold": Param(real(0), 0.8),
        "ram_threshold": Param(real(0), 0.95),
        "last_n_vm_cpu": Param(integer(1), 2),
    }

    def __call__(
        self,
        hosts_cpu_usage: Mapping[str, float],
        hosts_cpu_total: Mapping[str, float],
        hosts_ram_usage: Mapping[str, float],
        hosts_ram_total: Mapping[str, float],
        inactive_hosts_cpu: Mapping[str, float],
        inactive_hosts_ram: Mapping[str, float],
        vms_cpu: Mapping[str, Sequence[float]],
        vms_ram: Mapping[str, float],
        state: Any = None,
    ) -> tuple[dict[str, str], Any]:
        free_cpu = available_resources(
            self.params["cpu_threshold"], hosts_cpu_usage, hosts_cpu_total, "hosts_cpu"
        )
        free_ram = available_resources(
            self.params["ram_threshold"], hosts_ram_usage, hosts_ram_total, "hosts_ram"
        )
        for host in free_cpu:
            if host not in free_ram:
                raise InputError(f"hosts_ram_usage: no RAM usage for host {host!r}")
        for host in inactive_hosts_cpu:
            if host not in inactive_hosts_ram:
                raise InputError(f"inactive_hosts_ram: no RAM for host {host!r}")
        inactive = sorted(
            (
                _amount(cpu, f"inactive_hosts_cpu[{host!r}]"),
                _amount(inactive_hosts_ram[host], f"inactive_hosts_ram[{host!r}]"),
                host,
            )
            for host, cpu in inactive_hosts_cpu.items()
        )
        vms = []
        for uuid, history in vms_cpu.items():
            demand = vm_demand(history, self.params["last_n_vm_cpu"], f"vms_cpu[{uuid!r}]")
            if demand is None:
                continue
            if uuid not in vms_ram:
                raise InputError(f"vms_ram: no RAM size for VM {uuid!r}")
            vms.append((demand, _amount(vms_ram[uuid], f"vms_ram[{uuid!r}]"), uuid))
        vms.sort(reverse=True)
        hosts = sorted((free_cpu[host], free_ram[host], host) for host in free_cpu)
        mapping = {}
        for cpu, ram, uuid in vms:
            host = self._first_fit(hosts, free_cpu, free_ram, cpu, ram)
            while host is None and inactive:
                woken = inactive.pop(0)
                hosts = sorted([*hosts, woken])
                free_cpu[woken[2]], free_ram[woken[2]] = woken[0], woken[1]
                host = self._first_fit(hosts, free_cpu, free_ram, cpu, ram)
            if host is None:
                return {}, {}
            mapping[uuid] = host
            free_cpu[host] -= cpu
            free_ram[host] -= ram
        return mapping, {}

    @staticmethod
    def _first_fit(hosts, free_cpu, free_ram, cpu, ram) -> str | None:
        for _, _, host in hosts:
            if free_cpu[host] >= cpu and free_ram[host] >= ram:
                return host
        return None


ALGORITHMS = (BestFitDecreasing,)
