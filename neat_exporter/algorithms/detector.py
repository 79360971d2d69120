"""The common frame of every built-in detector: input checking and Neat's ``(decision, state)``
call on top of :meth:`DetectorAlgorithm.evaluate`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np

from neat_exporter.algorithms.algorithm import Algorithm
from neat_exporter.algorithms.base import Detection
from neat_exporter.algorithms.params import as_history, sequential_sum


class DetectorAlgorithm(Algorithm):
    """Subclasses implement :meth:`detect` on a checked float array."""

    def evaluate(self, utilization: Sequence[float], state: Any = None) -> Detection:
        history = as_history(utilization)
        # Finite but absurd values (1e308) may overflow to inf; the comparison still decides.
        with np.errstate(over="ignore", invalid="ignore"):
            return self.detect(history, state)

    def __call__(self, utilization: Sequence[float], state: Any = None) -> tuple[bool, Any]:
        detection = self.evaluate(utilization, state)
        return detection.decision, detection.state

    def detect(self, utilization: np.ndarray, state: Any) -> Detection:
        raise NotImplementedError


def last_value(utilization: np.ndarray, params: dict[str, Any]) -> float:
    return float(utilization[-1])


def last_n_mean(utilization: np.ndarray, params: dict[str, Any]) -> float:
    """Mean of the newest ``n`` values (fewer when the history is shorter), summed as Neat."""
    tail = utilization[-params["n"] :]
    return sequential_sum(tail) / len(tail)


class ThresholdDetector(DetectorAlgorithm):
    """Neat's trivial detectors: ``compare(measure(history), threshold)``; an empty history
    decides False."""

    measure: ClassVar[Callable[[np.ndarray, dict[str, Any]], float]]
    compare: ClassVar[Callable[[float, float], bool]]

    def detect(self, utilization: np.ndarray, state: Any) -> Detection:
        threshold = self.params["threshold"]
        if len(utilization) == 0:
            return Detection(False, {}, None, threshold, ready=False)
        value = type(self).measure(utilization, self.params)
        return Detection(bool(type(self).compare(value, threshold)), {}, value, threshold)
