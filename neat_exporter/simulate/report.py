"""Results of simulated days as a text table, CSV, JSON or a plot."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from neat_exporter.simulate.accounting import DayResult

METRICS = ("energy_kwh", "slatah", "pdm", "slav", "esv", "migrations")


def medians(results: Sequence[DayResult]) -> list[dict]:
    """Per policy (in first-seen order), the median of each metric over its days on its own,
    as P1's Table V reports them."""
    by_policy: dict[str, list[DayResult]] = {}
    for result in results:
        by_policy.setdefault(result.policy, []).append(result)
    rows = []
    for policy, days in by_policy.items():
        row: dict = {"policy": policy, "days": len(days)}
        for metric in (*METRICS, "seconds"):
            row[metric] = float(np.median([getattr(day, metric) for day in days]))
        rows.append(row)
    return rows


def _plain(result: DayResult) -> dict:
    return {
        key: (float(value) if isinstance(value, np.floating) else value)
        for key, value in result.as_dict().items()
    }


def to_json(results: Sequence[DayResult]) -> str:
    return json.dumps(
        {"results": [_plain(result) for result in results], "medians": medians(results)},
        indent=2,
    )


def to_csv(results: Sequence[DayResult]) -> str:
    buffer = io.StringIO()
    fields = list(_plain(results[0])) if results else ["day", "policy", *METRICS]
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for result in results:
        writer.writerow(_plain(result))
    return buffer.getvalue()


HEADER = ("policy", "day", "energy kWh", "SLATAH %", "PDM %", "SLAV e-5", "ESV e-3", "migr.", "s")


def _cells(policy: str, day: str, values: dict) -> list[str]:
    return [
        policy,
        day,
        f"{values['energy_kwh']:.2f}",
        f"{values['slatah'] * 100:.2f}",
        f"{values['pdm'] * 100:.3f}",
        f"{values['slav'] * 1e5:.2f}",
        f"{values['esv'] * 1e3:.2f}",
        f"{values['migrations']:.0f}",
        f"{values['seconds']:.1f}",
    ]


def to_table(results: Sequence[DayResult]) -> str:
    rows = [_cells(r.policy, r.day, _plain(r)) for r in results]
    days = {r.day for r in results}
    if len(days) > 1:
        rows += [_cells(m["policy"], f"median/{m['days']}", m) for m in medians(results)]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(HEADER)]
    lines = [
        "  ".join(
            cell.ljust(width) if i < 2 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in [list(HEADER), *rows]
    ]
    return "\n".join(lines) + "\n"


def plot(results: Sequence[DayResult], path: str | Path) -> None:
    """One panel per metric: each policy's values over the days (box) and its median."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from neat_exporter.files import write_atomically

    policies = list(dict.fromkeys(r.policy for r in results))
    panels = (
        ("energy_kwh", "Energy (kWh)", 1),
        ("slatah", "SLATAH (%)", 100),
        ("pdm", "PDM (%)", 100),
        ("slav", "SLAV (×10⁻⁵)", 1e5),
        ("esv", "ESV (×10⁻³)", 1e3),
        ("migrations", "VM migrations (×10³)", 1e-3),
    )
    figure, axes = plt.subplots(2, 3, figsize=(15, 8))
    for axis, (metric, title, scale) in zip(axes.flat, panels, strict=False):
        data = [
            [getattr(r, metric) * scale for r in results if r.policy == policy]
            for policy in policies
        ]
        axis.boxplot(data)
        axis.set_xticks(range(1, len(policies) + 1), policies, rotation=45, ha="right")
        axis.set_title(title)
        axis.grid(axis="y", alpha=0.3)
    figure.suptitle("Simulated days (CloudSim 3.0.3 rules, PlanetLab traces)")
    figure.tight_layout()
    suffix = Path(path).suffix.lstrip(".") or "png"
    write_atomically(path, lambda file: figure.savefig(file, format=suffix))
    plt.close(figure)
