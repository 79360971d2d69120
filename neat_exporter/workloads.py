"""Recorded workloads of one host for ``neat-exporter replay``: where they come from and how
they become MHz.

A :class:`Workload` is a grid of steps, one sample per VM per step, in MHz; NaN marks a step at
which a VM was not on the host. Three readers fill it:

- :func:`from_planetlab`: PlanetLab traces (percent of one VM's CPU every 300 s), turned into MHz
  with a host model: a VM at 100 % uses its ``vm_mhz`` (the per-VM sizes are dealt round-robin
  over the traces in name order), the host has ``host_cpu_mhz`` in all.
- :func:`from_csv`: ``time,<vm>,<vm>,...`` rows in MHz or percent.
- :func:`from_prometheus`: a range query of the exporter's own ``neat_vm_cpu_usage_hertz``
  (plus its capacity, hypervisor overhead and VM memory when Prometheus has them).
"""

from __future__ import annotations

import csv
import math
import time as time_module
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import requests

from neat_exporter.errors import InputError
from neat_exporter.parsing import parse_duration
from neat_exporter.promql import PrometheusAPI, RangeSeries, quote
from neat_exporter.traces import is_trace_archive, read_planetlab

PLANETLAB_TIME_STEP = 300.0
"""Seconds between two PlanetLab samples."""

DEFAULT_HOST_CPU_MHZ = 12000.0
"""The single host of Beloglazov & Buyya's MHOD study: 4 cores at 3 GHz."""

DEFAULT_VM_MHZ = (1700.0, 2000.0, 2400.0, 3000.0)
"""The VM sizes of the same study (EC2 instance types), dealt round-robin over the traces."""

DEFAULT_VM_RAM_MB = 1024.0


@dataclass(frozen=True)
class Workload:
    """What one host's VMs used, step by step."""

    vms_mhz: Mapping[str, np.ndarray]
    """Per VM, one MHz value per step; NaN while the VM is not on the host."""
    time_step: float
    """Seconds between two steps."""
    capacity_mhz: float
    """The host's CPU (cores x MHz), before a configuration's ``host_cpu_usable_by_vms``."""
    vms_ram_mb: Mapping[str, float]
    source: str
    """Where the workload was read from, for reports."""
    start: float = 0.0
    """Timestamp of the first sample (Unix seconds, or seconds from the start of the recording).
    A sample is the average over the time step that ends at its timestamp."""
    overhead_mhz: np.ndarray | None = None
    """The hypervisor's own CPU use per step (NaN where unknown); None when not recorded."""
    notes: tuple[str, ...] = field(default=())
    """Host model facts worth printing with the results (e.g. the MHz of each VM at 100 %)."""

    @property
    def steps(self) -> int:
        return len(next(iter(self.vms_mhz.values()))) if self.vms_mhz else 0

    def times(self) -> np.ndarray:
        """Timestamp of every step's sample."""
        return self.start + self.time_step * np.arange(self.steps)


def _positive(value: float, what: str) -> float:
    if not (math.isfinite(value) and value > 0):
        raise InputError(f"{what}: must be a number > 0, got {value!r}")
    return float(value)


def _vm_sizes(names: Sequence[str], vm_mhz: Sequence[float]) -> dict[str, float]:
    if not vm_mhz:
        raise InputError("--vm-mhz: give at least one size")
    sizes = [_positive(mhz, "--vm-mhz") for mhz in vm_mhz]
    return {name: sizes[i % len(sizes)] for i, name in enumerate(names)}


def _stack(series: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Pad every series with NaN (the VM is gone) to the length of the longest."""
    length = max(len(values) for values in series.values())
    return {
        name: np.concatenate([values, np.full(length - len(values), np.nan)])
        for name, values in series.items()
    }


def from_percent(
    percent: Mapping[str, np.ndarray],
    *,
    time_step: float,
    host_cpu_mhz: float,
    vm_mhz: Sequence[float],
    vm_ram_mb: float,
    source: str,
    start: float = 0.0,
) -> Workload:
    """Percent-of-one-VM series to MHz: a VM at 100 % uses its size from ``vm_mhz``."""
    sizes = _vm_sizes(list(percent), vm_mhz)
    vms_mhz = {
        name: np.asarray(values, float) / 100.0 * sizes[name] for name, values in percent.items()
    }
    unique = sorted(set(sizes.values()))
    return Workload(
        vms_mhz=_stack(vms_mhz),
        time_step=time_step,
        capacity_mhz=_positive(host_cpu_mhz, "--host-cpu-mhz"),
        vms_ram_mb=dict.fromkeys(percent, _positive(vm_ram_mb, "--vm-ram-mb")),
        source=source,
        start=start,
        notes=(f"a VM at 100 % uses {', '.join(f'{mhz:g}' for mhz in unique)} MHz",),
    )


def from_planetlab(
    path: str | Path,
    *,
    names: Iterable[str] | None = None,
    count: int | None = None,
    seed: int | None = None,
    host_cpu_mhz: float = DEFAULT_HOST_CPU_MHZ,
    vm_mhz: Sequence[float] = DEFAULT_VM_MHZ,
    vm_ram_mb: float = DEFAULT_VM_RAM_MB,
) -> Workload:
    """PlanetLab traces (a day folder or archive), one VM per trace, 300 s per step."""
    path = Path(path)
    if path.is_dir():
        days = [entry for entry in path.iterdir() if is_trace_archive(entry) or entry.is_dir()]
        if days:
            raise InputError(f"{path}: a folder of days; replay one day, e.g. {sorted(days)[0]}")
    traces = read_planetlab(path, names=names, count=count, seed=seed)
    return from_percent(
        traces,
        time_step=PLANETLAB_TIME_STEP,
        host_cpu_mhz=host_cpu_mhz,
        vm_mhz=vm_mhz,
        vm_ram_mb=vm_ram_mb,
        source=str(path),
        start=PLANETLAB_TIME_STEP,  # the first value averages the day's first 5 minutes
    )


def _parse_time(text: str, where: str) -> float:
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InputError(
            f"{where}: time {text!r} is neither seconds nor an ISO 8601 timestamp"
        ) from None
    return moment.timestamp()


def from_csv(
    path: str | Path,
    *,
    unit: str = "mhz",
    host_cpu_mhz: float = DEFAULT_HOST_CPU_MHZ,
    vm_mhz: Sequence[float] = DEFAULT_VM_MHZ,
    vm_ram_mb: float = DEFAULT_VM_RAM_MB,
) -> Workload:
    """A CSV file: header ``time,<vm>,<vm>,...``, then one row per step.

    ``time`` is seconds (Unix time or from 0) or an ISO 8601 timestamp, strictly increasing; the
    time step is the median spacing. Each cell is the VM's CPU use in ``unit`` (``mhz``, or
    ``percent`` of the VM's size); an empty cell means the VM was not on the host then.
    """
    if unit not in ("mhz", "percent"):
        raise InputError(f"--unit: must be mhz or percent, got {unit!r}")
    path = Path(path)
    try:
        with path.open(newline="") as file:
            rows = list(csv.reader(file))
    except OSError as error:
        raise InputError(f"{path}: cannot read: {error.strerror or error}") from None
    except (UnicodeDecodeError, csv.Error) as error:
        raise InputError(f"{path}: not a CSV file: {error}") from None
    if not rows or not rows[0]:
        raise InputError(f"{path}: empty; expected a header time,<vm>,<vm>,...")
    header = [cell.strip() for cell in rows[0]]
    if header[0].lower() not in ("time", "timestamp") or len(header) < 2:
        raise InputError(f"{path}:1: the header must be time,<vm>,<vm>,..., got {rows[0]!r}")
    vms = header[1:]
    duplicate = next((name for name in vms if not name or vms.count(name) > 1), None)
    if duplicate is not None:
        raise InputError(f"{path}:1: VM column names must be unique and not empty: {duplicate!r}")
    times: list[float] = []
    values: list[list[float]] = []
    for number, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        where = f"{path}:{number}"
        if len(row) != len(header):
            raise InputError(f"{where}: {len(row)} fields, the header has {len(header)}")
        moment = _parse_time(row[0], where)
        if times and moment <= times[-1]:
            raise InputError(f"{where}: time {row[0]!r} is not after the previous row's")
        times.append(moment)
        cells = []
        for name, cell in zip(vms, row[1:], strict=True):
            if not cell.strip():
                cells.append(math.nan)
                continue
            try:
                value = float(cell)
            except ValueError:
                raise InputError(f"{where}: {name}: not a number: {cell!r}") from None
            if not math.isfinite(value) or value < 0:
                raise InputError(f"{where}: {name}: must be a finite number >= 0, got {cell!r}")
            cells.append(value)
        values.append(cells)
    if len(times) < 2:
        raise InputError(f"{path}: needs at least two rows of samples")
    matrix = np.array(values, dtype=float)
    columns = {name: matrix[:, i] for i, name in enumerate(vms)}
    time_step = float(np.median(np.diff(times)))
    common = {"time_step": time_step, "source": str(path), "start": times[0]}
    if unit == "percent":
        return from_percent(
            columns, host_cpu_mhz=host_cpu_mhz, vm_mhz=vm_mhz, vm_ram_mb=vm_ram_mb, **common
        )
    return Workload(
        vms_mhz=columns,
        capacity_mhz=_positive(host_cpu_mhz, "--host-cpu-mhz"),
        vms_ram_mb=dict.fromkeys(vms, _positive(vm_ram_mb, "--vm-ram-mb")),
        **common,
    )


# --- Prometheus ---------------------------------------------------------------------------------


def parse_timestamp(text: str, now: float | None = None) -> float:
    """Unix seconds from Unix seconds, RFC 3339, ``now`` or ``now-<duration>``."""
    now = time_module.time() if now is None else now
    text = text.strip()
    if text == "now":
        return now
    if text.startswith("now-"):
        return now - parse_duration(text[4:], "time", positive=True)
    return _parse_time(text, "time")


class PrometheusQuery:
    """Range queries against one Prometheus, each series restricted to one host.

    With ``host``, series are joined on (instance, job) to ``neat_host_info{host=...}``; with
    ``instance``, selected by that label; with neither, every series is taken.
    """

    def __init__(
        self,
        url: str,
        *,
        start: float,
        end: float,
        step: float,
        host: str | None = None,
        instance: str | None = None,
        timeout: float = 30.0,
        session: requests.Session | None = None,
    ):
        if end <= start:
            raise InputError("--end must be after --start")
        self.api = PrometheusAPI(url, timeout=timeout, session=session)
        self.url = self.api.url
        self.start, self.end, self.step = start, end, step
        self.host, self.instance = host, instance

    def expression(self, metric: str) -> str:
        if self.instance is not None:
            return f"{metric}{{instance={quote(self.instance)}}}"
        if self.host is not None:
            info = f"max by (instance, job) (neat_host_info{{host={quote(self.host)}}})"
            return f"{metric} * on (instance, job) group_left () {info}"
        return metric

    def range(self, metric: str) -> list[RangeSeries]:
        """The matrix of ``metric`` for this host."""
        return self.api.query_range(self.expression(metric), self.start, self.end, self.step)

    def grid(self, matrix: list[RangeSeries]) -> list[np.ndarray]:
        """Each series' values on the step grid (NaN where it has no sample)."""
        steps = math.floor((self.end - self.start) / self.step + 1e-9) + 1
        rows = []
        for series in matrix:
            row = np.full(steps, np.nan)
            for timestamp, value in series.values:
                index = round((timestamp - self.start) / self.step)
                if 0 <= index < steps:
                    row[index] = value
            rows.append(row)
        return rows


def _last_value(row: np.ndarray) -> float | None:
    known = row[np.isfinite(row)]
    return float(known[-1]) if len(known) else None


def from_prometheus(
    query: PrometheusQuery,
    *,
    host_cpu_mhz: float | None = None,
    vm_ram_mb: float = DEFAULT_VM_RAM_MB,
) -> Workload:
    """The exporter's own metrics for one host, read back from Prometheus.

    VM CPU is ``neat_vm_cpu_usage_hertz`` by ``vm_uuid``. The capacity is ``host_cpu_mhz`` or
    else the newest ``neat_host_cpu_capacity_hertz`` (already the usable capacity); the
    hypervisor overhead is ``neat_host_hypervisor_cpu_usage_hertz`` when present; VM memory is
    the newest ``neat_vm_memory_max_bytes``, else ``vm_ram_mb``.
    """
    who = (
        f"host {query.host!r}"
        if query.host is not None
        else f"instance {query.instance!r}"
        if query.instance is not None
        else "any host"
    )
    cpu = query.range("neat_vm_cpu_usage_hertz")
    if not cpu:
        raise InputError(
            f"Prometheus at {query.url}: no neat_vm_cpu_usage_hertz series for {who} in that time"
        )
    instances = sorted({series.labels.get("instance", "") for series in cpu})
    if len(instances) > 1:
        raise InputError(
            f"Prometheus at {query.url}: VM series of {len(instances)} instances "
            f"({', '.join(instances[:4])}); choose one with --host or --instance"
        )
    rows = query.grid(cpu)
    vms_mhz: dict[str, np.ndarray] = {}
    for series, row in zip(cpu, rows, strict=True):
        name = series.labels.get("vm_uuid")
        if name is None:
            raise InputError("neat_vm_cpu_usage_hertz: a series without a vm_uuid label")
        vms_mhz[name] = row / 1e6
    vms_mhz = dict(sorted(vms_mhz.items()))

    memory: dict[str, float] = {}
    memory_matrix = query.range("neat_vm_memory_max_bytes")
    for series, row in zip(memory_matrix, query.grid(memory_matrix), strict=True):
        value = _last_value(row)
        if value is not None and value > 0:
            memory[series.labels.get("vm_uuid", "")] = value / 2**20
    default_ram = _positive(vm_ram_mb, "--vm-ram-mb")
    ram = {name: memory.get(name, default_ram) for name in vms_mhz}

    if host_cpu_mhz is None:
        capacity_matrix = query.range("neat_host_cpu_capacity_hertz")
        values = [_last_value(row) for row in query.grid(capacity_matrix)]
        values = [value for value in values if value]
        if not values:
            raise InputError(
                f"Prometheus at {query.url}: no neat_host_cpu_capacity_hertz for {who}; "
                f"give the capacity with --host-cpu-mhz"
            )
        host_cpu_mhz = max(values) / 1e6
    overhead_matrix = query.range("neat_host_hypervisor_cpu_usage_hertz")
    overhead = query.grid(overhead_matrix)[0] / 1e6 if overhead_matrix else None
    return Workload(
        vms_mhz=vms_mhz,
        time_step=query.step,
        capacity_mhz=_positive(host_cpu_mhz, "--host-cpu-mhz"),
        vms_ram_mb=ram,
        source=f"{query.url} ({who})",
        start=query.start,
        overhead_mhz=overhead,
    )
