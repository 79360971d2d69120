"""The base of every built-in algorithm: its name, its checked parameters and Neat's factory
arguments (``time_step`` in seconds, ``migration_time`` in seconds)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from neat_exporter.algorithms.params import Param, real, validate


class Algorithm:
    """Subclasses set ``kind``, ``name`` and ``PARAMS`` (name -> :class:`Param`)."""

    kind: ClassVar[str]
    name: ClassVar[str]
    PARAMS: ClassVar[Mapping[str, Param]] = {}

    def __init__(
        self, params: Mapping[str, Any] | None, *, time_step: float, migration_time: float
    ):
        algorithm = f"{self.kind}.{self.name}"
        self.params = validate(algorithm, self.PARAMS, params)
        self.time_step = real(0, low_open=True)(algorithm, "time_step", time_step)
        self.migration_time = real(0)(algorithm, "migration_time", migration_time)
        # Neat's algorithms measure the migration time in time steps.
        self.migration_steps = self.migration_time / self.time_step

    def __repr__(self) -> str:
        return f"<{self.kind} {self.name} {self.params}>"
