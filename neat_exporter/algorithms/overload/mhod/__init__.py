"""MHOD (Markov host overload detection), incremental but with Neat's exact results."""

from neat_exporter.algorithms.overload.mhod.core import ALGORITHMS, Mhod

__all__ = ["ALGORITHMS", "Mhod"]
