"""MHOD: the Markov host overload detection algorithm (Neat's default overload detector).

The utilization is mapped to states by ``state_config`` (state i for values below the i-th
threshold, N = len(state_config) for values at or above all of them). The transition
probabilities are estimated with multisize sliding windows (:mod:`.estimation`). When the
history holds at least ``learning_steps`` values, the host is in the overload state N and
p[N][N] > 0, the brute-force search of :mod:`.nlp` looks for migration probabilities that keep
the expected overload time fraction within ``otf``; the host is overloaded when there are none.

``time_in_states`` and ``time_in_state_n`` count calls (cycles) and live in the state, as in
Neat. The estimator in the state is only a cache of the last history seen: any history gives the
same result as Neat's full replay.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from neat_exporter.algorithms.base import Detection
from neat_exporter.algorithms.detector import DetectorAlgorithm
from neat_exporter.algorithms.overload.mhod.estimation import MultisizeEstimator
from neat_exporter.algorithms.overload.mhod.nlp import frange, optimize
from neat_exporter.algorithms.params import Param, integer, real, sequence_of
from neat_exporter.errors import ParameterError


def utilization_to_states(state_config: np.ndarray, utilization: np.ndarray) -> np.ndarray:
    """Index of the first threshold strictly greater than each value (N when none is)."""
    return np.searchsorted(state_config, utilization, side="right")


class Mhod(DetectorAlgorithm):
    kind = "overload"
    name = "mhod"
    PARAMS: ClassVar[Mapping[str, Param]] = {
        # Neat's L functions and solver exist for two states only: one threshold.
        "state_config": Param(sequence_of(real(0), max_length=1), (0.8,)),
        "otf": Param(real(0, 1, low_open=True), 0.1),
        "history_size": Param(integer(1), 500),  # accepted for neat.conf, unused as in Neat
        "window_sizes": Param(sequence_of(integer(2)), (30, 40, 50, 60, 70, 80, 90, 100)),
        "bruteforce_step": Param(real(0, 1, low_open=True), 0.5),
        "learning_steps": Param(integer(0), 10),
    }

    def __init__(self, params, *, time_step, migration_time):
        super().__init__(params, time_step=time_step, migration_time=migration_time)
        sizes = self.params["window_sizes"]
        if len(set(sizes)) != len(sizes):
            raise ParameterError("overload.mhod", "window_sizes", "sizes must be distinct")
        self.state_config = np.array(self.params["state_config"], dtype=np.float64)
        self.overload_state = len(self.state_config)
        self.grid = tuple(frange(0, 1.0, self.params["bruteforce_step"]))

    def initial_state(self) -> dict[str, Any]:
        return {
            "previous_state": 0,
            "time_in_states": 0,
            "time_in_state_n": 0,
            "estimator": MultisizeEstimator(self.params["window_sizes"], self.overload_state + 1),
        }

    def detect(self, utilization: np.ndarray, state: Any) -> Detection:
        state = dict(state) if state else self.initial_state()
        otf = self.params["otf"]
        if len(utilization) == 0:
            return Detection(False, state, None, otf, ready=False)
        estimator = state.get("estimator")
        if not isinstance(estimator, MultisizeEstimator) or (
            estimator.window_sizes != self.params["window_sizes"]
        ):
            estimator = state["estimator"] = self.initial_state()["estimator"]
        states = utilization_to_states(self.state_config, utilization)
        estimator.update(states)
        p = estimator.probabilities()
        state["p"] = p
        state["selected_windows"] = estimator.selected_windows()

        n = self.overload_state
        current = int(states[-1])
        state["previous_state"] = current
        state["time_in_states"] += 1
        if current == n:
            state["time_in_state_n"] += 1

        mt = self.migration_steps
        fraction = (mt + state["time_in_state_n"]) / (mt + state["time_in_states"])
        ready = len(utilization) >= self.params["learning_steps"]
        decision = False
        if ready and current == n and p[n][n] > 0:
            pi = [int(current == i) for i in range(n + 1)]
            policy = optimize(
                self.grid,
                otf,
                mt,
                p,
                pi,
                state["time_in_states"],
                state["time_in_state_n"],
            )
            state["policy"] = policy
            decision = len(policy) == 0
        return Detection(decision, state, fraction, otf, ready)


ALGORITHMS = (Mhod,)
