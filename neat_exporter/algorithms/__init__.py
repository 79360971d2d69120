"""Neat's algorithms: underload and overload detection, VM selection, VM placement.

from neat_exporter.algorithms import build
detect = build("overload", "mad_threshold", {"threshold": 1.6, "limit": 3},
               time_step=300, migration_time=20.0)
decision, state = detect(utilization, None)
detection = detect.evaluate(utilization, state)   # decision + input, threshold, ready
"""

from neat_exporter.algorithms.base import KINDS, Detection, Detector, VmPlacer, VmSelector
from neat_exporter.algorithms.registry import available, build

__all__ = ["KINDS", "Detection", "Detector", "VmPlacer", "VmSelector", "available", "build"]
