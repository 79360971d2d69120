"""VM selection (Neat's ``neat.locals.vm_selection.algorithms``): which VM leaves an overloaded
host. Stateless; every selector returns a one-element list of an existing UUID, or [] when
there are no VMs (Neat could return None; see docs/neat-compatibility.md).

``vms_cpu_mhz`` maps each VM to its CPU history (MHz, oldest first) and is the set of
candidates; ``vms_ram_mb`` maps VMs to their RAM. Ties go to the first VM in mapping order.
"""

from __future__ import annotations

import random as _random
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from neat_exporter.algorithms.algorithm import Algorithm
from neat_exporter.algorithms.params import (
    Param,
    as_histories,
    as_history,
    integer,
    sequential_sum,
)
from neat_exporter.errors import InputError


def _ram(vms_ram_mb: Mapping[str, float]) -> dict[str, float]:
    try:  # all at once; one at a time only to name a bad value
        values = as_history(list(vms_ram_mb.values()), "vms_ram_mb")
        return dict(zip(vms_ram_mb, values.tolist(), strict=True))
    except InputError:
        pass
    ram = {}
    for uuid, value in vms_ram_mb.items():
        checked = as_history([value], f"vms_ram_mb[{uuid!r}]")
        ram[uuid] = float(checked[0])
    return ram


def _first_minimum(items: Sequence[tuple[str, float]]) -> str:
    """The key of the smallest value; the first one on ties."""
    best_key, best_value = items[0]
    for key, value in items[1:]:
        if value < best_value:
            best_key, best_value = key, value
    return best_key


class SelectorAlgorithm(Algorithm):
    kind: ClassVar[str] = "vm_selection"

    def __call__(
        self,
        vms_cpu_mhz: Mapping[str, Sequence[float]],
        vms_ram_mb: Mapping[str, float],
        state: Any = None,
    ) -> tuple[list[str], Any]:
        cpu = as_histories(vms_cpu_mhz, "vms_cpu_mhz")
        ram = _ram(vms_ram_mb)
        if not cpu:
            return [], {}
        return [self.select(cpu, ram)], {}

    def select(self, cpu: dict[str, np.ndarray], ram: dict[str, float]) -> str:
        raise NotImplementedError


def _seed(algorithm: str, name: str, value: Any) -> int | None:
    return None if value is None else integer()(algorithm, name, value)


class Random(SelectorAlgorithm):
    """A uniformly random VM; ``seed`` (an extension) makes the sequence reproducible."""

    name = "random"
    PARAMS: ClassVar[Mapping[str, Param]] = {"seed": Param(_seed, None)}

    def __init__(
        self, params: Mapping[str, Any] | None, *, time_step: float, migration_time: float
    ):
        super().__init__(params, time_step=time_step, migration_time=migration_time)
        self._random = _random.Random(self.params["seed"])

    def select(self, cpu: dict[str, np.ndarray], ram: dict[str, float]) -> str:
        return self._random.choice(list(cpu))


class MinimumUtilization(SelectorAlgorithm):
    """The VM with the smallest newest CPU value (VMs without data only if no VM has data)."""

    name = "minimum_utilization"

    def select(self, cpu: dict[str, np.ndarray], ram: dict[str, float]) -> str:
        with_data = [(uuid, float(mhz[-1])) for uuid, mhz in cpu.items() if len(mhz)]
        return _first_minimum(with_data) if with_data else next(iter(cpu))


class MinimumMigrationTime(SelectorAlgorithm):
    """The VM with the least RAM (in ``vms_ram_mb`` order)."""

    name = "minimum_migration_time"

    def select(self, cpu: dict[str, np.ndarray], ram: dict[str, float]) -> str:
        known = [(uuid, mb) for uuid, mb in ram.items() if uuid in cpu]
        if not known:
            raise InputError("vms_ram_mb: no RAM size for any of the VMs in vms_cpu_mhz")
        return _first_minimum(known)


class MinimumMigrationTimeMaxCpu(SelectorAlgorithm):
    """Among the VMs with the least RAM, the one with the highest mean of its newest ``last_n``
    CPU values (an empty history counts as 0; the first VM wins ties, including all-zero)."""

    name = "minimum_migration_time_max_cpu"
    PARAMS: ClassVar[Mapping[str, Param]] = {"last_n": Param(integer(1), 2)}

    def select(self, cpu: dict[str, np.ndarray], ram: dict[str, float]) -> str:
        sizes = [ram[uuid] for uuid in cpu if uuid in ram]
        if not sizes:
            raise InputError("vms_ram_mb: no RAM size for any of the VMs in vms_cpu_mhz")
        min_ram = min(sizes)
        last_n = self.params["last_n"]
        candidates = [uuid for uuid in cpu if ram.get(uuid) == min_ram]
        tails = [cpu[uuid][-last_n:] for uuid in candidates]
        if all(len(tail) == last_n for tail in tails):  # the usual case, done in one go
            means = np.cumsum(np.stack(tails), axis=1)[:, -1] / last_n  # sequential sums
            return candidates[int(np.argmax(means))]  # the first of the highest
        best, best_mean = None, -np.inf
        for uuid, tail in zip(candidates, tails, strict=True):
            mean = sequential_sum(tail) / len(tail) if len(tail) else 0.0
            if mean > best_mean:
                best, best_mean = uuid, mean
        return best


ALGORITHMS = (Random, MinimumUtilization, MinimumMigrationTime, MinimumMigrationTimeMaxCpu)
