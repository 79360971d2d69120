"""One consolidation round of ``PowerVmAllocationPolicyMigrationAbstract.optimizeAllocation``.

The round works on a tentative copy of the allocation, exactly as CloudSim does between
``saveAllocation`` and ``restoreAllocation``: VMs taken off overloaded hosts and VMs placed on
targets change the hosts' VM lists, free MIPS, requested MIPS and utilization histories for
the rest of the round, while each host's measured utilization (its current power, whether it
counts as switched off or as the least utilized) stays as last updated. Placement is PABFD:
the suitable host, not overloaded after taking the VM unless nothing is allocated on it, with
the least power increase, where the power after is estimated from the MIPS allocated on the
host so far in the round (3.0.3's ``getUtilizationOfCpuMips(host)``; later CloudSim versions
use the last measured utilization instead, which consolidates much harder).
"""

from __future__ import annotations

import numpy as np

from neat_exporter.simulate.policies import Policy
from neat_exporter.simulate.power import specpower
from neat_exporter.simulate.state import IN, RoundState


class Planner:
    """The tentative state of one round, started from the fleet's :class:`RoundState`."""

    def __init__(self, state: RoundState, policy: Policy):
        self.state = state
        self.detector = policy.detector
        self.underload_limit = policy.underload
        self.placement_limit = policy.placement
        self.selection = policy.selection
        self.vm_ram = state.vm_ram
        self.requested = state.requested
        self.in_migration = state.in_migration
        self.migrating_in = state.migrating_in
        self.horizon = state.horizon
        self.window = self.detector.window
        self.hosts_per_call = self.detector.hosts_per_call
        self.total = state.host_total
        self.pe = state.host_pe
        self.kinds = state.power_kind
        self.power_tables = state.power_tables
        self.vms = [list(members) for members in state.vm_lists]
        self.utilization = state.utilization
        self.power_now = specpower(self.kinds, self.utilization, self.power_tables)
        history = state.history
        nonzero = history > 0
        last = history.shape[1] - np.argmax(nonzero[:, ::-1], axis=1)
        self.vm_trimmed = np.where(nonzero.any(axis=1), last, 0)
        self.vm_terms = history * state.vm_mips[:, None]

        entries = state.entries
        vms, hosts = entries.vms, entries.hosts
        host_count = entries.host_count
        self.available = np.maximum(self.total - state.host_demand, 0.0)
        self.requested_sum = state.host_requested.copy()
        self.host_history = np.zeros((host_count, history.shape[1]))
        np.add.at(self.host_history, hosts, self.vm_terms[vms] / self.total[hosts, None])
        self.host_trimmed = np.zeros(host_count, dtype=np.int64)
        for host in np.unique(hosts):
            self._trim(host)
        # MIPS allocated on each host as the round goes; a VM migrating in counts 10 times its
        # allocation (its full demand), a VM migrating out 0.9 times its demand.
        allocated = state.entry_allocated
        potential = np.where(entries.kinds == IN, allocated + allocated * 0.9 / 0.1, allocated)
        self.allocated = entries.ordered_sum(potential)
        # An operator's fleet also runs out of RAM (a VM migrating holds it on both hosts).
        # CloudSim's PlanetLab set-up is reproduced without this check, as the figures of
        # docs/reproduction.md were measured.
        self.free_ram = None
        if state.host_ram is not None:
            used = np.bincount(hosts, weights=self.vm_ram[vms], minlength=host_count)
            self.free_ram = state.host_ram - used

    @property
    def fits(self) -> np.ndarray:
        """The largest VM demand each host can take: a core's MIPS, and free MIPS."""
        return np.minimum(self.pe, self.available)

    # --- tentative changes --------------------------------------------------------------------

    def _trim(self, host: int) -> None:
        row = np.flatnonzero(self.host_history[host] != 0)
        self.host_trimmed[host] = row[-1] + 1 if row.size else 0

    def _recompute(self, host: int) -> None:
        members = self.vms[host]
        incoming = self.migrating_in[host]
        requested = 0.0
        demands = []
        for vm in members:
            requested += self.requested[vm]
            demand = min(self.requested[vm], self.pe[host])
            demands.append(demand * 0.1 if incoming and vm in incoming else demand)
        self.requested_sum[host] = requested
        total_demand = sum(demands)
        if total_demand <= self.total[host]:
            self.available[host] = self.total[host] - total_demand
            self.allocated[host] = sum(
                demand * 10 if incoming and vm in incoming else demand
                for vm, demand in zip(members, demands, strict=True)
            )
        else:  # oversubscribed: every VM scaled down, nothing left
            self.available[host] = 0.0
            self.allocated[host] = float(
                np.floor(np.array(demands) * (self.total[host] / total_demand)).sum()
            )
        if members:
            self.host_history[host] = (self.vm_terms[members] / self.total[host]).sum(axis=0)
        else:
            self.host_history[host] = 0.0
        self._trim(host)

    def add(self, host: int, vm: int) -> None:
        """``vmCreate`` on a target during the round."""
        self.vms[host].append(vm)
        self.requested_sum[host] += self.requested[vm]
        if self.free_ram is not None:
            self.free_ram[host] -= self.vm_ram[vm]
        demand = min(self.requested[vm], self.pe[host])
        available = self.available[host]
        self.available[host] = available - demand if available >= demand else 0.0
        self.allocated[host] += demand
        self.host_history[host] += self.vm_terms[vm] / self.total[host]
        self.host_trimmed[host] = max(self.host_trimmed[host], self.vm_trimmed[vm])

    def remove(self, host: int, vm: int) -> None:
        """``vmDestroy`` during the round."""
        self.vms[host].remove(vm)
        if self.free_ram is not None:
            self.free_ram[host] += self.vm_ram[vm]
        self._recompute(host)

    # --- decisions ------------------------------------------------------------------------------

    def overloaded(self, hosts: np.ndarray) -> np.ndarray:
        return self.detector.overloaded(
            self.requested_sum[hosts] / self.total[hosts],
            self.host_history[hosts, : self.window],
            self.host_trimmed[hosts],
            self.horizon,
        )

    def overloaded_hosts(self) -> np.ndarray:
        """The tick's decision for every host (the one a detector may keep state from)."""
        return self.detector.decide_tick(
            self.requested_sum / self.total,
            self.host_history[:, : self.window],
            self.host_trimmed,
            self.horizon,
        )

    def find_host(self, vm: int, excluded: np.ndarray) -> int | None:
        """PABFD's choice for one VM, or None: of the suitable hosts that would not be
        overloaded, the one with the least power increase (the first host on ties)."""
        requested = self.requested[vm]
        suitable = ~excluded & (self.fits >= requested)
        if self.free_ram is not None:
            suitable &= self.free_ram >= self.vm_ram[vm]
        if self.placement_limit is not None:
            after = (self.allocated + requested) / self.total
            suitable &= (after <= self.placement_limit) | (self.allocated == 0)
        candidates = np.nonzero(suitable)[0]
        if candidates.size == 0:
            return None
        allocated = self.allocated[candidates]
        after = (allocated + requested) / self.total[candidates]
        # CloudSim's own arithmetic: many hosts tie up to rounding, and the rounding decides.
        increase = (
            specpower(self.kinds[candidates], after, self.power_tables) - self.power_now[candidates]
        )
        # CloudSim asks the detector about every busy candidate, then takes the minimum. Asking
        # cheapest first, in batches that double, gives the same host (a stable sort keeps ties
        # in host order) while usually asking about far fewer. That matters for Neat's
        # detectors, which decide host by host (README's simulator benchmark has the figures).
        order = np.argsort(increase, kind="stable")
        start, size = 0, self.hosts_per_call
        while start < order.size:
            batch = order[start : start + size]
            acceptable = np.ones(batch.size, dtype=bool)
            busy = allocated[batch] != 0  # a host with nothing allocated is never overloaded
            if busy.any():
                acceptable[busy] = ~self._overloaded_with(candidates[batch[busy]], vm)
            if acceptable.any():
                return int(candidates[batch[np.argmax(acceptable)]])
            start, size = start + size, size * 2
        return None

    def _overloaded_with(self, hosts: np.ndarray, vm: int) -> np.ndarray:
        """Would these hosts be overloaded after taking ``vm`` (``isHostOverUtilizedAfter…``)?"""
        total = self.total[hosts]
        requested = (self.requested_sum[hosts] + self.requested[vm]) / total
        length = np.maximum(self.host_trimmed[hosts], self.vm_trimmed[vm])
        width = self.window
        return self.detector.overloaded(
            requested,
            self.host_history[hosts, :width] + self.vm_terms[vm, :width] / total[:, None],
            length,
            self.horizon,
        )

    def _by_decreasing_cpu(self, vms: list[int]) -> list[int]:
        return sorted(vms, key=lambda vm: -self.requested[vm])

    def optimize(self) -> list[tuple[int, int]]:
        """The migrations of this round, overload ones first, as (vm, target host)."""
        overloaded = self.overloaded_hosts()
        to_migrate: list[int] = []
        for host in np.flatnonzero(overloaded):
            while True:
                vm = self.selection.select(self.vms[host], self.state)
                if vm is None:
                    break
                to_migrate.append(vm)
                self.remove(int(host), vm)
                if not self.overloaded(np.array([host]))[0]:
                    break
        migrations = []
        for vm in self._by_decreasing_cpu(to_migrate):
            target = self.find_host(vm, overloaded)
            if target is not None:
                self.add(target, vm)
                migrations.append((vm, target))
        return migrations + self._underload(overloaded)

    def _underload(self, overloaded: np.ndarray) -> list[tuple[int, int]]:
        """``getMigrationMapFromUnderUtilizedHosts``: empty the least used hosts, all or nothing."""
        switched_off = self.utilization == 0
        not_source = overloaded | switched_off
        not_target = overloaded | switched_off
        migrations: list[tuple[int, int]] = []
        utilization = self.utilization
        while not not_source.all():
            host = self._least_utilized(not_source, utilization)
            if host is None:
                break
            not_source[host] = True
            not_target[host] = True
            vms = [vm for vm in self.vms[host] if not self.in_migration[vm]]
            if not vms:
                continue
            placed: list[tuple[int, int]] = []
            for vm in self._by_decreasing_cpu(vms):
                target = self.find_host(vm, not_target)
                if target is None:
                    for moved, moved_to in placed:
                        self.remove(moved_to, moved)
                    placed = []
                    break
                self.add(target, vm)
                placed.append((vm, target))
            for _, target in placed:
                not_source[target] = True
            migrations += placed
        return migrations

    def _least_utilized(self, excluded: np.ndarray, utilization: np.ndarray) -> int | None:
        eligible = ~excluded & (utilization > 0) & (utilization < 1)
        if self.underload_limit is not None:
            eligible &= utilization <= self.underload_limit
        eligible = np.flatnonzero(eligible)
        if eligible.size == 0:
            return None
        for host in eligible[np.argsort(utilization[eligible], kind="stable")]:
            if not self._all_migrating_out_or_any_in(int(host)):
                return int(host)
        return None

    def _all_migrating_out_or_any_in(self, host: int) -> bool:
        """CloudSim's ``areAllVmsMigratingOutOrAnyVmMigratingIn``, with its early return."""
        incoming = self.migrating_in[host]
        for vm in self.vms[host]:
            if not self.in_migration[vm]:
                return False
            if vm in incoming:
                return True
        return True
