"""Trivial overload detection (Neat's ``neat.locals.overload.trivial``); stateless.

An empty history is never overloaded.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from neat_exporter.algorithms.base import Detection
from neat_exporter.algorithms.detector import (
    DetectorAlgorithm,
    ThresholdDetector,
    last_n_mean,
    last_value,
)
from neat_exporter.algorithms.params import Param, integer, real


class NeverOverloaded(DetectorAlgorithm):
    kind = "overload"
    name = "never_overloaded"

    def detect(self, utilization: np.ndarray, state: Any) -> Detection:
        return Detection(False, {})


class Threshold(ThresholdDetector):
    """Overloaded iff the newest value is > ``threshold`` (strictly)."""

    kind = "overload"
    name = "threshold"
    PARAMS: ClassVar[Mapping[str, Param]] = {"threshold": Param(real(0), 0.9)}
    measure = staticmethod(last_value)
    compare = staticmethod(operator.gt)


class LastNAverageThreshold(ThresholdDetector):
    """Overloaded iff the mean of the newest ``n`` values is > ``threshold`` (strictly)."""

    kind = "overload"
    name = "last_n_average_threshold"
    PARAMS: ClassVar[Mapping[str, Param]] = {
        "threshold": Param(real(0), 0.95),
        "n": Param(integer(1), 2),
    }
    measure = staticmethod(last_n_mean)
    compare = staticmethod(operator.gt)


ALGORITHMS = (NeverOverloaded, Threshold, LastNAverageThreshold)
