"""Overload detection: trivial thresholds, MAD/IQR, LR/LRR, OTF and MHOD."""

from neat_exporter.algorithms.overload import mhod, otf, statistics, thresholds

ALGORITHMS = (*thresholds.ALGORITHMS, *statistics.ALGORITHMS, *otf.ALGORITHMS, *mhod.ALGORITHMS)

__all__ = ["ALGORITHMS"]
