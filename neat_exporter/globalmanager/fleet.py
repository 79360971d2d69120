"""The fleet as the exporters published it: hosts, their VMs and the data placement needs.

Neat's global manager read its MySQL database; this one reads Prometheus. Every host runs
``neat-exporter run``, whose series carry ``instance`` and ``job`` (added by Prometheus) and,
through ``neat_host_info``, the ``host`` name the global manager uses:

- host capacity (usable MHz), hypervisor overhead (MHz) and total RAM (MB);
- the VMs on the host with their RAM (``neat_vm_memory_max_bytes``) and their last
  ``last_n_vm_cpu`` CPU values, one per exporter cycle (a gauge is scraped several times per
  cycle: samples are grouped by the cycle's ``neat_last_cycle_timestamp_seconds``).

Where data is stale or missing the host is marked with :class:`HostProblem` reasons: planning
then treats it as Neat treats a host whose data is missing (§7.2–7.3): left out of placement and
kept active, never switched off. :func:`build_fleet` is pure; :func:`read_fleet` runs the queries.
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

from neat_exporter.promql import PrometheusAPI, RangeSeries, Sample

MHZ = 1e6
MIB = 1024 * 1024

# The reasons of HostProblem (the `reason` label of neat_gm_host_excluded).
STALE = "stale"
MISSING_CAPACITY = "missing_capacity"
MISSING_RAM = "missing_ram"
VM_WITHOUT_DATA = "vm_without_data"


@dataclass(frozen=True)
class HostProblem:
    reason: str  # one of the constants above
    detail: str  # for people: what is missing and since when


@dataclass(frozen=True)
class FleetVm:
    uuid: str
    ram_mb: float
    cpu_mhz: tuple[float, ...]
    """CPU values in the query window, one per exporter cycle, oldest first (placement takes
    the newest last_n_vm_cpu)."""
    name: str = ""
    """The libvirt domain name, for opt-out patterns (empty when unknown)."""


@dataclass(frozen=True)
class FleetHost:
    name: str
    cpu_mhz: float | None
    """Usable CPU capacity (cores × MHz × host_cpu_usable_by_vms)."""
    overhead_mhz: float | None
    """The hypervisor's own CPU use in the latest cycle."""
    ram_mb: float | None
    last_cycle: float | None
    """When the host's exporter finished its latest cycle (Unix time)."""
    vms: Mapping[str, FleetVm] = field(default_factory=dict)
    problems: tuple[HostProblem, ...] = ()

    @property
    def usable(self) -> bool:
        """Complete, fresh data: placement may use the host."""
        return not self.problems

    @property
    def cpu_usage_mhz(self) -> float:
        """Neat's host CPU usage: hypervisor overhead + the last value of each VM."""
        vms = sum(vm.cpu_mhz[-1] for vm in self.vms.values() if vm.cpu_mhz)
        return (self.overhead_mhz or 0.0) + vms

    @property
    def ram_usage_mb(self) -> float:
        """RAM given to the host's VMs."""
        return sum(vm.ram_mb for vm in self.vms.values())


@dataclass(frozen=True)
class FleetView:
    time: float
    hosts: Mapping[str, FleetHost]

    def host_of(self, vm_uuid: str) -> str | None:
        for host in self.hosts.values():
            if vm_uuid in host.vms:
                return host.name
        return None


@dataclass(frozen=True)
class FleetQueryResults:
    """What :func:`read_fleet` asks Prometheus, as returned (input of :func:`build_fleet`)."""

    host_info: list[Sample]
    last_cycle: list[Sample]
    capacity: list[Sample]
    overhead: list[Sample]
    memory: list[Sample]
    vm_memory: list[Sample]
    vm_info: list[Sample]
    vm_cpu: list[RangeSeries]
    cycles: list[RangeSeries]


def _target(labels: Mapping[str, str]) -> tuple[str, str]:
    return labels.get("instance", ""), labels.get("job", "")


def _by_target(samples: Iterable[Sample]) -> dict[tuple[str, str], float]:
    return {_target(sample.labels): sample.value for sample in samples}


def cpu_per_cycle(vm_cpu: RangeSeries, cycle_at: Mapping[float, float]) -> tuple[float, ...]:
    """One CPU value per exporter cycle, oldest first.

    Prometheus scrapes the gauge several times per cycle; ``cycle_at`` maps a scrape's time
    stamp to the cycle time stamp scraped with it, so repeated scrapes of one cycle count once
    (equal values of two cycles still count twice). A sample without a cycle time stamp counts
    as a cycle of its own.
    """
    per_cycle: dict[object, float] = {}
    for timestamp, value in vm_cpu.values:  # oldest first: dict order is cycle order
        per_cycle[cycle_at.get(timestamp, ("scrape", timestamp))] = value
    return tuple(per_cycle.values())


def build_fleet(results: FleetQueryResults, now: float, stale_after: float) -> FleetView:
    """The fleet from the query results: pure, so planning can be tested without Prometheus.

    A host whose exporter's latest cycle is older than ``stale_after`` seconds, or that lacks
    capacity or RAM, or has a VM without CPU data, carries the matching :class:`HostProblem`.
    When two exporters publish the same host or the same VM (a VM just migrated, before the
    source's next cycle), the newest cycle wins.
    """
    names: dict[tuple[str, str], str] = {}
    for sample in results.host_info:
        host = sample.labels.get("host")
        if host:
            names[_target(sample.labels)] = host
    last_cycle = _by_target(results.last_cycle)
    capacity = _by_target(results.capacity)
    overhead = _by_target(results.overhead)
    memory = _by_target(results.memory)

    # One exporter per host: the one with the newest cycle.
    chosen: dict[str, tuple[str, str]] = {}
    for target, host in sorted(names.items()):
        current = chosen.get(host)
        if current is None or last_cycle.get(target, 0.0) > last_cycle.get(current, 0.0):
            chosen[host] = target
    target_host = {target: host for host, target in chosen.items()}

    cycles: dict[tuple[str, str], dict[float, float]] = {}
    for series in results.cycles:
        cycles[_target(series.labels)] = dict(series.values)
    vm_names = {
        (_target(s.labels), s.labels.get("vm_uuid", "")): s.labels.get("domain", "")
        for s in results.vm_info
    }
    vm_cpu = {(_target(s.labels), s.labels.get("vm_uuid", "")): s for s in results.vm_cpu}

    # Each VM on one host only: the one whose exporter saw it most recently.
    placed: dict[str, tuple[str, float]] = {}
    vms: dict[str, dict[str, FleetVm]] = {host: {} for host in chosen}
    for sample in results.vm_memory:
        target = _target(sample.labels)
        uuid = sample.labels.get("vm_uuid")
        host = target_host.get(target)
        if not uuid or host is None:
            continue
        seen = last_cycle.get(target, 0.0)
        previous = placed.get(uuid)
        if previous is not None:
            if previous[1] >= seen:
                continue
            del vms[previous[0]][uuid]
        series = vm_cpu.get((target, uuid))
        history = cpu_per_cycle(series, cycles.get(target, {})) if series else ()
        vms[host][uuid] = FleetVm(
            uuid=uuid,
            ram_mb=sample.value / MIB,
            cpu_mhz=tuple(value / MHZ for value in history),
            name=vm_names.get((target, uuid), ""),
        )
        placed[uuid] = (host, seen)

    hosts = {}
    for host, target in sorted(chosen.items()):
        cycle = last_cycle.get(target)
        cpu = capacity.get(target)
        ram = memory.get(target)
        problems = []
        if cycle is None or now - cycle > stale_after:
            since = "no cycle reported" if cycle is None else f"last cycle {now - cycle:.0f} s ago"
            problems.append(HostProblem(STALE, f"{since} (stale after {stale_after:g} s)"))
        if cpu is None or cpu <= 0:
            problems.append(HostProblem(MISSING_CAPACITY, "no neat_host_cpu_capacity_hertz"))
        if ram is None or ram <= 0:
            problems.append(HostProblem(MISSING_RAM, "no neat_host_memory_bytes"))
        lacking = sorted(uuid for uuid, vm in vms[host].items() if not vm.cpu_mhz)
        if lacking:
            problems.append(
                HostProblem(VM_WITHOUT_DATA, f"no CPU data yet for VM {', '.join(lacking[:3])}")
            )
        hosts[host] = FleetHost(
            name=host,
            cpu_mhz=None if cpu is None else cpu / MHZ,
            overhead_mhz=None if target not in overhead else overhead[target] / MHZ,
            ram_mb=None if ram is None else ram / MIB,
            last_cycle=cycle,
            vms=vms[host],
            problems=tuple(problems),
        )
    return FleetView(time=now, hosts=hosts)


def cycle_intervals(cycles: Iterable[RangeSeries]) -> tuple[float, float] | None:
    """The shortest and the longest exporter interval in the fleet: per exporter, the median gap
    between the distinct cycle time stamps it published; None while no exporter has two."""
    intervals = []
    for series in cycles:
        stamps = sorted({value for _, value in series.values})
        gaps = [later - earlier for earlier, later in itertools.pairwise(stamps)]
        if gaps and statistics.median(gaps) > 0:
            intervals.append(statistics.median(gaps))
    return (min(intervals), max(intervals)) if intervals else None


def read_fleet(
    api: PrometheusAPI,
    now: float,
    *,
    cpu_window: float,
    stale_after: float,
    host_lookback: float,
    last_n: int = 2,
    vm_names: bool = False,
) -> FleetView:
    """Query Prometheus for the whole fleet at ``now`` (raises PrometheusError).

    ``cpu_window``: at most this many seconds of CPU history are read per VM;
    ``host_lookback``: how long a host that stopped reporting stays listed (as stale);
    ``last_n``: the CPU values per VM placement uses (``last_n_vm_cpu``);
    ``vm_names``: read the domain names too (only opt-out patterns need them).

    The queries run concurrently. CPU history is read as a range query stepping at half the
    shortest exporter interval over the last ``last_n + 1`` longest intervals, with the cycle
    time stamps at the same instants (each instant sees one scrape of both, so the grouping per
    cycle stays exact): a few points per VM instead of every scrape. Before the exporters have
    published two cycles, the raw samples of ``cpu_window`` are read instead.
    """
    lookback = f"{max(1, round(host_lookback))}s"
    window = f"{max(1, round(cpu_window))}s"
    instant = {
        "host_info": f"max by (instance, job, host) (last_over_time(neat_host_info[{lookback}]))",
        "last_cycle": "max by (instance, job) "
        f"(last_over_time(neat_last_cycle_timestamp_seconds[{lookback}]))",
        "capacity": "neat_host_cpu_capacity_hertz",
        "overhead": "neat_host_hypervisor_cpu_usage_hertz",
        "memory": "neat_host_memory_bytes",
        "vm_memory": "max by (instance, job, vm_uuid) (neat_vm_memory_max_bytes)",
    }
    if vm_names:
        instant["vm_info"] = "max by (instance, job, vm_uuid, domain) (neat_vm_info)"
    with ThreadPoolExecutor(len(instant) + 2, "fleet-query") as pool:
        answers = {name: pool.submit(api.query, expr, now) for name, expr in instant.items()}
        cycles = api.query_raw(f"neat_last_cycle_timestamp_seconds[{window}]", now)
        intervals = cycle_intervals(cycles)
        if intervals is None:
            vm_cpu = api.query_raw(f"neat_vm_cpu_usage_hertz[{window}]", now)
        else:
            shortest, longest = intervals
            step = shortest / 2
            start = now - min(cpu_window, (last_n + 1) * longest)
            cpu = pool.submit(api.query_range, "neat_vm_cpu_usage_hertz", start, now, step)
            cycles = api.query_range("neat_last_cycle_timestamp_seconds", start, now, step)
            vm_cpu = cpu.result()
        values = {name: answer.result() for name, answer in answers.items()}
    values.setdefault("vm_info", [])
    results = FleetQueryResults(**values, vm_cpu=vm_cpu, cycles=cycles)
    return build_fleet(results, now, stale_after)


@dataclass(frozen=True)
class Move:
    """A migration the exporters may not have seen yet: finished at ``time`` (after the source's
    latest cycle), or running (``time`` infinite)."""

    vm_uuid: str
    source: str
    destination: str
    time: float


def with_moves(fleet: FleetView, moves: Iterable[Move]) -> FleetView:
    """The fleet as it is once ``moves`` are done: each VM still shown on its source by a cycle
    older than the move goes to its destination (or just leaves, when the destination has no
    data yet), so that a plan never counts a VM twice or forgets a running migration."""
    hosts = {name: dict(host.vms) for name, host in fleet.hosts.items()}
    for move in moves:
        source = fleet.hosts.get(move.source)
        vm = hosts.get(move.source, {}).get(move.vm_uuid)
        if vm is None or (source.last_cycle is not None and source.last_cycle > move.time):
            continue
        del hosts[move.source][move.vm_uuid]
        if move.destination in hosts:
            hosts[move.destination].setdefault(move.vm_uuid, vm)
    return FleetView(
        fleet.time,
        {
            name: host if hosts[name] == host.vms else replace(host, vms=hosts[name])
            for name, host in fleet.hosts.items()
        },
    )
