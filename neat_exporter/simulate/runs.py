"""Many (day, policy) simulations, in parallel processes, with an optional progress line."""

from __future__ import annotations

import functools
import os
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import numpy as np

from neat_exporter.errors import InputError
from neat_exporter.simulate.accounting import DayResult
from neat_exporter.simulate.fleet import FleetSpec, simulate_day
from neat_exporter.simulate.inventory import Inventory
from neat_exporter.simulate.policies import Policy
from neat_exporter.traces import list_days, read_planetlab

FLEET_SUFFIX = ".npz"
"""A day of an operator's fleet (:class:`Inventory`) rather than PlanetLab traces."""


def find_days(folder: str | Path, wanted: Sequence[str]) -> dict[str, Path]:
    """The days to run: ``wanted`` names (``all`` for every day) found in ``folder``:
    PlanetLab days, and fleet days saved from Prometheus (``<day>.npz``)."""
    available = list_days(Path(folder))
    available.update({p.stem: p for p in sorted(Path(folder).glob(f"*{FLEET_SUFFIX}"))})
    if not available:
        raise InputError(f"{folder}: holds no trace days (<day>.tar.gz files or <day>/ folders)")
    if not wanted or list(wanted) == ["all"]:
        return available
    missing = [day for day in wanted if day not in available]
    if missing:
        raise InputError(f"{folder}: no day {missing[0]!r}; days there: {', '.join(available)}")
    return {day: available[day] for day in wanted}


def load_day(path: str | Path, vms: int | None = None) -> np.ndarray:
    """(VMs, samples) percent utilization, VM i being the i-th trace in file-name order."""
    traces = read_planetlab(path, count=vms)
    lengths = {len(values) for values in traces.values()}
    if len(lengths) != 1:
        raise InputError(f"{path}: traces differ in length ({sorted(lengths)} samples)")
    return np.array(list(traces.values()))


@dataclass(frozen=True)
class Job:
    day: str
    path: Path
    policy: Policy
    vms: int | None = None
    spec: FleetSpec = field(default_factory=FleetSpec)


@functools.lru_cache(maxsize=16)
def _load(path: Path, vms: int | None) -> np.ndarray | Inventory:
    """A day's traces or fleet, read once per process however many runs use them."""
    if path.suffix == FLEET_SUFFIX:
        if vms is not None:
            raise InputError(f"{path}: --vms applies to PlanetLab days, not to a fleet")
        return Inventory.load(path)
    return load_day(path, vms)


def run_day(
    path: Path,
    policy: Policy,
    day: str,
    spec: FleetSpec,
    vms: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> DayResult:
    """One day of ``policy``: a PlanetLab day on CloudSim's fleet, or a saved fleet day."""
    data = _load(Path(path), vms)
    if isinstance(data, Inventory):
        return simulate_day(
            data.traces, policy, day=day, spec=spec, progress=progress, inventory=data
        )
    return simulate_day(data, policy, day=day, spec=spec, progress=progress)


def run_job(job: Job, progress: Callable[[int, int], None] | None = None) -> DayResult:
    return run_day(job.path, job.policy, job.day, job.spec, job.vms, progress)


class Progress:
    """``done/total`` with elapsed time and an estimate, rewritten in place on ``stream``."""

    def __init__(self, total: int, stream: TextIO = sys.stderr, label: str = "simulating"):
        self.total, self.stream, self.label = total, stream, label
        self.started = time.monotonic()

    def __call__(self, done: int, total: int | None = None) -> None:
        total = total or self.total
        elapsed = time.monotonic() - self.started
        left = elapsed / done * (total - done) if done else 0.0
        width = 30
        filled = int(width * done / total) if total else width
        self.stream.write(
            f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] {done}/{total} "
            f"{elapsed:5.0f}s elapsed, ~{left:4.0f}s left"
        )
        if done >= total:
            self.stream.write("\n")
        self.stream.flush()


def run_all(
    jobs: Sequence[Job], processes: int | None = None, progress: Progress | None = None
) -> list[DayResult]:
    """Results in the order of ``jobs``; several processes unless there is one job or one CPU."""
    processes = min(processes or os.cpu_count() or 1, len(jobs))
    if processes <= 1:
        results = []
        for index, job in enumerate(jobs):
            if progress and len(jobs) == 1:
                results.append(run_job(job, progress))
            else:
                results.append(run_job(job))
                if progress:
                    progress(index + 1, len(jobs))
        return results
    results: list[DayResult | None] = [None] * len(jobs)
    with ProcessPoolExecutor(processes) as pool:
        futures = {pool.submit(run_job, job): index for index, job in enumerate(jobs)}
        for done, future in enumerate(as_completed(futures), start=1):
            results[futures[future]] = future.result()
            if progress:
                progress(done, len(jobs))
    return results  # type: ignore[return-value]
