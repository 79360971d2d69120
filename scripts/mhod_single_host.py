"""Beloglazov & Buyya's single-host MHOD study (IEEE TPDS 2013, §10) replayed with neat_exporter.

One host of 12,000 MHz (4 x 3 GHz), VMs of 1,700, 2,000, 2,400 or 3,000 MHz, 30 s migrations,
one decision every 300 s. VM sets are built as the study's generator built them: pick a
threshold among 0.80-1.00 and add random PlanetLab traces, each with a random VM size, while
the VMs' first values fit under threshold x capacity; keep a set only when its OTF over the day
is at least 20 % and its OTF over the first 30 steps at most 9 %. Every algorithm runs on every
set through ``neat_exporter.backtest`` (Neat's local manager logic, the whole day's history kept)
until its first overload decision; the OTF counts steps with utilization >= 1.0 up to and
including that decision.

    .venv/bin/python scripts/mhod_single_host.py --traces ../shared/data/planetlab \\
        --sets 100 --seed 1 --json mhod.json --plot docs/replay-mhod-study.png

Prints one row per algorithm and the MHOD-vs-LR/LRR comparison at matched OTF, with the
study's published means beside ours (IEEE TPDS 2013, §10).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np

from neat_exporter.backtest import ReplayConfig, replay
from neat_exporter.traces import list_days, read_planetlab
from neat_exporter.vocabulary import AlgorithmConfig, AlgorithmSet
from neat_exporter.workloads import PLANETLAB_TIME_STEP, Workload

HOST_MHZ = 12000.0
VM_MHZ = (1700.0, 2000.0, 2400.0, 3000.0)
FIT_THRESHOLDS = (0.8, 0.85, 0.9, 0.95, 1.0)
MIGRATION_TIME = 30.0
BANDWIDTH = 10.0  # MB/s: 300 MB VMs migrate in 30 s
HISTORY = 288  # the study's algorithms saw the whole day so far

UNDERLOAD = AlgorithmConfig("threshold", {"threshold": 0.0})  # the study has no underload
SELECTION = AlgorithmConfig("minimum_migration_time_max_cpu", {"last_n": 2})


def mhod(otf: float) -> AlgorithmConfig:
    return AlgorithmConfig(
        "mhod",
        {
            "state_config": [1.0],
            "otf": otf,
            "window_sizes": [30, 40, 50, 60, 70, 80, 90, 100],
            "bruteforce_step": 0.5,
            "learning_steps": 10,
        },
    )


def loess(name: str, param: float) -> AlgorithmConfig:
    return AlgorithmConfig(name, {"threshold": 1.0, "param": param, "length": 30})


# label -> (overload algorithm, published mean time until migration in s, mean OTF)
ALGORITHMS = {
    "MHOD-0.1": (mhod(0.1), 15888, 0.0906),
    "MHOD-0.2": (mhod(0.2), 38352, 0.1956),
    "MHOD-0.3": (mhod(0.3), 69144, 0.2612),
    "LR-1.2": (loess("loess", 1.2), 7551, 0.0677),
    "LR-1.1": (loess("loess", 1.1), 26712, 0.1470),
    "LR-1.0": (loess("loess", 1.0), 68328, 0.2787),
    "LRR-1.2": (loess("loess_robust", 1.2), 8109, 0.0719),
    "LRR-1.1": (loess("loess_robust", 1.1), 26121, 0.1414),
    "LRR-1.0": (loess("loess_robust", 1.0), 66306, 0.2759),
    # MHOD with the OTF parameter set to the mean OTF LR and LRR reached in the study (§2.3).
    "MHOD-0.0675": (mhod(0.0675), None, None),
    "MHOD-0.1535": (mhod(0.1535), None, None),
    "MHOD-0.40": (mhod(0.40), None, None),
    "MHOD-0.0676": (mhod(0.0676), None, None),
    "MHOD-0.149": (mhod(0.149), None, None),
    "MHOD-0.366": (mhod(0.366), None, None),
}
MATCHED = {
    "LR": (
        ["LR-1.2", "LR-1.1", "LR-1.0"],
        ["MHOD-0.0675", "MHOD-0.1535", "MHOD-0.40"],
        34197,
        39803,
    ),
    "LRR": (
        ["LRR-1.2", "LRR-1.1", "LRR-1.0"],
        ["MHOD-0.0676", "MHOD-0.149", "MHOD-0.366"],
        33512,
        38686,
    ),
}


def load_traces(folder: Path) -> list[tuple[str, np.ndarray]]:
    traces = []
    for day, path in list_days(folder).items():
        traces += [
            (f"{day}/{name}", values / 100.0) for name, values in read_planetlab(path).items()
        ]
    return traces


def vm_sets(traces, count: int, rng: random.Random) -> list[list[tuple[str, np.ndarray, float]]]:
    sets = []
    while len(sets) < count:
        room = rng.choice(FIT_THRESHOLDS) * HOST_MHZ
        vms = []
        while True:
            name, utilization = rng.choice(traces)
            size = rng.choice(VM_MHZ)
            if room < size * utilization[0]:
                break
            vms.append((name, utilization, size))
            room -= size * utilization[0]
        if not vms:
            continue
        host = sum(u * size for _, u, size in vms) / HOST_MHZ
        if np.mean(host >= 1.0) >= 0.2 and np.mean(host[:30] >= 1.0) <= 0.09:
            sets.append(vms)
    return sets


def workload(vms, number: int) -> Workload:
    names = [f"{i}:{name}" for i, (name, _, _) in enumerate(vms)]
    return Workload(
        vms_mhz={key: u * size for key, (_, u, size) in zip(names, vms, strict=True)},
        time_step=PLANETLAB_TIME_STEP,
        capacity_mhz=HOST_MHZ,
        vms_ram_mb=dict.fromkeys(names, MIGRATION_TIME * BANDWIDTH),
        source=f"set {number}",
        start=PLANETLAB_TIME_STEP,
    )


def mhod_time_at(otf: float, rows: list[dict]) -> float | None:
    """MHOD's mean time until migration at a mean OTF, interpolated between the MHOD
    configurations run; None outside their range."""
    points = sorted(
        (row["mean_otf"], row["mean_time_s"]) for row in rows if row["algorithm"].startswith("MHOD")
    )
    xs, ys = zip(*points, strict=True)
    return float(np.interp(otf, xs, ys)) if xs[0] <= otf <= xs[-1] else None


def mean_ci(values) -> tuple[float, float]:
    """Mean and the half-width of its normal-approximation 95 % interval."""
    values = np.asarray(values, dtype=float)
    return float(values.mean()), float(1.96 * values.std(ddof=1) / np.sqrt(len(values)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--traces", type=Path, required=True, help="folder of PlanetLab days")
    parser.add_argument("--sets", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, help="write per-run results here")
    parser.add_argument("--plot", type=Path, help="write the two figures into this PNG")
    args = parser.parse_args()

    began = time.monotonic()
    rng = random.Random(args.seed)
    sets = vm_sets(load_traces(args.traces), args.sets, rng)
    print(
        f"{len(sets)} VM sets, {np.mean([len(s) for s in sets]):.1f} VMs on average "
        f"({time.monotonic() - began:.0f} s)",
        file=sys.stderr,
    )
    runs: dict[str, list[dict]] = {label: [] for label in ALGORITHMS}
    for number, vms in enumerate(sets):
        load = workload(vms, number)
        for label, (overload, _, _) in ALGORITHMS.items():
            config = ReplayConfig(
                label,
                AlgorithmSet(UNDERLOAD, overload, SELECTION),
                history_length=HISTORY,
                network_migration_bandwidth=BANDWIDTH,
            )
            result = replay(load, config, 1.0, stop_at_first_overload=True)
            first = result.first_overload
            steps = first.index + 1 if first else load.steps
            runs[label].append({"set": number, "otf": result.otf, "time": steps * load.time_step})
        print(f"set {number + 1}/{len(sets)} ({time.monotonic() - began:.0f} s)", file=sys.stderr)

    rows = []
    print(
        f"{'algorithm':<12} {'mean OTF':>9} {'study':>7} {'mean time s':>12} {'study':>7}  "
        f"OTF > parameter"
    )
    for label, (overload, study_time, study_otf) in ALGORITHMS.items():
        otf = [run["otf"] for run in runs[label]]
        seconds = [run["time"] for run in runs[label]]
        over = ""
        if overload.name == "mhod":
            over = f"{sum(o > overload.params['otf'] for o in otf)}/{len(otf)}"
        rows.append(
            {
                "algorithm": label,
                "mean_otf": float(np.mean(otf)),
                "median_otf": float(np.median(otf)),
                "mean_time_s": float(np.mean(seconds)),
                "study_otf": study_otf,
                "study_time_s": study_time,
            }
        )
        print(
            f"{label:<12} {100 * np.mean(otf):8.2f}% "
            f"{'' if study_otf is None else f'{100 * study_otf:6.2f}%':>7} "
            f"{np.mean(seconds):12.0f} {'' if study_time is None else study_time:>7}  {over}"
        )
    print()
    comparison = {}
    for family, (benchmarks, matched, study_bench, study_mhod) in MATCHED.items():
        bench = np.concatenate([[r["time"] for r in runs[label]] for label in benchmarks])
        ours = np.concatenate([[r["time"] for r in runs[label]] for label in matched])
        difference, half = mean_ci(ours - bench)
        comparison[family] = {
            "benchmark_mean_s": float(bench.mean()),
            "mhod_mean_s": float(ours.mean()),
            "difference_s": difference,
            "ci95_s": half,
            "study_benchmark_s": study_bench,
            "study_mhod_s": study_mhod,
        }
        print(
            f"MHOD at the study's {family}-matched OTFs: {ours.mean():.0f} s, "
            f"{family} {bench.mean():.0f} s, "
            f"difference {difference:.0f} s (95% CI +-{half:.0f}), "
            f"{100 * (ours.mean() / bench.mean() - 1):+.1f}%; study: {study_mhod} vs "
            f"{study_bench} s, {100 * (study_mhod / study_bench - 1):+.1f}%"
        )
    print()
    print("at equal OTF (MHOD interpolated between its configurations):")
    for row in rows:
        if row["algorithm"].startswith(("LR", "LRR")):
            at = mhod_time_at(row["mean_otf"], rows)
            versus = (
                "outside MHOD's range"
                if at is None
                else (f"MHOD {at:.0f} s ({100 * (at / row['mean_time_s'] - 1):+.1f}%)")
            )
            print(
                f"  {row['algorithm']:<8} OTF {100 * row['mean_otf']:5.2f}%: "
                f"{row['mean_time_s']:.0f} s, {versus}"
            )
    print(f"({time.monotonic() - began:.0f} s)", file=sys.stderr)

    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "sets": len(sets),
                    "seed": args.seed,
                    "summary": rows,
                    "matched": comparison,
                    "runs": runs,
                },
                indent=1,
            )
            + "\n"
        )
    if args.plot:
        plot(rows, args.plot)
    return 0


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_label = {row["algorithm"]: row for row in rows}
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8), layout="constrained")
    mhod_rows = sorted(
        (row for row in rows if row["algorithm"].startswith("MHOD")),
        key=lambda row: ALGORITHMS[row["algorithm"]][0].params["otf"],
    )
    params = [ALGORITHMS[row["algorithm"]][0].params["otf"] for row in mhod_rows]
    left.plot([0, 0.42], [0, 0.42], color="0.6", linestyle=":", label="OTF = parameter")
    left.plot(
        params,
        [r["mean_otf"] for r in mhod_rows],
        "o-",
        color="tab:blue",
        label="MHOD, neat_exporter replay (mean)",
    )
    left.plot(
        params,
        [r["median_otf"] for r in mhod_rows],
        "s",
        color="tab:blue",
        alpha=0.4,
        label="MHOD, neat_exporter replay (median)",
    )
    published = [
        (ALGORITHMS[label][0].params["otf"], by_label[label]["study_otf"])
        for label in ("MHOD-0.1", "MHOD-0.2", "MHOD-0.3")
    ]
    left.plot(
        *zip(*published, strict=True),
        "D",
        mfc="none",
        color="black",
        markersize=8,
        label="MHOD, TPDS 2013 (mean)",
    )
    left.set_xlabel("MHOD OTF parameter")
    left.set_ylabel("OTF achieved (utilization >= 1.0)")
    left.set_title("OTF achieved versus the OTF parameter", loc="left", fontsize=10)
    left.legend(fontsize=8)
    left.grid(True, alpha=0.3)

    styles = {"MHOD": ("tab:blue", "o"), "LR": ("tab:orange", "^"), "LRR": ("tab:green", "v")}
    for family, (color, marker) in styles.items():
        members = [row for row in rows if row["algorithm"].split("-")[0] == family]
        members.sort(key=lambda row: row["mean_otf"])
        right.plot(
            [100 * r["mean_otf"] for r in members],
            [r["mean_time_s"] / 3600 for r in members],
            marker=marker,
            color=color,
            label=f"{family}, neat_exporter replay",
        )
        study = [
            (100 * r["study_otf"], r["study_time_s"] / 3600)
            for r in members
            if r["study_otf"] is not None
        ]
        right.plot(
            *zip(*study, strict=True),
            marker=marker,
            mfc="none",
            linestyle="none",
            color=color,
            markersize=9,
            label=f"{family}, TPDS 2013",
        )
    right.set_xlabel("mean OTF (%)")
    right.set_ylabel("mean time until the first migration (h)")
    right.set_title("Time until migration versus OTF: MHOD, LR, LRR", loc="left", fontsize=10)
    right.legend(fontsize=8)
    right.grid(True, alpha=0.3)
    figure.savefig(path, dpi=100)


if __name__ == "__main__":
    sys.exit(main())
