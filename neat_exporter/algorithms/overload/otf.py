"""OTF (overload time fraction) detection (Neat's ``neat.locals.overload.otf``).

The state counts *calls* (local-manager cycles), not history points, and never resets:
``total`` calls so far and ``overload`` calls whose newest value was >= ``threshold``.
Overloaded iff the newest value is overloaded, the history holds at least ``limit`` values and
``(mt + overload) / (mt + total) >= otf`` with mt the migration time in steps.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from neat_exporter.algorithms.base import Detection
from neat_exporter.algorithms.detector import DetectorAlgorithm
from neat_exporter.algorithms.params import Param, integer, real


class Otf(DetectorAlgorithm):
    kind = "overload"
    name = "otf"
    PARAMS: ClassVar[Mapping[str, Param]] = {
        "otf": Param(real(0, 1), 0.2),
        "threshold": Param(real(0), 0.8),
        "limit": Param(integer(0), 10),
    }

    def detect(self, utilization: np.ndarray, state: Any) -> Detection:
        state = {"overload": 0, "total": 0} if not state else dict(state)
        otf = self.params["otf"]
        if len(utilization) == 0:
            # Neat never calls a detector on an empty history; it is not counted as a cycle.
            return Detection(False, state, None, otf, ready=False)
        state["total"] += 1
        overloaded_now = bool(utilization[-1] >= self.params["threshold"])
        if overloaded_now:
            state["overload"] += 1
        mt = self.migration_steps
        fraction = (mt + state["overload"]) / (mt + state["total"])
        ready = len(utilization) >= self.params["limit"]
        decision = overloaded_now and ready and fraction >= otf
        return Detection(decision, state, fraction, otf, ready)


ALGORITHMS = (Otf,)
