"""One decision of Neat's local manager (its ``neat/locals/manager.py``), without any I/O.

Given the per-VM CPU histories, the hypervisor overhead history and the host's usable capacity,
:meth:`LocalManager.step` runs the underload detector and the overload detector (both, every
step, so stateful detectors see every step) and, when the host is overloaded, VM selection.
The daemon calls it once per cycle with live data; ``replay`` calls it once per trace step.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from neat_exporter.algorithms import Detection, build
from neat_exporter.utilization import host_utilization, migration_time
from neat_exporter.vocabulary import ALGORITHM_KINDS, AlgorithmSet, Reason


@dataclass(frozen=True, slots=True)
class HostDecision:
    """What one step decided and why."""

    utilization: tuple[float, ...]
    """The host utilization history the detectors saw, oldest first."""
    underload: Detection
    overload: Detection
    selected: tuple[str, ...]
    """VMs to migrate away: the selection when overloaded, every VM when underloaded."""
    migration_time: float

    @property
    def underloaded(self) -> bool:
        return self.underload.decision

    @property
    def overloaded(self) -> bool:
        """Overloaded and acted on as such; an underloaded host is never also overloaded."""
        return self.overload.decision and not self.underload.decision

    @property
    def reason(self) -> Reason | None:
        """Why the host asks for migrations; None for no request."""
        if self.underloaded:
            return Reason.UNDERLOAD
        if self.overloaded:
            return Reason.OVERLOAD
        return None


class LocalManager:
    """Neat's local manager decision logic with the algorithms' states carried between steps.

    As in Neat, the algorithms are built on the first step that has data, with the migration
    time estimated from the VMs present then, and kept (so the estimate is frozen).
    """

    def __init__(self, algorithms: AlgorithmSet, time_step: float, bandwidth_mb_s: float):
        self.algorithms = algorithms
        self.time_step = time_step
        self.bandwidth_mb_s = bandwidth_mb_s
        self.migration_time: float | None = None
        self.stage = "detect"
        """The stage the latest ``step`` reached (``detect`` or ``select``), so a caller can
        tell where a failure happened."""
        self._built: dict[str, Any] = {}
        self._states: dict[str, Any] = dict.fromkeys(ALGORITHM_KINDS)

    def _build(self, vms_ram_mb: Mapping[str, float]) -> None:
        self.migration_time = migration_time(list(vms_ram_mb.values()), self.bandwidth_mb_s)
        for kind in ALGORITHM_KINDS:
            config = getattr(self.algorithms, kind)
            self._built[kind] = build(
                kind,
                config.name,
                config.params,
                time_step=self.time_step,
                migration_time=self.migration_time,
            )

    def step(
        self,
        vms_mhz: Mapping[str, Sequence[float]],
        host_overhead_mhz: Sequence[float],
        capacity_mhz: float,
        vms_ram_mb: Mapping[str, float],
    ) -> HostDecision | None:
        """Decide for one step; None when there is nothing to decide (no VMs, no history)."""
        self.stage = "detect"
        vms_mhz = {uuid: history for uuid, history in vms_mhz.items() if uuid in vms_ram_mb}
        if not vms_mhz:
            return None
        utilization = host_utilization(vms_mhz, host_overhead_mhz, capacity_mhz)
        if not utilization:
            return None
        ram = {uuid: vms_ram_mb[uuid] for uuid in vms_mhz}
        if not self._built:
            self._build(ram)
        underload = self._built["underload"].evaluate(utilization, self._states["underload"])
        overload = self._built["overload"].evaluate(utilization, self._states["overload"])
        self._states["underload"] = underload.state
        self._states["overload"] = overload.state
        selected: tuple[str, ...] = ()
        if underload.decision:
            selected = tuple(vms_mhz)
        elif overload.decision:
            self.stage = "select"
            chosen, self._states["vm_selection"] = self._built["vm_selection"](
                vms_mhz, ram, self._states["vm_selection"]
            )
            selected = tuple(chosen)
        return HostDecision(
            utilization=tuple(utilization),
            underload=underload,
            overload=overload,
            selected=selected,
            migration_time=self.migration_time,
        )
