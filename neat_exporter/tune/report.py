"""What a search found: its Pareto front as a table and a plot, and the chosen point as the
exporter's configuration and a ``simulate --policy`` text."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from neat_exporter.errors import InputError

COLUMNS = ("trial", "energy kWh", "SLATAH %", "PDM %", "SLAV e-5", "ESV e-3", "migr.", "policy")


def _cells(label: str, figures: Mapping[str, float], policy: str) -> list[str]:
    return [
        label,
        f"{figures['energy_kwh']:.2f}",
        f"{figures['slatah'] * 100:.2f}",
        f"{figures['pdm'] * 100:.3f}",
        f"{figures['slav'] * 1e5:.3f}",
        f"{figures['esv'] * 1e3:.3f}",
        f"{figures['migrations']:.0f}",
        policy,
    ]


def table(rows: Sequence[tuple[str, Mapping[str, float], str]]) -> str:
    """Rows of (label, median figures, policy) as aligned text."""
    cells = [list(COLUMNS), *(_cells(*row) for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(COLUMNS) - 1)]
    lines = []
    for row in cells:
        head = [
            row[i].ljust(widths[i]) if i == 0 else row[i].rjust(widths[i])
            for i in range(len(COLUMNS) - 1)
        ]
        lines.append("  ".join([*head, row[-1]]).rstrip())
    return "\n".join(lines) + "\n"


def front_rows(front: Sequence[Any]) -> list[tuple[str, Mapping[str, float], str]]:
    """The front's trials, lowest ESV first."""
    ordered = sorted(front, key=lambda t: t.user_attrs["medians"]["esv"])
    return [(str(t.number), t.user_attrs["medians"], t.user_attrs["policy"]) for t in ordered]


def choose(trials: Sequence[Any], front: Sequence[Any], pick: int | None) -> Any:
    """The trial numbered ``pick``, or the front's lowest ESV."""
    if pick is None:
        return min(front, key=lambda t: t.user_attrs["medians"]["esv"])
    for trial in trials:
        if trial.number == pick:
            return trial
    raise InputError(f"--pick {pick}: no finished trial has that number")


def config_block(config: Mapping[str, Any], policy: str, placement: float = 1.0) -> str:
    """The exporter's configuration for a chosen point, ready to paste."""
    header = (
        "# neat-exporter configuration found by `neat-exporter tune`; simulated as\n"
        f"#   neat-exporter simulate --policy '{policy}'\n"
    )
    if placement < 1:
        header += (
            f"# Its placement limit is the global manager's: Neat's vm_placement\n"
            f"# best_fit_decreasing with cpu_threshold {placement:g}.\n"
        )
    return header + yaml.safe_dump(dict(config), sort_keys=False)


def plot(
    trials: Sequence[Any], front: Sequence[Any], chosen: Any, path: str | Path, title: str
) -> None:
    """Energy against SLAV of every trial (colour: migrations), the front and the choice."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from neat_exporter.files import write_atomically

    def xy(group: Sequence[Any], metric: str, scale: float) -> list[float]:
        return [t.user_attrs["medians"][metric] * scale for t in group]

    figure, axis = plt.subplots(figsize=(8, 6))
    points = axis.scatter(
        xy(trials, "energy_kwh", 1),
        xy(trials, "slav", 1e5),
        c=xy(trials, "migrations", 1e-3),
        cmap="viridis",
        s=18,
        alpha=0.7,
    )
    figure.colorbar(points, label="migrations (×10³, median)")
    ordered = sorted(front, key=lambda t: t.user_attrs["medians"]["energy_kwh"])
    axis.plot(
        xy(ordered, "energy_kwh", 1), xy(ordered, "slav", 1e5), "o", mfc="none", mec="red",
        ms=9, label="Pareto front",
    )  # fmt: skip
    axis.plot(
        xy([chosen], "energy_kwh", 1), xy([chosen], "slav", 1e5), "*", color="red", ms=16,
        label=f"chosen (trial {chosen.number})",
    )  # fmt: skip
    axis.set_xlabel("energy (kWh, median over the training days)")
    axis.set_ylabel("SLAV (×10⁻⁵, median)")
    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    suffix = Path(path).suffix.lstrip(".") or "png"
    write_atomically(path, lambda file: figure.savefig(file, format=suffix))
    plt.close(figure)
