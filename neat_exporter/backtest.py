"""A backtest of one host: its decisions over a recorded workload, made by the daemon's own
decision logic (what ``neat-exporter replay`` runs and reports).

Every step of a :class:`~neat_exporter.workloads.Workload` becomes one step of the daemon's
:class:`~neat_exporter.pipeline.HostPipeline`: each VM on the host at that step contributes its
newest ``history_length`` samples, a VM that leaves the host loses its history, and a step
without any sample (the recorder was down) is skipped. Nothing is
acted on: VMs stay where the recording has them, so decisions after the first migration request
are what the detectors would have said had nothing moved.

Per configuration the summary gives, as Beloglazov & Buyya's single-host MHOD study does, the
OTF (overload time fraction: the share of steps whose host utilization was at or above
``otf_threshold``) over the steps up to and including the first overload decision, and the time
until that decision; plus every overload and underload decision and the VMs selected.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import itertools
import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from neat_exporter.algorithms import Detection
from neat_exporter.errors import ConfigError, NeatExporterError
from neat_exporter.history import History
from neat_exporter.pipeline import HostPipeline
from neat_exporter.vocabulary import (
    SPEC_FLAGS,
    AlgorithmConfig,
    AlgorithmSet,
    AlgorithmSpec,
)
from neat_exporter.workloads import Workload

if TYPE_CHECKING:
    from neat_exporter.config import Config

DEFAULT_OTF_THRESHOLD = 1.0
"""Utilization counted as overloaded: the host's VMs ask for all of its usable CPU (the MHOD
study's definition of an overloaded host)."""


@dataclass(frozen=True)
class ReplayConfig:
    """What replay takes from an exporter configuration, under a label for reports."""

    label: str
    algorithms: AlgorithmSet
    history_length: int = 100
    host_cpu_usable_by_vms: float = 1.0
    network_migration_bandwidth: float = 10.0

    @classmethod
    def from_config(cls, config: Config, label: str) -> ReplayConfig:
        """From a :class:`neat_exporter.config.Config` (its time_step and interval are not used:
        a replay's time step is the workload's)."""
        return cls(
            label=label,
            algorithms=config.algorithms,
            history_length=config.history_length,
            host_cpu_usable_by_vms=config.host_cpu_usable_by_vms,
            network_migration_bandwidth=config.network_migration_bandwidth,
        )


# --- configurations from files and inline specs -------------------------------------------------


def apply_specs(base: ReplayConfig, specs: Sequence[AlgorithmSpec], label: str) -> ReplayConfig:
    """``base`` with its algorithms replaced by ``specs``. A spec naming the algorithm the base
    already uses only changes the parameters it gives; another algorithm starts from its own
    defaults."""
    algorithms = base.algorithms
    for spec in specs:
        current: AlgorithmConfig = getattr(algorithms, spec.kind)
        params = {**current.params, **spec.params} if current.name == spec.name else spec.params
        algorithms = dataclasses.replace(
            algorithms, **{spec.kind: AlgorithmConfig(spec.name, dict(params))}
        )
    return dataclasses.replace(base, label=label, algorithms=algorithms)


def combine(
    bases: Sequence[ReplayConfig], specs: Mapping[str, Sequence[AlgorithmSpec]]
) -> list[ReplayConfig]:
    """Every base configuration with every combination of the inline specs, each labelled by
    its base (when there are several) and its specs."""
    choices: list[list[AlgorithmSpec | None]] = [
        list(specs.get(kind, ())) or [None] for kind in SPEC_FLAGS
    ]
    configs = []
    for base in bases:
        for combination in itertools.product(*choices):
            chosen = [spec for spec in combination if spec is not None]
            words = [base.label] if len(bases) > 1 or not chosen else []
            words += [
                f"{spec.kind}: {spec.text}" if len(chosen) > 1 else spec.text for spec in chosen
            ]
            configs.append(apply_specs(base, chosen, " | ".join(words)))
    labels = [config.label for config in configs]
    duplicate = next((label for label in labels if labels.count(label) > 1), None)
    if duplicate is not None:
        raise ConfigError(
            "configurations", f"two configurations would both be labelled {duplicate!r}"
        )
    return configs


def validate(config: ReplayConfig, time_step: float) -> None:
    """Build the algorithms once so a bad name or parameter stops the run before it starts."""
    try:
        config.algorithms.validate(time_step)
    except NeatExporterError as error:
        raise ConfigError(config.label, str(error)) from None


# --- running ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One decided step."""

    index: int
    time: float
    utilization: float
    overload: Detection
    underload: Detection
    overloaded: bool
    underloaded: bool
    selected: tuple[str, ...]


@dataclass(frozen=True)
class ReplayResult:
    config: ReplayConfig
    workload: Workload
    otf_threshold: float
    capacity_mhz: float
    migration_time: float | None
    steps: tuple[Step, ...]

    @property
    def first_overload(self) -> Step | None:
        return next((step for step in self.steps if step.overloaded), None)

    @property
    def first_underload(self) -> Step | None:
        return next((step for step in self.steps if step.underloaded), None)

    def time_until(self, step: Step | None) -> float | None:
        """Seconds from the start of the recording (one time step before the first sample,
        which covers that step) to ``step``'s decision: (step index + 1) x time step."""
        return None if step is None else (step.index + 1) * self.workload.time_step

    @property
    def otf(self) -> float | None:
        """Overload time fraction up to and including the first overload decision (or over the
        whole workload when there is none); None without any decided step."""
        first = self.first_overload
        return self._overload_fraction(
            [s for s in self.steps if first is None or s.index <= first.index]
        )

    @property
    def otf_all(self) -> float | None:
        """Overload time fraction over the whole workload (nothing migrated)."""
        return self._overload_fraction(self.steps)

    def _overload_fraction(self, steps: Sequence[Step]) -> float | None:
        if not steps:
            return None
        return sum(s.utilization >= self.otf_threshold for s in steps) / len(steps)

    @property
    def overload_decisions(self) -> int:
        return sum(step.overloaded for step in self.steps)

    @property
    def underload_decisions(self) -> int:
        return sum(step.underloaded for step in self.steps)

    @property
    def selected(self) -> Counter[str]:
        """How often each VM was selected to leave on an overload decision."""
        return Counter(vm for step in self.steps if step.overloaded for vm in step.selected)


def replay(
    workload: Workload,
    config: ReplayConfig,
    otf_threshold: float = DEFAULT_OTF_THRESHOLD,
    stop_at_first_overload: bool = False,
) -> ReplayResult:
    """Run ``config``'s algorithms over ``workload``, one local-manager cycle per step;
    ``stop_at_first_overload`` ends the run there, as the MHOD study's runs do."""
    pipeline = HostPipeline(
        config.algorithms,
        time_step=workload.time_step,
        bandwidth_mb_s=config.network_migration_bandwidth,
        history=History(config.history_length),
    )
    capacity = workload.capacity_mhz * config.host_cpu_usable_by_vms
    overhead_series = workload.overhead_mhz
    times = workload.times()
    steps = []
    for index in range(workload.steps):
        present = {
            name: float(series[index])
            for name, series in workload.vms_mhz.items()
            if math.isfinite(series[index])
        }
        if not present:
            continue
        overhead = None
        if overhead_series is not None and math.isfinite(overhead_series[index]):
            overhead = float(overhead_series[index])
        decision = pipeline.step(
            present, overhead, capacity, {name: workload.vms_ram_mb[name] for name in present}
        )
        if decision is None:
            continue
        steps.append(
            Step(
                index=index,
                time=float(times[index]),
                utilization=decision.utilization[-1],
                overload=decision.overload,
                underload=decision.underload,
                overloaded=decision.overloaded,
                underloaded=decision.underloaded,
                selected=decision.selected,
            )
        )
        if stop_at_first_overload and decision.overloaded:
            break
    return ReplayResult(
        config=config,
        workload=workload,
        otf_threshold=otf_threshold,
        capacity_mhz=capacity,
        migration_time=pipeline.migration_time,
        steps=tuple(steps),
    )


# --- reports ------------------------------------------------------------------------------------


def _detection(detection: Detection) -> dict[str, Any]:
    return {
        "decision": bool(detection.decision),
        "input": _number(detection.input),
        "threshold": _number(detection.threshold),
        "ready": bool(detection.ready),
    }


def _number(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _when(result: ReplayResult, step: Step | None) -> dict[str, Any] | None:
    if step is None:
        return None
    return {"step": step.index, "time": step.time, "seconds": result.time_until(step)}


def summary(result: ReplayResult) -> dict[str, Any]:
    """One configuration's figures, JSON-ready."""
    algorithms = result.config.algorithms
    first = result.first_overload
    return {
        "label": result.config.label,
        "algorithms": {
            kind: {
                "name": getattr(algorithms, kind).name,
                "params": _plain(getattr(algorithms, kind).params),
            }
            for kind in SPEC_FLAGS
        },
        "capacity_mhz": result.capacity_mhz,
        "history_length": result.config.history_length,
        "migration_time_s": result.migration_time,
        "decided_steps": len(result.steps),
        "otf": result.otf,
        "first_overload": _when(result, first),
        "first_overload_selected": list(first.selected) if first else [],
        "first_underload": _when(result, result.first_underload),
        "overload_decisions": result.overload_decisions,
        "underload_decisions": result.underload_decisions,
        "selected": dict(result.selected.most_common()),
    }


def step_records(result: ReplayResult) -> list[dict[str, Any]]:
    return [
        {
            "step": step.index,
            "time": step.time,
            "utilization": step.utilization,
            "overload": _detection(step.overload),
            "underload": _detection(step.underload),
            "decision": "underload"
            if step.underloaded
            else "overload"
            if step.overloaded
            else None,
            "selected": list(step.selected) if step.overloaded else [],
        }
        for step in result.steps
    ]


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [_plain(item) for item in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def workload_summary(workload: Workload, results: Sequence[ReplayResult]) -> dict[str, Any]:
    first = results[0] if results else None
    return {
        "source": workload.source,
        "vms": list(workload.vms_mhz),
        "steps": workload.steps,
        "time_step_s": workload.time_step,
        "start": workload.start,
        "host_cpu_mhz": workload.capacity_mhz,
        "notes": list(workload.notes),
        "otf_threshold": first.otf_threshold if first else None,
        "otf_without_migration": first.otf_all if first else None,
    }


def to_json(results: Sequence[ReplayResult], workload: Workload, steps: bool = True) -> str:
    document = {
        "workload": workload_summary(workload, results),
        "configurations": [
            {**summary(result), **({"steps": step_records(result)} if steps else {})}
            for result in results
        ],
    }
    return json.dumps(document, indent=2, allow_nan=False) + "\n"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _duration(result: ReplayResult, step: Step | None) -> str:
    if step is None:
        return "never"
    seconds = result.time_until(step)
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d} (step {step.index})"


def _selected(result: ReplayResult, top: int = 3) -> str:
    counts = result.selected.most_common()
    if not counts:
        return "-"
    shown = ", ".join(f"{vm} x{count}" for vm, count in counts[:top])
    return shown + (f", +{len(counts) - top} more" if len(counts) > top else "")


TABLE_COLUMNS = (
    "configuration",
    "OTF",
    "first overload",
    "first underload",
    "overloads",
    "underloads",
    "selected (overload)",
)


def table_rows(results: Sequence[ReplayResult]) -> list[list[str]]:
    return [
        [
            result.config.label,
            _percent(result.otf),
            _duration(result, result.first_overload),
            _duration(result, result.first_underload),
            str(result.overload_decisions),
            str(result.underload_decisions),
            _selected(result),
        ]
        for result in results
    ]


def to_table(results: Sequence[ReplayResult], workload: Workload) -> str:
    info = workload_summary(workload, results)
    lines = [
        f"workload: {workload.source}: {len(workload.vms_mhz)} VMs, {workload.steps} steps of "
        f"{workload.time_step:g} s, host {workload.capacity_mhz:g} MHz"
        + "".join(f"; {note}" for note in workload.notes),
        f"OTF: share of steps with utilization >= {info['otf_threshold']:g}, up to the first "
        f"overload decision (without any migration: {_percent(info['otf_without_migration'])})",
        "",
    ]
    rows = [list(TABLE_COLUMNS), *table_rows(results)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(TABLE_COLUMNS))]
    for number, row in enumerate(rows):
        cells = [
            cell.ljust(width) if i in (0, 6) else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
        if number == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines) + "\n"


def to_csv(results: Sequence[ReplayResult]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        [
            "configuration",
            "otf",
            "first_overload_step",
            "first_overload_seconds",
            "first_underload_step",
            "first_underload_seconds",
            "overload_decisions",
            "underload_decisions",
            "migration_time_s",
            "selected",
        ]
    )
    for result in results:
        first, under = result.first_overload, result.first_underload
        writer.writerow(
            [
                result.config.label,
                "" if result.otf is None else f"{result.otf:.6g}",
                "" if first is None else first.index,
                "" if first is None else f"{result.time_until(first):g}",
                "" if under is None else under.index,
                "" if under is None else f"{result.time_until(under):g}",
                result.overload_decisions,
                result.underload_decisions,
                "" if result.migration_time is None else f"{result.migration_time:g}",
                ";".join(f"{vm}={count}" for vm, count in result.selected.most_common()),
            ]
        )
    return buffer.getvalue()
