"""The fleet's state after an update, as the event loop hands it to a consolidation round.

Each host keeps a list of VMs, as CloudSim's ``Host.getVmList``: the VMs running there and the
VMs migrating in, which CloudSim creates on the target as a migration starts. A VM migrating is
thus on two lists: migrating out on its source, migrating in on its target. :class:`Entries`
flattens the lists into arrays, in list order, so that an update of every host is a few numpy
operations (:mod:`neat_exporter.simulate.fleet`); :class:`RoundState` is all a round's planner
(:mod:`neat_exporter.simulate.consolidation`) reads of the fleet.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

NORMAL, OUT, IN = 0, 1, 2
"""What an entry of a host's VM list is: a VM running there, migrating out, migrating in."""


@dataclass(frozen=True)
class Entries:
    """Every entry of every host's VM list: the VM, the host, its position in the host's list
    and its kind (:data:`NORMAL`, :data:`OUT` or :data:`IN`), host by host in list order."""

    vms: np.ndarray
    hosts: np.ndarray
    positions: np.ndarray
    kinds: np.ndarray
    host_count: int

    @classmethod
    def of(
        cls,
        vm_lists: Sequence[list[int]],
        migrating_in: Sequence[list[int]],
        in_migration: np.ndarray,
    ) -> Entries:
        """The entries of ``vm_lists`` (one list per host); ``migrating_in``: each host's VMs
        migrating in; ``in_migration``: which VMs migrate (out of their home host)."""
        lengths = np.fromiter(map(len, vm_lists), dtype=np.int64, count=len(vm_lists))
        count = int(lengths.sum())
        vms = np.fromiter(itertools.chain.from_iterable(vm_lists), dtype=np.int64, count=count)
        hosts = np.repeat(np.arange(len(vm_lists)), lengths)
        starts = np.cumsum(lengths) - lengths
        positions = np.arange(count) - np.repeat(starts, lengths)
        kinds = np.where(in_migration[vms], OUT, NORMAL)
        for host, incoming in enumerate(migrating_in):
            for vm in incoming:
                kinds[starts[host] + vm_lists[host].index(vm)] = IN
        return cls(vms, hosts, positions, kinds, len(vm_lists))

    def ordered_sum(self, values: np.ndarray) -> np.ndarray:
        """Each host's sum of ``values`` (one per entry), added in VM-list order as Java does:
        SLATAH compares two such sums exactly, so the order of the additions matters."""
        width = int(self.positions.max()) + 1 if self.positions.size else 0
        table = np.zeros((self.host_count, max(width, 1)))
        table[self.hosts, self.positions] = values
        total = np.zeros(self.host_count)
        for column in range(width):
            total = total + table[:, column]
        return total


@dataclass(frozen=True)
class RoundState:
    """What a consolidation round starts from: the fleet as its last update left it.

    The round changes none of it; it copies what it changes (the VM lists, each host's free
    and allocated MIPS). The state shares the fleet's arrays and lists rather than copying them
    at every tick, so it holds until the fleet moves on (starts the round's migrations). The VM
    fields are also what VM selection policies read
    (:class:`neat_exporter.simulate.policies.SelectionContext`).
    """

    # The hosts: their VM lists, cores, RAM and power models.
    vm_lists: Sequence[list[int]]
    migrating_in: Sequence[list[int]]
    """Each host's VMs migrating in (also on its VM list)."""
    host_pe: np.ndarray
    """MIPS of one core."""
    host_total: np.ndarray
    """MIPS of all cores."""
    host_ram: np.ndarray | None
    """MB; None where RAM is not checked (CloudSim's PlanetLab set-up, as it was measured)."""
    power_kind: np.ndarray
    """Each host's row of ``power_tables``."""
    power_tables: np.ndarray
    # The last update of every host (``updateVmsProcessing``).
    entries: Entries
    entry_allocated: np.ndarray
    """MIPS allocated to each entry (a VM migrating in gets 10 % of its demand)."""
    host_demand: np.ndarray
    """MIPS each host's entries ask for, before an oversubscribed host scales them down."""
    host_requested: np.ndarray
    """MIPS each host's VMs request, summed in VM-list order."""
    utilization: np.ndarray
    """Each host's measured utilization (``getUtilizationOfCpu``)."""
    # The VMs.
    vm_mips: np.ndarray
    vm_ram: np.ndarray
    requested: np.ndarray
    """Requested MIPS of each VM now."""
    history: np.ndarray
    """(VMs, history length) utilization, newest first, zero-padded."""
    history_length: np.ndarray
    """Valid values in each VM's history."""
    in_migration: np.ndarray
    horizon: int
    """Migration time of the largest VM in scheduling intervals, rounded up (LR's look-ahead)."""
