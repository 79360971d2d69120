"""The event loop: CloudSim 3.0.3's PlanetLab power examples, replayed without CloudSim.

One simulated day: VMs are created at t = 0 (first fit for NPA and DVFS, PABFD otherwise),
the datacentre updates every host at t = 300.1, 600.1, ... (CloudSim's ticks, 0.1 s after the
cloudlets are submitted) and at every migration completion; at each tick a consolidating policy
picks migrations that start at once and end RAM / 62.5 MB/s later. Each update follows
``PowerDatacenter`` and ``HostDynamicWorkload.updateVmsProcessing``: CPU allocation with
oversubscription, the 10 % migration cut on the source and 10 % on the target, energy of the
elapsed interval, VMs asking for nothing removed as finished. See docs/reproduction.md.
"""

from __future__ import annotations

import dataclasses
import math
import time as wallclock
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from neat_exporter.errors import InputError
from neat_exporter.simulate.accounting import Accounting, DayResult, HostStates, VmStates
from neat_exporter.simulate.consolidation import Planner
from neat_exporter.simulate.inventory import Inventory
from neat_exporter.simulate.policies import Policy
from neat_exporter.simulate.power import POWER_TABLES, energy_joules, specpower
from neat_exporter.simulate.state import IN, OUT, Entries, RoundState


@dataclass(frozen=True)
class FleetSpec:
    """CloudSim's PlanetLab set-up (``Constants``/``PlanetLabConstants``, tag cloudsim-3.0.3)."""

    hosts: int = 800
    host_pe_mips: tuple[float, ...] = (1860.0, 2660.0)  # host i has type i % 2 (G4, G5)
    host_pes: int = 2
    host_ram_mb: int = 4096
    host_bw: float = 1_000_000.0
    vm_mips: tuple[float, ...] = (2500.0, 2000.0, 1000.0, 500.0)
    vm_ram_mb: tuple[int, ...] = (870, 1740, 1740, 613)
    vm_bw: float = 100_000.0
    interval: float = 300.0
    start: float = 0.1
    limit: float = 86_400.0
    history_length: int = 30

    @property
    def migration_bandwidth(self) -> float:
        """MB/s: half of the host link, as CloudSim's ``RAM / (BW / (2 * 8000))``."""
        return self.host_bw / (2 * 8000)


class Fleet:
    """One day of one policy. ``traces``: (VMs, samples) CPU utilization in percent; with an
    ``inventory``, its hosts, VMs and starting hosts replace CloudSim's PlanetLab set-up."""

    def __init__(
        self,
        traces: np.ndarray,
        policy: Policy,
        spec: FleetSpec | None = None,
        inventory: Inventory | None = None,
    ):
        spec = spec or FleetSpec()
        if policy.history_length:
            spec = dataclasses.replace(spec, history_length=policy.history_length)
        self.spec = spec
        traces = np.asarray(traces, dtype=np.float64)
        if traces.ndim != 2 or traces.shape[0] == 0 or traces.shape[1] < 2:
            raise InputError("traces: need at least one VM with at least two samples")
        self.policy = policy
        n = traces.shape[0]
        # CloudSim reads integer percents, divides by 100 and repeats the last sample.
        self.data = np.hstack([traces / 100.0, traces[:, -1:] / 100.0])
        self.start_home: np.ndarray | None = None
        self.ram_limited = inventory is not None
        if inventory is None:
            quarter = math.ceil(n / len(spec.vm_mips))
            vm_type = np.arange(n) // quarter
            self.vm_mips = np.array(spec.vm_mips)[vm_type]
            self.vm_ram = np.array(spec.vm_ram_mb, dtype=np.int64)[vm_type]
            host_type = np.arange(spec.hosts) % len(spec.host_pe_mips)
            self.host_pe = np.array(spec.host_pe_mips)[host_type]
            self.host_total = self.host_pe * spec.host_pes
            self.host_ram = np.full(spec.hosts, float(spec.host_ram_mb))
            self.power_tables = POWER_TABLES
            self.power_kind = host_type % len(POWER_TABLES)
        else:
            self.vm_mips = inventory.vm_mips.astype(np.float64)
            self.vm_ram = inventory.vm_ram_mb.astype(np.int64)
            self.host_pe = inventory.host_pe_mips.astype(np.float64)
            self.host_total = self.host_pe * inventory.host_pes
            self.host_ram = inventory.host_ram_mb.astype(np.float64)
            self.power_tables = inventory.power_tables.astype(np.float64)
            self.power_kind = inventory.host_power.astype(np.int64)
            self.start_home = inventory.vm_home.astype(np.int64)
        self.vms: list[list[int]] = [[] for _ in range(spec.hosts)]
        self.migrating_in: list[list[int]] = [[] for _ in range(spec.hosts)]
        self.home = np.full(n, -1)
        self.alive = np.ones(n, dtype=bool)
        self.in_migration = np.zeros(n, dtype=bool)
        self.history = np.zeros((n, spec.history_length))
        self.history_length = np.zeros(n, dtype=np.int64)
        self.inflight: list[tuple[float, int, int]] = []
        self.accounting = Accounting()
        self.horizon = math.ceil(
            float(self.vm_ram.max()) / spec.migration_bandwidth / spec.interval
        )
        self._entries: Entries | None = None
        self.utilization_mips = np.zeros(spec.hosts)
        self.previous_utilization = np.zeros(spec.hosts)
        self.last_process_time = 0.0
        self.requested = np.zeros(n)
        self.host_requested = np.zeros(spec.hosts)
        self.vm_allocated = np.zeros(n)

    # --- workload ----------------------------------------------------------------------------

    def utilization_at(self, time: float) -> np.ndarray:
        """``UtilizationModelPlanetLabInMemory.getUtilization`` for every VM."""
        interval = self.spec.interval
        if time % interval == 0:
            return self.data[:, int(time) // int(interval)]
        first = math.floor(time / interval)
        second = math.ceil(time / interval)
        u1, u2 = self.data[:, first], self.data[:, second]
        return u1 + (u2 - u1) / ((second - first) * interval) * (time - first * interval)

    # --- initial placement ---------------------------------------------------------------------

    def place_initial(self) -> None:
        """VM creation at t = 0, full requested MIPS/RAM/BW; hosts have never been updated."""
        spec = self.spec
        if self.start_home is not None:  # the fleet as it was: every VM where it started
            for vm, host in enumerate(self.start_home):
                self.vms[int(host)].append(vm)
            self.home[:] = self.start_home
            return
        available = self.host_total.copy()
        ram = self.host_ram.copy()
        bw = np.full(spec.hosts, spec.host_bw)
        first_fit = not self.policy.migrates
        zero = np.zeros(spec.hosts)
        idle_power = None if first_fit else self.power(zero)
        for vm in range(len(self.home)):
            mips, vm_ram = self.vm_mips[vm], self.vm_ram[vm]
            suitable = (
                (self.host_pe >= mips) & (available >= mips) & (ram >= vm_ram) & (bw >= spec.vm_bw)
            )
            candidates = np.flatnonzero(suitable)
            if candidates.size == 0:
                raise InputError(
                    f"traces: VM {vm} fits on no host at creation; {len(self.home)} VMs need "
                    f"more than {spec.hosts} hosts"
                )
            if first_fit:
                host = int(candidates[0])
            else:
                after = self.power_of(candidates, mips / self.host_total[candidates])
                host = int(candidates[np.argmin(after - idle_power[candidates])])
            available[host] -= mips
            ram[host] -= vm_ram
            bw[host] -= spec.vm_bw
            self.vms[host].append(vm)
            self.home[vm] = host

    # --- one update of every host ----------------------------------------------------------------

    def power(self, utilization: np.ndarray) -> np.ndarray:
        """Power of every host at ``utilization``."""
        return specpower(self.power_kind, utilization, self.power_tables)

    def power_of(self, hosts: np.ndarray, utilization: np.ndarray) -> np.ndarray:
        return specpower(self.power_kind[hosts], utilization, self.power_tables)

    def entries(self) -> Entries:
        """Every host's VM list as arrays, built again only after the lists changed."""
        if self._entries is None:
            self._entries = Entries.of(self.vms, self.migrating_in, self.in_migration)
        return self._entries

    def _changed(self) -> None:
        self._entries = None

    def compute_states(self, utilization: np.ndarray) -> None:
        """CPU allocation of every host for the current VM lists (``updateVmsProcessing``)."""
        entries = self.entries()
        vms, hosts, kinds = entries.vms, entries.hosts, entries.kinds
        self.requested = utilization * self.vm_mips
        requested = self.requested[vms]
        capped = np.minimum(requested, self.host_pe[hosts])
        demand = np.where(kinds == IN, capped * 0.1, capped)
        total_demand = np.bincount(hosts, weights=demand, minlength=self.spec.hosts)
        oversubscribed = (total_demand > self.host_total)[hosts]
        scale = np.divide(
            self.host_total, total_demand, out=np.ones(self.spec.hosts), where=total_demand > 0
        )[hosts]
        allocated = np.where(kinds == OUT, capped * 0.9, demand)
        scaled = np.floor(
            np.where(
                kinds == OUT,
                capped * scale * 0.9,
                np.where(kinds == IN, capped * 0.1 * scale, capped * scale),
            )
        )
        allocated = np.where(oversubscribed, scaled, allocated)
        # The host counts a VM migrating out at its full allocation (CloudSim divides by 0.9).
        contribution = np.where(kinds == OUT, allocated / 0.9, allocated)
        # Sum in VM-list order, as Java does: SLATAH compares these two sums exactly.
        self.utilization_mips = entries.ordered_sum(contribution)
        self.host_requested = entries.ordered_sum(requested)
        # A consolidation round starts from these rather than recomputing them.
        self._entry_allocated = allocated
        self._host_demand = total_demand
        recorded = kinds != IN
        self.vm_allocated = np.zeros(len(self.home))
        self.vm_allocated[vms[recorded]] = allocated[recorded]
        self._recorded = np.zeros(len(self.home), dtype=bool)
        self._recorded[vms[recorded]] = True

    def round_state(self) -> RoundState:
        """What a consolidation round reads, after :meth:`compute_states`."""
        return RoundState(
            vm_lists=self.vms,
            migrating_in=self.migrating_in,
            host_pe=self.host_pe,
            host_total=self.host_total,
            host_ram=self.host_ram if self.ram_limited else None,
            power_kind=self.power_kind,
            power_tables=self.power_tables,
            entries=self.entries(),
            entry_allocated=self._entry_allocated,
            host_demand=self._host_demand,
            host_requested=self.host_requested,
            utilization=self.utilization,
            vm_mips=self.vm_mips,
            vm_ram=self.vm_ram,
            requested=self.requested,
            history=self.history,
            history_length=self.history_length,
            in_migration=self.in_migration,
            horizon=self.horizon,
        )

    @property
    def utilization(self) -> np.ndarray:
        """``getUtilizationOfCpu``: values just above 1 (by less than 1 %) count as 1."""
        u = self.utilization_mips / self.host_total
        return np.where((u > 1) & (u < 1.01), 1.0, u)

    def update(self, time: float) -> np.ndarray:
        """A forced update of every host at ``time``: energy of the elapsed interval, states."""
        utilization = self.utilization_at(time)
        self.compute_states(utilization)
        self.accounting.advance(time)
        seconds = time - self.last_process_time
        current = self.utilization
        if seconds > 0:
            if self.policy.baseline == "npa":
                energy = float(np.sum(self.power_tables[self.power_kind, -1])) * seconds
            else:
                energy = float(
                    np.sum(
                        energy_joules(
                            self.power_kind,
                            self.previous_utilization,
                            current,
                            seconds,
                            self.power_tables,
                        )
                    )
                )
            self.accounting.add_energy(energy)
        self.previous_utilization = current
        self.last_process_time = time
        self._record(time)
        return utilization

    def _record(self, time: float) -> None:
        self.accounting.record(
            time,
            HostStates(self.utilization_mips.copy(), self.host_requested.copy()),
            VmStates(
                self._recorded.copy(),
                self.vm_allocated.copy(),
                self.requested.copy(),
                self.in_migration.copy(),
            ),
        )

    def refresh(self, time: float, utilization: np.ndarray) -> None:
        """Recompute the states at the same instant after VMs moved (no energy, replaces)."""
        self.compute_states(utilization)
        self.previous_utilization = self.utilization
        self._record(time)

    def remove_finished(self) -> None:
        """``getCompletedVms``: a VM not in migration that asks for 0 MIPS is destroyed."""
        finished = np.flatnonzero(self.alive & ~self.in_migration & (self.requested == 0))
        for vm in finished:
            self.vms[self.home[vm]].remove(int(vm))
            self.home[vm] = -1
            self.alive[vm] = False
        if finished.size:
            self._changed()

    def record_history(self, utilization: np.ndarray) -> None:
        """``PowerVm.updateVmProcessing`` at a tick: newest value first, 30 kept."""
        alive = self.alive
        self.history[alive, 1:] = self.history[alive, :-1]
        self.history[alive, 0] = utilization[alive]
        self.history_length[alive] = np.minimum(
            self.history_length[alive] + 1, self.spec.history_length
        )

    # --- migrations -------------------------------------------------------------------------------

    def start_migration(self, time: float, vm: int, target: int) -> None:
        self.in_migration[vm] = True
        self.vms[target].append(vm)
        self.migrating_in[target].append(vm)
        duration = self.vm_ram[vm] / self.spec.migration_bandwidth
        self.inflight.append((time + duration, vm, target))
        self.accounting.migrations += 1
        self._changed()

    def complete_migrations(self, time: float) -> None:
        """Every migration ending at ``time``, in the order they started
        (``PowerDatacenter.processVmMigrate``)."""
        utilization = self.update(time)
        self.remove_finished()
        done = [item for item in self.inflight if item[0] == time]
        self.inflight = [item for item in self.inflight if item[0] != time]
        for _, vm, target in done:
            self.vms[self.home[vm]].remove(vm)
            self.vms[target].remove(vm)
            self.migrating_in[target].remove(vm)
            self.vms[target].append(vm)
            self.home[vm] = target
            self.in_migration[vm] = False
        self._changed()
        self.remove_finished()
        self.refresh(time, utilization)

    def tick(self, time: float) -> None:
        utilization = self.update(time)
        self.record_history(utilization)
        self.remove_finished()
        if not self.policy.migrates:
            if self._entries is None:
                self.refresh(time, utilization)
            return
        if self._entries is None:
            self.compute_states(utilization)
        migrations = Planner(self.round_state(), self.policy).optimize()
        for vm, target in migrations:
            self.start_migration(time, vm, target)
        self.refresh(time, utilization)

    # --- the day ---------------------------------------------------------------------------------

    def run(self, progress: Callable[[int, int], None] | None = None) -> None:
        spec = self.spec
        self.place_initial()
        self._changed()
        ticks = int((spec.limit - spec.start) // spec.interval)
        tick_time = spec.start
        for step in range(1, ticks + 1):
            tick_time = tick_time + spec.interval
            self._complete_before(tick_time)
            self.tick(tick_time)
            if progress:
                progress(step, ticks)
        self._complete_before(spec.limit + 1e-9)

    def _complete_before(self, time: float) -> None:
        while self.inflight:
            first = min(item[0] for item in self.inflight)
            if first >= time:
                return
            self.complete_migrations(first)


def simulate_day(
    traces: np.ndarray,
    policy: Policy,
    *,
    day: str = "",
    spec: FleetSpec | None = None,
    progress: Callable[[int, int], None] | None = None,
    inventory: Inventory | None = None,
) -> DayResult:
    """Run one day of ``policy`` on ``traces`` ((VMs, samples) percent) and return its metrics;
    with an ``inventory``, on its fleet and traces (``spec`` then gives the clock and links)."""
    started = wallclock.perf_counter()
    if inventory is not None:
        traces = inventory.traces
        spec = dataclasses.replace(
            spec or FleetSpec(),
            hosts=len(inventory.host_names),
            interval=inventory.interval,
            limit=inventory.interval * traces.shape[1],
        )
    fleet = Fleet(traces, policy, spec, inventory)
    fleet.run(progress)
    return fleet.accounting.result(
        day, policy.name, len(traces), fleet.spec.hosts, wallclock.perf_counter() - started
    )
