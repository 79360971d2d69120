"""Neat's global manager processing, pure: a request and the fleet in, a :class:`Plan` out.

:func:`execute_underload` and :func:`execute_overload` follow ``neat/globals/manager.py``
(neat-reference §7.2–7.3) with the fleet read from Prometheus instead of MySQL and Nova:

- host CPU usage = hypervisor overhead + the last CPU value of each of its VMs; host RAM usage
  = the RAM of its VMs; VM demand = the placement's mean of the newest ``last_n_vm_cpu`` values;
- hosts whose data is stale or missing, or that hold a VM without CPU data, take no part in
  placement and are kept active (never switched off): their reason is in ``Plan.excluded``;
- underload: hosts without VMs are left out, nothing is woken; every VM of the host must have
  data or the request is dropped; afterwards every awake host that holds no VM, is not kept
  active and was not already asleep is switched off (the underloaded host only if the placement
  moved something);
- overload: hosts without VMs (awake and empty, or asleep) are offered as inactive with their
  full capacity; the asleep ones the placement uses are woken first.

No I/O and no clock: the service hands in the fleet, the sleeping hosts and the placement.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from neat_exporter.globalmanager.executors.base import Migration
from neat_exporter.globalmanager.fleet import STALE, FleetHost, FleetView
from neat_exporter.vocabulary import Reason

Placement = Callable[..., tuple[dict[str, str], Any]]
"""Neat's placement signature (``BestFitDecreasing`` or a plug-in): see algorithms/placement.py."""

# Plan.result values (a subset of metrics.PLAN_RESULTS: the service adds the rest).
PLANNED = "planned"
EMPTY = "empty"
NO_PLACEMENT = "no_placement"

ASLEEP = "asleep"


@dataclass(frozen=True)
class HostCapacity:
    """What a sleeping host offers when woken: its full CPU (MHz) and RAM (MB)."""

    cpu_mhz: float
    ram_mb: float


@dataclass(frozen=True)
class Plan:
    reason: Reason
    host: str
    """The host that asked."""
    result: str
    """``planned`` (migrations to run), ``empty`` (nothing to do) or ``no_placement``."""
    detail: str = ""
    migrations: tuple[Migration, ...] = ()
    wake: tuple[str, ...] = ()
    """Sleeping hosts to switch on before the migrations."""
    switch_off: tuple[str, ...] = ()
    """Hosts to switch off after the migrations."""
    excluded: Mapping[str, str] = field(default_factory=dict)
    """Hosts left out of placement and kept active: host → reason (fleet.HostProblem reasons,
    or ``asleep``)."""
    skipped: Mapping[str, str] = field(default_factory=dict)
    """VMs asked for that the plan does not move: uuid → why."""


def _excluded(
    fleet: FleetView, asleep: Iterable[str], unavailable: Mapping[str, str]
) -> dict[str, str]:
    excluded = {name: ASLEEP for name in asleep}
    excluded.update(unavailable)
    for name, host in fleet.hosts.items():
        if name not in excluded and host.problems:
            excluded[name] = host.problems[0].reason
    return excluded


def _stale(host: FleetHost) -> str | None:
    """Why a request from ``host`` cannot be trusted: its own data is stale."""
    for problem in host.problems:
        if problem.reason == STALE:
            return f"request dropped: the data of {host.name} is stale ({problem.detail})"
    return None


def _placement_inputs(hosts: Iterable[FleetHost]) -> dict[str, dict[str, float]]:
    inputs: dict[str, dict[str, float]] = {
        "hosts_cpu_usage": {},
        "hosts_cpu_total": {},
        "hosts_ram_usage": {},
        "hosts_ram_total": {},
    }
    for host in hosts:
        inputs["hosts_cpu_usage"][host.name] = host.cpu_usage_mhz
        inputs["hosts_cpu_total"][host.name] = host.cpu_mhz
        inputs["hosts_ram_usage"][host.name] = host.ram_usage_mb
        inputs["hosts_ram_total"][host.name] = host.ram_mb
    return inputs


def _migrations(source: str, placement: Mapping[str, str]) -> tuple[Migration, ...]:
    return tuple(Migration(vm, source, host) for vm, host in sorted(placement.items()))


def execute_underload(
    fleet: FleetView,
    host: str,
    placement: Placement,
    asleep: Iterable[str] = (),
    unavailable: Mapping[str, str] | None = None,
) -> Plan:
    """Neat's ``execute_underload``: move every VM off ``host`` and switch emptied hosts off.

    ``unavailable``: hosts another plan is working on (host → reason): left out and kept on."""
    asleep = set(asleep)
    excluded = _excluded(fleet, asleep, unavailable or {})
    source = fleet.hosts.get(host)
    if source is None or host in asleep:
        why = "asleep" if host in asleep else "no data in Prometheus"
        return Plan(Reason.UNDERLOAD, host, EMPTY, f"{host}: {why}", excluded=excluded)
    stale = _stale(source)
    if stale:
        return Plan(Reason.UNDERLOAD, host, EMPTY, stale, excluded=excluded)
    lacking = sorted(uuid for uuid, vm in source.vms.items() if not vm.cpu_mhz)
    if lacking:  # Neat drops the request when a VM of the host has no data
        return Plan(
            Reason.UNDERLOAD,
            host,
            EMPTY,
            f"request dropped: no CPU data for VM {', '.join(lacking)}",
            excluded=excluded,
            skipped=dict.fromkeys(lacking, "no CPU data"),
        )
    active = [
        candidate
        for name, candidate in fleet.hosts.items()
        if name != host and name not in excluded and candidate.vms
    ]
    mapping, _ = placement(
        **_placement_inputs(active),
        inactive_hosts_cpu={},
        inactive_hosts_ram={},
        vms_cpu={uuid: vm.cpu_mhz for uuid, vm in source.vms.items()},
        vms_ram={uuid: vm.ram_mb for uuid, vm in source.vms.items()},
    )
    active_names = {candidate.name for candidate in active}
    kept_active = {name for name, why in excluded.items() if why != ASLEEP and name != host}
    switch_off = set(fleet.hosts) - active_names - asleep - kept_active
    if not mapping:  # as in Neat: idle hosts elsewhere are still switched off
        switch_off.discard(host)
    migrations = _migrations(host, mapping)
    if migrations or switch_off:
        result = PLANNED
        detail = f"{len(migrations)} migration(s), switching off {len(switch_off)} host(s)"
    elif source.vms:
        result, detail = NO_PLACEMENT, "no host can take every VM"
    else:
        result, detail = EMPTY, "nothing to migrate"
    return Plan(
        Reason.UNDERLOAD,
        host,
        result,
        detail,
        migrations=migrations,
        switch_off=tuple(sorted(switch_off)),
        excluded=excluded,
    )


def execute_overload(
    fleet: FleetView,
    host: str,
    vm_uuids: Iterable[str],
    placement: Placement,
    asleep: Mapping[str, HostCapacity] | None = None,
    unavailable: Mapping[str, str] | None = None,
) -> Plan:
    """Neat's ``execute_overload``: move ``vm_uuids`` off ``host``, waking sleeping hosts if the
    placement needs them. ``unavailable`` as for :func:`execute_underload`."""
    unavailable = unavailable or {}
    asleep = {name: c for name, c in (asleep or {}).items() if name not in unavailable}
    excluded = _excluded(fleet, asleep, unavailable)
    source = fleet.hosts.get(host)
    stale = None if source is None else _stale(source)
    if stale:
        return Plan(Reason.OVERLOAD, host, EMPTY, stale, excluded=excluded)
    skipped: dict[str, str] = {}
    vms = {}
    for uuid in dict.fromkeys(vm_uuids):
        vm = None if source is None else source.vms.get(uuid)
        if vm is None:
            skipped[uuid] = f"not on {host} in the fleet data"
        elif not vm.cpu_mhz:
            skipped[uuid] = "no CPU data"
        else:
            vms[uuid] = vm
    if not vms:
        return Plan(
            Reason.OVERLOAD, host, EMPTY, "no VM to move", excluded=excluded, skipped=skipped
        )
    active, inactive = [], dict(asleep)
    for name, candidate in fleet.hosts.items():
        if name == host or name in excluded:
            continue
        if candidate.vms:
            active.append(candidate)
        else:
            inactive[name] = HostCapacity(candidate.cpu_mhz, candidate.ram_mb)
    mapping, _ = placement(
        **_placement_inputs(active),
        inactive_hosts_cpu={name: capacity.cpu_mhz for name, capacity in inactive.items()},
        inactive_hosts_ram={name: capacity.ram_mb for name, capacity in inactive.items()},
        vms_cpu={uuid: vm.cpu_mhz for uuid, vm in vms.items()},
        vms_ram={uuid: vm.ram_mb for uuid, vm in vms.items()},
    )
    if not mapping:
        return Plan(
            Reason.OVERLOAD,
            host,
            NO_PLACEMENT,
            "no host can take every VM",
            excluded=excluded,
            skipped=skipped,
        )
    wake = sorted({destination for destination in mapping.values() if destination in asleep})
    migrations = _migrations(host, mapping)
    return Plan(
        Reason.OVERLOAD,
        host,
        PLANNED,
        f"{len(migrations)} migration(s)" + (f", waking {', '.join(wake)}" if wake else ""),
        migrations=migrations,
        wake=tuple(wake),
        excluded=excluded,
        skipped=skipped,
    )
