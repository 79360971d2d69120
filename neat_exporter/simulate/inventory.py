"""An operator's own fleet for the simulator: named hosts with their cores, speed, RAM and
power model, and VMs with their CPU traces, RAM and the host each started on.

CloudSim's PlanetLab set-up derives all of this from the VM's index (types by quarters, G4/G5
hosts alternating); an :class:`Inventory` states it instead, so the same simulation runs on a
fleet read from Prometheus (:mod:`neat_exporter.simulate.prometheus`). It is saved as one
``.npz`` file, which ``simulate`` and ``tune`` accept wherever they accept a PlanetLab day.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from neat_exporter.errors import InputError
from neat_exporter.files import write_atomically
from neat_exporter.simulate.power import POWER_TABLES

SPECPOWER_HOSTS = {(2, 1860.0): 0, (2, 2660.0): 1}
"""(cores, MHz) of CloudSim's HP ProLiant ML110 G4 and G5: their rows of ``POWER_TABLES``."""
SPECPOWER_NAMES = {"g4": 0, "g5": 1}


def linear_power(idle: float, maximum: float) -> np.ndarray:
    """A linear power model as an 11-point table (exact under the simulator's interpolation)."""
    if not 0 <= idle <= maximum:
        raise InputError(f"linear power model: need 0 <= idle ({idle}) <= max ({maximum}) W")
    return idle + (maximum - idle) * np.linspace(0.0, 1.0, 11)


def parse_host_power(text: str) -> tuple[str, str | tuple[float, float]]:
    """``HOST=g4``, ``HOST=g5`` or ``HOST=IDLE:MAX`` (watts): one host's power model."""
    host, equals, model = text.partition("=")
    model = model.strip().lower()
    if not equals or not host.strip():
        raise InputError(f"--host-power {text!r}: use HOST=g4, HOST=g5 or HOST=IDLE:MAX (watts)")
    if model in SPECPOWER_NAMES:
        return host.strip(), model
    idle, _, maximum = model.partition(":")
    try:
        watts = (float(idle), float(maximum))
    except ValueError:
        raise InputError(f"--host-power {text!r}: use HOST=g4, HOST=g5 or HOST=IDLE:MAX") from None
    linear_power(*watts)  # checks the values
    return host.strip(), watts


def power_models(
    cores: np.ndarray,
    mhz: np.ndarray,
    idle_max: tuple[float, float],
    names: np.ndarray | None = None,
    per_host: dict[str, str | tuple[float, float]] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Power tables and each host's row: the model ``per_host`` names for it, else SPECpower's
    G4/G5 for hosts that are one, else a linear ``idle_max`` model."""
    tables = [*POWER_TABLES, linear_power(*idle_max)]
    kinds = []
    for index, (c, m) in enumerate(zip(cores, mhz, strict=True)):
        model = (per_host or {}).get(str(names[index])) if names is not None else None
        if isinstance(model, str):
            kinds.append(SPECPOWER_NAMES[model])
        elif model is not None:
            tables.append(linear_power(*model))
            kinds.append(len(tables) - 1)
        else:
            kinds.append(SPECPOWER_HOSTS.get((int(c), float(m)), len(POWER_TABLES)))
    return np.array(tables), np.array(kinds, dtype=np.int64)


@dataclass(frozen=True)
class Inventory:
    """A fleet and its workload. ``traces``: (VMs, samples) CPU use in percent of the VM's
    MIPS, one sample every ``interval`` seconds; ``vm_home``: index of the starting host."""

    host_names: np.ndarray
    host_pes: np.ndarray
    host_pe_mips: np.ndarray
    host_ram_mb: np.ndarray
    power_tables: np.ndarray
    host_power: np.ndarray
    vm_names: np.ndarray
    vm_mips: np.ndarray
    vm_ram_mb: np.ndarray
    vm_home: np.ndarray
    traces: np.ndarray
    interval: float = 300.0

    def __post_init__(self) -> None:
        hosts, vms = len(self.host_names), len(self.vm_names)
        if hosts == 0 or vms == 0:
            raise InputError(f"fleet: {hosts} hosts and {vms} VMs; need at least one of each")
        for name in ("host_pes", "host_pe_mips", "host_ram_mb", "host_power"):
            if len(getattr(self, name)) != hosts:
                raise InputError(
                    f"fleet: {name} has {len(getattr(self, name))} values, not {hosts}"
                )
        for name in ("vm_mips", "vm_ram_mb", "vm_home"):
            if len(getattr(self, name)) != vms:
                raise InputError(f"fleet: {name} has {len(getattr(self, name))} values, not {vms}")
        if self.traces.ndim != 2 or self.traces.shape[0] != vms or self.traces.shape[1] < 2:
            raise InputError(f"fleet: traces of shape {self.traces.shape}, need ({vms}, >= 2)")
        if (self.vm_home < 0).any() or (self.vm_home >= hosts).any():
            raise InputError("fleet: a VM starts on a host that is not in the fleet")
        if not (self.host_pe_mips > 0).all() or not (self.vm_mips > 0).all():
            raise InputError("fleet: every host core and every VM needs a positive speed")
        if not np.isfinite(self.traces).all() or (self.traces < 0).any():
            raise InputError("fleet: CPU traces must be finite and not negative")
        if not self.host_power.max() < len(self.power_tables):
            raise InputError("fleet: a host names a power model that is not in the fleet")

    def save(self, path: str | Path) -> None:
        buffer = io.BytesIO()
        np.savez_compressed(
            buffer, **{f.name: np.asarray(getattr(self, f.name)) for f in fields(self)}
        )
        write_atomically(path, lambda file: file.write(buffer.getvalue()))

    @classmethod
    def load(cls, path: str | Path) -> Inventory:
        try:
            with np.load(path, allow_pickle=False) as data:
                values = {f.name: data[f.name] for f in fields(cls)}
        except (OSError, ValueError, KeyError) as error:
            raise InputError(f"{path}: not a fleet file saved by neat-exporter ({error})") from None
        values["interval"] = float(values["interval"])
        return cls(**values)
