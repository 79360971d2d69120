"""How fast `neat-exporter simulate` is on the real workload.

1. One day (20110303: 1052 VMs, 800 hosts, 287 ticks) of LR-MMT-1.2, in this process,
   --repeat times: the median wall time (target: under 15 s on 2 cores).
2. The full grid of docs/reproduction.md, 10 days × the 8 policies of P1's Table V, in
   --jobs processes: the total wall time (target: under 10 minutes) and each policy's median
   seconds per day. --save FILE keeps the grid's results as JSON (the reproduction's input).

    .venv/bin/python bench/bench_simulate.py [--traces DIR] [--repeat 3] [--no-grid]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from neat_exporter.simulate import PAPER_POLICIES, parse_policy, report
from neat_exporter.simulate.fleet import simulate_day
from neat_exporter.simulate.runs import Job, Progress, find_days, load_day, run_all

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", default=str(ROOT.parent / "shared" / "data" / "planetlab"))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--no-grid", action="store_true")
    parser.add_argument("--save", metavar="FILE")
    args = parser.parse_args()

    days = find_days(args.traces, ["all"])
    traces = load_day(days["20110303"])
    times = []
    for _ in range(args.repeat):
        started = time.perf_counter()
        result = simulate_day(traces, parse_policy("lr-mmt-1.2"), day="20110303")
        times.append(time.perf_counter() - started)
    print(
        f"one day, lr-mmt-1.2, {traces.shape[0]} VMs: median {statistics.median(times):.2f} s "
        f"over {args.repeat} runs (min {min(times):.2f} s); {result.migrations} migrations, "
        f"{result.energy_kwh:.2f} kWh"
    )
    if args.no_grid:
        return
    jobs = [
        Job(day, path, parse_policy(name)) for name in PAPER_POLICIES for day, path in days.items()
    ]
    started = time.perf_counter()
    results = run_all(jobs, args.jobs, Progress(len(jobs)) if sys.stderr.isatty() else None)
    total = time.perf_counter() - started
    print(
        f"grid, {len(days)} days × {len(PAPER_POLICIES)} policies, {args.jobs} processes: "
        f"{total:.0f} s wall"
    )
    for row in report.medians(results):
        print(f"  {row['policy']:<12} median {row['seconds']:6.2f} s per day")
    if args.save:
        Path(args.save).write_text(report.to_json(results))


if __name__ == "__main__":
    main()
