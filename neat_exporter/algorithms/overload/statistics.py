"""Statistical overload detection (Neat's ``neat.locals.overload.statistics``); stateless.

* MAD / IQR (adaptive thresholds): overloaded iff ``1 - s·MAD(u) <= u[-1]`` (resp. IQR) once
  the history holds at least ``limit`` values; the whole history passed in is used.
* LR / LRR (``loess`` / ``loess_robust``): a line fitted to the newest ``length`` values with
  tricube weights predicts the utilization one migration time ahead; overloaded iff
  ``param · prediction >= threshold``.

Neat fits the line with ``scipy.optimize.leastsq`` on residuals multiplied by the weights, which
minimises Σ w²·r²: a weighted least squares with *squared* tricube weights. The closed form of
that fit is used here (no scipy), with the same squared weights.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from functools import lru_cache
from typing import Any, ClassVar

import numpy as np

from neat_exporter.algorithms.base import Detection
from neat_exporter.algorithms.detector import DetectorAlgorithm
from neat_exporter.algorithms.params import Param, integer, real


def mad(data: np.ndarray) -> float:
    """Median absolute deviation: median(|x - median(x)|)."""
    return float(np.median(np.abs(np.median(data) - data)))


def _round_half_away(value: float) -> int:
    """Python 2's ``round`` for the non-negative quarter values IQR needs (2.5 -> 3)."""
    return math.floor(value + 0.5)


def iqr(data: np.ndarray) -> float:
    """Interquartile range as Neat computes it: ranks round(0.25·(n+1)) and round(0.75·(n+1))
    (1-based, half away from zero) of the sorted data. A single value has an IQR of 0."""
    ordered = np.sort(data)
    m = len(ordered) + 1
    q1 = _round_half_away(0.25 * m) - 1
    q3 = min(_round_half_away(0.75 * m) - 1, len(ordered) - 1)
    return float(ordered[q3] - ordered[q1])


@lru_cache(maxsize=64)
def tricube_weights(n: int) -> np.ndarray:
    """Neat's tricube weights for a window of n >= 3 values, oldest first:
    w_i = (1 - ((n-1-i)/(n-1))³)³ for i = 2..n-1, with the first two values copying w_2."""
    spread = float(n - 1)
    computed = [(1 - ((spread - i) / spread) ** 3) ** 3 for i in range(2, n)]
    weights = np.array(computed[:1] * 2 + computed)
    weights.flags.writeable = False
    return weights


def tricube_bisquare_weights(residuals: np.ndarray) -> np.ndarray | None:
    """Tricube weights times the bisquare of the residuals scaled by 6·median(|r|) (not clamped,
    as in Neat); None when that scale is 0 (Neat divides by zero there)."""
    n = len(residuals)
    s6 = 6 * float(np.median(np.abs(residuals)))
    if s6 == 0:
        return None
    computed = tricube_weights(n)[2:] * (1 - (residuals[2:] / s6) ** 2) ** 2
    return np.concatenate([computed[:1], computed[:1], computed])


def _weighted_line(x: np.ndarray, y: np.ndarray, weights: np.ndarray) -> tuple[float, float] | None:
    """(a, b) minimising Σ (w_i·(y_i - a - b·x_i))²; None when the fit is degenerate."""
    w2 = weights * weights
    total = w2.sum()
    if not total > 0:
        return None
    mean_x = (w2 @ x) / total
    mean_y = (w2 @ y) / total
    dx = x - mean_x
    sxx = w2 @ (dx * dx)
    if not sxx > 0:
        return None
    slope = (w2 @ (dx * (y - mean_y))) / sxx
    return float(mean_y - slope * mean_x), float(slope)


def loess_parameter_estimates(data: np.ndarray) -> tuple[float, float]:
    """Intercept and slope of the tricube-weighted line through data at x = 1..n (n >= 3)."""
    x = np.arange(1, len(data) + 1, dtype=np.float64)
    fit = _weighted_line(x, data, tricube_weights(len(data)))
    assert fit is not None  # tricube weights are positive and x is not constant
    return fit


def loess_robust_parameter_estimates(data: np.ndarray) -> tuple[float, float]:
    """The tricube fit refitted once with tricube × bisquare weights of its residuals; the first
    fit when the residuals give no scale (at least half of them are 0)."""
    first = loess_parameter_estimates(data)
    x = np.arange(1, len(data) + 1, dtype=np.float64)
    weights = tricube_bisquare_weights(data - (first[0] + first[1] * x))
    if weights is None:
        return first
    return _weighted_line(x, data, weights) or first


class _UtilizationThreshold(DetectorAlgorithm):
    """Overloaded iff ``1 - threshold · spread(u) <= u[-1]`` once ``len(u) >= limit``."""

    kind = "overload"
    PARAMS: ClassVar[Mapping[str, Param]] = {
        "threshold": Param(real(0)),
        "limit": Param(integer(0)),
    }

    @staticmethod
    def spread(data: np.ndarray) -> float:
        raise NotImplementedError

    def detect(self, utilization: np.ndarray, state: Any) -> Detection:
        if len(utilization) == 0:
            return Detection(False, {}, None, None, ready=False)
        value = float(utilization[-1])
        if len(utilization) < self.params["limit"]:
            return Detection(False, {}, value, None, ready=False)
        threshold = 1 - self.params["threshold"] * self.spread(utilization)
        return Detection(threshold <= value, {}, value, threshold)


class MadThreshold(_UtilizationThreshold):
    name = "mad_threshold"
    spread = staticmethod(mad)


class IqrThreshold(_UtilizationThreshold):
    name = "iqr_threshold"
    spread = staticmethod(iqr)


class Loess(DetectorAlgorithm):
    """LR: ``param · (a + b·(length + migration steps)) >= threshold`` on the newest ``length``
    values; not ready (False) on a shorter history."""

    kind = "overload"
    name = "loess"
    PARAMS: ClassVar[Mapping[str, Param]] = {
        "threshold": Param(real(0), 0.8),
        "param": Param(real(0), 1.0),
        "length": Param(integer(3), 30),
    }
    estimator: ClassVar = staticmethod(loess_parameter_estimates)

    def detect(self, utilization: np.ndarray, state: Any) -> Detection:
        threshold, length = self.params["threshold"], self.params["length"]
        if len(utilization) < length:
            return Detection(False, {}, None, threshold, ready=False)
        intercept, slope = self.estimator(utilization[-length:])
        prediction = self.params["param"] * (intercept + slope * (length + self.migration_steps))
        return Detection(prediction >= threshold, {}, prediction, threshold)


class LoessRobust(Loess):
    """LRR: as LR with one robust (bisquare) refit."""

    name = "loess_robust"
    estimator = staticmethod(loess_robust_parameter_estimates)


ALGORITHMS = (MadThreshold, IqrThreshold, Loess, LoessRobust)
