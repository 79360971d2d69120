"""How fast `neat-exporter tune` searches on the real workload.

1. A full ten-day evaluation of one policy in --jobs processes (the test days of a search),
   for each detector of the THR/IQR/MAD/LR family, as CloudSim's port and as the exporter's
   own detector (target: under 60 s with two processes).
2. Trials per minute: --trials trials of the default search space on --days, in --jobs
   processes, in a fresh SQLite study (the figure a search budget is planned with).

    .venv/bin/python bench/bench_tune.py [--traces DIR] [--jobs 2] [--trials 8] [--no-ten-days]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from neat_exporter.simulate import parse_policy
from neat_exporter.simulate.runs import Job, find_days, run_all
from neat_exporter.tune.space import Space
from neat_exporter.tune.study import Search, Workload, finished_trials, run

FAMILY = (
    "thr-mmt-0.8",
    "iqr-mmt-1.5",
    "mad-mmt-2.5",
    "lr-mmt-1.2",
    "neat:threshold threshold=0.8",
    "neat:iqr_threshold threshold=1.5 limit=12",
    "neat:mad_threshold threshold=2.5 limit=12",
    "neat:loess param=1.2 threshold=1 length=10",
)

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", default=str(ROOT.parent / "shared" / "data" / "planetlab"))
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--days", nargs="+", default=["20110303"])
    parser.add_argument("--policies", nargs="+", default=list(FAMILY))
    parser.add_argument("--no-ten-days", action="store_true")
    args = parser.parse_args()

    every = find_days(args.traces, ["all"])
    if not args.no_ten_days:
        for policy in args.policies:
            jobs = [Job(day, path, parse_policy(policy)) for day, path in every.items()]
            started = time.perf_counter()
            run_all(jobs, args.jobs)
            print(
                f"ten days, {policy}, {args.jobs} processes: "
                f"{time.perf_counter() - started:.1f} s wall",
                flush=True,
            )
    days = find_days(args.traces, args.days)
    with tempfile.TemporaryDirectory(prefix="tun-bench-") as folder:
        search = Search(
            storage=f"sqlite:///{folder}/bench.db",
            study="bench",
            space=Space(),
            workload=Workload(days),
            seed=1,
            trials=args.trials,
            progress=False,
        )
        started = time.perf_counter()
        run(search, args.jobs)
        minutes = (time.perf_counter() - started) / 60
        import optuna

        study = optuna.load_study(study_name="bench", storage=search.storage)
        done = len(finished_trials(study))
    print(
        f"search, {done} trials on {len(days)} day(s) ({' '.join(days)}), {args.jobs} processes: "
        f"{minutes:.2f} min, {done / minutes:.1f} trials per minute"
    )


if __name__ == "__main__":
    main()
