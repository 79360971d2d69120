"""Underload detection (Neat's ``neat.locals.underload.trivial``); stateless.

An empty history is never underloaded.
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


class AlwaysUnderloaded(DetectorAlgorithm):
    kind = "underload"
    name = "always_underloaded"

    def detect(self, utilization: np.ndarray, state: Any) -> Detection:
        return Detection(True, {})


class Threshold(ThresholdDetector):
    """Underloaded iff the newest value is <= ``threshold``."""

    kind = "underload"
    name = "threshold"
    PARAMS: ClassVar[Mapping[str, Param]] = {"threshold": Param(real(0), 0.3)}
    measure = staticmethod(last_value)
    compare = staticmethod(operator.le)


class LastNAverageThreshold(ThresholdDetector):
    """Underloaded iff the mean of the newest ``n`` values is <= ``threshold``."""

    kind = "underload"
    name = "last_n_average_threshold"
    PARAMS: ClassVar[Mapping[str, Param]] = {
        "threshold": Param(real(0), 0.5),
        "n": Param(integer(1), 2),
    }
    measure = staticmethod(last_n_mean)
    compare = staticmethod(operator.le)


ALGORITHMS = (AlwaysUnderloaded, Threshold, LastNAverageThreshold)
