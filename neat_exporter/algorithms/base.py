"""The shapes every algorithm has, so the exporter, the replay tool and the simulator can call
any of them the same way.

Neat's interface is kept: every built algorithm is a callable returning ``(result, state)``.
Detectors additionally offer ``evaluate``, which returns a :class:`Detection` explaining the
decision (what was compared with what, and whether there was enough history to decide), so
the exporter can publish it without recomputing anything.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

KINDS = ("underload", "overload", "vm_selection", "vm_placement")


@dataclass(frozen=True, slots=True)
class Detection:
    """One detector call: the decision, the state to pass to the next call, and its explanation."""

    decision: bool
    state: Any
    input: float | None = None
    """The value the detector compared (last value, last-n mean, LR prediction × param, OTF
    fraction, ...); None when the algorithm compares nothing (or had nothing to compare)."""
    threshold: float | None = None
    """What ``input`` was compared against; None when there is no threshold."""
    ready: bool = True
    """False while the detector has too little history to decide (it then decides False)."""


class Detector(Protocol):
    """An underload or overload detector.

    ``detector(utilization, state) -> (decision, state)`` is Neat's interface; ``utilization`` is
    a sequence of floats, oldest first, and ``state`` is None on the first call.
    """

    name: str

    def evaluate(self, utilization: Sequence[float], state: Any = None) -> Detection: ...

    def __call__(self, utilization: Sequence[float], state: Any = None) -> tuple[bool, Any]: ...


class VmSelector(Protocol):
    """``select(vms_cpu_mhz, vms_ram_mb, state) -> (vm_uuids, state)``; never None, never empty
    when there is at least one VM."""

    name: str

    def __call__(
        self,
        vms_cpu_mhz: Mapping[str, Sequence[float]],
        vms_ram_mb: Mapping[str, float],
        state: Any = None,
    ) -> tuple[list[str], Any]: ...


class VmPlacer(Protocol):
    """Neat's placement interface: returns ``({vm_uuid: host}, state)``;
    ``{}`` when not all VMs fit."""

    name: str

    def __call__(
        self,
        hosts_cpu_usage: Mapping[str, float],
        hosts_cpu_total: Mapping[str, float],
        hosts_ram_usage: Mapping[str, float],
        hosts_ram_total: Mapping[str, float],
        inactive_hosts_cpu: Mapping[str, float],
        inactive_hosts_ram: Mapping[str, float],
        vms_cpu: Mapping[str, Sequence[float]],
        vms_ram: Mapping[str, float],
        state: Any = None,
    ) -> tuple[dict[str, str], Any]: ...
