"""CloudSim's accounting of a run: energy, SLATAH, PDM, SLAV, ESV, migrations.

The simulator reports the state of every host and VM after each update; this module turns
consecutive states into the sums ``Helper.printResults`` computes from CloudSim's state
histories: each state holds until the next update, the interval after the last one is never
counted, and SLATAH and PDM are pooled ratios.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

JOULES_PER_KWH = 3.6e6


@dataclass(frozen=True)
class HostStates:
    """Host entries at one instant: allocated and requested MIPS, active = allocated > 0."""

    allocated: np.ndarray
    requested: np.ndarray

    @property
    def active(self) -> np.ndarray:
        return self.allocated > 0


@dataclass(frozen=True)
class VmStates:
    """VM entries at one instant; ``recorded`` marks VMs that wrote one (alive ones)."""

    recorded: np.ndarray
    allocated: np.ndarray
    requested: np.ndarray
    in_migration: np.ndarray


@dataclass(frozen=True)
class DayResult:
    day: str
    policy: str
    vms: int
    hosts: int
    energy_kwh: float
    slatah: float
    pdm: float
    slav: float
    esv: float
    migrations: int
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)


class Accounting:
    """Running sums of one simulated day."""

    def __init__(self) -> None:
        self.energy_joules = 0.0
        self.active_seconds = 0.0
        self.violation_seconds = 0.0
        self.requested_mips_seconds = 0.0
        self.degraded_mips_seconds = 0.0
        self.migrations = 0
        self._time: float | None = None
        self._hosts: HostStates | None = None
        self._vms: VmStates | None = None

    def add_energy(self, joules: float) -> None:
        self.energy_joules += joules

    def advance(self, time: float) -> None:
        """Count the interval from the last recorded states to ``time``."""
        if self._time is None or time <= self._time:
            return
        seconds = time - self._time
        hosts, vms = self._hosts, self._vms
        active = hosts.active
        self.active_seconds += seconds * np.count_nonzero(active)
        self.violation_seconds += seconds * np.count_nonzero(
            active & (hosts.allocated < hosts.requested)
        )
        recorded = vms.recorded
        self.requested_mips_seconds += float(np.sum(vms.requested[recorded])) * seconds
        degraded = recorded & vms.in_migration & (vms.allocated < vms.requested)
        self.degraded_mips_seconds += (
            float(np.sum(vms.requested[degraded] - vms.allocated[degraded])) * seconds
        )

    def record(self, time: float, hosts: HostStates, vms: VmStates) -> None:
        """The states at ``time``; a later record at the same instant replaces them."""
        self._time, self._hosts, self._vms = time, hosts, vms

    @property
    def slatah(self) -> float:
        return self.violation_seconds / self.active_seconds if self.active_seconds else 0.0

    @property
    def pdm(self) -> float:
        if not self.requested_mips_seconds:
            return 0.0
        return self.degraded_mips_seconds / self.requested_mips_seconds

    def result(self, day: str, policy: str, vms: int, hosts: int, seconds: float) -> DayResult:
        energy = self.energy_joules / JOULES_PER_KWH
        slav = self.slatah * self.pdm
        return DayResult(
            day=day,
            policy=policy,
            vms=vms,
            hosts=hosts,
            energy_kwh=float(energy),
            slatah=float(self.slatah),
            pdm=float(self.pdm),
            slav=float(slav),
            esv=float(energy * slav),
            migrations=self.migrations,
            seconds=seconds,
        )
