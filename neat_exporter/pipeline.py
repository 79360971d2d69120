"""One host's decision pipeline: its utilization history and Neat's local manager.

Samples go in, a decision comes out. The exporter's daemon feeds it one collection per cycle and
``replay`` one recorded step at a time, so both keep the history by the same rules (the newest
``history_length`` samples per VM; a VM that leaves the host loses its history) and carry the
algorithms' state the same way. Nothing here reads the clock or touches a file.
"""

from __future__ import annotations

from collections.abc import Mapping

from neat_exporter.history import History
from neat_exporter.manager import HostDecision, LocalManager
from neat_exporter.vocabulary import AlgorithmSet


class HostPipeline:
    """A host's :class:`~neat_exporter.history.History` and
    :class:`~neat_exporter.manager.LocalManager`, deciding on each step as it is added."""

    def __init__(
        self,
        algorithms: AlgorithmSet,
        *,
        time_step: float,
        bandwidth_mb_s: float,
        history: History,
    ):
        self.history = history
        self.manager = LocalManager(algorithms, time_step, bandwidth_mb_s)

    @property
    def stage(self) -> str:
        """Where the latest decision got to (``detect`` or ``select``), to name a failure."""
        return self.manager.stage

    @property
    def migration_time(self) -> float | None:
        """The migration time the algorithms were built with; None before the first decision."""
        return self.manager.migration_time

    def step(
        self,
        vms_mhz: Mapping[str, float | None],
        overhead_mhz: float | None,
        capacity_mhz: float,
        vms_ram_mb: Mapping[str, float],
    ) -> HostDecision | None:
        """Add one step's samples (see :meth:`History.add`) and decide on the history."""
        self.history.add(vms_mhz, overhead_mhz)
        return self.decide(capacity_mhz, vms_ram_mb)

    def decide(self, capacity_mhz: float, vms_ram_mb: Mapping[str, float]) -> HostDecision | None:
        """Decide on the history as it stands, for the VMs in ``vms_ram_mb``; None when there is
        nothing to decide (no VM with samples)."""
        return self.manager.step(
            self.history.vm_arrays(), self.history.host_history(), capacity_mhz, vms_ram_mb
        )
