"""Per-call cost of every detector, and of MHOD over a PlanetLab day replayed call by call.

    .venv/bin/python bench/bench_algorithms.py [--calls N] [--planetlab DIR] [--no-oracle]

Detectors are timed in the exporter's call pattern: a sliding window of the newest
``history`` values, shifted by one value per call, the state carried between calls. Figures are
medians over ``--calls`` calls (after one warm-up call). The PlanetLab part replays one host
(six VMs of a day, median utilization 0.8) through MHOD with a growing history
and with a sliding window of 100 values (Neat's data_collector_data_length), and, unless
--no-oracle, through a transcription of Neat's full per-call rebuild for comparison.
"""

from __future__ import annotations

import argparse
import statistics
import tarfile
import time
from pathlib import Path

import numpy as np

from neat_exporter.algorithms import build

ROOT = Path(__file__).resolve().parent.parent
HISTORIES = (30, 100, 500, 5000)
DETECTORS = [
    ("underload", "always_underloaded", {}),
    ("underload", "threshold", {"threshold": 0.3}),
    ("underload", "last_n_average_threshold", {"threshold": 0.5, "n": 2}),
    ("overload", "never_overloaded", {}),
    ("overload", "threshold", {"threshold": 0.9}),
    ("overload", "last_n_average_threshold", {"threshold": 0.95, "n": 2}),
    ("overload", "mad_threshold", {"threshold": 2.5, "limit": 12}),
    ("overload", "iqr_threshold", {"threshold": 1.5, "limit": 12}),
    ("overload", "loess", {"threshold": 0.8, "param": 1.2, "length": 30}),
    ("overload", "loess_robust", {"threshold": 0.8, "param": 1.2, "length": 30}),
    ("overload", "otf", {"otf": 0.2, "threshold": 0.8, "limit": 10}),
    ("overload", "mhod", {}),
]


def synthetic(length: int, seed: int = 1) -> list[float]:
    """A bounded random walk around 0.75 crossing MHOD's 0.8 threshold often."""
    rng = np.random.default_rng(seed)
    steps = rng.normal(0, 0.05, length)
    values = np.empty(length)
    level = 0.75
    for i, step in enumerate(steps):
        level = min(max(level + step - 0.05 * (level - 0.75), 0.0), 1.3)
        values[i] = level
    return values.tolist()


def per_call_ms(kind: str, name: str, params: dict, history: int, calls: int) -> float:
    detector = build(kind, name, params, time_step=300, migration_time=20.0)
    values = synthetic(history + calls + 1)
    state = detector.evaluate(values[:history], None).state
    times = []
    for i in range(1, calls + 1):
        window = values[i : i + history]
        start = time.perf_counter()
        state = detector.evaluate(window, state).state
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def planetlab_host(directory: Path) -> list[float]:
    """One host-day: six moderately busy VMs (mean 20–60 %) of the first day, the host sized so
    that its median utilization is 0.8 (the same host as the test suite's day replay)."""
    day = sorted(directory.glob("*.tar.gz"))[0]
    traces = {}
    with tarfile.open(day) as tar:
        for member in tar.getmembers():
            if member.isfile():
                values = tar.extractfile(member).read().split()
                traces[member.name] = [int(v) / 100 for v in values]
    names = [n for n in sorted(traces) if 0.2 <= np.mean(traces[n]) <= 0.6][:6]
    total = np.sum([traces[n] for n in names], axis=0)
    return (total / (np.median(total) / 0.8)).tolist()


def replay(host: list[float], window: int | None, oracle: bool) -> tuple[list[float], list[float]]:
    """Wall-clock and CPU seconds of every call (CPU time shows what scheduling noise is)."""
    if oracle:
        import _harness  # noqa: F401  (the oracle is the tests')
        from neat_mhod_oracle import OracleMhod

        params = build("overload", "mhod", {}).params
        detect = OracleMhod(params, 300, 20.0)
        call = lambda history, state: (detect(history), None)  # noqa: E731
    else:
        detector = build("overload", "mhod", {}, time_step=300, migration_time=20.0)
        call = detector.evaluate
    state, times, cpu_times = None, [], []
    for k in range(1, len(host) + 1):
        history = host[:k] if window is None else host[max(0, k - window) : k]
        start, start_cpu = time.perf_counter(), time.thread_time()
        result = call(history, state)
        times.append(time.perf_counter() - start)
        cpu_times.append(time.thread_time() - start_cpu)
        state = result[1] if oracle else result.state
    return times, cpu_times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--planetlab", type=Path, default=ROOT.parent / "shared/data/planetlab")
    parser.add_argument("--no-oracle", action="store_true")
    args = parser.parse_args()

    print(f"median ms per call, sliding history, {args.calls} calls")
    print(f"{'detector':40}" + "".join(f"{h:>10}" for h in HISTORIES))
    for kind, name, params in DETECTORS:
        cells = [per_call_ms(kind, name, params, h, args.calls) for h in HISTORIES]
        print(f"{kind + '.' + name:40}" + "".join(f"{c:10.3f}" for c in cells))

    if not (args.planetlab / "20110303.tar.gz").exists():
        print(f"PlanetLab traces not found in {args.planetlab}; skipping the day replay")
        return
    host = planetlab_host(args.planetlab)
    print(f"\nMHOD (defaults) over one PlanetLab host-day ({len(host)} calls)")
    runs = [("growing history", None, False), ("sliding window 100", 100, False)]
    if not args.no_oracle:
        runs += [
            ("Neat full rebuild, growing", None, True),
            ("Neat full rebuild, window 100", 100, True),
        ]
    for label, window, oracle in runs:
        times, cpu_times = replay(host, window, oracle)
        print(
            f"  {label:30} median {statistics.median(times) * 1e3:7.3f} ms"
            f"  max {max(times) * 1e3:7.3f} ms (CPU {max(cpu_times) * 1e3:7.3f} ms)"
            f"  total {sum(times):6.3f} s"
        )


if __name__ == "__main__":
    main()
