"""SPECpower models of the two server types of CloudSim's PlanetLab examples (P1 Table I)."""

from __future__ import annotations

import numpy as np

# Watts at 0 %, 10 %, ..., 100 % CPU load.
HP_PROLIANT_ML110_G4 = (86.0, 89.4, 92.6, 96.0, 99.5, 102.0, 106.0, 108.0, 112.0, 114.0, 117.0)
HP_PROLIANT_ML110_G5 = (93.7, 97.0, 101.0, 105.0, 110.0, 116.0, 121.0, 125.0, 129.0, 133.0, 135.0)

POWER_TABLES = np.array([HP_PROLIANT_ML110_G4, HP_PROLIANT_ML110_G5])


def specpower(
    kinds: np.ndarray, utilization: np.ndarray, tables: np.ndarray = POWER_TABLES
) -> np.ndarray:
    """Power (W) of hosts of the given kinds (rows of ``tables``) at ``utilization``.

    The arithmetic is CloudSim's ``PowerModelSpecPower.getPower`` step for step (exact table
    value on multiples of 0.1, otherwise linear interpolation written its way), so sums over a
    day agree with CloudSim to the last digits. Utilizations outside [0, 1] are clipped; CloudSim
    would abort the run instead.
    """
    u = np.minimum(np.maximum(utilization, 0.0), 1.0)
    base = kinds * tables.shape[1]
    flat = tables.ravel()
    tenths = u * 10
    lower = np.floor(tenths).astype(np.int64)
    power_lower = flat[base + lower]
    power_upper = flat[base + np.ceil(tenths).astype(np.int64)]
    interpolated = power_lower + (power_upper - power_lower) / 10 * (u - lower / 10) * 100
    exact = np.fmod(u, 0.1) == 0
    if exact.any():
        interpolated[exact] = flat[base[exact] + tenths[exact].astype(np.int64)]
    return interpolated


def energy_joules(
    kinds: np.ndarray,
    previous: np.ndarray,
    current: np.ndarray,
    seconds: float,
    tables: np.ndarray = POWER_TABLES,
) -> np.ndarray:
    """Energy of each host over an interval, CloudSim's ``getEnergyLinearInterpolation``.

    A host whose utilization was 0 at the start of the interval is asleep and draws nothing
    (no wake-up cost); otherwise the power is the mean of the two ends.
    """
    before = specpower(kinds, previous, tables)
    after = specpower(kinds, current, tables)
    return np.where(previous == 0, 0.0, (before + (after - before) / 2) * seconds)
