"""Algorithms on real PlanetLab traces (read in place from the shared tarballs).

One host-day replayed through every detector in the exporter's call pattern, and incremental
MHOD checked bit for bit against Neat's full per-call rebuild (tests/neat_mhod_oracle.py).
"""

import tarfile

import numpy as np
import pytest
from test_algorithms_mhod import replay_against_oracle

from neat_exporter.algorithms import available, build

DAY = "20110303.tar.gz"
WINDOW = 100  # Neat's data_collector_data_length: the exporter's sliding history


@pytest.fixture(scope="module")
def day_traces(planetlab_dir):
    """Every VM's utilization (0..0.99) for one day, by file name."""
    traces = {}
    with tarfile.open(planetlab_dir / DAY) as tar:
        for member in tar.getmembers():
            if member.isfile():
                values = tar.extractfile(member).read().split()
                traces[member.name] = [int(v) / 100 for v in values]
    return traces


@pytest.fixture(scope="module")
def host_day(day_traces):
    """A host running six moderately busy VMs (mean 20–60 %), sized so that its median
    utilization is 0.8: over the day it ranges from about 0.4 to 1.2."""
    names = [n for n in sorted(day_traces) if 0.2 <= np.mean(day_traces[n]) <= 0.6][:6]
    total = np.sum([day_traces[n] for n in names], axis=0)
    return (total / (np.median(total) / 0.8)).tolist()


PARAMS = {
    "mad_threshold": {"threshold": 2.5, "limit": 12},
    "iqr_threshold": {"threshold": 1.5, "limit": 12},
    "loess": {"threshold": 0.8, "param": 1.2, "length": 30},
    "loess_robust": {"threshold": 0.8, "param": 1.2, "length": 30},
}
# How each detector's decision follows from its explanation.
COMPARES = {
    ("underload", "threshold"): lambda d: d.input <= d.threshold,
    ("underload", "last_n_average_threshold"): lambda d: d.input <= d.threshold,
    ("overload", "threshold"): lambda d: d.input > d.threshold,
    ("overload", "last_n_average_threshold"): lambda d: d.input > d.threshold,
    ("overload", "mad_threshold"): lambda d: d.threshold <= d.input,
    ("overload", "iqr_threshold"): lambda d: d.threshold <= d.input,
    ("overload", "loess"): lambda d: d.input >= d.threshold,
    ("overload", "loess_robust"): lambda d: d.input >= d.threshold,
}


@pytest.mark.parametrize(
    ("kind", "name"), [(k, n) for k in ("underload", "overload") for n in available(k)[k]]
)
def test_a_planetlab_host_day_through_every_detector(host_day, kind, name):
    detector = build(kind, name, PARAMS.get(name), time_step=300, migration_time=20.0)
    state, decisions, ready = None, 0, 0
    for k in range(1, len(host_day) + 1):
        result = detector.evaluate(host_day[max(0, k - WINDOW) : k], state)
        state = result.state
        decisions += result.decision
        ready += result.ready
        compare = COMPARES.get((kind, name))
        if compare and result.ready:
            assert result.decision == compare(result), f"step {k}"
        if result.decision and (kind, name) == ("overload", "otf"):
            assert result.input >= result.threshold
    assert ready > 0.85 * len(host_day)
    if (kind, name) == ("overload", "otf"):
        assert state["total"] == len(host_day)
    if (kind, name) == ("overload", "mhod"):
        assert state["time_in_states"] == len(host_day)
    if name not in ("always_underloaded", "never_overloaded"):
        # The busy host crosses every threshold at some point of the day but not all day long.
        assert kind == "underload" or 0 < decisions < len(host_day), decisions


@pytest.mark.parametrize(
    ("window", "steps"), [(WINDOW, 150), (None, 110)], ids=["sliding-100", "growing"]
)
def test_mhod_defaults_match_neat_on_a_host_day(host_day, window, steps):
    """Neat's defaults; the oracle's full replay is slow, so a part of the day (with 50
    slides of the 100-value window)."""
    decisions, solved = replay_against_oracle(host_day[:steps], {}, window)
    assert solved > 10 and decisions > 0


def test_mhod_matches_neat_on_vm_traces(day_traces):
    """Single VMs with the state threshold at their own median: many transitions."""
    names = sorted(day_traces)[::150][:2]
    total_solved = 0
    for name in names:
        trace = day_traces[name]
        params = {
            "state_config": [float(np.median(trace))],
            "window_sizes": [4, 6, 9],
            "otf": 0.4,
            "learning_steps": 5,
        }
        for window in (10, 30):
            _, solved = replay_against_oracle(trace, params, window)
            total_solved += solved
    assert total_solved > 50
