"""A plain transcription of Neat's MHOD: the whole estimation replayed on every call.

This is the oracle the incremental implementation is tested against. It follows Neat's
``mhod.core.mhod`` and ``mhod.multisize_estimation`` step by step (deques, dicts, one
transition at a time). Sums are written as left-to-right loops because Python >= 3.12's ``sum``
of floats is compensated, unlike Python 2's. The L functions and the brute-force search come from
the package (they are checked against Neat's examples separately).
"""

from __future__ import annotations

from collections import deque
from itertools import islice

from neat_exporter.algorithms.overload.mhod.nlp import frange, optimize


def _naive_sum(values):
    total = 0
    for value in values:
        total += value
    return total


def _variance(data, window_size):
    mean = float(_naive_sum(data)) / window_size
    return float(_naive_sum((x - mean) ** 2 for x in data)) / (window_size - 1)


def utilization_to_state(state_config, value):
    for state, threshold in enumerate(state_config):
        if value < threshold:
            return state
    return len(state_config)


def estimate(state_config, window_sizes, utilization):
    """Neat's per-call replay; returns (p, selected_windows)."""
    n = len(state_config) + 1
    request = [deque(maxlen=max(window_sizes)) for _ in range(n)]
    estimates = [[{w: deque(maxlen=w) for w in window_sizes} for _ in range(n)] for _ in range(n)]
    variances = [[dict.fromkeys(window_sizes, 1.0) for _ in range(n)] for _ in range(n)]
    acceptable = [[dict.fromkeys(window_sizes, 1.0) for _ in range(n)] for _ in range(n)]
    previous = 0
    for value in utilization:
        current = utilization_to_state(state_config, value)
        window = request[previous]
        window.append(current)
        for j in range(n):
            for w in window_sizes:
                start = max(len(window) - w, 0)
                estimates[previous][j][w].append(
                    float(list(islice(window, start, None)).count(j)) / w
                )
        for j in range(n):
            for w in window_sizes:
                values = estimates[previous][j][w]
                if len(values) < w:
                    variances[previous][j][w] = 1.0
                else:
                    variances[previous][j][w] = _variance(list(values), w)
                p = values[-1]
                acceptable[previous][j][w] = float(p * (1 - p)) / w
        previous = current

    selected = []
    for i in range(n):
        selected.append([])
        for j in range(n):
            size = window_sizes[0]
            for w in window_sizes:
                if variances[i][j][w] > acceptable[i][j][w]:
                    break
                size = w
            selected[i].append(size)
    p = [
        [
            estimates[i][j][selected[i][j]][-1] if estimates[i][j][selected[i][j]] else 0.0
            for j in range(n)
        ]
        for i in range(n)
    ]
    return p, selected


class OracleMhod:
    """Neat's mhod_factory callable, with Neat's call-counting state."""

    def __init__(self, params, time_step, migration_time):
        self.params = params
        self.migration_steps = migration_time / time_step
        self.time_in_states = 0
        self.time_in_state_n = 0

    def __call__(self, utilization):
        params = self.params
        state_config = list(params["state_config"])
        p, selected = estimate(state_config, list(params["window_sizes"]), utilization)
        n = len(state_config)
        current = utilization_to_state(state_config, utilization[-1])
        self.time_in_states += 1
        if current == n:
            self.time_in_state_n += 1
        policy = None
        decision = False
        if len(utilization) >= params["learning_steps"] and current == n and p[n][n] > 0:
            pi = [int(current == i) for i in range(n + 1)]
            policy = optimize(
                tuple(frange(0, 1.0, params["bruteforce_step"])),
                params["otf"],
                self.migration_steps,
                p,
                pi,
                self.time_in_states,
                self.time_in_state_n,
            )
            decision = len(policy) == 0
        return decision, p, selected, policy
