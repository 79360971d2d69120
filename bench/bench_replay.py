"""Cost of ``neat-exporter replay``: one PlanetLab day (288 steps) of one host through the local
manager, per overload algorithm and number of VMs.

    .venv/bin/python bench/bench_replay.py [--planetlab DIR] [--repeat N]

Prints the median wall time of a whole-day replay over ``--repeat`` runs and the time per step.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from neat_exporter.backtest import ReplayConfig, replay
from neat_exporter.vocabulary import AlgorithmConfig, AlgorithmSet
from neat_exporter.workloads import from_planetlab

ROOT = Path(__file__).resolve().parent.parent
OVERLOADS = (
    AlgorithmConfig("threshold", {"threshold": 0.9}),
    AlgorithmConfig("loess_robust", {"threshold": 1.0, "param": 1.1, "length": 30}),
    AlgorithmConfig("otf", {"otf": 0.2, "threshold": 1.0, "limit": 10}),
    AlgorithmConfig("mhod", {"state_config": [1.0], "otf": 0.2}),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--planetlab", type=Path, default=ROOT.parent / "shared/data/planetlab")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    day = args.planetlab / "20110303.tar.gz"
    print(f"{'overload':<14} {'VMs':>4} {'history':>7} {'day (s)':>8} {'per step (ms)':>14}")
    for vms in (10, 40):
        workload = from_planetlab(day, count=vms, seed=1)
        for history in (100, 288):
            for overload in OVERLOADS:
                algorithms = AlgorithmSet(
                    AlgorithmConfig("last_n_average_threshold", {"threshold": 0.5, "n": 2}),
                    overload,
                    AlgorithmConfig("minimum_migration_time_max_cpu", {"last_n": 2}),
                )
                config = ReplayConfig(overload.name, algorithms, history_length=history)
                times = []
                for _ in range(args.repeat):
                    began = time.perf_counter()
                    replay(workload, config)
                    times.append(time.perf_counter() - began)
                median = statistics.median(times)
                print(
                    f"{overload.name:<14} {vms:>4} {history:>7} {median:8.3f} "
                    f"{1000 * median / workload.steps:14.2f}"
                )


if __name__ == "__main__":
    main()
