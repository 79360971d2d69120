"""PNG pictures of replay results (matplotlib, imported only when a plot is asked for)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from neat_exporter.errors import NeatExporterError
from neat_exporter.files import write_atomically

if TYPE_CHECKING:
    from neat_exporter.backtest import ReplayResult, Step

PANEL_HEIGHT = 2.6
"""Inches per configuration."""

LINES: tuple[tuple[str, Callable[[Step], float | None], dict], ...] = (
    # Drawn wide and pale under the utilization, which it often equals (threshold detectors).
    (
        "overload input",
        lambda step: step.overload.input,
        {"color": "tab:blue", "linewidth": 3.0, "alpha": 0.35, "zorder": 1},
    ),
    (
        "overload threshold",
        lambda step: step.overload.threshold,
        {"color": "tab:blue", "linestyle": "--", "linewidth": 1.0},
    ),
    (
        "underload threshold",
        lambda step: step.underload.threshold,
        {"color": "tab:green", "linestyle": "--", "linewidth": 1.0},
    ),
)
"""What each panel draws besides the utilization: (label, value of a step, line style)."""

MARKERS = (
    ("overload decision", "overloaded", "^", "tab:red"),
    ("underload decision", "underloaded", "v", "tab:green"),
)


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise NeatExporterError(
            "plotting needs matplotlib: pip install 'neat-exporter[plot]'"
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _values(values: Sequence[float | None]) -> np.ndarray:
    return np.array([np.nan if value is None else value for value in values], dtype=float)


def plot_replay(results: Sequence[ReplayResult], path: str | Path) -> None:
    """One panel per configuration: host utilization, the OTF threshold, the overload
    detector's input and threshold, the underload threshold, and every decision marked.
    Written to a temporary file first, so ``path`` is never half-written."""
    plt = _pyplot()
    if not results:
        raise NeatExporterError("nothing to plot: no configuration was replayed")
    workload = results[0].workload
    span = workload.steps * workload.time_step
    # A sample covers the time step before its timestamp: the recording starts one step before
    # the first sample, so a step is drawn at the moment its decision is taken.
    origin = workload.start - workload.time_step
    unit, scale = ("hours", 3600.0) if span > 3 * 3600 else ("minutes", 60.0)

    figure, axes = plt.subplots(
        len(results),
        1,
        sharex=True,
        squeeze=False,
        figsize=(11, 1.2 + PANEL_HEIGHT * len(results)),
        layout="constrained",
    )
    for axis, result in zip(axes[:, 0], results, strict=True):
        steps = result.steps
        x = (np.array([step.time for step in steps], dtype=float) - origin) / scale
        utilization = np.array([step.utilization for step in steps], dtype=float)
        axis.plot(x, utilization, color="0.3", linewidth=1.0, zorder=2, label="host utilization")
        axis.axhline(
            result.otf_threshold,
            color="tab:red",
            linestyle=":",
            linewidth=1.0,
            label=f"overloaded at >= {result.otf_threshold:g} (OTF)",
        )
        for label, value, style in LINES:
            values = _values([value(step) for step in steps])
            if np.isfinite(values).any():
                axis.plot(x, values, label=label, **style)
        for label, decided, marker, color in MARKERS:
            chosen = np.array([getattr(step, decided) for step in steps], dtype=bool)
            axis.scatter(
                x[chosen],
                utilization[chosen],
                marker=marker,
                color=color,
                s=24,
                zorder=3,
                label=label,
            )
        first = result.first_overload
        if first is not None:
            axis.axvline((first.time - origin) / scale, color="tab:red", linewidth=1.5)
        axis.set_ylabel("ratio")
        axis.set_ylim(bottom=0)
        axis.grid(True, alpha=0.3)
        axis.set_title(_title(result, unit, scale), fontsize=10, loc="left")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside lower center", ncol=4, fontsize=8, frameon=False)
    since = (
        datetime.fromtimestamp(origin, UTC).strftime("%Y-%m-%d %H:%M UTC")
        if origin > 1e8  # Unix time rather than seconds from 0
        else "the start"
    )
    axes[-1, 0].set_xlabel(f"{unit} since {since}")
    figure.suptitle(
        f"{workload.source}: {len(workload.vms_mhz)} VMs, host {workload.capacity_mhz:g} MHz",
        fontsize=11,
    )
    write_atomically(path, lambda file: figure.savefig(file, format="png", dpi=110))
    plt.close(figure)


def _title(result: ReplayResult, unit: str, scale: float) -> str:
    otf = "-" if result.otf is None else f"{100 * result.otf:.1f}%"
    first = result.first_overload
    when = "never" if first is None else f"{result.time_until(first) / scale:.1f} {unit}"
    return (
        f"{result.config.label}    OTF {otf}    first overload: {when}    "
        f"overloads {result.overload_decisions}, underloads {result.underload_decisions}"
    )
