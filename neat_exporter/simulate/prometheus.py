"""The operator's fleet as the exporters saw it, read from Prometheus over a time range.

Each ``neat-exporter run`` is one host: ``neat_host_info{host, cpus, cpu_mhz}``,
``neat_host_cpu_capacity_hertz`` and ``neat_host_memory_bytes`` describe it, and its
``neat_vm_cpu_usage_hertz{vm_uuid}`` and ``neat_vm_memory_max_bytes{vm_uuid}`` series are the VMs
it runs. Series of one exporter share Prometheus' ``instance`` and ``job`` labels, which tie a
VM to its host. The range is cut into days (one :class:`Inventory` each, so days can be trained
and tested on separately); a day's VMs are those running at its start, on the host they ran on
then, with their CPU use every step until they disappear.

A VM's speed is one core of the host it started on (the exporter does not publish vCPUs), so
its CPU use is in percent of that core, capped at 100 % as CloudSim caps a VM at one core.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from neat_exporter.errors import InputError
from neat_exporter.parsing import parse_duration
from neat_exporter.promql import PrometheusAPI, RangeSeries
from neat_exporter.simulate.inventory import Inventory, power_models

DAY = 86_400.0
MB = 1024 * 1024
DEFAULT_LINEAR_POWER = (86.0, 117.0)
"""Idle and full-load watts for hosts that are not CloudSim's G4/G5 (a G4's range)."""


@dataclass(frozen=True)
class Host:
    name: str
    cores: int
    mhz: float
    core_mips: float
    ram_mb: float


def _key(labels: dict) -> tuple[str, str]:
    return labels.get("instance", ""), labels.get("job", "")


def _last(series: RangeSeries) -> float:
    return series.values[-1][1]


def read_hosts(api: PrometheusAPI, start: float, end: float, step: float) -> dict:
    """Hosts by (instance, job): name, cores and speed from their series in the range."""
    info = api.query_range(
        "max by (instance, job, host, cpus, cpu_mhz) (neat_host_info)", start, end, step
    )
    capacity = {
        _key(s.labels): _last(s)
        for s in api.query_range("neat_host_cpu_capacity_hertz", start, end, step)
    }
    memory = {
        _key(s.labels): _last(s)
        for s in api.query_range("neat_host_memory_bytes", start, end, step)
    }
    hosts = {}
    for series in info:
        key = _key(series.labels)
        name = series.labels.get("host") or key[0]
        try:
            cores = int(series.labels["cpus"])
            mhz = float(series.labels["cpu_mhz"])
        except (KeyError, ValueError):
            raise InputError(f"Prometheus: neat_host_info of {name!r} lacks cpus/cpu_mhz") from None
        if key not in capacity or key not in memory:
            missing = (
                "neat_host_cpu_capacity_hertz" if key not in capacity else "neat_host_memory_bytes"
            )
            raise InputError(f"Prometheus: host {name!r} ({key[0]}) has no {missing} in the range")
        if cores < 1 or not capacity[key] > 0 or not memory[key] > 0:
            raise InputError(f"Prometheus: host {name!r} has no usable capacity or memory")
        hosts[key] = Host(name, cores, mhz, capacity[key] / 1e6 / cores, memory[key] / MB)
    if not hosts:
        raise InputError(f"Prometheus: no neat_host_info between {_when(start)} and {_when(end)}")
    # By name, so the fleet (and the simulator's ties) do not depend on Prometheus' order.
    return dict(sorted(hosts.items(), key=lambda item: (item[1].name, item[0])))


def _when(moment: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(moment))


def _grid(series: RangeSeries, times: np.ndarray) -> np.ndarray:
    """The series on the query's time grid, NaN where it has no sample."""
    values = np.full(len(times), np.nan)
    stamps = np.array([t for t, _ in series.values])
    index = np.searchsorted(times, stamps)
    index = np.minimum(index, len(times) - 1)
    exact = times[index] == stamps
    values[index[exact]] = [v for (_, v), ok in zip(series.values, exact, strict=True) if ok]
    return values


def read_fleet(
    api: PrometheusAPI,
    start: float,
    end: float,
    step: float = 300.0,
    day_length: float = DAY,
    linear_power: tuple[float, float] = DEFAULT_LINEAR_POWER,
    host_power: dict[str, str | tuple[float, float]] | None = None,
) -> dict[str, Inventory]:
    """The fleet between ``start`` and ``end`` (Unix seconds), one inventory per day.
    ``host_power`` names a power model for some hosts by name (see :func:`power_models`)."""
    if not end > start or not step > 0:
        raise InputError(
            f"Prometheus range: need start < end and a positive step ({start}, {end}, {step})"
        )
    hosts = read_hosts(api, start, end, step)
    keys = list(hosts)
    index = {key: i for i, key in enumerate(keys)}
    times = start + step * np.arange(math.floor((end - start) / step) + 1)
    usage: dict[str, list[tuple[int, np.ndarray]]] = {}
    for series in api.query_range("neat_vm_cpu_usage_hertz", start, end, step):
        vm, key = series.labels.get("vm_uuid"), _key(series.labels)
        if vm and key in index:
            usage.setdefault(vm, []).append((index[key], _grid(series, times)))
    ram = {
        s.labels["vm_uuid"]: _last(s) / MB
        for s in api.query_range("neat_vm_memory_max_bytes", start, end, step)
        if s.labels.get("vm_uuid")
    }
    if not usage:
        raise InputError(
            f"Prometheus: no neat_vm_cpu_usage_hertz between {_when(start)} and {_when(end)}"
        )
    per_day = max(round(day_length / step), 2)
    cores = np.array([hosts[k].cores for k in keys])
    mhz = np.array([hosts[k].mhz for k in keys])
    names = np.array([hosts[k].name for k in keys])
    unknown = sorted(set(host_power or {}) - set(names.tolist()))
    if unknown:
        raise InputError(f"--host-power: no host {unknown[0]!r} in the fleet read")
    tables, kinds = power_models(cores, mhz, linear_power, names, host_power)
    days = {}
    for first in range(0, len(times) - 1, per_day):
        window = slice(first, min(first + per_day, len(times)))
        if window.stop - window.start < 2:
            break
        inventory = _day(hosts, keys, usage, ram, window, tables, kinds, step)
        if inventory is not None:
            days[time.strftime("%Y%m%dT%H%M", time.gmtime(times[first]))] = inventory
    if not days:
        raise InputError("Prometheus: no VM was running at the start of any day of the range")
    return days


def _day(hosts, keys, usage, ram, window, tables, kinds, step) -> Inventory | None:
    names, homes, mips, rams, traces = [], [], [], [], []
    for vm, series in sorted(usage.items()):
        starting = [(host, values) for host, values in series if not np.isnan(values[window.start])]
        if not starting or vm not in ram:
            continue  # not running at the day's start, or its memory is unknown
        home = starting[0][0]
        stacked = np.array([values[window] for _, values in series])
        # A VM reported by two hosts at once (while it migrates) counts once, at its larger use.
        merged = np.where(np.isnan(stacked), -np.inf, stacked).max(axis=0)
        merged[np.isneginf(merged)] = np.nan
        present = ~np.isnan(merged)
        gone = np.flatnonzero(~present)
        if gone.size:  # a gap carries the last value over; after the last sample the VM is gone
            last_seen = np.flatnonzero(present)[-1]
            filled = np.maximum.accumulate(np.where(present, np.arange(len(merged)), 0))
            merged = merged[filled]
            merged[last_seen + 1 :] = 0.0
        core = hosts[keys[home]].core_mips
        names.append(vm)
        homes.append(home)
        mips.append(core)
        rams.append(ram[vm])
        traces.append(np.clip(merged * 100 / (core * 1e6), 0.0, 100.0))
    if not names:
        return None
    return Inventory(
        host_names=np.array([hosts[k].name for k in keys]),
        host_pes=np.array([hosts[k].cores for k in keys]),
        host_pe_mips=np.array([hosts[k].core_mips for k in keys]),
        host_ram_mb=np.array([hosts[k].ram_mb for k in keys]),
        power_tables=tables,
        host_power=kinds,
        vm_names=np.array(names),
        vm_mips=np.array(mips),
        vm_ram_mb=np.array(rams),
        vm_home=np.array(homes),
        traces=np.array(traces),
        interval=float(step),
    )


def parse_time(text: str) -> float:
    """Unix seconds, or an RFC 3339 time (2026-12-01T00:00:00Z)."""
    try:
        return float(text)
    except ValueError:
        pass
    from datetime import datetime

    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InputError(f"{text!r}: not a time (Unix seconds or 2026-12-01T00:00:00Z)") from None
    if moment.tzinfo is None:
        raise InputError(f"{text!r}: give the time zone (Z or +00:00)")
    return moment.timestamp()


def time_range(
    start: str | None, end: str | None, span: str | None, now: float
) -> tuple[float, float]:
    """(start, end) from --start/--end/--range; ``now`` is injected (the end by default)."""
    stop = parse_time(end) if end else now
    if start and span:
        raise InputError("give --start or --range, not both")
    if start:
        return parse_time(start), stop
    if span:
        return stop - parse_duration(span, "--range", positive=True), stop
    raise InputError("give --start (and --end) or --range with --prometheus-url")


def save_days(days: dict[str, Inventory], folder: Path) -> None:
    """Each day as ``<day>.npz`` in ``folder``, where ``simulate``/``tune`` find it as a day."""
    for name, inventory in days.items():
        inventory.save(folder / f"{name}.npz")
